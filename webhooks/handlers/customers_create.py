"""customers/create: name and email of a customer we hold credit for (the merchant's search)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from ledger.customers import CustomerChange, apply_change
from webhooks.handlers._payload import changed_at, numeric_id, optional_text
from webhooks.topics import Delivery, Ignored, Outcome


def handle(session: Session, delivery: Delivery, now: datetime) -> Outcome:
    payload = delivery.payload
    change = CustomerChange(
        shopify_customer_id=numeric_id(payload.get("id"), "customer id"),
        changed_at=changed_at(delivery, now),
        email=optional_text(payload.get("email"), 320),
        first_name=optional_text(payload.get("first_name"), 255),
        last_name=optional_text(payload.get("last_name"), 255),
    )
    result = apply_change(session, delivery.shop.id, change, now)
    session.commit()
    if result == "not_a_credit_holder":
        raise Ignored("CreditCraft holds nothing for this customer")
    return {"customer": str(change.shopify_customer_id), "result": result}
