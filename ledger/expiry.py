"""Expiry: every lot past its ``expires_at`` gets one ``expire`` entry for what it still held.

Set-based and resumable. A run walks each shop's due lots from the partial index
``ix_credit_lots_shop_due`` in batches of about ``batch_size`` lots; each batch is one
transaction of three round trips on PostgreSQL:

1. **claim**: one statement takes the batch's due lots ``FOR NO KEY UPDATE SKIP LOCKED`` and
   their accounts ``FOR UPDATE SKIP LOCKED`` (in id order), returning the newest committed
   version of every row it locked;
2. **write**: the entries (each account's chain extended in expiry order, hashed in Python by
   ``Book``), allocations, closed lots, account heads and one audit row per account go out
   in one statement of data-modifying CTEs;
3. **commit**.

Lock order. Every ledger operation locks its ACCOUNT row, then reads and writes that
account's lots. A batch that *waited* for an account while holding lot locks could deadlock
with such an operation (it holds the account and waits for the lot). In a claim nothing
ever waits: a lot or account somebody else holds is skipped. A batch only writes lots it
claimed whose accounts it also locked, so its writes never wait either, and a transaction
that never waits cannot be part of a deadlock. The price: a claimed lot whose account was
busy stays locked (untouched) until the batch commits, so an operation that wanted to write
exactly that lot waits for one batch; the lot is claimed again by a later batch.

When every account of a claim was busy (the only lots left belong to accounts in use), the
batch lets go of everything and takes the ordinary order instead: accounts first, waiting, in
id order, then those lots (their only other holders are claims, which never wait).

A lot's status and due time are checked on the row locked, so a lot expires exactly once
however many runs overlap, never before its time, and a spend that took the lot first wins.
A crash loses at most the batch in flight (rolled back); a rerun carries on.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, literal, select, text
from sqlalchemy.orm import Session

from ledger.book import AccountRow, Actor, Book, LotRow
from ledger.kinds import EntryKind, LotStatus
from ledger.store import LOT_COLUMNS, touched_customers, write_book
from models import CreditAccount, CreditLot, Customer, Shop

EXPIRY_ACTOR = "system:expiry"
BATCH_SIZE = 1000
_SHOP_PAGE = 1000


@dataclass
class ExpiryReport:
    lots: int = 0
    accounts: int = 0  # accounts written, counted once per batch that wrote them
    batches: int = 0
    amounts: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def expire_due(
    session: Session, *, now: datetime, shop_id: int | None = None, batch_size: int = BATCH_SIZE
) -> ExpiryReport:
    """Expire every lot due at ``now`` (in one shop, or all), committing batch by batch."""
    report = ExpiryReport()
    shops = [shop_id] if shop_id is not None else _shop_ids(session)
    for shop in shops:
        _expire_shop(session, shop, now, batch_size, report)
    return report


def _shop_ids(session: Session) -> Iterator[int]:
    """Every shop's id, a page at a time (the index gives each shop's due lots in order)."""
    after = 0
    while True:
        page = session.scalars(
            select(Shop.id).where(Shop.id > after).order_by(Shop.id).limit(_SHOP_PAGE)
        ).all()
        session.rollback()
        if not page:
            return
        yield from page
        after = page[-1]


def _expire_shop(
    session: Session, shop_id: int, now: datetime, batch_size: int, report: ExpiryReport
) -> None:
    while True:
        claim = _claim(session, shop_id, now, batch_size)
        if not claim.accounts:
            # Nothing claimable: every due lot, or every account of the lots claimed, is held
            # by someone else (a spend, another run), or nothing is due. Let go, then wait
            # for whatever is still due in the ordinary order.
            session.rollback()
            held = claim.lots or _held(session, shop_id, now, batch_size)
            if not held:
                session.rollback()
                return
            claim = _claim_waiting(session, held, now)
        _expire(session, claim, now, report)
        session.commit()
        report.batches += 1


# -- claiming a batch -------------------------------------------------------------------------


@dataclass
class _Claim:
    lots: list[LotRow]  # due lots locked by this transaction
    accounts: dict[int, tuple[AccountRow, int]]  # locked accounts and their Shopify customer


_ACCOUNT_COLUMNS = (
    CreditAccount.id,
    CreditAccount.shop_id,
    CreditAccount.customer_id,
    CreditAccount.currency,
    CreditAccount.balance,
    CreditAccount.lifetime_credited,
    CreditAccount.lifetime_debited,
    CreditAccount.last_sequence,
    CreditAccount.last_hash,
    Customer.shopify_customer_id,
)
_N_LOT = len(LOT_COLUMNS)
# Inline, not a parameter: the planner must see the partial indexes' predicate to use them.
_ACTIVE = literal(LotStatus.ACTIVE.value, literal_execute=True)


# A lot is due once its time has come (``spendable`` keeps it from spends from then on too).
_DUE = (
    CreditLot.status == _ACTIVE,
    CreditLot.expires_at.is_not(None),
    CreditLot.expires_at <= bindparam("now"),
)


# The shop's first ``limit`` due lots, in the partial index's order (no sort).
_FIRST_DUE = (
    select(*LOT_COLUMNS)
    .where(CreditLot.shop_id == bindparam("shop_id"), *_DUE)
    .order_by(CreditLot.expires_at)
    .limit(bindparam("limit"))
)


def _build_claim() -> Select[Any]:
    """Due lots nobody holds, and those of their accounts nobody holds, locked."""
    # FOR NO KEY UPDATE: the weakest lock that still excludes another writer; it lets others
    # insert rows that reference the lot (allocations), as a plain UPDATE's lock would.
    claimed = (
        _FIRST_DUE.with_for_update(key_share=True, skip_locked=True)
        .cte("claimed")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    locked = (
        select(*(column.label(f"a_{column.key}") for column in _ACCOUNT_COLUMNS))
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(CreditAccount.id.in_(select(claimed.c.account_id)))
        .order_by(CreditAccount.id)
        .with_for_update(of=CreditAccount, skip_locked=True)
        .cte("locked")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    return select(claimed, locked).select_from(
        claimed.outerjoin(locked, locked.c.a_id == claimed.c.account_id)
    )


# Built once: constructing a select costs more Python than running it.
_CLAIM = _build_claim()
_LOCK_ACCOUNTS = (
    select(*_ACCOUNT_COLUMNS)
    .join(Customer, Customer.id == CreditAccount.customer_id)
    .where(CreditAccount.id.in_(bindparam("account_ids", expanding=True)))
    .order_by(CreditAccount.id)
    .with_for_update(of=CreditAccount)
)
_LOCK_LOTS = (
    select(*LOT_COLUMNS)
    .where(CreditLot.id.in_(bindparam("lot_ids", expanding=True)), *_DUE)
    .with_for_update(key_share=True)
)


def _claim(session: Session, shop_id: int, now: datetime, limit: int) -> _Claim:
    params = {"shop_id": shop_id, "now": now, "limit": limit}
    claim = _Claim(lots=[], accounts={})
    for row in session.connection().execute(_CLAIM, params):
        claim.lots.append(_lot(row[:_N_LOT]))
        if row.a_id is not None and row.a_id not in claim.accounts:
            claim.accounts[row.a_id] = _account(row[_N_LOT:])
    return claim


def _held(session: Session, shop_id: int, now: datetime, limit: int) -> list[LotRow]:
    """Due lots as last committed, read without locking: those a claim had to skip."""
    params = {"shop_id": shop_id, "now": now, "limit": limit}
    return [_lot(row) for row in session.connection().execute(_FIRST_DUE, params)]


def _claim_waiting(session: Session, lots: list[LotRow], now: datetime) -> _Claim:
    """These lots, taking their accounts first (waiting, in id order), then the lots.

    Nothing is locked while the accounts are waited for, which is the order every ledger
    operation takes. The lots' only other holders then are claims, which never wait.
    """
    connection = session.connection()
    account_ids = sorted({lot.account_id for lot in lots})
    accounts = {
        row.id: _account(row)
        for row in connection.execute(_LOCK_ACCOUNTS, {"account_ids": account_ids})
    }
    # A second statement, so it sees what the accounts' last holders committed.
    lot_ids = [lot.id for lot in lots]
    rows = connection.execute(_LOCK_LOTS, {"lot_ids": lot_ids, "now": now})
    return _Claim(lots=[_lot(row) for row in rows], accounts=accounts)


def _lot(row: Sequence[Any]) -> LotRow:
    return LotRow(*row)


def _account(row: Sequence[Any]) -> tuple[AccountRow, int]:
    *columns, shopify_customer_id = row
    return AccountRow(*columns), shopify_customer_id


# -- expiring what was claimed ----------------------------------------------------------------


def _expire(session: Session, claim: _Claim, now: datetime, report: ExpiryReport) -> None:
    """Post one expire entry per lot, account by account in id order; write it all at once."""
    lots_by_account: dict[int, list[LotRow]] = defaultdict(list)
    for lot in claim.lots:
        if lot.account_id in claim.accounts:  # a lot whose account was busy waits its turn
            lots_by_account[lot.account_id].append(lot)
    if not lots_by_account:
        return
    by = Actor(shop_id=claim.lots[0].shop_id, now=now, actor=EXPIRY_ACTOR, reason="expired")
    books: list[Book] = []
    for account_id in sorted(lots_by_account):
        account, _customer = claim.accounts[account_id]
        books.append(_expire_account(by, account, lots_by_account[account_id]))
        expired = -sum(entry["amount"] for entry in books[-1].entries)
        report.lots += len(books[-1].entries)
        report.accounts += 1
        report.amounts[account.currency] += expired
    if session.get_bind().dialect.name == "postgresql":
        _write_batch(session, by, books)
        touched = touched_customers(session)
        for book in books:
            touched.add((book.account.shop_id, claim.accounts[book.account.id][1]))
    else:  # SQLite (the embedded default): the ordinary write path, account by account
        for book in books:
            write_book(session, book, now, audits=[_audit(by, book)])


def _expire_account(by: Actor, account: AccountRow, lots: list[LotRow]) -> Book:
    """The account's due lots closed in expiry order, one entry each, chained in that order."""
    book = Book(account=account, lots={lot.id: lot for lot in lots})
    if len(lots) > 1:
        lots = sorted(lots, key=lambda lot: (lot.expires_at, lot.created_at, str(lot.id)))
    for lot in lots:
        moves = book.take_rest_of(lot, LotStatus.EXPIRED)
        book.post(by, EntryKind.EXPIRE, moves[0][1], lot_id=lot.id, allocations=moves, keyed=False)
    return book


