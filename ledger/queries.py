"""Read models for the merchant's API: customers with balances, accounts with lots, the ledger.

Every query is scoped by shop first; a customer of another shop is simply not found.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select, tuple_
from sqlalchemy.orm import Session, aliased

from ledger.checkpoints import latest_checkpoints
from ledger.kinds import LotStatus
from ledger.money import format_amount
from ledger.views import account_json, entry_json, iso, lot_json
from models import CreditAccount, CreditLot, Customer, LedgerEntry, LedgerEntryArchive


def customer_json(customer: Customer, accounts: list[CreditAccount]) -> dict[str, Any]:
    return {
        "id": str(customer.shopify_customer_id),
        "email": customer.email,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "name": customer.display_name,
        "balances": [
            {"currency": a.currency, "amount": format_amount(a.balance, a.currency)}
            for a in sorted(accounts, key=lambda a: a.currency)
        ],
    }


def search_customers(
    session: Session, shop_id: int, query: str, *, after: int | None, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of customers matching ``query`` (Shopify id, email or name), by our id."""
    stmt = (
        select(Customer).where(Customer.shop_id == shop_id).order_by(Customer.id).limit(limit + 1)
    )
    if after is not None:
        stmt = stmt.where(Customer.id > after)
    query = query.strip()
    if query:
        pattern = f"%{_escape_like(query)}%"
        matches: list[ColumnElement[bool]] = [
            Customer.email.ilike(pattern, escape="\\"),
            Customer.first_name.ilike(pattern, escape="\\"),
            Customer.last_name.ilike(pattern, escape="\\"),
        ]
        if query.isdigit():
            matches.append(Customer.shopify_customer_id == int(query))
        stmt = stmt.where(or_(*matches))
    customers = list(session.scalars(stmt))
    more = len(customers) > limit
    customers = customers[:limit]
    accounts = _accounts_of(session, [c.id for c in customers])
    page = [customer_json(c, accounts[c.id]) for c in customers]
    return page, (customers[-1].id if more else None)


def find_customer_row(session: Session, shop_id: int, shopify_customer_id: int) -> Customer | None:
    stmt = select(Customer).where(
        Customer.shop_id == shop_id, Customer.shopify_customer_id == shopify_customer_id
    )
    return session.execute(stmt).scalar_one_or_none()


def customer_detail(
    session: Session, customer: Customer, *, closed_lots: int | None = None
) -> dict[str, Any]:
    """The customer, each account (one per currency) with its balance and its lots, newest
    first: every lot, or with ``closed_lots`` every active lot (what can still be spent) and
    only the newest ``closed_lots`` closed ones, the number left out in ``closed_lots_hidden``
    (a long-time customer has hundreds of spent and expired lots; a page shows a few)."""
    accounts = _accounts_of(session, [customer.id])[customer.id]
    lots: dict[int, list[CreditLot]] = defaultdict(list)
    hidden: dict[int, int] = {}
    if accounts:
        ids = [a.id for a in accounts]
        if closed_lots is None:
            stmt = select(CreditLot).where(CreditLot.account_id.in_(ids))
        else:
            stmt = _active_and_newest_closed(ids, closed_lots)
            hidden = _closed_lots_beyond(session, ids, closed_lots)
        for lot in session.scalars(stmt.order_by(CreditLot.created_at.desc(), CreditLot.id)):
            lots[lot.account_id].append(lot)
    return {
        "customer": customer_json(customer, accounts),
        "accounts": [
            account_json(a)
            | {"lots": [lot_json(lot, a.currency) for lot in lots[a.id]]}
            | ({"closed_lots_hidden": hidden.get(a.id, 0)} if closed_lots is not None else {})
            for a in sorted(accounts, key=lambda a: a.currency)
        ],
    }


def _active_and_newest_closed(account_ids: list[int], closed: int) -> Select[CreditLot]:
    """Active lots (the partial index) and, per account, the newest ``closed`` closed ones."""
    ranked = (
        select(
            CreditLot.id,
            func.row_number()
            .over(
                partition_by=CreditLot.account_id,
                order_by=(CreditLot.created_at.desc(), CreditLot.id),
            )
            .label("rank"),
        )
        .where(CreditLot.account_id.in_(account_ids), CreditLot.status != LotStatus.ACTIVE.value)
        .subquery()
    )
    newest_closed = select(ranked.c.id).where(ranked.c.rank <= closed)
    return select(CreditLot).where(
        CreditLot.account_id.in_(account_ids),
        or_(CreditLot.status == LotStatus.ACTIVE.value, CreditLot.id.in_(newest_closed)),
    )


def _closed_lots_beyond(session: Session, account_ids: list[int], shown: int) -> dict[int, int]:
    stmt = (
        select(CreditLot.account_id, func.count())
        .where(CreditLot.account_id.in_(account_ids), CreditLot.status != LotStatus.ACTIVE.value)
        .group_by(CreditLot.account_id)
    )
    return {account: max(0, count - shown) for account, count in session.execute(stmt)}


