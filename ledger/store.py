"""Reading a locked account into a Book, and writing the Book back.

The account's row lock is the only lock a change takes, and it is held for three round trips:
find-and-lock, read the live lots, write everything. On PostgreSQL the write is one fixed
statement of data-modifying CTEs over arrays (``unnest``), the same text whatever the number of
lots, entries or allocations, so SQLAlchemy compiles it once and psycopg prepares it on the
server. Elsewhere (SQLite, the embedded default) the same rows go out as ordinary statements.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from psycopg.types.json import Jsonb
from sqlalchemy import Table, insert, select, text, update
from sqlalchemy.orm import Session

from ledger.book import AccountRow, Book, LotRow
from ledger.kinds import LotStatus
from models import (
    AuditLog,
    CreditAccount,
    CreditLot,
    Customer,
    EntryAllocation,
    IdempotencyKey,
    LedgerEntry,
)

Row = dict[str, Any]

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
)
_LOT_COLUMNS = (
    CreditLot.id,
    CreditLot.shop_id,
    CreditLot.account_id,
    CreditLot.amount,
    CreditLot.remaining,
    CreditLot.status,
    CreditLot.source,
    CreditLot.reason,
    CreditLot.note,
    CreditLot.expires_at,
    CreditLot.created_at,
)


def lock_account(session: Session, account_id: int) -> AccountRow | None:
    """Take the account's row lock for the rest of the transaction and read it."""
    stmt = select(*_ACCOUNT_COLUMNS).where(CreditAccount.id == account_id).with_for_update()
    row = session.execute(stmt).one_or_none()
    return None if row is None else AccountRow(*row)


def lock_customer_account(
    session: Session, shop_id: int, shopify_customer_id: int, currency: str
) -> AccountRow | None:
    """Find a customer's account in one currency and lock it, in one round trip.

    Only the account row is locked (``FOR UPDATE OF``); after a wait PostgreSQL re-reads the
    locked row, so what is returned is the account as its last writer committed it.
    """
    stmt = (
        select(*_ACCOUNT_COLUMNS)
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(
            Customer.shop_id == shop_id,
            Customer.shopify_customer_id == shopify_customer_id,
            CreditAccount.currency == currency,
        )
        .with_for_update(of=CreditAccount)
    )
    row = session.execute(stmt).one_or_none()
    return None if row is None else AccountRow(*row)


def open_book(session: Session, account: AccountRow, extra_lots: Iterable[uuid.UUID] = ()) -> Book:
    """The account's active lots (and any other lots named), read after the lock is held."""
    wanted = list(extra_lots)
    condition = CreditLot.status == LotStatus.ACTIVE.value
    if wanted:
        condition = condition | CreditLot.id.in_(wanted)
    stmt = select(*_LOT_COLUMNS).where(CreditLot.account_id == account.id, condition)
    lots = {row.id: LotRow(*row) for row in session.execute(stmt)}
    return Book(account=account, lots=lots)


def write_book(
    session: Session,
    book: Book,
    now: datetime,
    *,
    audits: Sequence[Row] = (),
    keys: Sequence[Row] = (),
) -> None:
    """Persist everything ``book`` changed, with the operation's audit rows and key rows."""
    new_lots = [_lot_values(lot) for lot in book.lots.values() if lot.is_new]
    changed = [lot for lot in book.lots.values() if lot.changed and not lot.is_new]
    account = _account_values(book.account, now)
    if session.get_bind().dialect.name == "postgresql":
        params = _array_params(new_lots, changed, book, account, audits, keys)
        session.execute(_WRITE_ALL, params)
        return
    for statement in _statements(new_lots, changed, book, account, audits, keys):
        session.execute(statement)


# -- PostgreSQL: one statement ------------------------------------------------------------

