"""Bulk issues: a merchant's CSV, validated whole, then issued row by row in batches."""

from __future__ import annotations

import uuid
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
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId


class BulkImport(Base):
    """One uploaded file; the same file (by hash) uploaded again is the same import."""

    __tablename__ = "bulk_imports"
    __table_args__ = (
        UniqueConstraint("shop_id", "file_hash"),
        CheckConstraint(
            "state IN ('invalid', 'validated', 'issuing', 'finished', 'failed')", "state_known"
        ),
        Index("ix_bulk_imports_shop_created", "shop_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    file_hash: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    total_rows: Mapped[int] = mapped_column(default=0)
    valid_rows: Mapped[int] = mapped_column(default=0)
    issued_rows: Mapped[int] = mapped_column(default=0)
    failed_rows: Mapped[int] = mapped_column(default=0)
    # The dry-run report: per-row errors (capped) and totals per currency.
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class BulkImportRow(Base):
    """One valid row of an import, and what became of it (its entry, or why it failed)."""

    __tablename__ = "bulk_import_rows"
    __table_args__ = (
        UniqueConstraint("import_id", "row_number"),
        CheckConstraint("state IN ('pending', 'issued', 'failed')", "state_known"),
        CheckConstraint("amount > 0", "amount_positive"),
        Index("ix_bulk_import_rows_pending", "import_id", "state", "row_number"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    import_id: Mapped[int] = mapped_column(ForeignKey("bulk_imports.id", ondelete="CASCADE"))
    row_number: Mapped[int]
    shopify_customer_id: Mapped[int | None] = mapped_column(BigInteger)
    email: Mapped[str | None] = mapped_column(String(320))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    expires_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    entry_id: Mapped[uuid.UUID | None]
    error: Mapped[str | None] = mapped_column(Text)
