"""customers/redact: scrub the customer's personal data; the ledger stays, anonymised."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from ledger.privacy import redact_customer
from webhooks.handlers._payload import numeric_id
from webhooks.topics import Delivery, Outcome


def handle(session: Session, delivery: Delivery, now: datetime) -> Outcome:
    customer = numeric_id((delivery.payload.get("customer") or {}).get("id"), "customer id")
    counts = redact_customer(session, delivery.shop.id, customer, f"webhook:{delivery.topic}", now)
    return {"customer": str(customer), **counts}
