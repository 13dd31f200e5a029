"""The append-only ledger: one entry per change of an account, and the lots each change touched."""

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
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ledger.kinds import EntryKind, sql_in
from models.base import Base, BigId


class EntryColumns:
    """Every column of a ledger entry but the reversal's link, whose target differs: the hot
    table's own rows, or the archive's. ``ledger_entries_archive`` keeps the row as it was."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("credit_accounts.id"))
    sequence: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_before: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    lot_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("credit_lots.id"))
    shopify_order_id: Mapped[int | None] = mapped_column(BigInteger)
    shopify_refund_id: Mapped[int | None] = mapped_column(BigInteger)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    actor: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(255))
    note: Mapped[str | None] = mapped_column(String(1000))
    # "metadata" is reserved on declarative classes, so the attribute is named meta.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class LedgerEntry(EntryColumns, Base):
    """An immutable fact. The database refuses UPDATE and DELETE on this table (a trigger)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("account_id", "sequence"),
        # A customer's ledger newest first, a page at a time (queries.ledger_page).
        Index("ix_ledger_entries_account_created", "account_id", "created_at", "id"),
        CheckConstraint("sequence >= 1", "sequence_positive"),
        CheckConstraint("amount <> 0", "amount_not_zero"),
        CheckConstraint("balance_before >= 0 AND balance_after >= 0", "balances_not_negative"),
        CheckConstraint("balance_after = balance_before + amount", "balance_after_adds_up"),
        CheckConstraint(sql_in("kind", EntryKind), "kind_known"),
        # Covering (PostgreSQL): reports sum a shop's entries over a time range by kind and
        # account from the index alone (an index-only scan; see ledger/reports.py).
        Index(
            "ix_ledger_entries_shop_created",
            "shop_id",
            "created_at",
            postgresql_include=["account_id", "kind", "amount"],
        ),
        # A key names one effect for ever (idempotency_keys keeps its outcome for 48 h only).
        # Partial indexes: most entries carry no key, lot or reversal to index.
        Index(
            "uq_ledger_entries_shop_key",
            "shop_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
            sqlite_where=text("idempotency_key IS NOT NULL"),
        ),
        Index(
            "ix_ledger_entries_lot",
            "lot_id",
            postgresql_where=text("lot_id IS NOT NULL"),
            sqlite_where=text("lot_id IS NOT NULL"),
        ),
        Index(
            "ix_ledger_entries_reverses",
            "reverses_entry_id",
            postgresql_where=text("reverses_entry_id IS NOT NULL"),
            sqlite_where=text("reverses_entry_id IS NOT NULL"),
        ),
    )

    reverses_entry_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("ledger_entries.id"))


class EntryAllocation(Base):
    """How much of one lot an entry moved: negative takes from the lot, positive gives back."""

    __tablename__ = "entry_allocations"
    __table_args__ = (
        UniqueConstraint("entry_id", "lot_id"),
        CheckConstraint("amount <> 0", "amount_not_zero"),
        Index("ix_entry_allocations_lot", "lot_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ledger_entries.id"))
    lot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("credit_lots.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
