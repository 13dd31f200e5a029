"""Issuance presets: the credit packages a merchant picks from when issuing (configuration)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId

# The sources a merchant may issue under (the others are the ledger's own: bulk, refund, ...).
ISSUABLE_SOURCES = ("manual", "goodwill", "cashback", "migration")
MAX_EXPIRY_DAYS = 3650


class IssuancePreset(Base):
    """A named amount with its expiry, reason and source, e.g. "Goodwill $10, 90 days".

    Not part of the ledger: a preset only fills in the issue form, so it can be changed or
    deleted freely; the credit issued from it records its own amount, expiry and reason.
    """

    __tablename__ = "issuance_presets"
    __table_args__ = (
        UniqueConstraint("shop_id", "name"),
        CheckConstraint("amount > 0", "amount_positive"),
        CheckConstraint(
            f"expiry_days IS NULL OR (expiry_days >= 1 AND expiry_days <= {MAX_EXPIRY_DAYS})",
            "expiry_days_range",
        ),
        CheckConstraint(
            "source IN (" + ", ".join(f"'{s}'" for s in ISSUABLE_SOURCES) + ")", "source_issuable"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    amount: Mapped[int] = mapped_column(BigInteger)  # minor units of ``currency``
    currency: Mapped[str] = mapped_column(String(3))
    expiry_days: Mapped[int | None]  # None: credit issued from it never expires
    reason: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
