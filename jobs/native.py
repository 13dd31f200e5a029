"""Reading a customer's native store credit from Shopify, in the ledger's terms.

Shared by the sync job (matching an ambiguous attempt) and reconciliation (comparing).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ledger.orders import native_amount
from ledger.outbox import NativeTransaction
from shopify_client import documents
from shopify_client.graphql import AdminClient
from shopify_client.ids import gid

_KINDS = {
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
    client: AdminClient, account_gid: str, currency: str, *, first: int = 25
) -> list[NativeTransaction]:
    """The account's latest native transactions, newest first."""
    data = client.query(documents.STORE_CREDIT_TRANSACTIONS, {"id": account_gid, "first": first})
    account = data.get("storeCreditAccount")
    if account is None:
        return []
    return [transaction(node, currency) for node in account["transactions"]["nodes"]]


def transaction(node: dict[str, Any], currency: str) -> NativeTransaction:
    return NativeTransaction(
        gid=node.get("id"),
        kind=_KINDS[node["__typename"]],
        amount=native_amount(node["amount"]["amount"], currency).minor,
        created_at=_time(node["createdAt"]),
        expires_at=_time(node["expiresAt"]) if node.get("expiresAt") else None,
    )


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
