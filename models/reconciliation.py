"""Findings: differences between the ledger and Shopify (or within the ledger) to look at."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId


class ReconciliationFinding(Base):
    """One open (or resolved) difference, recorded once per ``finding_key`` in a shop.

    Webhook handlers record findings too: a native spend larger than the ledger holds
    (``unmatched_native_spend``) waits here until reconciliation imports the missing credit.
    """

    __tablename__ = "reconciliation_findings"
    __table_args__ = (
        UniqueConstraint("shop_id", "finding_key"),
        Index(
            "ix_reconciliation_findings_open",
            "shop_id",
            "first_seen_at",
            postgresql_where=text("resolved_at IS NULL"),
            sqlite_where=text("resolved_at IS NULL"),
        ),
        # The merchant's list, newest first, all kinds or one.
        Index("ix_reconciliation_findings_shop_id", "shop_id", "id"),
        Index("ix_reconciliation_findings_shop_kind", "shop_id", "kind", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(48))
    finding_key: Mapped[str] = mapped_column(String(255))
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("credit_accounts.id", ondelete="CASCADE")
    )
    shopify_customer_id: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    expected: Mapped[int | None] = mapped_column(BigInteger)
    actual: Mapped[int | None] = mapped_column(BigInteger)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    resolution: Mapped[str | None] = mapped_column(Text)
    # Set when a person resolved it (marked resolved, or repaired): their actor and note.
    # A run resolves findings without them.
    resolved_by: Mapped[str | None] = mapped_column(String(255))
    resolution_note: Mapped[str | None] = mapped_column(String(1000))


class ReconciliationRun(Base):
    """One reconciliation of a shop: what was checked, what was found, what was repaired."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (
        CheckConstraint("kind IN ('incremental', 'full')", "kind_known"),
        CheckConstraint("state IN ('running', 'finished', 'failed')", "state_known"),
        Index("ix_reconciliation_runs_shop_started", "shop_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    accounts_checked: Mapped[int] = mapped_column(BigInteger, default=0)
    entries_checked: Mapped[int] = mapped_column(BigInteger, default=0)
    native_checked: Mapped[int] = mapped_column(BigInteger, default=0)
    findings_opened: Mapped[int] = mapped_column(default=0)
    findings_resolved: Mapped[int] = mapped_column(default=0)
    repairs: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
