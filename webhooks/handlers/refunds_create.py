"""refunds/create: a refund touching store credit (paid back to it, or to the spent lots).

Only refunds with a store-credit transaction cost a GraphQL call; the order is then read and
synced whole, so the refund lands once whatever else has or has not arrived yet.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from webhooks.handlers._orders import STORE_CREDIT_GATEWAY, sync
from webhooks.handlers._payload import numeric_id
from webhooks.topics import Delivery, Ignored, Outcome


def handle(session: Session, delivery: Delivery, now: datetime) -> Outcome:
    transactions = delivery.payload.get("transactions")
    if not isinstance(transactions, list) or not any(
        isinstance(tx, dict) and tx.get("gateway") == STORE_CREDIT_GATEWAY for tx in transactions
    ):
        raise Ignored("the refund moved no store credit")
    order_id = numeric_id(delivery.payload.get("order_id"), "order id")
    return sync(session, delivery, order_id, now)