_WRITE_ALL = text(
    """
WITH new_lots AS (
    INSERT INTO credit_lots (id, shop_id, account_id, amount, remaining, status, source, reason,
                             note, expires_at, created_at)
    SELECT * FROM unnest(CAST(:lot_id AS uuid[]), CAST(:lot_shop AS bigint[]),
                         CAST(:lot_account AS bigint[]), CAST(:lot_amount AS bigint[]),
                         CAST(:lot_remaining AS bigint[]), CAST(:lot_status AS text[]),
                         CAST(:lot_source AS text[]), CAST(:lot_reason AS text[]),
                         CAST(:lot_note AS text[]), CAST(:lot_expires AS timestamptz[]),
                         CAST(:lot_created AS timestamptz[]))
    RETURNING 1
), changed_lots AS (
    UPDATE credit_lots AS l SET remaining = c.remaining, status = c.status
    FROM unnest(CAST(:chg_id AS uuid[]), CAST(:chg_remaining AS bigint[]),
                CAST(:chg_status AS text[])) AS c(id, remaining, status)
    WHERE l.id = c.id
    RETURNING 1
), entries AS (
    INSERT INTO ledger_entries (id, shop_id, account_id, sequence, kind, amount, balance_before,
                                balance_after, lot_id, reverses_entry_id, shopify_order_id,
                                shopify_refund_id, idempotency_key, actor, reason, note,
                                metadata, prev_hash, hash, created_at)
    SELECT * FROM unnest(CAST(:e_id AS uuid[]), CAST(:e_shop AS bigint[]),
                         CAST(:e_account AS bigint[]), CAST(:e_sequence AS bigint[]),
                         CAST(:e_kind AS text[]), CAST(:e_amount AS bigint[]),
                         CAST(:e_before AS bigint[]), CAST(:e_after AS bigint[]),
                         CAST(:e_lot AS uuid[]), CAST(:e_reverses AS uuid[]),
                         CAST(:e_order AS bigint[]), CAST(:e_refund AS bigint[]),
                         CAST(:e_key AS text[]), CAST(:e_actor AS text[]),
                         CAST(:e_reason AS text[]), CAST(:e_note AS text[]),
                         CAST(:e_meta AS jsonb[]), CAST(:e_prev AS text[]),
                         CAST(:e_hash AS text[]), CAST(:e_created AS timestamptz[]))
    RETURNING 1
), allocations AS (
    INSERT INTO entry_allocations (shop_id, entry_id, lot_id, amount)
    SELECT * FROM unnest(CAST(:a_shop AS bigint[]), CAST(:a_entry AS uuid[]),
                         CAST(:a_lot AS uuid[]), CAST(:a_amount AS bigint[]))
    RETURNING 1
), account AS (
    UPDATE credit_accounts SET balance = :balance, lifetime_credited = :credited,
        lifetime_debited = :debited, last_sequence = :last_sequence, last_hash = :last_hash,
        updated_at = :updated_at
    WHERE id = :account_id
    RETURNING 1
), audits AS (
    INSERT INTO audit_log (shop_id, actor, action, target_type, target_id, outcome, error_code,
                           details, created_at)
    SELECT * FROM unnest(CAST(:au_shop AS bigint[]), CAST(:au_actor AS text[]),
                         CAST(:au_action AS text[]), CAST(:au_type AS text[]),
                         CAST(:au_target AS text[]), CAST(:au_outcome AS text[]),
                         CAST(:au_error AS text[]), CAST(:au_details AS jsonb[]),
                         CAST(:au_created AS timestamptz[]))
    RETURNING 1
), idempotency AS (
    INSERT INTO idempotency_keys (shop_id, key, operation, request_hash, outcome, result,
                                  created_at, expires_at)
    SELECT * FROM unnest(CAST(:k_shop AS bigint[]), CAST(:k_key AS text[]),
                         CAST(:k_operation AS text[]), CAST(:k_hash AS text[]),
                         CAST(:k_outcome AS text[]), CAST(:k_result AS jsonb[]),
                         CAST(:k_created AS timestamptz[]), CAST(:k_expires AS timestamptz[]))
    RETURNING 1
)
SELECT 1
"""
)


