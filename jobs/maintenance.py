"""Housekeeping jobs (run on the periodic schedule, jobs/schedule.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

import tenancy
from extensions import current_session
from ledger import idempotency
from ledger.privacy import erase_shop
from models import Shop

log = logging.getLogger(__name__)

ERASER = "job:erase_due_shops"


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
