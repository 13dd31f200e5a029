"""Housekeeping jobs (run on the periodic schedule, jobs/schedule.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

import tenancy
from blueprints.settings import current_settings
from extensions import current_session
from ledger import idempotency
from ledger.archive import SCHEDULED_MIN_ENTRIES, archive_ledger
from ledger.checkpoints import CheckpointKeys
from ledger.privacy import erase_shop
from models import Shop

log = logging.getLogger(__name__)

ERASER = "job:erase_due_shops"


def archive_old_entries(now_iso: str | None = None) -> dict[str, int]:
    """Archive ledger entries older than LEDGER_RETENTION_DAYS (unset: nothing, ever).

    Each account's prefix moves behind a signed checkpoint (ledger/archive.py), once it is
    SCHEDULED_MIN_ENTRIES long. Resumable: a run that stops keeps the accounts it finished.
    """
    settings = current_settings()
    days = settings.ledger_retention_days
    if days is None:
        log.info("LEDGER_RETENTION_DAYS is not set: the ledger is not archived")
        return {"accounts": 0, "entries": 0, "refused": 0}
    now = datetime.fromisoformat(now_iso) if now_iso else datetime.now(UTC)
    with tenancy.all_shops():  # a sweep of every shop (row-level security)
        report = archive_ledger(
            current_session(),
            before=now - timedelta(days=days),
            keys=CheckpointKeys(settings.archive_signing_keys),
            now=now,
            min_entries=SCHEDULED_MIN_ENTRIES,
        )
    for line in report.lines():
        (log.error if line.lstrip().startswith("refused") else log.info)(line)
    return {
        "accounts": report.accounts_archived,
        "entries": report.entries,
        "refused": len(report.refused),
    }


def purge_idempotency_keys(now_iso: str | None = None) -> int:
    """Delete idempotency keys past their lifetime (≥ 24 h after first use); returns how many."""
    now = datetime.fromisoformat(now_iso) if now_iso else datetime.now(UTC)
    with tenancy.all_shops():
        deleted = idempotency.purge_expired(current_session(), now)
        current_session().commit()
    log.info("purged %d expired idempotency keys", deleted)
    return deleted


def erase_due_shops(now_iso: str | None = None) -> int:
    """Erase every shop still uninstalled whose redaction is due; returns how many.

    Shopify sends shop/redact 48 hours after an uninstall, but a delivery can be lost: this
    erases the shop anyway once ``redact_due_at`` has passed. Each shop is erased in its own
    transaction under its row lock, after checking again that it is still due, so a shop
    reinstalled meanwhile (the install clears ``redact_due_at``) or erased by the delivery is
    left alone, and a second run erases nothing twice. Audited by ``erase_shop``.
    """
    now = datetime.fromisoformat(now_iso) if now_iso else datetime.now(UTC)
    session = current_session()
    due = list(session.scalars(select(Shop.id).where(*_due(now)).order_by(Shop.redact_due_at)))
    session.commit()
    erased = 0
    for shop_id in due:
        with tenancy.shop(shop_id):  # each shop's erasure sees that shop's rows alone
            erased += _erase_if_still_due(session, shop_id, now)
    log.info("erased %d shops whose redaction was due", erased)
    return erased


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """Still uninstalled, not erased, redaction due (an install clears ``redact_due_at``)."""
    return (
        Shop.uninstalled_at.is_not(None),
        Shop.erased_at.is_(None),
        Shop.redact_due_at <= now,
    )


def _erase_if_still_due(session: Session, shop_id: int, now: datetime) -> bool:
    shop = session.scalars(
        select(Shop).where(Shop.id == shop_id, *_due(now)).with_for_update()
    ).one_or_none()
    if shop is None:
        session.rollback()
        return False
    counts = erase_shop(session, shop, None, now, actor=ERASER)
    log.info(
        "erased shop %d (%s): redaction due since %s; %s",
        shop.id,
        shop.domain,
        shop.redact_due_at,
        counts,
    )
    return True
