"""The ledger's use-cases: issue, redeem, refund_credit, redeem_reversal, adjust, revoke.

Each takes the session and an Actor (shop, current time, actor, reason, idempotency key) and
is one transaction: resolve the account, lock its row once, change the lots in memory, write
lots, entries, allocations, the audit row and the idempotency key together, commit. A
rejection (insufficient funds, a closed lot…) is committed too, as an audit row and the key's
stored outcome, and then raised.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger.accounts import account_of_lot, entry_in_shop
from ledger.allocation import spend_order
from ledger.book import Actor, Book, LotRow
from ledger.errors import (
    CurrencyMismatch,
    EntryNotFound,
    InvalidAmount,
    InvalidExpiry,
    LotNotFound,
    NothingToReverse,
)
from ledger.kinds import EntryKind, LotSource, LotStatus
from ledger.money import Money
from ledger.store import open_book
from ledger.transaction import Request, commit, lock, lock_customer, run
from ledger.views import Receipt
from models import EntryAllocation, LedgerEntry

__all__ = [
    "Actor",
    "Receipt",
    "adjust",
    "issue",
    "redeem",
    "redeem_reversal",
    "refund_credit",
    "revoke",
]

EXPIRY_ACTOR = "system:expiry"


# -- the use-cases --------------------------------------------------------------------------


def issue(
    session: Session,
    by: Actor,
    *,
    customer: int,
    amount: Money,
    expires_at: datetime | None = None,
    source: LotSource = LotSource.MANUAL,
    note: str | None = None,
    shopify_order_id: int | None = None,
    expires_in_days: int | None = None,
) -> Receipt:
    """Credit a customer with a new lot (creating the customer's account if new).

    ``expires_in_days`` (instead of ``expires_at``: the shop's default expiry) makes the lot
    expire that many days after ``by.now``. The request is the number of days, not the time
    it yields, so a retry under the same idempotency key a moment later is the same request.
    """
    _require_positive(amount)
    params = _params(
        customer, amount, expires_at=expires_at, source=source, note=note, order=shopify_order_id
    )
    if expires_in_days is not None:
        if expires_at is not None or expires_in_days < 1:
            raise InvalidExpiry(
                "Give expires_at or a positive expires_in_days, not both.",
                expires_in_days=expires_in_days,
            )
        params["expires_in_days"] = expires_in_days
        expires_at = by.now + timedelta(days=expires_in_days)

    def apply(req: Request) -> Receipt:
        book = lock_customer(req, customer, amount, create=True)
        lot = book.open_lot(by, amount.minor, source=source, expires_at=expires_at, note=note)
        entry = book.post(
            by,
            EntryKind.ISSUE,
            amount.minor,
            lot_id=lot.id,
            note=note,
            shopify_order_id=shopify_order_id,
        )
        return commit(req, book, entry, lot)

    return run(session, by, "issue", params, apply, check=_future(expires_at, by.now))


def refund_credit(
    session: Session,
    by: Actor,
    *,
    customer: int,
    amount: Money,
    shopify_refund_id: int | None = None,
    shopify_order_id: int | None = None,
    expires_at: datetime | None = None,
    note: str | None = None,
) -> Receipt:
    """Credit a refund paid to store credit, as a new lot of source ``refund``."""
    _require_positive(amount)
    params = _params(
        customer,
        amount,
        expires_at=expires_at,
        refund=shopify_refund_id,
        order=shopify_order_id,
        note=note,
    )

    def apply(req: Request) -> Receipt:
        book = lock_customer(req, customer, amount, create=True)
        lot = book.open_lot(
            by, amount.minor, source=LotSource.REFUND, expires_at=expires_at, note=note
        )
        entry = book.post(
            by,
            EntryKind.REFUND_CREDIT,
            amount.minor,
            lot_id=lot.id,
            note=note,
            shopify_refund_id=shopify_refund_id,
            shopify_order_id=shopify_order_id,
        )
        return commit(req, book, entry, lot)

    return run(session, by, "refund_credit", params, apply, check=_future(expires_at, by.now))


def redeem(
    session: Session,
    by: Actor,
    *,
    customer: int,
    amount: Money,
    shopify_order_id: int | None = None,
    note: str | None = None,
) -> Receipt:
    """Spend credit: take ``amount`` from live lots, soonest expiry first.

    Raises:
        InsufficientFunds: live lots hold less than ``amount`` (recorded, then raised).
    """
    _require_positive(amount)
    params = _params(customer, amount, order=shopify_order_id, note=note)

    def apply(req: Request) -> Receipt:
        book = lock_customer(req, customer, amount, create=False)
        moves = book.take_in_spend_order(amount.minor, by.now)
        entry = book.post(
            by,
            EntryKind.REDEEM,
            -amount.minor,
            allocations=moves,
            note=note,
            shopify_order_id=shopify_order_id,
        )
        return commit(req, book, entry)

    return run(session, by, "redeem", params, apply)


def adjust(
    session: Session,
    by: Actor,
    *,
    customer: int,
    amount: Money,
    expires_at: datetime | None = None,
    note: str | None = None,
) -> Receipt:
    """Correct a balance: up opens a lot, down takes from live lots like a spend."""
    if amount.minor == 0:
        raise InvalidAmount("An adjustment must not be zero.", amount="0")
    params = _params(customer, amount, expires_at=expires_at, note=note)

    def apply(req: Request) -> Receipt:
        if amount.minor > 0:
            book = lock_customer(req, customer, amount, create=True)
            lot = book.open_lot(
                by, amount.minor, source=LotSource.MANUAL, expires_at=expires_at, note=note
            )
            entry = book.post(by, EntryKind.ADJUST, amount.minor, lot_id=lot.id, note=note)
            return commit(req, book, entry, lot)
        book = lock_customer(req, customer, amount, create=False)
        moves = book.take_in_spend_order(-amount.minor, by.now)
        entry = book.post(by, EntryKind.ADJUST, amount.minor, allocations=moves, note=note)
        return commit(req, book, entry)

    return run(session, by, "adjust", params, apply, check=_future(expires_at, by.now))


def revoke(session: Session, by: Actor, *, lot_id: uuid.UUID, note: str | None = None) -> Receipt:
    """Take back what is left of one lot.

    Raises:
        LotNotFound: no such lot in this shop.
        LotNotActive: the lot is already depleted, expired or revoked.
    """
    params = {"lot": str(lot_id), "note": note}

    def apply(req: Request) -> Receipt:
        account_id = account_of_lot(session, by.shop_id, lot_id)
        if account_id is None:
            raise LotNotFound("No such credit lot.", lot_id=str(lot_id))
        book = lock(req, account_id, extra_lots=[lot_id])
        lot = book.lots[lot_id]
        moves = book.take_rest_of(lot, LotStatus.REVOKED)
        entry = book.post(
            by, EntryKind.REVOKE, moves[0][1], lot_id=lot.id, allocations=moves, note=note
        )
        return commit(req, book, entry, lot)

    return run(session, by, "revoke", params, apply)


def redeem_reversal(
    session: Session,
    by: Actor,
    *,
    entry_id: uuid.UUID,
    amount: Money | None = None,
    shopify_order_id: int | None = None,
) -> Receipt:
    """Give a spend back to the lots it came from, with their original expiry.

    ``amount`` defaults to everything not yet given back. The lot spent last is refilled
    first. A lot that expired (or was revoked) since takes its share and is closed again at
    once by a second entry, so credit never outlives its expiry by being returned.

    Raises:
        EntryNotFound: no such redeem in this shop.
        NothingToReverse: the spend was already given back (in full, or ``amount`` is more).
    """
    if amount is not None:
        _require_positive(amount)
    params = {"entry": str(entry_id), "amount": _money(amount), "order": shopify_order_id}

    def apply(req: Request) -> Receipt:
        original = entry_in_shop(session, by.shop_id, entry_id)
        if original is None or original.kind != EntryKind.REDEEM:
            raise EntryNotFound("No such spend to reverse.", entry_id=str(entry_id))
        book = lock(req, original.account_id, extra_lots=[])
        returnable = _returnable(session, book, original)
        moves = _split_return(returnable, book, amount, original)
        for lot_id, part in moves:
            book.give_back(book.lots[lot_id], part)
        entry = book.post(
            by,
            EntryKind.REDEEM_REVERSAL,
            sum(p for _, p in moves),
            allocations=moves,
            reverses_entry_id=original.id,
            shopify_order_id=shopify_order_id or original.shopify_order_id,
        )
        _close_returned_dead_lots(book, by, [book.lots[lot_id] for lot_id, _ in moves])
        return commit(req, book, entry)

    return run(session, by, "redeem_reversal", params, apply)


# -- reversal helpers -----------------------------------------------------------------------


def _returnable(session: Session, book: Book, original: LedgerEntry) -> dict[uuid.UUID, int]:
    """Per lot: what the spend took minus what earlier reversals already gave back."""
    taken = select(EntryAllocation.lot_id, EntryAllocation.amount).where(
        EntryAllocation.entry_id == original.id
    )
    given = (
        select(EntryAllocation.lot_id, func.sum(EntryAllocation.amount))
        .join(LedgerEntry, LedgerEntry.id == EntryAllocation.entry_id)
        .where(LedgerEntry.reverses_entry_id == original.id)
        .group_by(EntryAllocation.lot_id)
    )
    returned = {lot: int(amount) for lot, amount in session.execute(given)}
    left = {lot: -amount - returned.get(lot, 0) for lot, amount in session.execute(taken)}
    missing = [lot for lot in left if lot not in book.lots]
    if missing:  # closed lots are not in the book yet: read them under the same lock
        book.lots.update(open_book(session, book.account, missing).lots)
    return {lot: part for lot, part in left.items() if part > 0}


def _split_return(
    returnable: dict[uuid.UUID, int], book: Book, amount: Money | None, original: LedgerEntry
) -> list[tuple[uuid.UUID, int]]:
    total = sum(returnable.values())
    wanted = total if amount is None else amount.minor
    if amount is not None and amount.currency != book.account.currency:
        raise CurrencyMismatch(
            "The reversal's currency differs from the spend's.",
            expected=book.account.currency,
            got=amount.currency,
        )
    if total == 0 or wanted > total:
        raise NothingToReverse(
            "Nothing (or not that much) of this spend is left to give back.",
            entry_id=str(original.id),
            returnable=total,
        )
    # Refill the lot spent last first: the reverse of the spend order.
    lots = sorted(
        (book.lots[lot].as_spendable() for lot in returnable), key=spend_order, reverse=True
    )
    moves: list[tuple[uuid.UUID, int]] = []
    for lot in lots:
        part = min(returnable[lot.id], wanted)
        if part:
            moves.append((lot.id, part))
            wanted -= part
    return moves


def _close_returned_dead_lots(book: Book, by: Actor, lots: list[LotRow]) -> None:
    for lot in lots:
        if lot.status == LotStatus.EXPIRED or _past_expiry(lot, by.now):
            # A depleted lot past its expiry was never expired (it held nothing); the money
            # returned to it must not outlive that expiry, so it expires now, as it would have.
            closer = replace(by, actor=EXPIRY_ACTOR, reason="expired")
            if lot.status == LotStatus.EXPIRED:
                moves = book.close_again(lot)
            else:
                moves = book.take_rest_of(lot, LotStatus.EXPIRED)
            book.post(
                closer, EntryKind.EXPIRE, moves[0][1], lot_id=lot.id, allocations=moves, keyed=False
            )
        elif lot.status == LotStatus.REVOKED:
            moves = book.close_again(lot)
            book.post(
                by, EntryKind.REVOKE, moves[0][1], lot_id=lot.id, allocations=moves, keyed=False
            )


# -- small checks ---------------------------------------------------------------------------


def _require_positive(amount: Money) -> None:
    if amount.minor <= 0:
        raise InvalidAmount("The amount must be greater than zero.", currency=amount.currency)


def _require_future(expires_at: datetime | None, now: datetime) -> None:
    if expires_at is None:
        return
    if expires_at.tzinfo is None:
        raise InvalidExpiry("expires_at must carry a time zone.")
    if expires_at <= now:
        raise InvalidExpiry("expires_at must be in the future.", expires_at=expires_at.isoformat())


def _future(expires_at: datetime | None, now: datetime) -> Callable[[], None]:
    """The expiry check, run by ``run`` after a replay had its chance: a retry of a request
    that succeeded gets its receipt even once the expiry it asked for has passed."""
    return lambda: _require_future(expires_at, now)


def _params(customer: int, amount: Money, **extra: Any) -> dict[str, Any]:
    return {"customer": customer, "amount": _money(amount), **extra}


def _money(amount: Money | None) -> list[Any] | None:
    return None if amount is None else [amount.minor, amount.currency]


def _past_expiry(lot: LotRow, now: datetime) -> bool:
    return lot.status == LotStatus.ACTIVE and lot.expires_at is not None and lot.expires_at <= now
