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
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from ledger import idempotency
from ledger.accounts import account_of_lot, ensure_account, entry_in_shop
from ledger.allocation import SpendableLot, spend_order
from ledger.book import Actor, Book, LotRow
from ledger.errors import (
    AccountNotFound,
    CurrencyMismatch,
    EntryNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    InvalidExpiry,
    LedgerError,
    LotNotFound,
    NothingToReverse,
)
from ledger.kinds import EntryKind, LotSource, LotStatus
from ledger.money import Money
from ledger.store import lock_account, lock_customer_account, open_book, write_book
from ledger.views import Receipt, account_json, entry_json, lot_json
from models import AuditLog, EntryAllocation, IdempotencyKey, LedgerEntry

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


@dataclass(frozen=True)
class _Request:
    session: Session
    by: Actor
    operation: str
    fingerprint: str


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
) -> Receipt:
    """Credit a customer with a new lot (creating the customer's account if new)."""
    _require_positive(amount)
    _require_future(expires_at, by.now)
    params = _params(
        customer, amount, expires_at=expires_at, source=source, note=note, order=shopify_order_id
    )

    def apply(req: _Request) -> Receipt:
        book = _lock_customer(req, customer, amount, create=True)
        lot = book.open_lot(by, amount.minor, source=source, expires_at=expires_at, note=note)
        entry = book.post(
            by,
            EntryKind.ISSUE,
            amount.minor,
            lot_id=lot.id,
            note=note,
            shopify_order_id=shopify_order_id,
        )
        return _commit(req, book, entry, lot)

    return _run(session, by, "issue", params, apply)


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
    _require_future(expires_at, by.now)
    params = _params(
        customer,
        amount,
        expires_at=expires_at,
        refund=shopify_refund_id,
        order=shopify_order_id,
        note=note,
    )

    def apply(req: _Request) -> Receipt:
        book = _lock_customer(req, customer, amount, create=True)
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
        return _commit(req, book, entry, lot)

    return _run(session, by, "refund_credit", params, apply)


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

    def apply(req: _Request) -> Receipt:
        book = _lock_customer(req, customer, amount, create=False)
        moves = book.take_in_spend_order(amount.minor, by.now)
        entry = book.post(
            by,
            EntryKind.REDEEM,
            -amount.minor,
            allocations=moves,
            note=note,
            shopify_order_id=shopify_order_id,
        )
        return _commit(req, book, entry)

    return _run(session, by, "redeem", params, apply)


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
    _require_future(expires_at, by.now)
    params = _params(customer, amount, expires_at=expires_at, note=note)

    def apply(req: _Request) -> Receipt:
        if amount.minor > 0:
            book = _lock_customer(req, customer, amount, create=True)
            lot = book.open_lot(
                by, amount.minor, source=LotSource.MANUAL, expires_at=expires_at, note=note
            )
            entry = book.post(by, EntryKind.ADJUST, amount.minor, lot_id=lot.id, note=note)
            return _commit(req, book, entry, lot)
        book = _lock_customer(req, customer, amount, create=False)
        moves = book.take_in_spend_order(-amount.minor, by.now)
        entry = book.post(by, EntryKind.ADJUST, amount.minor, allocations=moves, note=note)
        return _commit(req, book, entry)

    return _run(session, by, "adjust", params, apply)


def revoke(session: Session, by: Actor, *, lot_id: uuid.UUID, note: str | None = None) -> Receipt:
    """Take back what is left of one lot.

    Raises:
        LotNotFound: no such lot in this shop.
        LotNotActive: the lot is already depleted, expired or revoked.
    """
    params = {"lot": str(lot_id), "note": note}

    def apply(req: _Request) -> Receipt:
        account_id = account_of_lot(session, by.shop_id, lot_id)
        if account_id is None:
            raise LotNotFound("No such credit lot.", lot_id=str(lot_id))
        book = _lock(req, account_id, extra_lots=[lot_id])
        lot = book.lots[lot_id]
        moves = book.take_rest_of(lot, LotStatus.REVOKED)
        entry = book.post(
            by, EntryKind.REVOKE, moves[0][1], lot_id=lot.id, allocations=moves, note=note
        )
        return _commit(req, book, entry, lot)

    return _run(session, by, "revoke", params, apply)


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

    def apply(req: _Request) -> Receipt:
        original = entry_in_shop(session, by.shop_id, entry_id)
        if original is None or original.kind != EntryKind.REDEEM:
            raise EntryNotFound("No such spend to reverse.", entry_id=str(entry_id))
        book = _lock(req, original.account_id, extra_lots=[])
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
        return _commit(req, book, entry)

    return _run(session, by, "redeem_reversal", params, apply)


