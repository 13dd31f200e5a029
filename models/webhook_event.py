"""One row per webhook delivery Shopify made to us: the intake's record and the job's outcome."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId

EVENT_STATES = ("received", "processing", "processed", "ignored", "failed")


class WebhookEvent(Base):
    """A delivery, keyed by ``X-Shopify-Webhook-Id`` so a redelivery is recorded once.

    ``shop_id`` is empty for a shop we do not know (recorded, then ignored). The payload is
    kept for 30 days and then pruned (``payload_pruned_at``); the row and its outcome stay.
    ``shopify_customer_id`` names the customer the payload is about, so a redaction can find
    every stored payload that mentions them.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        CheckConstraint(
            "state IN ('received', 'processing', 'processed', 'ignored', 'failed')", "state_known"
        ),
        CheckConstraint("attempts >= 0", "attempts_not_negative"),
        # The sweeper's scan: deliveries not yet finished, oldest first.
        Index(
            "ix_webhook_events_unfinished",
            "received_at",
            postgresql_where=text("state IN ('received', 'processing')"),
            sqlite_where=text("state IN ('received', 'processing')"),
        ),
        Index("ix_webhook_events_shop_customer", "shop_id", "shopify_customer_id"),
        Index(
            "ix_webhook_events_payload_kept",
            "received_at",
            postgresql_where=text("payload IS NOT NULL"),
            sqlite_where=text("payload IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    webhook_id: Mapped[str] = mapped_column(String(255), unique=True)
    event_id: Mapped[str | None] = mapped_column(String(255))
    shop_id: Mapped[int | None] = mapped_column(ForeignKey("shops.id", ondelete="SET NULL"))
    shop_domain: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(64))
    api_version: Mapped[str] = mapped_column(String(16))
    triggered_at: Mapped[datetime | None]
    shopify_customer_id: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any] | None]
    payload_pruned_at: Mapped[datetime | None]
    received_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16), default="received")
    attempts: Mapped[int] = mapped_column(default=0)
    # Set when a job takes the delivery; a claim older than the lease is a dead worker's.
    claimed_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[dict[str, Any] | None]
    processed_at: Mapped[datetime | None]
