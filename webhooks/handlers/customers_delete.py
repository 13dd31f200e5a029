"""customers/delete: mark the customer deleted; the ledger and its money stay."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from ledger.customers import mark_deleted
from webhooks.handlers._payload import changed_at, numeric_id
from webhooks.topics import Delivery, Ignored, Outcome


def handle(session: Session, delivery: Delivery, now: datetime) -> Outcome:
    customer = numeric_id(delivery.payload.get("id"), "customer id")
    result = mark_deleted(session, delivery.shop.id, customer, changed_at(delivery, now), now)
    session.commit()
    if result == "not_a_credit_holder":
        raise Ignored("CreditCraft holds nothing for this customer")
    return {"customer": str(customer), "result": result}
