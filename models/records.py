"""Records kept beside the ledger: idempotency keys and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId


class IdempotencyKey(Base):
    """The first outcome of a keyed request, success or rejection, replayed to every retry."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("shop_id", "key"),
        CheckConstraint("outcome IN ('succeeded', 'rejected')", "outcome_known"),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    key: Mapped[str] = mapped_column(String(255))
    operation: Mapped[str] = mapped_column(String(32))
    request_hash: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    result: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class AuditLog(Base):
    """Who did what to which record, and whether it worked (failures are audited too)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        CheckConstraint("outcome IN ('success', 'failure')", "outcome_known"),
        Index("ix_audit_log_shop_created", "shop_id", "created_at"),
        # The merchant's audit log filtered by who, by what, or to failures: each an index
        # scan in time order, however rare the match among a million ledger audits.
        Index("ix_audit_log_shop_actor_created", "shop_id", "actor", "created_at"),
        Index("ix_audit_log_shop_action_created", "shop_id", "action", "created_at"),
        Index(
            "ix_audit_log_shop_failures",
            "shop_id",
            "created_at",
            postgresql_where=text("outcome = 'failure'"),
            sqlite_where=text("outcome = 'failure'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
