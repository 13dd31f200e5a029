"""End to end through the fake Shopify: install, issue, spend at checkout, refund, cancel.

Every delivery goes through ``POST /webhooks`` signed as Shopify signs it, is recorded, and is
processed by the job the intake enqueues (called here directly, in the test's transaction).
The ledger must show each business event exactly once: also when every delivery arrives
twice (the same webhook id, and a second subscription's copy with its own id) and the copies
are processed in reverse order.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from extensions import db
from jobs.webhooks import process_webhook
from models import CreditAccount, LedgerEntry, ReconciliationFinding, Shop, WebhookEvent
from tests.conftest import auth
from tests.fake_shopify import FakeShopify

CUSTOMER = 7301
ORDER = 450001
REFUND = 990001


def deliver(
    client, fake: FakeShopify, shop: str, topic: str, payload: dict[str, Any], **kw: Any
) -> int:
    body, headers = fake.signed_webhook(shop, topic, payload, **kw)
    answer = client.post("/webhooks", data=body, headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return db.session.scalar(
        select(WebhookEvent.id).where(WebhookEvent.webhook_id == headers["X-Shopify-Webhook-Id"])
    )


def entries(shop_id: int) -> list[tuple[str, int]]:
    rows = db.session.execute(
        select(LedgerEntry.kind, LedgerEntry.amount)
        .where(LedgerEntry.shop_id == shop_id)
        .order_by(LedgerEntry.account_id, LedgerEntry.sequence)
    )
    return [(kind, amount) for kind, amount in rows]


def balance(shop_id: int) -> int:
    return db.session.scalar(select(CreditAccount.balance).where(CreditAccount.shop_id == shop_id))


@pytest.fixture
def store(client, connected, shop_domain):
    """An installed shop (by token exchange) whose customer holds 50.00 of our credit."""
    # A Plus-plan bucket (1000 points/s): throttling has its own tests; these run fast.
    fake_shop = connected.add_shop(shop_domain, restore_rate=1000.0)
    fake_shop.add_customer(CUSTOMER, email="ada@example.com", first_name="Ada")
    assert (
        client.get(
            f"/app?shop={shop_domain}&id_token={connected.session_token(shop_domain)}"
        ).status_code
        == 200
    )
    issued = client.post(
        f"/api/customers/{CUSTOMER}/credits",
        json={"amount": "50.00", "currency": "USD", "reason": "goodwill"},
        headers={**auth(shop_domain), "Idempotency-Key": str(uuid.uuid4())},
    )
    assert issued.status_code == 201, issued.get_data(as_text=True)
    # What the native-sync job (next issue) does: the same credit on Shopify's side.
    fake_shop.credit(CUSTOMER, "50.00", "USD")
    shop = db.session.execute(select(Shop).where(Shop.domain == shop_domain)).scalar_one()
    return shop_domain, fake_shop, shop.id


def test_spend_refund_and_cancel_each_land_once(client, connected, store):
    domain, fake_shop, shop_id = store
    fake_shop.place_order(ORDER, CUSTOMER, "USD", store_credit="30.00", other="20.00")
    paid = deliver(client, connected, domain, "orders/paid", fake_shop.order_payload(ORDER))
    assert process_webhook(paid) == "processed"
    assert balance(shop_id) == 2000
    fake_shop.refund(ORDER, REFUND, to_store_credit="5.00")
    refund = deliver(client, connected, domain, "refunds/create", fake_shop.refund_payload(REFUND))
    assert process_webhook(refund) == "processed"
    assert balance(shop_id) == 2500
    fake_shop.cancel_order(ORDER)
    cancelled = deliver(
        client, connected, domain, "orders/cancelled", fake_shop.order_payload(ORDER)
    )
    assert process_webhook(cancelled) == "processed"
    assert entries(shop_id) == [
        ("issue", 5000),
        ("redeem", -3000),
        ("refund_credit", 500),
        ("redeem_reversal", 3000),
    ]
    assert balance(shop_id) == 5500
    assert fake_shop.balance(CUSTOMER, "USD") == "55.00"  # both ledgers agree


def test_every_delivery_twice_in_reverse_order_changes_nothing_twice(client, connected, store):
    domain, fake_shop, shop_id = store
    fake_shop.place_order(ORDER, CUSTOMER, "USD", store_credit="30.00", other="20.00")
    paid = fake_shop.order_payload(ORDER)
    fake_shop.refund(ORDER, REFUND, to_store_credit="5.00")
    refund = fake_shop.refund_payload(REFUND)
    fake_shop.cancel_order(ORDER)
    cancelled = fake_shop.order_payload(ORDER)
    events = []
    for topic, payload in (
        ("orders/paid", paid),
        ("refunds/create", refund),
        ("orders/cancelled", cancelled),
    ):
        webhook_id = str(uuid.uuid4())
        events.append(deliver(client, connected, domain, topic, payload, webhook_id=webhook_id))
        # The same delivery again: recorded once.
        assert (
            deliver(client, connected, domain, topic, payload, webhook_id=webhook_id) == events[-1]
        )
        # A second subscription's copy: its own webhook id, the same event.
        events.append(deliver(client, connected, domain, topic, payload))
    for event_id in reversed(events):
        process_webhook(event_id)
    for event_id in events:
        process_webhook(event_id)  # already processed: nothing happens
    assert entries(shop_id) == [
        ("issue", 5000),
        ("redeem", -3000),
        ("redeem_reversal", 3000),
        ("refund_credit", 500),
    ]
    assert balance(shop_id) == 5500
    states = db.session.scalars(select(WebhookEvent.state).where(WebhookEvent.id.in_(events))).all()
    assert set(states) == {"processed"}


def test_a_native_spend_larger_than_the_ledger_is_recorded_for_reconciliation(
    client, connected, store
):
    domain, fake_shop, shop_id = store
    fake_shop.credit(CUSTOMER, "40.00", "USD")  # staff credit in Shopify admin, unknown to us
    fake_shop.place_order(ORDER, CUSTOMER, "USD", store_credit="80.00")
    event = deliver(client, connected, domain, "orders/paid", fake_shop.order_payload(ORDER))
    assert process_webhook(event) == "processed"
    assert balance(shop_id) == 5000  # nothing spent from the ledger: the spend is owed
    finding = db.session.execute(
        select(ReconciliationFinding).where(ReconciliationFinding.shop_id == shop_id)
    ).scalar_one()
    assert (finding.kind, finding.expected, finding.resolved_at) == (
        "unmatched_native_spend",
        8000,
        None,
    )
    assert finding.finding_key == f"order:{ORDER}:redeem"


def test_an_order_without_store_credit_costs_no_admin_api_call(client, connected, store):
    domain, fake_shop, _ = store
    fake_shop.place_order(ORDER, CUSTOMER, "USD", store_credit="0.00", other="20.00")
    before = len([r for r in connected.requests if r.kind == "graphql"])
    event = deliver(client, connected, domain, "orders/paid", fake_shop.order_payload(ORDER))
    assert process_webhook(event) == "ignored"
    assert len([r for r in connected.requests if r.kind == "graphql"]) == before


def test_every_graphql_document_sent_validated_against_the_schema(client, connected, store):
    domain, fake_shop, _ = store
    fake_shop.place_order(ORDER, CUSTOMER, "USD", store_credit="10.00")
    process_webhook(
        deliver(client, connected, domain, "orders/paid", fake_shop.order_payload(ORDER))
    )
    assert connected.invalid_documents == []
    assert any(r.operation_name for r in connected.requests if r.kind == "graphql")
