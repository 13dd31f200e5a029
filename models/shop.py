"""An installed Shopify shop: the tenant every other row belongs to."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, String, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId

SHOP_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")


def is_shop_domain(value: str) -> bool:
    """True for ``<name>.myshopify.com``, the only host Shopify gives a shop."""
    return SHOP_DOMAIN.fullmatch(value) is not None


class Shop(Base):
    __tablename__ = "shops"
    __table_args__ = (
        CheckConstraint("default_expiry_days IS NULL OR default_expiry_days > 0", "expiry_days"),
        CheckConstraint("length(currency) = 3", "currency_code"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    domain: Mapped[str] = mapped_column(String(255), unique=True)
    shopify_shop_id: Mapped[int | None] = mapped_column(BigInteger)
    name: Mapped[str | None] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Tokens are stored Fernet-encrypted (TOKEN_ENCRYPTION_KEYS), never in clear.
    access_token_encrypted: Mapped[str | None]
    access_token_expires_at: Mapped[datetime | None]
    refresh_token_encrypted: Mapped[str | None]
    refresh_token_expires_at: Mapped[datetime | None]
    scopes: Mapped[str | None] = mapped_column(String(1024))
    installed_at: Mapped[datetime | None]
    uninstalled_at: Mapped[datetime | None]
    redact_due_at: Mapped[datetime | None]
    # The refresh token was refused (invalid_grant): nothing can call Shopify for this shop
    # until the merchant opens the app again and token exchange runs.
    reauthorize_required_at: Mapped[datetime | None]
    # shop/redact erased the shop's data; the row stays as a tombstone (domain and dates only).
    # While it is set, the append-only trigger lets this shop's ledger entries be deleted.
    erased_at: Mapped[datetime | None]
    default_expiry_days: Mapped[int | None]
    notify_customer: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    native_sync: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    auto_repair: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    created_at: Mapped[datetime]

    @property
    def is_installed(self) -> bool:
        return self.installed_at is not None and self.uninstalled_at is None

    @property
    def shopify_gid(self) -> str | None:
        return f"gid://shopify/Shop/{self.shopify_shop_id}" if self.shopify_shop_id else None
