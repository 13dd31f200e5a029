"""A locked account's working copy: lots change and entries are posted here, in memory.

Nothing in this module touches the database. The store loads a Book under the account's row
lock, an operation edits it, and the store writes the result back in one round trip; that is
what keeps the lock short.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.allocation import SpendableLot, allocate, spendable
from ledger.chain import canonical_entry, chain_hash
from ledger.errors import LotNotActive
from ledger.kinds import EntryKind, LotSource, LotStatus


@dataclass(slots=True)
class AccountRow:
    id: int
    shop_id: int
    customer_id: int
    currency: str
    balance: int
    lifetime_credited: int
    lifetime_debited: int
    last_sequence: int
    last_hash: str


@dataclass(slots=True)
class LotRow:
    id: uuid.UUID
    shop_id: int
    account_id: int
    amount: int
    remaining: int
    status: str
    source: str
    reason: str
    note: str | None
    expires_at: datetime | None
    created_at: datetime
    is_new: bool = False
    changed: bool = False

    def as_spendable(self) -> SpendableLot:
        return SpendableLot(self.id, self.remaining, self.expires_at, self.created_at)


@dataclass(frozen=True, slots=True)
class Mirror:
    """Mirror the operation into Shopify's native store credit (the shop has native sync on).

    Only the merchant's own changes are mirrored (issue, adjust, revoke): spends, returns and
    refunds come *from* Shopify, and Shopify expires its credits by itself.
    """

    notify: bool = False  # Shopify emails the customer about the credit


@dataclass(frozen=True, slots=True)
class Actor:
    """Who posts, when, and why: stamped on every entry an operation writes."""

    shop_id: int
    now: datetime
    actor: str
    reason: str
    idempotency_key: str | None = None
    # A merchant's key remembers a rejection (a retry gets the same answer, as with Stripe).
    # A business-event key (``order:123:redeem``) does not: the event is still owed, and may
    # succeed once reconciliation has brought in what was missing.
    remember_rejection: bool = True
    mirror: Mirror | None = None


@dataclass
class Book:
    account: AccountRow
    lots: dict[uuid.UUID, LotRow]
    entries: list[dict[str, Any]] = field(default_factory=list)
    allocations: list[dict[str, Any]] = field(default_factory=list)

    # -- lots -------------------------------------------------------------------------------

    def open_lot(
        self,
        by: Actor,
        amount: int,
        *,
        source: LotSource,
        expires_at: datetime | None,
        note: str | None,
    ) -> LotRow:
        lot = LotRow(
            id=uuid.uuid4(),
            shop_id=self.account.shop_id,
            account_id=self.account.id,
            amount=amount,
            remaining=amount,
            status=LotStatus.ACTIVE,
            source=source,
            reason=by.reason,
            note=note,
            expires_at=expires_at,
            created_at=by.now,
            is_new=True,
        )
        self.lots[lot.id] = lot
        return lot

    def take_in_spend_order(self, amount: int, now: datetime) -> list[tuple[uuid.UUID, int]]:
        """Take ``amount`` from live lots, soonest expiry first (raises InsufficientFunds)."""
        taken = allocate(self._spendable(now), amount)
        for lot_id, part in taken:
            self._move(self.lots[lot_id], -part, closing=LotStatus.DEPLETED)
        return [(lot_id, -part) for lot_id, part in taken]

    def take_rest_of(self, lot: LotRow, closing: LotStatus) -> list[tuple[uuid.UUID, int]]:
        """Close ``lot`` as expired or revoked, taking whatever it still holds."""
        if lot.status != LotStatus.ACTIVE:
            raise LotNotActive("This credit lot is no longer active.", lot_id=str(lot.id))
        part = lot.remaining
        self._move(lot, -part, closing=closing)
        return [(lot.id, -part)]

    def close_again(self, lot: LotRow) -> list[tuple[uuid.UUID, int]]:
        """Take back what was just returned to an expired or revoked lot; it stays closed."""
        part = lot.remaining
        lot.remaining = 0
        lot.changed = True
        return [(lot.id, -part)]

    def give_back(self, lot: LotRow, part: int) -> None:
        """Return ``part`` to a lot a spend came from; a depleted lot becomes active again.

        A lot that was expired or revoked meanwhile keeps its status: the caller closes the
        returned amount again at once, as Stripe does for credit reinstated after expiry.
        """
        lot.remaining += part
        lot.changed = True
        if lot.status == LotStatus.DEPLETED:
            lot.status = LotStatus.ACTIVE

    # -- entries ----------------------------------------------------------------------------

    def post(
        self,
        by: Actor,
        kind: EntryKind,
        amount: int,
        *,
        lot_id: uuid.UUID | None = None,
        allocations: list[tuple[uuid.UUID, int]] | None = None,
        reverses_entry_id: uuid.UUID | None = None,
        shopify_order_id: int | None = None,
        shopify_refund_id: int | None = None,
        keyed: bool = True,
        note: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one entry to the account's chain and return the row as it will be stored."""
        account = self.account
        entry: dict[str, Any] = {
            "id": uuid.uuid4(),
            "shop_id": account.shop_id,
            "account_id": account.id,
            "sequence": account.last_sequence + 1,
            "kind": kind.value,
            "amount": amount,
            "balance_before": account.balance,
            "balance_after": account.balance + amount,
            "lot_id": lot_id,
            "reverses_entry_id": reverses_entry_id,
            "shopify_order_id": shopify_order_id,
            "shopify_refund_id": shopify_refund_id,
            # One request may post several entries; only the first carries its key.
            "idempotency_key": by.idempotency_key if keyed else None,
            "actor": by.actor,
            "reason": by.reason,
            "note": note,
            "metadata": metadata or {},
            "created_at": by.now,
            "prev_hash": account.last_hash,
        }
        moves = allocations or []
        entry["hash"] = chain_hash(account.last_hash, canonical_entry(entry, moves))
        self.entries.append(entry)
        self.allocations.extend(
            {"shop_id": account.shop_id, "entry_id": entry["id"], "lot_id": lot, "amount": part}
            for lot, part in moves
        )
        account.last_sequence += 1
        account.last_hash = entry["hash"]
        account.balance += amount
        if amount > 0:
            account.lifetime_credited += amount
        else:
            account.lifetime_debited -= amount
        return entry

    # -- internals --------------------------------------------------------------------------

    def _spendable(self, now: datetime) -> list[SpendableLot]:
        live = (lot for lot in self.lots.values() if lot.status == LotStatus.ACTIVE)
        return spendable((lot.as_spendable() for lot in live), now)

    @staticmethod
    def _move(lot: LotRow, delta: int, *, closing: LotStatus) -> None:
        lot.remaining += delta
        lot.changed = True
        if lot.remaining == 0:
            lot.status = closing
