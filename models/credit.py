"""The credit aggregate: an account per (customer, currency) and the lots credited to it."""

from __future__ import annotations

import uuid
from datetime import datetime

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

from ledger.chain import GENESIS_HASH
from ledger.kinds import LotSource, LotStatus, sql_in
from models.base import Base, BigId


class CreditAccount(Base):
    """Cached balance and chain head of one customer's credit in one currency.

    This is the row locked (SELECT … FOR UPDATE) while the account changes: every write to the
    account's lots and entries happens under that one lock, so the chain never forks.
    """

    __tablename__ = "credit_accounts"
    __table_args__ = (
        UniqueConstraint("customer_id", "currency"),
        CheckConstraint("balance >= 0", "balance_not_negative"),
        CheckConstraint("balance = lifetime_credited - lifetime_debited", "balance_is_totals"),
        CheckConstraint("last_sequence >= 0", "sequence_not_negative"),
        Index("ix_credit_accounts_shop_customer", "shop_id", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    currency: Mapped[str] = mapped_column(String(3))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    lifetime_credited: Mapped[int] = mapped_column(BigInteger, default=0)
    lifetime_debited: Mapped[int] = mapped_column(BigInteger, default=0)
    last_sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64), default=GENESIS_HASH)
    native_account_gid: Mapped[str | None] = mapped_column(String(255))
    # Reconciliation's checkpoint: the chain verified up to this sequence and hash, and the
    # native transactions compared up to this time (incremental runs start from here).
    reconciled_sequence: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reconciled_hash: Mapped[str] = mapped_column(
        String(64), default=GENESIS_HASH, server_default=GENESIS_HASH
    )
    reconciled_at: Mapped[datetime | None]
    native_checked_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class CreditLot(Base):
    """One credit issued: what it was, what is left of it, and when the rest expires."""

    __tablename__ = "credit_lots"
    __table_args__ = (
        CheckConstraint("amount > 0", "amount_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", "remaining_within_amount"),
        # Only an active lot holds money; every closed state has nothing left.
        CheckConstraint(
            "(status = 'active' AND remaining > 0) OR (status <> 'active' AND remaining = 0)",
            "status_matches_remaining",
        ),
        CheckConstraint(sql_in("status", LotStatus), "status_known"),
        CheckConstraint(sql_in("source", LotSource), "source_known"),
        # Verification and reconciliation read every lot of an account, closed ones too.
        Index("ix_credit_lots_account", "account_id"),
        # Spending reads an account's active lots in expiry order.
        Index(
            "ix_credit_lots_account_active",
            "account_id",
            "expires_at",
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
        # Expiry scans what is due, per shop.
        Index(
            "ix_credit_lots_shop_due",
            "shop_id",
            "expires_at",
            postgresql_where=text("status = 'active' AND expires_at IS NOT NULL"),
            sqlite_where=text("status = 'active' AND expires_at IS NOT NULL"),
        ),
        # The liability report's aging sums a shop's active lots by expiry from the index
        # alone (covering on PostgreSQL; see ledger/reports.py).
        Index(
            "ix_credit_lots_shop_active",
            "shop_id",
            "expires_at",
            postgresql_include=["account_id", "remaining"],
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("credit_accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=LotStatus.ACTIVE.value)
    reason: Mapped[str] = mapped_column(String(255))
    note: Mapped[str | None] = mapped_column(String(1000))
    expires_at: Mapped[datetime | None]
    native_transaction_gid: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
