"""Reading a locked account into a Book, and writing the Book back.

The account's row lock is the only lock a change takes, and it is held for four round trips:
find-and-lock, read the live lots, write everything, commit. On PostgreSQL the write is one fixed
statement of data-modifying CTEs fed by JSON arrays; elsewhere (SQLite, the embedded default)
the same rows go out as ordinary statements.

Whose balance changed is noted for after the commit (``touched_customers``): storefront caches
outside the ledger invalidate from that note, so the ledger itself knows nothing of them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, text, update
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

# session.info key: the set of (shop_id, shopify_customer_id) whose accounts this transaction
# wrote. Writes on PostgreSQL are one raw statement ORM events never see, so write_book notes
# them here; an after_commit listener (storefront/tracking.py) invalidates the storefront
# caches of exactly those customers and clears the set, an after_rollback listener clears it.
TOUCHED_CUSTOMERS = "ledger.touched_customers"

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
LOT_COLUMNS = (  # what a LotRow is read from (also by expiry)
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


# Built once: constructing a select costs more Python than running it on the hot path.
_LOCK_ACCOUNT = (
    select(*_ACCOUNT_COLUMNS).where(CreditAccount.id == bindparam("account_id")).with_for_update()
)
_LOCK_CUSTOMER_ACCOUNT = (
    select(*_ACCOUNT_COLUMNS)
    .join(Customer, Customer.id == CreditAccount.customer_id)
    .where(
        Customer.shop_id == bindparam("shop_id"),
        Customer.shopify_customer_id == bindparam("customer"),
        CreditAccount.currency == bindparam("currency"),
    )
    .with_for_update(of=CreditAccount)
)
_LIVE_LOTS = select(*LOT_COLUMNS).where(
    CreditLot.account_id == bindparam("account_id"),
    CreditLot.status == LotStatus.ACTIVE.value,
)
_LIVE_AND_NAMED_LOTS = select(*LOT_COLUMNS).where(
    CreditLot.account_id == bindparam("account_id"),
    (CreditLot.status == LotStatus.ACTIVE.value)
    | CreditLot.id.in_(bindparam("lot_ids", expanding=True)),
)


def lock_account(session: Session, account_id: int) -> AccountRow | None:
    """Take the account's row lock for the rest of the transaction and read it."""
    row = session.connection().execute(_LOCK_ACCOUNT, {"account_id": account_id}).one_or_none()
    return None if row is None else AccountRow(*row)


def lock_customer_account(
    session: Session, shop_id: int, shopify_customer_id: int, currency: str
) -> AccountRow | None:
    """Find a customer's account in one currency and lock it, in one round trip.

    Only the account row is locked (``FOR UPDATE OF``); after a wait PostgreSQL re-reads the
    locked row, so what is returned is the account as its last writer committed it.
    """
    params = {"shop_id": shop_id, "customer": shopify_customer_id, "currency": currency}
    row = session.connection().execute(_LOCK_CUSTOMER_ACCOUNT, params).one_or_none()
    return None if row is None else AccountRow(*row)


def open_book(session: Session, account: AccountRow, extra_lots: Iterable[uuid.UUID] = ()) -> Book:
    """The account's active lots (and any other lots named), read after the lock is held."""
    # Core on the session's connection: the ORM's execute adds nothing for plain rows.
    connection = session.connection()
    wanted = list(extra_lots)
    if wanted:
        rows = connection.execute(
            _LIVE_AND_NAMED_LOTS, {"account_id": account.id, "lot_ids": wanted}
        )
    else:
        rows = connection.execute(_LIVE_LOTS, {"account_id": account.id})
    return Book(account=account, lots={row.id: LotRow(*row) for row in rows})


def write_book(
    session: Session,
    book: Book,
    now: datetime,
    *,
    audits: Sequence[Row] = (),
    keys: Sequence[Row] = (),
) -> None:
    """Persist everything ``book`` changed, with the operation's audit rows and key rows."""
    rows = _Rows(
        new_lots=[_lot_values(lot) for lot in book.lots.values() if lot.is_new],
        changed=[lot for lot in book.lots.values() if lot.changed and not lot.is_new],
        entries=book.entries,
        allocations=book.allocations,
        account=_account_values(book.account, now),
        audits=audits,
        keys=keys,
    )
    account = book.account
    shopify_customer_id: int
    if session.get_bind().dialect.name == "postgresql":
        # The statement's final SELECT answers whose account it was, in the same round trip.
        params = _pg_params(rows) | {"customer_id": account.customer_id}
        shopify_customer_id = session.connection().execute(_WRITE_ALL, params).scalar_one()
    else:
        for statement in _statements(rows):
            session.execute(statement)
        found = session.execute(_SHOPIFY_CUSTOMER_ID, {"id": account.customer_id})
        shopify_customer_id = found.scalar_one()
    touched_customers(session).add((account.shop_id, shopify_customer_id))


def touched_customers(session: Session) -> set[tuple[int, int]]:
    """The (shop_id, shopify_customer_id) written in this session since its last commit."""
    touched: set[tuple[int, int]] = session.info.setdefault(TOUCHED_CUSTOMERS, set())
    return touched


@dataclass(frozen=True)
class _Rows:
    """Every row one write puts in the database (the same for both ways of writing)."""

    new_lots: list[Row]
    changed: list[LotRow]
    entries: list[Row]
    allocations: list[Row]
    account: Row
    audits: Sequence[Row]
    keys: Sequence[Row]


