"""The native-sync outbox: what of the merchant's changes Shopify must be told, and how.

``add`` runs inside the operation's transaction, after its entries are written: the outbox row
commits with the entry or not at all. An ``issue`` or upward ``adjust`` becomes a native credit
(same amount, same expiry); a downward ``adjust`` or a ``revoke`` a native debit. Shopify
debits its soonest-expiring credit first, which may not be the credit that mirrors the revoked
lot: the balances agree, the per-credit split may not, and reconciliation compares balances.

``match_native`` is the rule for an attempt that ended ambiguously (timeout, lost response,
5xx): Shopify's store-credit mutations are not idempotent, so before sending again we look
for our transaction among the account's recent native ones.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from ledger.book import Actor, Book, LotRow
from ledger.kinds import EntryKind
from ledger.native import NativeTransaction
from models import ShopifyOutbox

MIRRORED_KINDS = {EntryKind.ISSUE.value, EntryKind.ADJUST.value, EntryKind.REVOKE.value}
# How far before the row's first attempt a matching native transaction may have been made
# (clock skew between us and Shopify).
MATCH_SKEW = timedelta(minutes=2)


# Built once: compiling an INSERT per row was half of a bulk issue's client time.
_INSERT = insert(ShopifyOutbox)


def add(session: Session, by: Actor, book: Book, entry: dict[str, Any], lot: LotRow | None) -> None:
    """Queue ``entry`` for Shopify (in the entry's transaction), if it is a mirrored kind."""
    assert by.mirror is not None
    if entry["kind"] not in MIRRORED_KINDS or entry["amount"] == 0:
        return
    credit = entry["amount"] > 0
    session.execute(
        _INSERT,
        {
            "shop_id": by.shop_id,
            "account_id": book.account.id,
            "entry_id": entry["id"],
            "lot_id": entry["lot_id"],
            "operation": "credit" if credit else "debit",
            "amount": abs(entry["amount"]),
            "currency": book.account.currency,
            "expires_at": lot.expires_at if credit and lot is not None else None,
            "notify": by.mirror.notify and credit,
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": by.now,
            "ambiguous": False,
            "created_at": by.now,
            "updated_at": by.now,
        },
    )


def match_native(
    row: ShopifyOutbox, recent: list[NativeTransaction], taken: set[str]
) -> NativeTransaction | None:
    """The native transaction an ambiguous attempt of ``row`` made, if Shopify made one.

    A match is a transaction of the row's kind and amount (and, for a credit, expiry) made
    since the row was first queued, whose id no other outbox row has claimed. Two of our rows
    that would both match are identical in amount and expiry, so which takes which is moot.
    """
    kind = "credit" if row.operation == "credit" else "debit"
    signed = row.amount if kind == "credit" else -row.amount
    for tx in recent:
        if tx.gid is None or tx.gid in taken or tx.kind != kind or tx.amount.minor != signed:
            continue
        if tx.created_at < row.created_at - MATCH_SKEW:
            continue
        if kind == "credit" and not _same_instant(tx.expires_at, row.expires_at):
            continue
        return tx
    return None


def _same_instant(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs((a - b).total_seconds()) < 1  # Shopify keeps seconds
