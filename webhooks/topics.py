"""The one table that maps webhook topics to their handlers, and what a handler receives.

A handler is a plain function ``(session, delivery, now) -> outcome``: it translates the
payload and calls the domain (``ledger``). The outcome (a small JSON object) is stored on the
delivery's row. A handler raises ``Ignored`` for a delivery that has nothing to do (a stale
or irrelevant event); any other exception fails the attempt and the job is retried.
Handlers must be idempotent: Shopify delivers at least once, in any order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from models import Shop

Outcome = dict[str, Any]


@dataclass(frozen=True)
class Delivery:
    """One recorded webhook delivery, as its handler sees it."""

    event_id: int  # webhook_events.id
    webhook_id: str
    topic: str
    shop: Shop
    payload: dict[str, Any]
    api_version: str
    triggered_at: datetime | None


class Ignored(Exception):  # noqa: N818 - it names an outcome, not a failure
    """Nothing to do for this delivery (stale, irrelevant); recorded as ``ignored``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Handler = Callable[[Session, Delivery, datetime], Outcome]

# Compliance topics arrive on /webhooks/compliance; every other topic on /webhooks.
COMPLIANCE_TOPICS = frozenset({"customers/data_request", "customers/redact", "shop/redact"})
# Topics that still mean something for a shop that has uninstalled the app.
AFTER_UNINSTALL_TOPICS = COMPLIANCE_TOPICS | {"app/uninstalled"}


def handlers() -> dict[str, Handler]:
    """Topic → handler. Imported lazily so the intake route loads no handler code."""
    from webhooks.handlers import (
        app_scopes_update,
        app_uninstalled,
        customers_create,
        customers_data_request,
        customers_delete,
        customers_redact,
        customers_update,
        orders_cancelled,
        orders_create,
        orders_paid,
        refunds_create,
        shop_redact,
    )

    return {
        "orders/create": orders_create.handle,
        "orders/paid": orders_paid.handle,
        "orders/cancelled": orders_cancelled.handle,
        "refunds/create": refunds_create.handle,
        "customers/create": customers_create.handle,
        "customers/update": customers_update.handle,
        "customers/delete": customers_delete.handle,
        "app/uninstalled": app_uninstalled.handle,
        "app/scopes_update": app_scopes_update.handle,
        "customers/data_request": customers_data_request.handle,
        "customers/redact": customers_redact.handle,
        "shop/redact": shop_redact.handle,
    }
