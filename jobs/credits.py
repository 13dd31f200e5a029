"""Credit jobs: expiry (reconciliation and native sync come with the jobs issue)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import tenancy
from extensions import current_session
from ledger.expiry import ExpiryReport, expire_due

log = logging.getLogger(__name__)


def expire_credits(shop_id: int | None = None, now_iso: str | None = None) -> ExpiryReport:
    """Expire every lot due at ``now_iso`` (default: now), in one shop or in all (a
    cross-shop sweep, for row-level security)."""
    now = datetime.fromisoformat(now_iso) if now_iso else datetime.now(UTC)
    with tenancy.shop(shop_id) if shop_id is not None else tenancy.all_shops():
        report = expire_due(current_session(), now=now, shop_id=shop_id)
    log.info("expired %d lots in %d accounts", report.lots, report.accounts)
    return report