def ledger_page(
    session: Session,
    customer: Customer,
    *,
    currency: str | None,
    before: tuple[str, str] | None,
    limit: int,
) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """Entries newest first; ``before`` is the (created_at, id) of the last entry already seen.

    The customer's entries are read through their accounts' index first (a materialized CTE),
    then sorted: left to itself, PostgreSQL walks the shop's whole history backwards on
    ``ix_ledger_entries_shop_created`` looking for this customer's newest entries, which on a
    shop of a million entries costs tens of milliseconds for a customer who was quiet lately.
    The cost is then the customer's own entry count (2,000: about 3 ms).

    Pages go on into entries retention archived (ledger/archive.py), with the same cursor: the
    archive is read only when the page reaches back to an account's newest archived entry (its
    latest checkpoint's), and the two are merged by (created_at, id). An account's archived
    entries all precede its hot ones, but one account's may be newer than another's hot ones.
    """
    accounts = {a.id: a for a in _accounts_of(session, [customer.id])[customer.id]}
    if currency is not None:
        accounts = {i: a for i, a in accounts.items() if a.currency == currency}
    if not accounts:
        return [], None
    cursor = None
    if before is not None:
        cursor = (datetime.fromisoformat(before[0].replace("Z", "+00:00")), uuid.UUID(before[1]))
    entries = _newest_hot(session, customer.shop_id, list(accounts), cursor, limit + 1)
    archived_until = _newest_archived(session, list(accounts))
    if archived_until is not None and (
        len(entries) <= limit or entries[-1].created_at <= archived_until
    ):
        entries += _newest_archived_entries(session, list(accounts), cursor, limit + 1)
        entries = sorted(entries, key=lambda e: (e.created_at, e.id), reverse=True)[: limit + 1]
    more = len(entries) > limit
    entries = entries[:limit]
    page = [entry_json(e, accounts[e.account_id].currency) for e in entries]
    last = entries[-1] if more else None
    return page, (None if last is None else (iso(last.created_at) or "", str(last.id)))


def _newest_hot(
    session: Session,
    shop_id: int,
    account_ids: list[int],
    before: tuple[datetime, uuid.UUID] | None,
    count: int,
) -> list[Any]:
    """The accounts' ``count`` newest hot entries before the cursor, newest first."""
    theirs = select(LedgerEntry).where(
        LedgerEntry.shop_id == shop_id, LedgerEntry.account_id.in_(account_ids)
    )
    if before is not None:
        theirs = theirs.where(tuple_(LedgerEntry.created_at, LedgerEntry.id) < before)
    found = aliased(LedgerEntry, theirs.cte("customer_entries").prefix_with("MATERIALIZED"))
    stmt = select(found).order_by(found.created_at.desc(), found.id.desc()).limit(count)
    return list(session.scalars(stmt))


def _newest_archived(session: Session, account_ids: list[int]) -> datetime | None:
    """When the newest archived entry of these accounts was written; None if none is."""
    checkpoints = latest_checkpoints(session, account_ids).values()
    return max((checkpoint.last_entry_at for checkpoint in checkpoints), default=None)


def _newest_archived_entries(
    session: Session,
    account_ids: list[int],
    before: tuple[datetime, uuid.UUID] | None,
    count: int,
) -> list[Any]:
    """The accounts' ``count`` newest archived entries before the cursor, newest first."""
    archived = LedgerEntryArchive
    stmt = select(archived).where(archived.account_id.in_(account_ids))
    if before is not None:
        stmt = stmt.where(tuple_(archived.created_at, archived.id) < before)
    stmt = stmt.order_by(archived.created_at.desc(), archived.id.desc()).limit(count)
    return list(session.scalars(stmt))


def _accounts_of(session: Session, customer_ids: list[int]) -> dict[int, list[CreditAccount]]:
    found: dict[int, list[CreditAccount]] = defaultdict(list)
    if customer_ids:
        stmt = select(CreditAccount).where(CreditAccount.customer_id.in_(customer_ids))
        for account in session.scalars(stmt):
            found[account.customer_id].append(account)
    return found


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def outstanding_by_currency(session: Session, shop_id: int) -> list[dict[str, Any]]:
    """The shop's outstanding credit (what customers could spend now), per currency."""
    stmt = (
        select(CreditAccount.currency, func.sum(CreditAccount.balance), func.count())
        .where(CreditAccount.shop_id == shop_id, CreditAccount.balance > 0)
        .group_by(CreditAccount.currency)
        .order_by(CreditAccount.currency)
    )
    return [
        {"currency": currency, "amount": format_amount(int(total), currency), "accounts": count}
        for currency, total, count in session.execute(stmt)
    ]