# -- PostgreSQL: one statement ------------------------------------------------------------

# Each section's rows travel as one JSON array, expanded by json_to_recordset: the statement's
# text and its parameter count never change, so SQLAlchemy compiles it once, psycopg keeps its
# parsing, and the server runs it as a prepared statement.
_WRITE_ALL = text(
    """
WITH lots AS (
    INSERT INTO credit_lots (id, shop_id, account_id, amount, remaining, status, source, reason,
        note, expires_at, created_at)
    SELECT id, shop_id, account_id, amount, remaining, status, source, reason, note, expires_at,
        created_at
    FROM json_to_recordset(CAST(:lots AS json)) AS r (
        id uuid, shop_id bigint, account_id bigint, amount bigint, remaining bigint,
        status text, source text, reason text, note text, expires_at timestamptz,
        created_at timestamptz)
    RETURNING 1
), changed AS (
    UPDATE credit_lots AS t SET remaining = r.remaining, status = r.status
    FROM json_to_recordset(CAST(:changed AS json)) AS r (id uuid, remaining bigint, status text)
    WHERE t.id = r.id
    RETURNING 1
), entries AS (
    INSERT INTO ledger_entries (id, shop_id, account_id, sequence, kind, amount, balance_before,
        balance_after, lot_id, reverses_entry_id, shopify_order_id, shopify_refund_id,
        idempotency_key, actor, reason, note, metadata, prev_hash, hash, created_at)
    SELECT id, shop_id, account_id, sequence, kind, amount, balance_before, balance_after,
        lot_id, reverses_entry_id, shopify_order_id, shopify_refund_id, idempotency_key, actor,
        reason, note, metadata, prev_hash, hash, created_at
    FROM json_to_recordset(CAST(:entries AS json)) AS r (
        id uuid, shop_id bigint, account_id bigint, sequence bigint, kind text, amount bigint,
        balance_before bigint, balance_after bigint, lot_id uuid, reverses_entry_id uuid,
        shopify_order_id bigint, shopify_refund_id bigint, idempotency_key text, actor text,
        reason text, note text, metadata jsonb, prev_hash text, hash text,
        created_at timestamptz)
    RETURNING 1
), allocations AS (
    INSERT INTO entry_allocations (shop_id, entry_id, lot_id, amount)
    SELECT shop_id, entry_id, lot_id, amount FROM json_to_recordset(CAST(:allocations AS json))
        AS r (shop_id bigint, entry_id uuid, lot_id uuid, amount bigint)
    RETURNING 1
), audits AS (
    INSERT INTO audit_log (shop_id, actor, action, target_type, target_id, outcome, error_code,
        details, created_at)
    SELECT shop_id, actor, action, target_type, target_id, outcome, error_code, details,
        created_at
    FROM json_to_recordset(CAST(:audits AS json)) AS r (
        shop_id bigint, actor text, action text, target_type text, target_id text,
        outcome text, error_code text, details jsonb, created_at timestamptz)
    RETURNING 1
), keys AS (
    INSERT INTO idempotency_keys (shop_id, key, operation, request_hash, outcome, result,
        created_at, expires_at)
    SELECT shop_id, key, operation, request_hash, outcome, result, created_at, expires_at
    FROM json_to_recordset(CAST(:keys AS json)) AS r (
        shop_id bigint, key text, operation text, request_hash text, outcome text,
        result jsonb, created_at timestamptz, expires_at timestamptz)
    RETURNING 1
), account AS (
    UPDATE credit_accounts SET balance = :balance, lifetime_credited = :lifetime_credited,
        lifetime_debited = :lifetime_debited, last_sequence = :last_sequence,
        last_hash = :last_hash, updated_at = :updated_at
    WHERE id = :id
    RETURNING 1
)
SELECT shopify_customer_id FROM customers WHERE id = :customer_id
"""
)
_SHOPIFY_CUSTOMER_ID = select(Customer.shopify_customer_id).where(Customer.id == bindparam("id"))


def _pg_params(rows: _Rows) -> Row:
    moves = [
        {"id": lot.id, "remaining": lot.remaining, "status": lot.status} for lot in rows.changed
    ]
    sections = {
        "lots": rows.new_lots,
        "changed": moves,
        "entries": rows.entries,
        "allocations": rows.allocations,
        "audits": rows.audits,
        "keys": rows.keys,
    }
    return rows.account | {name: _json(section) for name, section in sections.items()}


def _json(rows: Sequence[Row]) -> str:
    return json.dumps(rows, default=_json_value, separators=(",", ":"))


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# -- elsewhere: the same rows, statement by statement --------------------------------------


def _statements(rows: _Rows) -> Iterable[Any]:
    if rows.new_lots:
        yield insert(_table(CreditLot)).values(rows.new_lots)
    for lot in rows.changed:
        yield (
            update(CreditLot)
            .where(CreditLot.id == lot.id)
            .values(remaining=lot.remaining, status=lot.status)
        )
    if rows.entries:
        yield insert(_table(LedgerEntry)).values(rows.entries)
    if rows.allocations:
        yield insert(_table(EntryAllocation)).values(rows.allocations)
    account = rows.account
    values = {name: value for name, value in account.items() if name != "id"}
    yield update(CreditAccount).where(CreditAccount.id == account["id"]).values(**values)
    if rows.audits:
        yield insert(_table(AuditLog)).values(list(rows.audits))
    if rows.keys:
        yield insert(_table(IdempotencyKey)).values(list(rows.keys))


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
