"""Housekeeping jobs (their schedule comes with the periodic-jobs table)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from extensions import current_session
from ledger import idempotency

log = logging.getLogger(__name__)


def purge_idempotency_keys(now_iso: str | None = None) -> int:
    """Delete idempotency keys past their lifetime (≥ 24 h after first use); returns how many."""
    now = datetime.fromisoformat(now_iso) if now_iso else datetime.now(UTC)
    deleted = idempotency.purge_expired(current_session(), now)
    current_session().commit()
    log.info("purged %d expired idempotency keys", deleted)
    return deleted