# -- the transaction around every use-case --------------------------------------------------


def _run(
    session: Session,
    by: Actor,
    operation: str,
    params: dict[str, Any],
    apply: Callable[[_Request], Receipt],
) -> Receipt:
    key = by.idempotency_key
    # The reason is part of the request (it lands on the lot, entry and audit row).
    request = params | {"reason": by.reason}
    fingerprint = idempotency.request_fingerprint(operation, request) if key else ""
    req = _Request(session, by, operation, fingerprint)
    # No look-up first: a repeated key collides with its stored outcome on the unique index
    # when the effect is written, and the outcome is replayed then (see the except below).
    # First attempts, the common case, save a round trip; replays pay for their retry.
    try:
        receipt = apply(req)
        session.commit()
    except LedgerError as rejection:
        session.rollback()
        twin = _record_rejection(req, rejection)
        if twin is None:
            raise
        return twin
    except IntegrityError:
        # The key was used before (or a concurrent twin committed first): its outcome answers.
        session.rollback()
        stored = _recall_and_end(req) if key else None
        if stored is None:
            session.rollback()
            _refuse_a_spent_key(req)
            raise
        return stored
    return receipt


def _recall_and_end(req: _Request) -> Receipt | None:
    """The key's stored outcome (ending the read), or None with the transaction left open.

    On a miss the operation goes on in the same transaction: under READ COMMITTED each later
    statement sees every commit anyway, and it saves a round trip on the hot path.
    """
    assert req.by.idempotency_key is not None
    try:
        stored = idempotency.recall(
            req.session, req.by.shop_id, req.by.idempotency_key, req.operation, req.fingerprint
        )
    except LedgerError:
        req.session.rollback()
        raise
    if stored is None:
        return None
    req.session.rollback()
    return Receipt.from_json(stored, replayed=True)


def _refuse_a_spent_key(req: _Request) -> None:
    """A key whose stored outcome was purged still names its entry: it never applies twice."""
    key = req.by.idempotency_key
    if key is None:
        return
    entry_id = req.session.scalar(
        select(LedgerEntry.id).where(
            LedgerEntry.shop_id == req.by.shop_id, LedgerEntry.idempotency_key == key
        )
    )
    req.session.rollback()
    if entry_id is not None:
        raise IdempotencyConflict(
            "This Idempotency-Key was used for an earlier request whose outcome is no longer "
            "kept; use a new key.",
            key=key,
            entry_id=str(entry_id),
        )


def _record_rejection(req: _Request, rejection: LedgerError) -> Receipt | None:
    """Commit the audit row and the key's rejected outcome.

    Returns the receipt of a concurrent twin with the same key that succeeded first (its
    outcome is the key's outcome then); raises the twin's stored rejection if it was refused.
    """
    by = req.by
    rows: list[Insert] = [insert(AuditLog).values(**_audit(by, req.operation, None, rejection))]
    rows += [
        insert(IdempotencyKey).values(**key)
        for key in _key_rows(req, rejection.to_dict(), rejected=True)
    ]
    try:
        for row in rows:
            req.session.execute(row)
        req.session.commit()
    except IntegrityError:
        req.session.rollback()
        twin = _recall_and_end(req)
        if twin is None:
            req.session.rollback()
            raise
        return twin
    return None


