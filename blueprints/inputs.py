"""Strict reading of request input: a malformed body is a 4xx that names the problem.

Nothing here writes; every check runs before the ledger is called, so bad input changes
nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import string
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from flask import request

from blueprints.errors import APIError
from ledger.money import Money

IDEMPOTENCY_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "-_.:~/+=")


def json_object() -> dict[str, Any]:
    """The request's body as a JSON object (415 for another type, 400 for anything else)."""
    if not request.is_json:
        raise APIError(415, "unsupported_media_type", "Send the body as application/json.")
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise APIError(400, "invalid_json", "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise APIError(400, "invalid_json", "The body must be a JSON object.")
    return body


def json_body(required: Collection[str], optional: Collection[str] = ()) -> dict[str, Any]:
    """The request's JSON object, refusing other types, unknown fields and missing ones."""
    body = json_object()
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise APIError(400, "unknown_field", f"Unknown field: {unknown[0]}.", fields=unknown)
    missing = [name for name in required if body.get(name) is None]
    if missing:
        raise APIError(422, "missing_field", f"{missing[0]} is required.", fields=missing)
    return body


def money(body: dict[str, Any]) -> Money:
    """``amount`` (a decimal string) in ``currency`` — refusing floats and excess decimals."""
    return Money.parse(body["amount"], body["currency"])


def text(body: dict[str, Any], name: str, *, max_length: int, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise APIError(422, "missing_field", f"{name} is required.", fields=[name])
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise APIError(422, "invalid_field", f"{name} must be a non-empty string.", field=name)
    if len(value) > max_length:
        raise APIError(
            422, "invalid_field", f"{name} is longer than {max_length} characters.", field=name
        )
    if not storable(value):
        message = f"{name} must not contain NUL or unpaired surrogate characters."
        raise APIError(422, "invalid_field", message, field=name)
    return value.strip()


def storable(value: str) -> bool:
    """PostgreSQL text holds neither NUL nor a lone surrogate (which JSON can carry)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def timestamp(body: dict[str, Any], name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    parsed = utc_time(value) if isinstance(value, str) else None
    if parsed is None:
        raise APIError(
            422, "invalid_field", f"{name} must be an ISO-8601 time with a zone.", field=name
        )
    return parsed


def utc_time(text: str) -> datetime | None:
    """An ISO-8601 time with a zone, in UTC; None if it is not one or has no UTC equivalent
    (9999-12-31T23:00-05:00 is in year 10000). In UTC also because PostgreSQL refuses
    offsets past ±15:59, which ISO-8601 allows."""
    try:
        parsed = datetime.fromisoformat(text)
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not set(key) <= IDEMPOTENCY_KEY_CHARS:
        raise APIError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1–255 letters, digits or -_.:~/+=.",
        )
    return key


def cursor_in(name: str = "cursor") -> Any:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        raise APIError(400, "invalid_cursor", "The cursor is not one this API gave out.") from None


def cursor_out(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def page_size(default: int = 50, maximum: int = 200) -> int:
    raw = request.args.get("limit", str(default))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:  # not "²"
        raise APIError(400, "invalid_limit", f"limit must be a whole number from 1 to {maximum}.")
    return int(raw)
