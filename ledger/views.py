"""JSON shapes of ledger records: amounts as decimal strings beside their currency (MoneyV2).

The same functions render a row just written (a dict or a working-copy dataclass) and a row
read back (an ORM object), so a replayed response is byte-for-byte the first one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ledger.money import format_amount


def _get(row: Any, name: str) -> Any:
    if isinstance(row, Mapping):
        return row["metadata" if name == "meta" else name]
    return getattr(row, name)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _id(value: uuid.UUID | int | None) -> str | None:
    return None if value is None else str(value)


def entry_json(entry: Any, currency: str) -> dict[str, Any]:
    return {
        "id": str(_get(entry, "id")),
        "sequence": _get(entry, "sequence"),
        "kind": _get(entry, "kind"),
        "amount": format_amount(_get(entry, "amount"), currency),
        "currency": currency,
        "balance_after": format_amount(_get(entry, "balance_after"), currency),
        "lot_id": _id(_get(entry, "lot_id")),
        "reverses_entry_id": _id(_get(entry, "reverses_entry_id")),
        "shopify_order_id": _id(_get(entry, "shopify_order_id")),
        "shopify_refund_id": _id(_get(entry, "shopify_refund_id")),
        "actor": _get(entry, "actor"),
        "reason": _get(entry, "reason"),
        "note": _get(entry, "note"),
        "created_at": iso(_get(entry, "created_at")),
        "hash": _get(entry, "hash"),
    }


def lot_json(lot: Any, currency: str) -> dict[str, Any]:
    return {
        "id": str(lot.id),
        "amount": format_amount(lot.amount, currency),
        "remaining": format_amount(lot.remaining, currency),
        "currency": currency,
        "status": lot.status,
        "source": lot.source,
        "reason": lot.reason,
        "note": lot.note,
        "expires_at": iso(lot.expires_at),
        "created_at": iso(lot.created_at),
    }


def account_json(account: Any) -> dict[str, Any]:
    currency = account.currency
    return {
        "id": str(account.id),
        "currency": currency,
        "balance": format_amount(account.balance, currency),
        "lifetime_credited": format_amount(account.lifetime_credited, currency),
        "lifetime_debited": format_amount(account.lifetime_debited, currency),
        "entries": account.last_sequence,
    }


_ENTRY_FIELDS = (
    "id",
    "sequence",
    "kind",
    "amount",
    "currency",
    "balance_after",
    "lot_id",
    "reverses_entry_id",
    "shopify_order_id",
    "shopify_refund_id",
    "actor",
    "reason",
    "note",
    "created_at",
    "hash",
)
_LOT_FIELDS = (
    "id",
    "amount",
    "remaining",
    "currency",
    "status",
    "source",
    "reason",
    "note",
    "expires_at",
    "created_at",
)
_ACCOUNT_FIELDS = ("id", "currency", "balance", "lifetime_credited", "lifetime_debited", "entries")


@dataclass(frozen=True)
class Receipt:
    """What one ledger operation did: its main entry, the lot it made or hit, the account after.

    ``entries`` lists every entry written (a return onto an expired lot writes two).
    """

    entry: dict[str, Any]
    account: dict[str, Any]
    lot: dict[str, Any] | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "lot": self.lot,
            "account": self.account,
            "entries": self.entries,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, replayed: bool) -> Receipt:
        """Rebuild a stored receipt, field order included (JSONB does not keep key order)."""
        lot = data.get("lot")
        return cls(
            entry=_ordered(data["entry"], _ENTRY_FIELDS),
            account=_ordered(data["account"], _ACCOUNT_FIELDS),
            lot=None if lot is None else _ordered(lot, _LOT_FIELDS),
            entries=[_ordered(entry, _ENTRY_FIELDS) for entry in data.get("entries", [])],
            replayed=replayed,
        )


def _ordered(doc: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: doc[name] for name in fields}
