"""shop/redact: erase the shop's data (Shopify sends it 48 hours after the uninstall).

A shop that has installed the app again since is not erased: the request is stale.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from ledger.privacy import erase_shop
from webhooks.topics import Delivery, Ignored, Outcome


def handle(session: Session, delivery: Delivery, now: datetime) -> Outcome:
    shop = delivery.shop
    if shop.erased_at is not None:
        raise Ignored("the shop's data is already erased")
    if shop.uninstalled_at is None:
        raise Ignored("the shop has the app installed (again); nothing is erased")
    return erase_shop(session, shop, delivery.event_id, now)
