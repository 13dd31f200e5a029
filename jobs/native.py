"""Reading a customer's native store credit from Shopify, in the ledger's terms.

Shared by the sync job (matching an ambiguous attempt) and reconciliation (comparing).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ledger.money import Money
from ledger.native import NativeTransaction
from ledger.orders import native_amount
from shopify_client import documents
from shopify_client.graphql import AdminClient
from shopify_client.ids import gid, numeric_id

_TYPENAMES = {
    "StoreCreditAccountCreditTransaction": "credit",
    "StoreCreditAccountDebitTransaction": "debit",
    "StoreCreditAccountDebitRevertTransaction": "debit_revert",
    "StoreCreditAccountExpirationTransaction": "expiration",
}


def find_account(client: AdminClient, shopify_customer_id: int, currency: str) -> str | None:
    """The customer's native StoreCreditAccount GID in ``currency``, if Shopify has one."""
    after: str | None = None
    while True:
        data = client.query(
            documents.CUSTOMER_STORE_CREDIT_ACCOUNTS,
            {"id": gid("Customer", shopify_customer_id), "first": 10, "after": after},
        )
        customer = data.get("customer")
        if customer is None:
            return None
        accounts = customer["storeCreditAccounts"]
        for node in accounts["nodes"]:
            if node["balance"]["currencyCode"] == currency:
                return str(node["id"])
        if not accounts["pageInfo"]["hasNextPage"]:
            return None
        after = accounts["pageInfo"]["endCursor"]


def recent_transactions(
    client: AdminClient, account_gid: str, *, first: int = 25
) -> list[NativeTransaction]:
    """The account's latest native transactions, newest first."""
    data = client.query(
        documents.STORE_CREDIT_ACTIVITY, {"id": account_gid, "first": first, "after": None}
    )
    account = data.get("storeCreditAccount")
    if account is None:
        return []
    return [native_transaction(node) for node in account["transactions"]["nodes"]]


def native_transaction(node: dict[str, Any]) -> NativeTransaction:
    """A STORE_CREDIT_ACTIVITY node as the ledger's matching needs it."""
    kind = _TYPENAMES.get(node["__typename"])
    if kind is None:
        raise ValueError(f"unknown store-credit transaction type {node['__typename']!r}")
    origin = node.get("origin") or {}
    order = origin.get("order") or {}
    credit = node.get("creditTransaction") or {}
    return NativeTransaction(
        kind=kind,
        gid=node.get("id"),
        amount=native_money(node["amount"]),
        created_at=_time(node["createdAt"]),
        event=node["event"],
        origin_transaction=numeric_id(origin["id"]) if origin.get("id") else None,
        origin_order=numeric_id(order["id"]) if order.get("id") else None,
        expires_at=_time(node["expiresAt"]) if node.get("expiresAt") else None,
        credit_gid=credit.get("id"),
    )


def native_money(value: dict[str, Any]) -> Money:
    """A MoneyV2 from Shopify as exact Money (its amount never rounded)."""
    return native_amount(value["amount"], value["currencyCode"])


def _time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