def _audit(by: Actor, book: Book) -> dict[str, Any]:
    """One audit row per account and batch: how many lots, how much."""
    expired = -sum(entry["amount"] for entry in book.entries)
    return {
        "shop_id": by.shop_id,
        "actor": by.actor,
        "action": "expire",
        "target_type": "credit_account",
        "target_id": str(book.account.id),
        "outcome": "success",
        "error_code": None,
        "details": {
            "lots": len(book.entries),
            "amount": expired,
            "currency": book.account.currency,
        },
        "created_at": by.now,
    }


# -- PostgreSQL: the whole batch in one statement ----------------------------------------------

# ledger/store.py's single write, for many accounts at once and cut to what an expiry changes.
# Only what differs between entries travels (as one JSON array); what ``Book.post`` gives
# every expire entry of the batch alike (kind, actor, reason, time, no note, key, order or
# metadata) is a parameter, and each entry's allocation (the whole entry, from its one lot)
# and its lot's closing (nothing left, expired) are derived from the entry row itself. The
# text never changes, so the server keeps it prepared. The final SELECT counts what was
# written: every row was locked by this transaction, so a shortfall is a bug.
_WRITE_BATCH = text(
    """
WITH e AS MATERIALIZED (
    SELECT * FROM json_to_recordset(CAST(:entries AS json)) AS r (
        id uuid, account_id bigint, sequence bigint, amount bigint, balance_before bigint,
        lot_id uuid, prev_hash text, hash text)
), lots AS (
    UPDATE credit_lots AS t SET remaining = 0, status = :expired
    FROM e WHERE t.id = e.lot_id
    RETURNING 1
), entries AS (
    INSERT INTO ledger_entries (id, shop_id, account_id, sequence, kind, amount, balance_before,
        balance_after, lot_id, actor, reason, metadata, prev_hash, hash, created_at)
    SELECT id, :shop_id, account_id, sequence, :kind, amount, balance_before,
        balance_before + amount, lot_id, :actor, :reason, CAST('{}' AS jsonb), prev_hash, hash,
        :now
    FROM e
    RETURNING 1
), allocations AS (
    INSERT INTO entry_allocations (shop_id, entry_id, lot_id, amount)
    SELECT :shop_id, id, lot_id, amount FROM e
    RETURNING 1
), a AS MATERIALIZED (
    SELECT * FROM json_to_recordset(CAST(:accounts AS json)) AS r (
        id bigint, balance bigint, lifetime_debited bigint, last_sequence bigint,
        last_hash text, lots bigint, amount bigint, currency text)
), accounts AS (
    UPDATE credit_accounts AS t SET balance = a.balance, lifetime_debited = a.lifetime_debited,
        last_sequence = a.last_sequence, last_hash = a.last_hash, updated_at = :now
    FROM a WHERE t.id = a.id
    RETURNING 1
), audits AS (
    INSERT INTO audit_log (shop_id, actor, action, target_type, target_id, outcome, details,
        created_at)
    SELECT :shop_id, :actor, 'expire', 'credit_account', CAST(id AS text), 'success',
        jsonb_build_object('lots', lots, 'amount', amount, 'currency', currency), :now
    FROM a
    RETURNING 1
)
SELECT (SELECT count(*) FROM lots), (SELECT count(*) FROM entries),
    (SELECT count(*) FROM allocations), (SELECT count(*) FROM accounts),
    (SELECT count(*) FROM audits)
"""
)
# What the statement writes for every entry, as Book.post made it (checked per entry).
_SAME_FOR_ALL: dict[str, object] = {
    "reverses_entry_id": None,
    "shopify_order_id": None,
    "shopify_refund_id": None,
    "idempotency_key": None,
    "note": None,
    "metadata": {},
}


