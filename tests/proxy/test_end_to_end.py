"""End to end through the fake Shopify: the storefront look-up after each business event.

Installed by token exchange, credit issued through the API, then a checkout that spends store
credit, a refund to store credit and a cancellation, each arriving as a signed webhook that the
intake records and the job processes. Look-ups are signed by the fake Shopify's App Proxy
signer. Each answer comes from the warm cache and must show every event exactly once: a stale
cached balance after a committed webhook would fail here.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from extensions import db
from jobs.webhooks import process_webhook
from models import WebhookEvent
from storefront.wiring import current_storefront
from tests.conftest import auth
from tests.fake_shopify import FakeShopify

CUSTOMER = 7302
ORDER = 450101
REFUND = 990101


@pytest.fixture
def store(client, connected: FakeShopify, close_storefront: None):
    domain = f"proxy-{uuid.uuid4().hex[:10]}.myshopify.com"
    fake_shop = connected.add_shop(domain, restore_rate=1000.0)
    fake_shop.add_customer(CUSTOMER, email="ada@example.com", first_name="Ada")
    opened = client.get(f"/app?shop={domain}&id_token={connected.session_token(domain)}")
    assert opened.status_code == 200
    issued = client.post(
        f"/api/customers/{CUSTOMER}/credits",
        json={"amount": "50.00", "currency": "USD", "reason": "goodwill"},
        headers={**auth(domain), "Idempotency-Key": str(uuid.uuid4())},
    )
    assert issued.status_code == 201, issued.get_data(as_text=True)
    fake_shop.credit(CUSTOMER, "50.00", "USD")
    cache = current_storefront().cache
    assert cache is not None
    assert cache.wait_until_listening()
    return domain, fake_shop


def looked_up(client, fake: FakeShopify, domain: str) -> list[dict[str, Any]]:
    query = fake.signed_proxy_query(domain, logged_in_customer_id=str(CUSTOMER))
    answer = client.get("/proxy/balance?" + query)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["customer_id"] == str(CUSTOMER)
    return body["balances"]


def amount(client, fake: FakeShopify, domain: str) -> str:
    (only,) = looked_up(client, fake, domain)
    return only["amount"]


def deliver(client, fake: FakeShopify, domain: str, topic: str, payload: dict, **kw: Any) -> int:
    body, headers = fake.signed_webhook(domain, topic, payload, **kw)
    answer = client.post("/webhooks", data=body, headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return db.session.scalar(
        select(WebhookEvent.id).where(WebhookEvent.webhook_id == headers["X-Shopify-Webhook-Id"])
    )


def test_each_event_shows_once_in_the_storefront(client, connected, store):
    domain, fake_shop = store
    assert amount(client, connected, domain) == "50.00"
    assert amount(client, connected, domain) == "50.00"  # warm: from the cache

    fake_shop.place_order(ORDER, CUSTOMER, "USD", store_credit="30.00", other="20.00")
    paid = deliver(client, connected, domain, "orders/paid", fake_shop.order_payload(ORDER))
    assert process_webhook(paid) == "processed"
    assert amount(client, connected, domain) == "20.00"

    fake_shop.refund(ORDER, REFUND, to_store_credit="5.00")
    refund = deliver(client, connected, domain, "refunds/create", fake_shop.refund_payload(REFUND))
    assert process_webhook(refund) == "processed"
    assert amount(client, connected, domain) == "25.00"

    fake_shop.cancel_order(ORDER)
    cancelled = deliver(
        client, connected, domain, "orders/cancelled", fake_shop.order_payload(ORDER)
    )
    assert process_webhook(cancelled) == "processed"
    assert amount(client, connected, domain) == "55.00"
    assert fake_shop.balance(CUSTOMER, "USD") == "55.00"


def test_deliveries_twice_and_in_reverse_order_show_once(client, connected, store):
    domain, fake_shop = store
    assert amount(client, connected, domain) == "50.00"
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
        events.append(deliver(client, connected, domain, topic, payload))
        events.append(deliver(client, connected, domain, topic, payload))  # a second copy
    for event in reversed(events):
        process_webhook(event)
        amount(client, connected, domain)  # the cache is filled between every commit
    assert amount(client, connected, domain) == "55.00"


def test_a_validly_signed_second_shop_is_refused(client, connected, store):
    """The duplicate-parameter attack: ``shop=victim&shop=attacker`` signs as "shop=victim,
    attacker"; a framework reading the first value would answer the victim's data."""
    domain, _ = store
    attacker = f"proxy-{uuid.uuid4().hex[:10]}.myshopify.com"
    query = connected.signed_proxy_query(
        attacker, logged_in_customer_id=str(CUSTOMER), extra=[("shop", domain)]
    )
    answer = client.get("/proxy/balance?" + query)
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "repeated_parameter"
    assert b"50.00" not in answer.get_data()
