"""A native (Shopify) store-credit transaction, in the ledger's terms.

Shared by the sync job (does an ambiguous attempt's transaction exist?) and reconciliation
(which native transactions does the ledger lack?). Built from Admin API answers by
``jobs/native.py``; the ledger itself never talks to Shopify.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ledger.money import Money


@dataclass(frozen=True)
class NativeTransaction:
    """One native store-credit transaction, as the ledger needs it.

    ``amount`` is signed as Shopify shows it: credits and returned debits above zero, debits
    and expirations below.
    """

    kind: str  # credit | debit | debit_revert | expiration
    gid: str | None  # expirations have none
    amount: Money
    created_at: datetime
    event: str
    origin_transaction: int | None = None  # the order transaction behind it, if any
    origin_order: int | None = None
    expires_at: datetime | None = None  # credits
    credit_gid: str | None = None  # expirations: the credit they expired

    @property
    def key(self) -> str:
        """The finding key naming this transaction."""
        if self.gid is not None:
            return f"native:{self.gid}"
        return f"native:{self.credit_gid}:expiration"
