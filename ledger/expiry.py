"""Expiry: every lot past its ``expires_at`` gets one ``expire`` entry for what it still held.

Set-based and resumable: due lots are read in batches from a partial index, each batch is
one transaction, and accounts are locked in id order (the same account-then-lots order as
every spend, so expiry and spending never deadlock). The lot's status is re-read under the
lock, so a lot expires exactly once however many runs overlap, and never before its time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.book import Actor
from ledger.kinds import EntryKind, LotStatus
from ledger.store import lock_account, open_book, write_book
from models import CreditLot

EXPIRY_ACTOR = "system:expiry"
BATCH_SIZE = 1000


@dataclass
class ExpiryReport:
    lots: int = 0
    accounts: int = 0
    batches: int = 0
    amounts: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def expire_due(
    session: Session, *, now: datetime, shop_id: int | None = None, batch_size: int = BATCH_SIZE
) -> ExpiryReport:
    """Expire every lot due at ``now`` (in one shop, or all), committing batch by batch."""
    report = ExpiryReport()
    while True:
        due = _due_batch(session, now, shop_id, batch_size)
        if not due:
            session.rollback()
            return report
        # Lock accounts in id order, like every other writer, so batches never deadlock.
        for account_id in sorted({account_id for account_id, _ in due}):
            _expire_account(session, account_id, now, report)
        session.commit()
        report.batches += 1


def _due_batch(
    session: Session, now: datetime, shop_id: int | None, limit: int
) -> list[tuple[int, object]]:
    stmt = (
        select(CreditLot.account_id, CreditLot.id)
        .where(
            CreditLot.status == LotStatus.ACTIVE.value,
            CreditLot.expires_at.is_not(None),
            CreditLot.expires_at <= now,
        )
        .order_by(CreditLot.expires_at)  # the partial index's order: no sort of all due lots
        .limit(limit)
    )
    if shop_id is not None:
        stmt = stmt.where(CreditLot.shop_id == shop_id)
    return [(row[0], row[1]) for row in session.execute(stmt)]


def _expire_account(session: Session, account_id: int, now: datetime, report: ExpiryReport) -> None:
    account = lock_account(session, account_id)
    if account is None:  # pragma: no cover - the lot's foreign key keeps its account
        return
    book = open_book(session, account)
    by = Actor(shop_id=account.shop_id, now=now, actor=EXPIRY_ACTOR, reason="expired")
    due = [
        lot
        for lot in book.lots.values()
        if lot.status == LotStatus.ACTIVE and lot.expires_at is not None and lot.expires_at <= now
    ]
    if not due:  # another run got here first
        return
    total = 0
    for lot in sorted(due, key=lambda lot: (lot.expires_at, lot.created_at, str(lot.id))):
        moves = book.take_rest_of(lot, LotStatus.EXPIRED)
        book.post(by, EntryKind.EXPIRE, moves[0][1], lot_id=lot.id, allocations=moves, keyed=False)
        total -= moves[0][1]
    audit = {
        "shop_id": account.shop_id,
        "actor": EXPIRY_ACTOR,
        "action": "expire",
        "target_type": "credit_account",
        "target_id": str(account.id),
        "outcome": "success",
        "error_code": None,
        "details": {"lots": len(due), "amount": total, "currency": account.currency},
        "created_at": now,
    }
    write_book(session, book, now, audits=[audit])
    report.lots += len(due)
    report.accounts += 1
    report.amounts[account.currency] += total
