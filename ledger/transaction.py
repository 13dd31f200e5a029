"""The transaction around every ledger operation, and its idempotency.

``run`` gives an operation one transaction: the operation locks its account (``lock`` or
``lock_customer``), changes a Book, and ``commit`` writes the book with its audit row and its
key row in one go. A rejection is rolled back, then recorded (audit row and the key's stored
rejection) and raised. A key seen before collides with its stored outcome on the unique index
when the effect is written, and that outcome is the answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from ledger import idempotency, outbox
from ledger.accounts import ensure_account
from ledger.book import Actor, Book, LotRow
from ledger.errors import AccountNotFound, IdempotencyConflict, InsufficientFunds, LedgerError
from ledger.money import Money
from ledger.store import lock_account, lock_customer_account, open_book, write_book
from ledger.views import Receipt, account_json, entry_json, lot_json
from models import AuditLog, IdempotencyKey, LedgerEntry, LedgerEntryArchive


@dataclass(frozen=True)
class Request:
    session: Session
    by: Actor
    operation: str
    fingerprint: str


# -- the transaction around every use-case --------------------------------------------------


def run(
    session: Session,
    by: Actor,
    operation: str,
    params: dict[str, Any],
    apply: Callable[[Request], Receipt],
    *,
    check: Callable[[], None] | None = None,
) -> Receipt:
    key = by.idempotency_key
    # The reason is part of the request (it lands on the lot, entry and audit row).
    request = params | {"reason": by.reason}
    fingerprint = idempotency.request_fingerprint(operation, request) if key else ""
    req = Request(session, by, operation, fingerprint)
    if check is not None:
        replayed = _replay_if_check_fails(req, check)
        if replayed is not None:
            return replayed
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
        stored = _recall(req)
        if stored is None:
            _refuse_a_spent_key(req)
            raise
        return stored
    return receipt


def _replay_if_check_fails(req: Request, check: Callable[[], None]) -> Receipt | None:
    """Run a time-dependent input check (an expiry still in the future); if it fails, the
    key's stored outcome answers (a retry after the expiry passed gets its first receipt)."""
    try:
        check()
    except LedgerError:
        stored = _recall(req)
        if stored is None:
            raise
        return stored
    return None


def _recall(req: Request) -> Receipt | None:
    """The key's stored outcome, if any (a stored rejection is raised); ends the transaction."""
    key = req.by.idempotency_key
    if key is None:
        return None
    try:
        stored = idempotency.recall(
            req.session, req.by.shop_id, key, req.operation, req.fingerprint
        )
    finally:
        req.session.rollback()
    return None if stored is None else Receipt.from_json(stored, replayed=True)


def _refuse_a_spent_key(req: Request) -> None:
    """A key whose stored outcome was purged still names its entry: it never applies twice."""
    key = req.by.idempotency_key
    if key is None:
        return
    entry_id = req.session.scalar(
        select(LedgerEntry.id).where(
            LedgerEntry.shop_id == req.by.shop_id, LedgerEntry.idempotency_key == key
        )
    )
    if entry_id is None:  # archived since (ledger/archive.py): the key stays spent all the same
        entry_id = req.session.scalar(
            select(LedgerEntryArchive.id).where(
                LedgerEntryArchive.shop_id == req.by.shop_id,
                LedgerEntryArchive.idempotency_key == key,
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


def _record_rejection(req: Request, rejection: LedgerError) -> Receipt | None:
    """Commit the audit row and the key's rejected outcome.

    Returns the receipt of a concurrent twin with the same key that succeeded first (its
    outcome is the key's outcome then); raises the twin's stored rejection if it was refused.
    """
    by = req.by
    if not by.remember_rejection:
        # The key's first success may be what made this attempt fail (a spend replayed after
        # the balance fell): that success is the answer, not this rejection.
        twin = _recall(req)
        if twin is not None:
            return twin
    rows: list[Insert] = [insert(AuditLog).values(**_audit(by, req.operation, None, rejection))]
    if by.remember_rejection:
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
        twin = _recall(req)
        if twin is None:
            raise
        return twin
    return None


def lock_customer(req: Request, customer: int, amount: Money, *, create: bool) -> Book:
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


def lock(req: Request, account_id: int, extra_lots: list[uuid.UUID] | None = None) -> Book:
    account = lock_account(req.session, account_id)
    if account is None:  # pragma: no cover - ids come from rows read in this transaction
        raise AccountNotFound("No such account.", account_id=account_id)
    return open_book(req.session, account, extra_lots or [])


def commit(req: Request, book: Book, entry: dict[str, Any], lot: LotRow | None = None) -> Receipt:
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
    if by.mirror is not None:
        outbox.add(req.session, by, book, entry, lot)
    return receipt


def _key_rows(
    req: Request, result: dict[str, Any], *, rejected: bool = False
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


def _str(value: object) -> str | None:
    return None if value is None else str(value)
