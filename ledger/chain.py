"""The per-account hash chain: ``hash = SHA-256(prev_hash ‖ canonical entry)``.

The canonical form is sorted-key, compact JSON of every field that gives the entry its
meaning, its allocations included, with times as UTC ISO-8601 to the microsecond. Anyone
holding an export can re-verify the chain offline with nothing but this module.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64

CHAINED_FIELDS = (
    "id",
    "shop_id",
    "account_id",
    "sequence",
    "kind",
    "amount",
    "balance_before",
    "balance_after",
    "lot_id",
    "reverses_entry_id",
    "shopify_order_id",
    "shopify_refund_id",
    "idempotency_key",
    "actor",
    "reason",
    "note",
    "metadata",
    "created_at",
)


def canonical_entry(entry: Mapping[str, Any], allocations: Iterable[tuple[Any, int]]) -> bytes:
    """The bytes that are hashed for ``entry`` (a row mapping) and its ``(lot_id, amount)``s."""
    return canonical_plain({name: _plain(entry[name]) for name in CHAINED_FIELDS}, allocations)


def canonical_plain(doc: dict[str, Any], allocations: Iterable[tuple[Any, int]]) -> bytes:
    """``canonical_entry`` of an entry already in plain values: ``doc`` holds exactly the
    CHAINED_FIELDS, ids as strings and times as ``utc_text``. Verification reads rows that way
    to re-hash a million entries quickly; ``doc`` is used up (it gets the allocations)."""
    doc["allocations"] = sorted([str(lot_id), amount] for lot_id, amount in allocations)
    return _ENCODER.encode(doc).encode()


# What json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False) builds on
# every call, built once (verification encodes a million entries in a full run).
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def utc_text(moment: datetime) -> str:
    """A time as the chain spells it: UTC, to the microsecond, with a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value
