"""Retention: ledger entries moved out of the hot tables, and the signed checkpoints at the cut.

An account's oldest entries may move, as a prefix of its chain, to ``ledger_entries_archive``
(with their allocations and landed outbox rows) once a ``ledger_checkpoints`` row, signed with
an HMAC key, records where the chain stood at the end of that prefix (ledger/archive.py has the
rules). The archive keeps every column of the hot row, so the prefix can still be re-verified
from genesis. The database refuses UPDATE and DELETE on the archive and the checkpoints (a
trigger), except when the shop is erased; it lets a DELETE on ``ledger_entries`` through only
for a row already in the archive, identical, and covered by a checkpoint. Privileges say the
same (migration 0010): no runtime role may UPDATE these tables, the web's role only reads them,
and the worker's DELETE serves a shop's erasure alone.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId
from models.ledger_entry import EntryColumns


class LedgerEntryArchive(EntryColumns, Base):
    """A ``ledger_entries`` row, unchanged, and when it moved here."""

    __tablename__ = "ledger_entries_archive"
    __table_args__ = (
        UniqueConstraint("account_id", "sequence"),
        # A key names one effect for ever: a trigger on ledger_entries looks keys up here too.
        Index(
            "uq_ledger_entries_archive_shop_key",
            "shop_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
            sqlite_where=text("idempotency_key IS NOT NULL"),
        ),
        # Reports and the ledger export read a shop's archived entries by time, as they read
        # the hot ones (covering on PostgreSQL, like ix_ledger_entries_shop_created; the id
        # orders entries of one instant for the export).
        Index(
            "ix_ledger_entries_archive_shop_created",
            "shop_id",
            "created_at",
            "id",
            postgresql_include=["account_id", "kind", "amount"],
        ),
        # Verification adds up what archived entries did to a lot.
        Index(
            "ix_ledger_entries_archive_lot",
            "lot_id",
            postgresql_where=text("lot_id IS NOT NULL"),
            sqlite_where=text("lot_id IS NOT NULL"),
        ),
    )

    # A reversal and the spend it reverses are archived together (or not at all).
    reverses_entry_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("ledger_entries_archive.id")
    )
    archived_at: Mapped[datetime]


class EntryAllocationArchive(Base):
    """An ``entry_allocations`` row of an archived entry (same id), and when it moved."""

    __tablename__ = "entry_allocations_archive"
    __table_args__ = (
        UniqueConstraint("entry_id", "lot_id"),
        Index("ix_entry_allocations_archive_lot", "lot_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ledger_entries_archive.id"))
    lot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("credit_lots.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    archived_at: Mapped[datetime]


class ShopifyOutboxArchive(Base):
    """A landed ``shopify_outbox`` row of an archived entry (same id), and when it moved."""

    __tablename__ = "shopify_outbox_archive"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("credit_accounts.id"))
    entry_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ledger_entries_archive.id"), unique=True
    )
    lot_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("credit_lots.id"))
    operation: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    expires_at: Mapped[datetime | None]
    notify: Mapped[bool]
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int]
    next_attempt_at: Mapped[datetime]
    ambiguous: Mapped[bool]
    claimed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    native_transaction_gid: Mapped[str | None] = mapped_column(String(255))
    skipped_reason: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    done_at: Mapped[datetime | None]
    archived_at: Mapped[datetime]


class LedgerCheckpoint(Base):
    """Where an account's chain stood at the end of an archived prefix, signed.

    The hot chain continues from here: its next entry's ``prev_hash`` is ``hash`` and its
    ``balance_before`` is ``balance``. The lifetime totals let a check from here still re-add
    them. ``signature`` is HMAC-SHA256 (ledger/checkpoints.py) with the key ``key_id`` names;
    a key rotation adds a copy signed with the new key, so rows are never changed.
    """

    __tablename__ = "ledger_checkpoints"
    __table_args__ = (UniqueConstraint("account_id", "sequence", "key_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("credit_accounts.id"))
    sequence: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    balance: Mapped[int] = mapped_column(BigInteger)
    lifetime_credited: Mapped[int] = mapped_column(BigInteger)
    lifetime_debited: Mapped[int] = mapped_column(BigInteger)
    last_entry_at: Mapped[datetime]  # created_at of the entry at ``sequence``
    cut_at: Mapped[datetime]  # the cut asked for: every archived entry is older
    created_at: Mapped[datetime]
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(64))