def _lock_customer(req: _Request, customer: int, amount: Money, *, create: bool) -> Book:
    """Find and lock the customer's account in ``amount``'s currency (creating it if asked).

    Raises:
        InsufficientFunds: the customer has no account in that currency and none is created.
    """
    session, by = req.session, req.by
    account = lock_customer_account(session, by.shop_id, customer, amount.currency)
    if account is None:
        if not create:
            raise InsufficientFunds(
                "The customer has no store credit in this currency.",
                requested=abs(amount.minor),  # adjust() debits with a negative amount
                available=0,
            )
        account = lock_account(
            session, ensure_account(session, by.shop_id, customer, amount.currency, by.now)
        )
        assert account is not None
    return open_book(session, account)


def _lock(req: _Request, account_id: int, extra_lots: list[uuid.UUID] | None = None) -> Book:
    account = lock_account(req.session, account_id)
    if account is None:  # pragma: no cover - ids come from rows read in this transaction
        raise AccountNotFound("No such account.", account_id=account_id)
    return open_book(req.session, account, extra_lots or [])


def _commit(req: _Request, book: Book, entry: dict[str, Any], lot: LotRow | None = None) -> Receipt:
    """Build the receipt, then write the book, the audit row and the key in one go."""
    currency = book.account.currency
    shown = [entry_json(e, currency) for e in book.entries]
    receipt = Receipt(
        entry=next(view for row, view in zip(book.entries, shown, strict=True) if row is entry),
        account=account_json(book.account),
        lot=None if lot is None else lot_json(lot, currency),
        entries=shown,
    )
    by = req.by
    audit = _audit(by, req.operation, entry, None, currency=currency)
    write_book(req.session, book, by.now, audits=[audit], keys=_key_rows(req, receipt.to_json()))
    return receipt


def _key_rows(
    req: _Request, result: dict[str, Any], *, rejected: bool = False
) -> list[dict[str, Any]]:
    """The key row storing this outcome, or none when the request carries no key."""
    by = req.by
    if by.idempotency_key is None:
        return []
    key = idempotency.remember(
        by.shop_id,
        by.idempotency_key,
        req.operation,
        req.fingerprint,
        now=by.now,
        result=result,
        rejected=rejected,
    )
    return [key]


def _audit(
    by: Actor,
    action: str,
    entry: dict[str, Any] | None,
    error: LedgerError | None,
    *,
    currency: str | None = None,
) -> dict[str, Any]:
    details: dict[str, Any] = {"reason": by.reason}
    if entry is not None:
        details |= {
            "amount": entry["amount"],
            "currency": currency,
            "account_id": entry["account_id"],
            "lot_id": _str(entry["lot_id"]),
        }
    if error is not None:
        details |= {"message": error.message, **error.details}
    return {
        "shop_id": by.shop_id,
        "actor": by.actor,
        "action": action,
        "target_type": "ledger_entry",
        "target_id": None if entry is None else str(entry["id"]),
        "outcome": "failure" if error else "success",
        "error_code": error.code if error else None,
        "details": details,
        "created_at": by.now,
    }


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
    lots = sorted((_spendable(book.lots[lot]) for lot in returnable), key=spend_order, reverse=True)
    moves: list[tuple[uuid.UUID, int]] = []
    for lot in lots:
        part = min(returnable[lot.id], wanted)
        if part:
            moves.append((lot.id, part))
            wanted -= part
    return moves


def _close_returned_dead_lots(book: Book, by: Actor, lots: list[LotRow]) -> None:
    for lot in lots:
        if lot.status == LotStatus.EXPIRED:
            closer = replace(by, actor=EXPIRY_ACTOR, reason="expired")
            moves = book.close_again(lot)
            book.post(
                closer, EntryKind.EXPIRE, moves[0][1], lot_id=lot.id, allocations=moves, keyed=False
            )
        elif lot.status == LotStatus.REVOKED:
            moves = book.close_again(lot)
            book.post(
                by, EntryKind.REVOKE, moves[0][1], lot_id=lot.id, allocations=moves, keyed=False
            )


def _spendable(lot: LotRow) -> SpendableLot:
    return lot.as_spendable()


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


def _params(customer: int, amount: Money, **extra: Any) -> dict[str, Any]:
    return {"customer": customer, "amount": _money(amount), **extra}


def _money(amount: Money | None) -> list[Any] | None:
    return None if amount is None else [amount.minor, amount.currency]


def _str(value: object) -> str | None:
    return None if value is None else str(value)
