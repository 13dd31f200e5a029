"""A shop's lifecycle: installed, scopes changed, uninstalled, erased.

Deliveries about a shop arrive in any order: an ``app/uninstalled`` triggered before the
shop's latest install is stale (the merchant reinstalled since) and changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from models import Shop

# Shopify sends shop/redact 48 hours after an uninstall.
REDACT_AFTER = timedelta(hours=48)


def uninstall(shop: Shop, triggered_at: datetime | None, now: datetime) -> str:
    """Wipe the shop's tokens and schedule its redaction; ``applied`` or ``stale``."""
    if _before_latest_install(shop, triggered_at):
        return "stale"
    if shop.uninstalled_at is not None:
        return "already_uninstalled"
    shop.access_token_encrypted = None
    shop.access_token_expires_at = None
    shop.refresh_token_encrypted = None
    shop.refresh_token_expires_at = None
    shop.uninstalled_at = triggered_at or now
    shop.redact_due_at = (triggered_at or now) + REDACT_AFTER
    return "applied"


def record_scopes(shop: Shop, scopes: list[str], triggered_at: datetime | None) -> str:
    """Remember the scopes Shopify says are granted now; ``applied`` or ``stale``."""
    if _before_latest_install(shop, triggered_at):
        return "stale"
    shop.scopes = ",".join(sorted(set(scopes)))
    return "applied"


def _before_latest_install(shop: Shop, triggered_at: datetime | None) -> bool:
    if triggered_at is None or shop.installed_at is None:
        return False
    return triggered_at < shop.installed_at
