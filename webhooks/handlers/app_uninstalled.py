"""app/uninstalled: wipe the shop's tokens (Shopify revoked them) and schedule redaction.

The shop's data stays until shop/redact, which Shopify sends 48 hours later.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from ledger.shops import uninstall
from webhooks.topics import Delivery, Outcome


def handle(session: Session, delivery: Delivery, now: datetime) -> Outcome:
    result = uninstall(delivery.shop, delivery.triggered_at, now)
    session.commit()
    return {"result": result}
