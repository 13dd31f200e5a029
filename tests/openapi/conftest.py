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
from sqlalchemy import select
from sqlalchemy.orm import Session

from extensions import db
from ledger import bulk, findings, operations, presets, privacy
from ledger.book import Actor
from ledger.money import Money
from models import ReconciliationFinding, ReconciliationRun, Shop
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
    lots, account_id = _seed_ledger(session, shop, now)
    return Seeded(
        shop=shop,
        ids={
            "customer_id": list(KNOWN_CUSTOMERS),
            "lot_id": lots,
            "import_id": _seed_imports(session, shop, now),
            "request_id": _seed_data_request(session, shop, now),
            "finding_id": _seed_findings(session, shop, account_id, now),
            "run_id": _seed_run(session, shop, now),
            "preset_id": _seed_presets(session, shop, now),
        },
    )


def _seed_ledger(session: Session, shop: Shop, now: datetime) -> tuple[list[str], int]:
    """Lots in USD and EUR (two active for the first customer, one revoked), a debit; the ids
    of the lots, the revoked one last, and the first customer's USD account."""
    first, second, _ = (int(each) for each in KNOWN_CUSTOMERS)
    receipts = [
        operations.issue(
            session,
            _actor(shop, now, "goodwill"),
            customer=first,
            amount=Money.parse("20.00", "USD"),
            expires_at=now + timedelta(days=30),
            note="late parcel",
        ),
        operations.issue(
            session, _actor(shop, now, "welcome"), customer=first, amount=Money.parse("5", "USD")
        ),
        operations.issue(
            session, _actor(shop, now, "promo"), customer=second, amount=Money.parse("7", "EUR")
        ),
        operations.issue(
            session, _actor(shop, now, "promo"), customer=second, amount=Money.parse("3", "USD")
        ),
    ]
    lots = [str(receipt.lot["id"]) for receipt in receipts if receipt.lot is not None]
    debit = operations.adjust(
        session, _actor(shop, now, "correction"), customer=first, amount=Money(-250, "USD")
    )
    operations.revoke(session, _actor(shop, now, "mistake"), lot_id=uuid.UUID(lots[-1]))
    return lots, int(debit.account["id"])


def _seed_imports(session: Session, shop: Shop, now: datetime) -> list[str]:
    """A validated import (startable) and an invalid one."""
    return [
        str(
            bulk.create_import(
                session, shop, data.encode(), filename=name, actor=ACTOR, now=now
            ).bulk_import.id
        )
        for data, name in ((VALID_CSV, "promo.csv"), (INVALID_CSV, "broken.csv"))
    ]


def _seed_data_request(session: Session, shop: Shop, now: datetime) -> list[str]:
    privacy.record_data_request(session, shop.id, "dr-1", int(KNOWN_CUSTOMERS[0]), "shopify", now)
    return [each["id"] for each in privacy.data_requests(session, shop.id)]


def _seed_findings(session: Session, shop: Shop, account_id: int, now: datetime) -> list[str]:
    """Open findings nothing can repair (a balance mismatch) and a job repairs (an order to
    sync again), and a resolved one."""
    customer = int(KNOWN_CUSTOMERS[0])
    seen = [
        findings.Finding(
            kind=findings.NATIVE_BALANCE_MISMATCH,
            key=f"balance:{account_id}",
            account_id=account_id,
            shopify_customer_id=customer,
            currency="USD",
            expected=2250,
            actual=2000,
            details={"count": 1},
        ),
        findings.Finding(
            kind=findings.NATIVE_ORDER_UNRECORDED,
            key="order:5550001",
            shopify_customer_id=customer,
            details={"order_id": "5550001"},
        ),
        findings.Finding(
            kind=findings.NATIVE_EXPIRY_MISMATCH,
            key=f"expiry:{account_id}",
            account_id=account_id,
            currency="USD",
            details={"count": 1},
        ),
    ]
    for finding in seen:
        findings.record_finding(session, shop.id, finding, now)
    session.commit()
    ids = list(
        session.scalars(
            select(ReconciliationFinding.id)
            .where(ReconciliationFinding.shop_id == shop.id)
            .order_by(ReconciliationFinding.id)
        )
    )
    findings.resolve_finding(session, shop.id, ids[-1], note="a test order", actor=ACTOR, now=now)
    return [str(each) for each in ids]


def _seed_run(session: Session, shop: Shop, now: datetime) -> list[str]:
    run = ReconciliationRun(
        shop_id=shop.id,
        kind="incremental",
        state="finished",
        started_at=now - timedelta(minutes=5),
        finished_at=now,
        accounts_checked=3,
        entries_checked=7,
        findings_opened=3,
    )
    session.add(run)
    session.commit()
    return [str(run.id)]


def _seed_presets(session: Session, shop: Shop, now: datetime) -> list[str]:
    created = [
        presets.create_preset(session, shop.id, body, actor=ACTOR, now=now)
        for body in (
            {"name": "Gold", "amount": "50", "currency": "USD", "reason": "package"},
            {"name": "Thanks", "amount": "5", "currency": "EUR", "reason": "thanks",
             "expiry_days": 90, "source": "goodwill"},
        )
    ]  # fmt: skip
    return [str(preset["id"]) for preset in created]
