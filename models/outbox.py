"""The outbox of native-sync work: one row per ledger entry to mirror into Shopify.

Written in the same transaction as the entry, so an entry is never committed without its row,
nor a row without its entry. ``sync_to_shopify`` works the rows; Shopify's store-credit
mutations are not idempotent, so a row whose last attempt ended ambiguously (timeout, lost
response, 5xx) is matched against the account's recent native transactions before it is sent
again.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId

OUTBOX_STATES = ("pending", "in_flight", "done", "dead")


class ShopifyOutbox(Base):
    __tablename__ = "shopify_outbox"
    __table_args__ = (
        CheckConstraint("operation IN ('credit', 'debit')", "operation_known"),
        CheckConstraint("state IN ('pending', 'in_flight', 'done', 'dead')", "state_known"),
        CheckConstraint("amount > 0", "amount_positive"),
        CheckConstraint("attempts >= 0", "attempts_not_negative"),
        CheckConstraint(
            "(state = 'done') = (native_transaction_gid IS NOT NULL OR skipped_reason IS NOT NULL)",
            "done_has_a_result",
        ),
        # The sweeper's scan: rows still owed, by when they are due.
        Index(
            "ix_shopify_outbox_due",
            "next_attempt_at",
            postgresql_where=text("state IN ('pending', 'in_flight')"),
            sqlite_where=text("state IN ('pending', 'in_flight')"),
        ),
        Index("ix_shopify_outbox_shop_state", "shop_id", "state"),
        # /metrics counts dead rows (few) without reading the done ones (migration 0008).
        Index(
            "ix_shopify_outbox_dead",
            "shop_id",
            postgresql_where=text("state = 'dead'"),
            sqlite_where=text("state = 'dead'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("credit_accounts.id"))
    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ledger_entries.id"), unique=True)
    lot_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("credit_lots.id"))
    operation: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)  # minor units, always positive
    currency: Mapped[str] = mapped_column(String(3))
    expires_at: Mapped[datetime | None]
    notify: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    # The last attempt may have reached Shopify (timeout, lost response, 5xx): match first.
    ambiguous: Mapped[bool] = mapped_column(default=False)
    claimed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    native_transaction_gid: Mapped[str | None] = mapped_column(String(255))
    skipped_reason: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    done_at: Mapped[datetime | None]
