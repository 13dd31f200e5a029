"""Admin API usage per shop and day: calls, query cost, throttling (what the budget pays for)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId


class ApiUsage(Base):
    __tablename__ = "api_usage"
    __table_args__ = (UniqueConstraint("shop_id", "day"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    day: Mapped[date]
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    throttled: Mapped[int] = mapped_column(BigInteger, default=0)
    requested_cost: Mapped[int] = mapped_column(BigInteger, default=0)
    actual_cost: Mapped[int] = mapped_column(BigInteger, default=0)
