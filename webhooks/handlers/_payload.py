"""Reading the few fields handlers need out of Shopify's REST-shaped webhook payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from webhooks.topics import Delivery, Ignored

# Shopify ids are positive 64-bit integers (BIGINT in our tables).
MAX_ID = 2**63 - 1


def numeric_id(value: Any, what: str) -> int:
    """A Shopify id given as a number, a digit string or a GID (``gid://shopify/X/123``)."""
    if isinstance(value, bool):
        raise Ignored(f"{what} is not an id")
    if isinstance(value, int) and 0 < value <= MAX_ID:
        return value
    if isinstance(value, str):
        tail = value.rsplit("/", 1)[-1]
        if tail.isascii() and tail.isdigit() and 0 < int(tail) <= MAX_ID:
            return int(tail)
    raise Ignored(f"the payload has no usable {what}")


def timestamp(value: Any) -> datetime | None:
    """An ISO 8601 time from the payload, or None if absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def changed_at(delivery: Delivery, now: datetime) -> datetime:
    """When Shopify made the change: payload ``updated_at``, else trigger time, else now."""
    return timestamp(delivery.payload.get("updated_at")) or delivery.triggered_at or now


def optional_text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None
