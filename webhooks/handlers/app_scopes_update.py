"""app/scopes_update: record the scopes the merchant has granted now."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from ledger.shops import record_scopes
from webhooks.topics import Delivery, Ignored, Outcome


def handle(session: Session, delivery: Delivery, now: datetime) -> Outcome:
    current = delivery.payload.get("current")
    if not isinstance(current, list) or not all(isinstance(s, str) for s in current):
        raise Ignored("the payload has no list of current scopes")
    result = record_scopes(delivery.shop, current, delivery.triggered_at)
    session.commit()
    return {"result": result, "scopes": delivery.shop.scopes}
