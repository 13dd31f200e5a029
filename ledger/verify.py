"""Re-checking one account against DESIGN.md's invariants 1–4, from the rows alone.

``verify_account`` trusts nothing cached: it replays the entries, recomputes every hash and
re-adds every lot's allocations. Reconciliation runs it in production; tests run it after
every step. It returns every violation it finds, not just the first.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.chain import GENESIS_HASH, canonical_entry, chain_hash
from ledger.kinds import LotStatus
from models import CreditAccount, CreditLot, EntryAllocation, LedgerEntry


@dataclass(frozen=True)
class Violation:
    invariant: int
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def verify_account(session: Session, account_id: int) -> list[Violation]:
    """Every broken invariant (1 balance, 2 sequence, 3 hash chain, 4 lots) of one account."""
    account = session.get(CreditAccount, account_id)
    if account is None:
        return [Violation(1, "account_missing", "No such account.", {"account_id": account_id})]
    entries = list(
        session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.account_id == account_id)
            .order_by(LedgerEntry.sequence)
        )
    )
    moves = _allocations(session, [entry.id for entry in entries])
    lots = list(session.scalars(select(CreditLot).where(CreditLot.account_id == account_id)))
    return [
        *_check_balance(account, entries, lots),
        *_check_sequence(account, entries),
        *_check_chain(account, entries, moves),
        *_check_lots(entries, lots, moves),
    ]


def _allocations(
    session: Session, entry_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[uuid.UUID, int]]]:
    found: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = defaultdict(list)
    for start in range(0, len(entry_ids), 1000):
        stmt = select(EntryAllocation.entry_id, EntryAllocation.lot_id, EntryAllocation.amount)
        stmt = stmt.where(EntryAllocation.entry_id.in_(entry_ids[start : start + 1000]))
        for entry_id, lot_id, amount in session.execute(stmt):
            found[entry_id].append((lot_id, amount))
    return found


def _check_balance(
    account: CreditAccount, entries: list[LedgerEntry], lots: list[CreditLot]
) -> Iterable[Violation]:
    by_entries = sum(entry.amount for entry in entries)
    in_lots = sum(lot.remaining for lot in lots if lot.status == LotStatus.ACTIVE)
    credited = sum(entry.amount for entry in entries if entry.amount > 0)
    debited = -sum(entry.amount for entry in entries if entry.amount < 0)
    facts = {"balance": account.balance, "sum_of_entries": by_entries, "sum_of_lots": in_lots}
    if account.balance < 0:
        yield Violation(1, "negative_balance", "The balance is below zero.", facts)
    if not account.balance == by_entries == in_lots:
        yield Violation(1, "balance_mismatch", "Balance, entries and lots disagree.", facts)
    if (account.lifetime_credited, account.lifetime_debited) != (credited, debited):
        yield Violation(
            1,
            "totals_mismatch",
            "Lifetime totals differ from the entries.",
            {
                "credited": [account.lifetime_credited, credited],
                "debited": [account.lifetime_debited, debited],
            },
        )


def _check_sequence(account: CreditAccount, entries: list[LedgerEntry]) -> Iterable[Violation]:
    previous_after = 0
    for expected, entry in enumerate(entries, start=1):
        where = {"sequence": entry.sequence, "entry_id": str(entry.id)}
        if entry.sequence != expected:
            yield Violation(2, "sequence_gap", f"Expected entry {expected} here.", where)
        if entry.balance_before != previous_after:
            yield Violation(
                2,
                "balance_chain_broken",
                "balance_before is not the last after.",
                where | {"balance_before": entry.balance_before, "previous_after": previous_after},
            )
        if entry.balance_after != entry.balance_before + entry.amount:
            yield Violation(
                2, "balance_after_wrong", "balance_after is not before + amount.", where
            )
        previous_after = entry.balance_after
    if account.last_sequence != len(entries):
        yield Violation(
            2,
            "last_sequence_wrong",
            "The account's last sequence is off.",
            {"last_sequence": account.last_sequence, "entries": len(entries)},
        )


def _check_chain(
    account: CreditAccount,
    entries: list[LedgerEntry],
    moves: dict[uuid.UUID, list[tuple[uuid.UUID, int]]],
) -> Iterable[Violation]:
    previous = GENESIS_HASH
    for entry in entries:
        row = {name: getattr(entry, name) for name in _ROW_FIELDS} | {"metadata": entry.meta}
        expected = chain_hash(previous, canonical_entry(row, moves.get(entry.id, [])))
        where = {"sequence": entry.sequence, "entry_id": str(entry.id)}
        if entry.prev_hash != previous:
            yield Violation(3, "chain_broken", "prev_hash is not the previous entry's hash.", where)
        if entry.hash != expected:
            yield Violation(
                3, "hash_mismatch", "The entry does not hash to its stored hash.", where
            )
        previous = entry.hash
    if account.last_hash != previous:
        yield Violation(
            3,
            "head_mismatch",
            "The account's last hash is not the chain's head.",
            {"last_hash": account.last_hash, "chain_head": previous},
        )


def _check_lots(
    entries: list[LedgerEntry],
    lots: list[CreditLot],
    moves: dict[uuid.UUID, list[tuple[uuid.UUID, int]]],
) -> Iterable[Violation]:
    moved: dict[uuid.UUID, int] = defaultdict(int)
    opened: dict[uuid.UUID, int] = defaultdict(int)
    for entry in entries:
        parts = moves.get(entry.id, [])
        if entry.lot_id is not None and not parts:
            opened[entry.lot_id] += entry.amount
        for lot_id, amount in parts:
            moved[lot_id] += amount
        if parts and sum(amount for _, amount in parts) != entry.amount:
            yield Violation(
                4,
                "allocations_mismatch",
                "Allocations do not add up to the entry.",
                {"entry_id": str(entry.id)},
            )
    for lot in lots:
        where = {"lot_id": str(lot.id), "amount": lot.amount, "remaining": lot.remaining}
        if lot.remaining != lot.amount + moved.get(lot.id, 0):
            yield Violation(
                4,
                "lot_remaining_mismatch",
                "remaining is not amount minus allocations.",
                where | {"allocated": moved.get(lot.id, 0)},
            )
        if opened.get(lot.id) != lot.amount:
            yield Violation(
                4,
                "lot_opening_mismatch",
                "No entry opened the lot for its amount.",
                where | {"opened": opened.get(lot.id, 0)},
            )
        if not 0 <= lot.remaining <= lot.amount:
            yield Violation(4, "lot_out_of_range", "remaining is outside 0..amount.", where)


_ROW_FIELDS = (
    "id",
    "shop_id",
    "account_id",
    "sequence",
    "kind",
    "amount",
    "balance_before",
    "balance_after",
    "lot_id",
    "reverses_entry_id",
    "shopify_order_id",
    "shopify_refund_id",
    "idempotency_key",
    "actor",
    "reason",
    "note",
    "created_at",
)
