"""Data requests: what a ``customers/data_request`` asked for and the export built for it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId


class DataRequest(Base):
    """One customer's data export, for the merchant to download and hand to the customer.

    Shopify does not collect the data itself: the merchant does, from our UI or API.
    """

    __tablename__ = "data_requests"
    __table_args__ = (
        UniqueConstraint("shop_id", "request_key"),
        CheckConstraint("state IN ('ready', 'downloaded')", "state_known"),
        Index("ix_data_requests_shop_created", "shop_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    # Shopify's data_request id, or the webhook id when the payload carries none.
    request_key: Mapped[str] = mapped_column(String(255))
    shopify_customer_id: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="ready")
    export: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    downloaded_at: Mapped[datetime | None]
