"""Idempotency keys, the way Stripe keeps them.

A key remembers the first outcome of a request, the rejection included, for at least 24 hours:
the same key with the same request gets that outcome again; with a different request it is a
conflict. The key row is written in the same transaction as the effect, so concurrent
duplicates collide on the unique (shop, key) index and only one effect survives.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from ledger.errors import IdempotencyConflict, LedgerError
from models import IdempotencyKey

KEY_TTL = timedelta(hours=48)
MAX_KEY_LENGTH = 255


def request_fingerprint(operation: str, params: dict[str, Any]) -> str:
    """SHA-256 of the operation and its parameters in canonical JSON."""
    doc = json.dumps([operation, params], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


def recall(
    session: Session, shop_id: int, key: str, operation: str, fingerprint: str
) -> dict[str, Any] | None:
    """The stored result for ``key``, or None if the key is new.

    Raises:
        IdempotencyConflict: the key was used for a different request.
        LedgerError: the first request with this key was rejected; this is that rejection.
    """
    stmt = select(
        IdempotencyKey.operation,
        IdempotencyKey.request_hash,
        IdempotencyKey.outcome,
        IdempotencyKey.result,
    ).where(IdempotencyKey.shop_id == shop_id, IdempotencyKey.key == key)
    row = session.execute(stmt).one_or_none()
    if row is None:
        return None
    if row.operation != operation or row.request_hash != fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used for a different request.", key=key
        )
    if row.outcome == "rejected":
        raise LedgerError.from_dict(row.result)
    result: dict[str, Any] = row.result
    return result


def remember(
    shop_id: int,
    key: str,
    operation: str,
    fingerprint: str,
    *,
    now: datetime,
    result: dict[str, Any],
    rejected: bool = False,
) -> dict[str, Any]:
    """The key row that stores an outcome; the caller writes it in the effect's transaction."""
    return {
        "shop_id": shop_id,
        "key": key,
        "operation": operation,
        "request_hash": fingerprint,
        "outcome": "rejected" if rejected else "succeeded",
        "result": result,
        "created_at": now,
        "expires_at": now + KEY_TTL,
    }


def purge_expired(session: Session, now: datetime) -> int:
    """Delete keys past their lifetime; a reuse after that is a new request (as at Stripe)."""
    stmt = delete(IdempotencyKey).where(IdempotencyKey.expires_at < now)
    result = cast(CursorResult[Any], session.execute(stmt))
    return result.rowcount
