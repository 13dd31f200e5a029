"""Reading a locked account into a Book, and writing the Book back.

On PostgreSQL every write of one operation goes out as a single statement (data-modifying
CTEs), so the account's row lock is held for exactly three round trips: lock, read lots,
write. Elsewhere (SQLite, the embedded default) the same statements run one after another.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, literal, literal_column, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert, Update

from ledger.book import AccountRow, Book, LotRow
from ledger.kinds import LotStatus
from models import CreditAccount, CreditLot, EntryAllocation, LedgerEntry

Write = Insert | Update

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


def open_book(session: Session, account: AccountRow, extra_lots: Iterable[uuid.UUID] = ()) -> Book:
    """The account's active lots (and any other lots named), read after the lock is held."""
    wanted = list(extra_lots)
    condition = CreditLot.status == LotStatus.ACTIVE.value
    if wanted:
        condition = condition | CreditLot.id.in_(wanted)
    stmt = select(*_LOT_COLUMNS).where(CreditLot.account_id == account.id, condition)
    lots = {row.id: LotRow(*row) for row in session.execute(stmt)}
    return Book(account=account, lots=lots)


def write_book(session: Session, book: Book, now: datetime, *extra: Write) -> None:
    """Persist everything the operation changed in ``book``, plus ``extra`` rows."""
    statements: list[Write] = []
    new_lots = [_lot_values(lot) for lot in book.lots.values() if lot.is_new]
    if new_lots:
        statements.append(_table(CreditLot).insert().values(new_lots))
    statements.extend(
        update(CreditLot)
        .where(CreditLot.id == lot.id)
        .values(remaining=lot.remaining, status=lot.status)
        for lot in book.lots.values()
        if lot.changed and not lot.is_new
    )
    if book.entries:
        statements.append(_table(LedgerEntry).insert().values(book.entries))
    if book.allocations:
        statements.append(_table(EntryAllocation).insert().values(book.allocations))
    account = book.account
    statements.append(
        update(CreditAccount)
        .where(CreditAccount.id == account.id)
        .values(
            balance=account.balance,
            lifetime_credited=account.lifetime_credited,
            lifetime_debited=account.lifetime_debited,
            last_sequence=account.last_sequence,
            last_hash=account.last_hash,
            updated_at=now,
        )
    )
    statements.extend(extra)
    execute_writes(session, statements)


def execute_writes(session: Session, statements: Sequence[Write]) -> None:
    """Run independent INSERT/UPDATE statements: one round trip on PostgreSQL, else in order.

    Foreign keys are checked at the end of the statement, so the order inside the CTE does
    not matter; each row is written exactly once, so no CTE sees another's effect.
    """
    if session.get_bind().dialect.name != "postgresql":
        for statement in statements:
            session.execute(statement)
        return
    combined: Select[Any] = select(literal(1))
    for index, statement in enumerate(statements):
        combined = combined.add_cte(statement.returning(literal_column("1")).cte(f"w{index}"))
    session.execute(combined)


def _table(model: type[CreditLot | LedgerEntry | EntryAllocation]) -> Table:
    return cast(Table, model.__table__)


def _lot_values(lot: LotRow) -> dict[str, Any]:
    return {
        "id": lot.id,
        "shop_id": lot.shop_id,
        "account_id": lot.account_id,
        "amount": lot.amount,
        "remaining": lot.remaining,
        "status": lot.status,
        "source": lot.source,
        "reason": lot.reason,
        "note": lot.note,
        "expires_at": lot.expires_at,
        "created_at": lot.created_at,
    }