def _array_params(
    new_lots: list[Row],
    changed: list[LotRow],
    book: Book,
    account: Row,
    audits: Sequence[Row],
    keys: Sequence[Row],
) -> Row:
    lot = _columns(new_lots, "lot", {
        "id": "id", "shop": "shop_id", "account": "account_id", "amount": "amount",
        "remaining": "remaining", "status": "status", "source": "source", "reason": "reason",
        "note": "note", "expires": "expires_at", "created": "created_at",
    })
    entry = _columns(book.entries, "e", {
        "id": "id", "shop": "shop_id", "account": "account_id", "sequence": "sequence",
        "kind": "kind", "amount": "amount", "before": "balance_before", "after": "balance_after",
        "lot": "lot_id", "reverses": "reverses_entry_id", "order": "shopify_order_id",
        "refund": "shopify_refund_id", "key": "idempotency_key", "actor": "actor",
        "reason": "reason", "note": "note", "prev": "prev_hash", "hash": "hash",
        "created": "created_at",
    })
    entry["e_meta"] = [Jsonb(e["metadata"]) for e in book.entries]
    allocation = _columns(book.allocations, "a", {
        "shop": "shop_id", "entry": "entry_id", "lot": "lot_id", "amount": "amount",
    })
    audit = _columns(audits, "au", {
        "shop": "shop_id", "actor": "actor", "action": "action", "type": "target_type",
        "target": "target_id", "outcome": "outcome", "error": "error_code",
        "created": "created_at",
    })
    audit["au_details"] = [Jsonb(a["details"]) for a in audits]
    key = _columns(keys, "k", {
        "shop": "shop_id", "key": "key", "operation": "operation", "hash": "request_hash",
        "outcome": "outcome", "created": "created_at", "expires": "expires_at",
    })
    key["k_result"] = [Jsonb(k["result"]) for k in keys]
    changes = {
        "chg_id": [c.id for c in changed],
        "chg_remaining": [c.remaining for c in changed],
        "chg_status": [str(c.status) for c in changed],
    }
    scalars = {
        "account_id": account["id"], "balance": account["balance"],
        "credited": account["lifetime_credited"], "debited": account["lifetime_debited"],
        "last_sequence": account["last_sequence"], "last_hash": account["last_hash"],
        "updated_at": account["updated_at"],
    }
    return lot | changes | entry | allocation | audit | key | scalars


def _columns(rows: Sequence[Row], prefix: str, names: dict[str, str]) -> Row:
    """Column-wise arrays of ``rows``: ``{prefix_param: [row[column], ...]}``."""
    return {f"{prefix}_{param}": [row[column] for row in rows] for param, column in names.items()}


# -- elsewhere: the same rows, statement by statement --------------------------------------


def _statements(
    new_lots: list[Row],
    changed: list[LotRow],
    book: Book,
    account: Row,
    audits: Sequence[Row],
    keys: Sequence[Row],
) -> Iterable[Any]:
    if new_lots:
        yield insert(_table(CreditLot)).values(new_lots)
    for lot in changed:
        yield (
            update(CreditLot)
            .where(CreditLot.id == lot.id)
            .values(remaining=lot.remaining, status=lot.status)
        )
    if book.entries:
        yield insert(_table(LedgerEntry)).values(book.entries)
    if book.allocations:
        yield insert(_table(EntryAllocation)).values(book.allocations)
    values = {name: value for name, value in account.items() if name != "id"}
    yield update(CreditAccount).where(CreditAccount.id == account["id"]).values(**values)
    if audits:
        yield insert(_table(AuditLog)).values(list(audits))
    if keys:
        yield insert(_table(IdempotencyKey)).values(list(keys))


def _table(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


def _account_values(account: AccountRow, now: datetime) -> Row:
    return {
        "id": account.id,
        "balance": account.balance,
        "lifetime_credited": account.lifetime_credited,
        "lifetime_debited": account.lifetime_debited,
        "last_sequence": account.last_sequence,
        "last_hash": account.last_hash,
        "updated_at": now,
    }


def _lot_values(lot: LotRow) -> Row:
    return {
        "id": lot.id,
        "shop_id": lot.shop_id,
        "account_id": lot.account_id,
        "amount": lot.amount,
        "remaining": lot.remaining,
        "status": str(lot.status),
        "source": str(lot.source),
        "reason": lot.reason,
        "note": lot.note,
        "expires_at": lot.expires_at,
        "created_at": lot.created_at,
    }
