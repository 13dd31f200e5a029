"""A shop with real objects for the OpenAPI tests: generated requests hit them sometimes.

Everything is written through the ledger's own operations (and the bulk and privacy modules)
in the test's rolled-back transaction (``app_context``), as the API itself would write it.
The Shopify ids are the ones blueprints/openapi.yaml gives as examples of ``customer_id``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from extensions import db
from ledger import bulk, operations, privacy
from ledger.book import Actor
from ledger.money import Money
from models import Shop
from tests.factories import CustomerFactory, ShopFactory

STAFF_ID = "8410000042"
ACTOR = f"staff:{STAFF_ID}"
# With credit in USD; with USD and EUR; without credit (but known, so searchable by name).
KNOWN_CUSTOMERS = ("7408348290", "7408348291", "7408348292")

VALID_CSV = (
    "customer_id,amount,currency,expires_at,reason\r\n"
    "7408348290,12.50,USD,2031-01-31,spring promo\r\n"
    "7408348291,5,USD,,thanks\r\n"
)
INVALID_CSV = "customer_id,amount,currency,reason\r\n7408348290,12.505,USD,too many decimals\r\n"


@dataclass
class Seeded:
    """The seeded shop and the ids of its objects, by the path parameter that names them."""

    shop: Shop
    ids: dict[str, list[str]] = field(default_factory=dict)


def _actor(shop: Shop, now: datetime, reason: str) -> Actor:
    return Actor(shop_id=shop.id, now=now, actor=ACTOR, reason=reason)


@pytest.fixture
def seeded(app_context: Any) -> Seeded:
    session = db.session
    now = datetime.now(UTC)
    shop: Shop = ShopFactory()
    for number, shopify_id in enumerate(KNOWN_CUSTOMERS):
        CustomerFactory(
            shop_id=shop.id,
            shopify_customer_id=int(shopify_id),
            email=f"ada{number}@example.com",
            first_name="Ada",
            last_name=f"Lovelace{number}",
        )
    first, second, _ = (int(each) for each in KNOWN_CUSTOMERS)
    lots = [
        operations.issue(
            session,
            _actor(shop, now, "goodwill"),
            customer=first,
            amount=Money.parse("20.00", "USD"),
            expires_at=now + timedelta(days=30),
            note="late parcel",
        ).lot,
        operations.issue(
            session, _actor(shop, now, "welcome"), customer=first, amount=Money.parse("5", "USD")
        ).lot,
        operations.issue(
            session, _actor(shop, now, "promo"), customer=second, amount=Money.parse("7", "EUR")
        ).lot,
        operations.issue(
            session, _actor(shop, now, "promo"), customer=second, amount=Money.parse("3", "USD")
        ).lot,
    ]
    operations.adjust(
        session, _actor(shop, now, "correction"), customer=first, amount=Money(-250, "USD")
    )
    revoked = lots.pop()
    assert revoked is not None
    operations.revoke(session, _actor(shop, now, "mistake"), lot_id=uuid.UUID(revoked["id"]))
    imports = [
        bulk.create_import(
            session, shop, data.encode(), filename=name, actor=ACTOR, now=now
        ).bulk_import.id
        for data, name in ((VALID_CSV, "promo.csv"), (INVALID_CSV, "broken.csv"))
    ]
    privacy.record_data_request(session, shop.id, "dr-1", first, "shopify", now)
    requests = privacy.data_requests(session, shop.id)
    return Seeded(
        shop=shop,
        ids={
            "customer_id": list(KNOWN_CUSTOMERS),
            "lot_id": [str(lot["id"]) for lot in lots if lot is not None] + [str(revoked["id"])],
            "import_id": [str(each) for each in imports],
            "request_id": [each["id"] for each in requests],
        },
    )
