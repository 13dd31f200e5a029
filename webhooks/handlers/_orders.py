"""What every order topic shares: read the order's store credit from Shopify, then sync it.

The webhook payload says *that* an order changed; the order's transactions, read through the
Admin API, say what it did with store credit (``orders/paid`` carries no transactions at
all). Only orders whose payment gateways include store credit cost a GraphQL call.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from blueprints.settings import current_settings
from ledger.money import Money
from ledger.orders import Movement, OrderStoreCredit, native_amount, sync_order
from models import Shop
from shop_access import admin_client
from shopify_client import documents
from shopify_client.ids import gid, numeric_id
from webhooks.handlers._payload import numeric_id as payload_id
from webhooks.topics import Delivery, Ignored, Outcome

# Shopify's gateway name for native store credit, on orders and their transactions.
STORE_CREDIT_GATEWAY = "shopify_store_credit"
SPENDING_KINDS = {"SALE", "CAPTURE"}
RETURNING_KINDS = {"REFUND", "VOID"}


def sync_from_order_payload(session: Session, delivery: Delivery, now: datetime) -> Outcome:
    """orders/create, orders/paid, orders/cancelled: the payload is the order."""
    gateways = delivery.payload.get("payment_gateway_names")
    if not isinstance(gateways, list) or STORE_CREDIT_GATEWAY not in gateways:
        raise Ignored("the order has no store-credit payment")
    return sync(session, delivery, payload_id(delivery.payload.get("id"), "order id"), now)


def sync(session: Session, delivery: Delivery, order_id: int, now: datetime) -> Outcome:
    return sync_order_from_shopify(
        session, delivery.shop, order_id, now, actor=f"webhook:{delivery.topic}"
    )


def sync_order_from_shopify(
    session: Session, shop: Shop, order_id: int, now: datetime, *, actor: str
) -> Outcome:
    """Read the order's store credit from Shopify and write what the ledger lacks of it.

    Webhook handlers call it, and reconciliation for orders whose webhook never came or
    whose spend could not be covered then. Raises ``Ignored`` when there is nothing to do.
    """
    client = admin_client(session, current_settings(), shop, now)
    data = client.query(documents.ORDER_STORE_CREDIT, {"id": gid("Order", order_id)})
    order = data.get("order")
    if order is None:
        raise Ignored("Shopify no longer has this order")
    facts = order_store_credit(order)
    if not facts.touches_store_credit:
        raise Ignored("the order moved no store credit")
    return sync_order(session, shop.id, facts, actor=actor, now=now)


def order_store_credit(order: dict[str, Any]) -> OrderStoreCredit:
    """Translate the ORDER_STORE_CREDIT answer into the ledger's view of the order."""
    order_id = numeric_id(order["id"])
    customer = order.get("customer")
    currency = order["presentmentCurrencyCode"]
    spent = 0
    returned: list[Movement] = []
    for tx in order.get("transactions") or []:
        if not _is_store_credit(tx) or tx.get("status") != "SUCCESS":
            continue
        amount = native_amount(tx["amountSet"]["presentmentMoney"]["amount"], currency)
        if tx["kind"] in SPENDING_KINDS:
            spent += amount.minor
        elif tx["kind"] in RETURNING_KINDS and _is_store_credit(tx.get("parentTransaction")):
            returned.append(Movement(numeric_id(tx["id"]), amount))
    refunded: dict[int, int] = defaultdict(int)
    for refund in order.get("refunds") or []:
        for tx in (refund.get("transactions") or {}).get("nodes", []):
            if (
                _is_store_credit(tx)
                and tx.get("status") == "SUCCESS"
                and tx["kind"] == "REFUND"
                and not _is_store_credit(tx.get("parentTransaction"))
            ):
                amount = native_amount(tx["amountSet"]["presentmentMoney"]["amount"], currency)
                refunded[numeric_id(refund["id"])] += amount.minor
    return OrderStoreCredit(
        order_id=order_id,
        shopify_customer_id=numeric_id(customer["id"]) if customer else None,
        currency=currency,
        spent=Money(spent, currency) if spent else None,
        returned=returned,
        refunded_as_credit=[
            Movement(refund_id, Money(minor, currency))
            for refund_id, minor in sorted(refunded.items())
            if minor
        ],
    )


def _is_store_credit(tx: dict[str, Any] | None) -> bool:
    return bool(tx) and (tx or {}).get("gateway") == STORE_CREDIT_GATEWAY
