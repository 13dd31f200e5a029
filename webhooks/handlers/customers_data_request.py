"""customers/data_request: build the customer's data export for the merchant to download."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from ledger.privacy import record_data_request
from webhooks.handlers._payload import numeric_id
from webhooks.topics import Delivery, Outcome


def handle(session: Session, delivery: Delivery, now: datetime) -> Outcome:
    payload = delivery.payload
    customer = numeric_id((payload.get("customer") or {}).get("id"), "customer id")
    request = (payload.get("data_request") or {}).get("id")
    request_key = str(request) if request is not None else delivery.webhook_id
    result = record_data_request(
        session, delivery.shop.id, request_key, customer, f"webhook:{delivery.topic}", now
    )
    return {"customer": str(customer), "data_request": request_key, "result": result}