def _write_batch(session: Session, by: Actor, books: list[Book]) -> None:
    entries = [_varying(by, entry) for book in books for entry in book.entries]
    accounts = [_head(book) for book in books]
    params = {
        "entries": json.dumps(entries, separators=(",", ":")),
        "accounts": json.dumps(accounts, separators=(",", ":")),
        "shop_id": by.shop_id,
        "kind": EntryKind.EXPIRE.value,
        "expired": LotStatus.EXPIRED.value,
        "actor": by.actor,
        "reason": by.reason,
        "now": by.now,
    }
    written = tuple(session.connection().execute(_WRITE_BATCH, params).one())
    expected = (len(entries), len(entries), len(entries), len(accounts), len(accounts))
    if written != expected:  # pragma: no cover - every row written was locked by this batch
        raise RuntimeError(f"expiry batch wrote {written} rows, expected {expected}")


def _varying(by: Actor, entry: dict[str, Any]) -> dict[str, Any]:
    """The entry's own columns; the rest must be what the statement fills in for all."""
    if entry["created_at"] != by.now or any(
        entry[name] != value for name, value in _SAME_FOR_ALL.items()
    ):  # pragma: no cover - Book.post and this statement disagree: refuse to write
        raise RuntimeError(f"expire entry {entry['id']} has columns the batch write drops")
    return {
        "id": str(entry["id"]),
        "account_id": entry["account_id"],
        "sequence": entry["sequence"],
        "amount": entry["amount"],
        "balance_before": entry["balance_before"],
        "lot_id": str(entry["lot_id"]),
        "prev_hash": entry["prev_hash"],
        "hash": entry["hash"],
    }


def _head(book: Book) -> dict[str, Any]:
    account = book.account
    return {
        "id": account.id,
        "balance": account.balance,
        "lifetime_debited": account.lifetime_debited,
        "last_sequence": account.last_sequence,
        "last_hash": account.last_hash,
        "lots": len(book.entries),
        "amount": -sum(entry["amount"] for entry in book.entries),
        "currency": account.currency,
    }
