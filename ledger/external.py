"""Importing a change made to native store credit outside CreditCraft as an ``external`` entry.

Staff can credit or debit a customer's store credit in Shopify admin or POS; Shopify sends no
webhook for it. Reconciliation finds such native transactions and, with the shop's auto-repair
on, brings them into the ledger here, so that ledger and native balance agree again:

- a native credit becomes a new lot of source ``external`` (expiring when Shopify's credit
  expires) and an ``external`` entry that opens it;
- a native debit becomes an ``external`` entry that takes from live lots in spend order,
  soonest expiry first, which is also the order Shopify debited them in.

The entry's key is ``native:{transaction GID}``: an import lands once, however many runs (or
concurrent runs) see the same native transaction. An import refused for want of funds is not
remembered under the key: the debit is still owed, and lands once the missing credit is in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from ledger.book import Actor
from ledger.errors import CurrencyMismatch, InvalidAmount
from ledger.kinds import EntryKind, LotSource
from ledger.money import Money
from ledger.transaction import Request, commit, lock, run
from ledger.views import Receipt
from models import CreditLot

IMPORT_ACTOR = "system:reconciliation"
IMPORT_REASON = "Changed in Shopify outside CreditCraft (imported by reconciliation)"


@dataclass(frozen=True)
class ExternalMovement:
    """One native transaction to import: a credit (amount > 0) or a debit (amount < 0)."""

    native_gid: str
    amount: Money
    occurred_at: datetime
    event: str
    expires_at: datetime | None = None  # a credit's native expiresAt


def import_key(native_gid: str) -> str:
    """The idempotency key (and entry key) an imported native transaction lands under."""
    return f"native:{native_gid}"


def import_external(
    session: Session,
    shop_id: int,
    account_id: int,
    movement: ExternalMovement,
    *,
    now: datetime,
    actor: str = IMPORT_ACTOR,
) -> Receipt:
    """Write ``movement`` into the account once (a replay returns the first receipt).

    Raises:
        InvalidAmount: the movement is zero.
        CurrencyMismatch: the account holds another currency.
        InsufficientFunds: a debit larger than the account's live lots (not remembered).
    """
    if movement.amount.minor == 0:
        raise InvalidAmount("A native transaction of zero cannot be imported.")
    by = Actor(
        shop_id,
        now,
        actor,
        IMPORT_REASON,
        idempotency_key=import_key(movement.native_gid),
        remember_rejection=False,
    )
    params = {
        "account": account_id,
        "native": movement.native_gid,
        "amount": [movement.amount.minor, movement.amount.currency],
        "expires_at": movement.expires_at.isoformat() if movement.expires_at else None,
    }
    metadata = {
        "native_transaction": movement.native_gid,
        "native_created_at": movement.occurred_at.isoformat(),
        "native_event": movement.event,
    }

    def apply(req: Request) -> Receipt:
        book = lock(req, account_id)
        if book.account.currency != movement.amount.currency:
            raise CurrencyMismatch(
                "The native transaction's currency differs from the account's.",
                expected=book.account.currency,
                got=movement.amount.currency,
            )
        minor = movement.amount.minor
        if minor > 0:
            lot = book.open_lot(
                by, minor, source=LotSource.EXTERNAL, expires_at=movement.expires_at, note=None
            )
            entry = book.post(by, EntryKind.EXTERNAL, minor, lot_id=lot.id, metadata=metadata)
            receipt = commit(req, book, entry, lot)
            # The lot is the native credit: later runs (and native sync) recognise it by this.
            req.session.execute(
                update(CreditLot)
                .where(CreditLot.id == lot.id)
                .values(native_transaction_gid=movement.native_gid)
            )
            return receipt
        moves = book.take_in_spend_order(-minor, by.now)
        entry = book.post(by, EntryKind.EXTERNAL, minor, allocations=moves, metadata=metadata)
        return commit(req, book, entry)

    return run(session, by, "import_external", params, apply)
