"""Which lots a debit takes from: soonest expiry first, never-expiring last, ties by age.

That is the order Shopify's native store credit spends in, so both ledgers agree on which
credit an order used.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ledger.errors import InsufficientFunds


@dataclass(frozen=True, slots=True)
class SpendableLot:
    id: uuid.UUID
    remaining: int
    expires_at: datetime | None
    created_at: datetime


def spend_order(lot: SpendableLot) -> tuple[bool, datetime, datetime, str]:
    """Sort key: expiring lots before non-expiring, sooner before later, older before newer."""
    never = lot.expires_at is None
    return (never, lot.expires_at or lot.created_at, lot.created_at, str(lot.id))


def spendable(lots: Iterable[SpendableLot], now: datetime) -> list[SpendableLot]:
    """Lots that may still be spent at ``now`` (a lot is dead at its expires_at), in spend order."""
    alive = [lot for lot in lots if lot.expires_at is None or lot.expires_at > now]
    return sorted(alive, key=spend_order)


def allocate(lots: Sequence[SpendableLot], amount: int) -> list[tuple[uuid.UUID, int]]:
    """Take ``amount`` from ``lots`` (already in spend order): ``[(lot_id, taken), ...]``.

    Raises:
        InsufficientFunds: the lots hold less than ``amount``; nothing is taken.
    """
    if amount <= 0:
        raise ValueError("allocate() takes a positive amount")
    available = sum(lot.remaining for lot in lots)
    if available < amount:
        raise InsufficientFunds(
            "The customer's store credit does not cover this amount.",
            requested=amount,
            available=available,
        )
    taken: list[tuple[uuid.UUID, int]] = []
    left = amount
    for lot in lots:
        if left == 0:
            break
        take = min(lot.remaining, left)
        if take:
            taken.append((lot.id, take))
            left -= take
    return taken
