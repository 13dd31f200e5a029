"""POST /webhooks and /webhooks/compliance: every status CONTRACT.md gives, and what is recorded.

Requests go through the Flask test client into the test's rolled-back transaction, and jobs
go to the real Redis queue. The concurrency tests use the real app with its own pool and
commit for real (each with fresh ids, cleaned up afterwards).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from blueprints.webhooks import MAX_BODY_BYTES
from extensions import db
from jobs.webhooks import job_id, sweep_webhooks
from models import Customer, Shop, WebhookEvent
from tests.conftest import settings_changed
from tests.factories import CustomerFactory, ShopFactory
from tests.webhooks.conftest import closed_port, event_for, run_worker
from webhooks.receive import Incoming, record

pytestmark = pytest.mark.usefixtures("clean_queue")

CUSTOMER = 7_300_000_001
TRIGGERED = "2026-11-22T11:59:58.123456789Z"


def customer_payload(customer_id: int = CUSTOMER, **extra: Any) -> dict[str, Any]:
    return {
        "id": customer_id,
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "updated_at": "2026-11-22T11:59:58Z",
        **extra,
    }


def order_payload(customer: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": 820982911946154508,
        "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
        "customer": customer,
        "currency": "USD",
        "payment_gateway_names": ["shopify_store_credit"],
        "financial_status": "paid",
    }


def redact_payload(shop: str, customer_id: int = CUSTOMER) -> dict[str, Any]:
    return {
        "shop_id": 954889,
        "shop_domain": shop,
        "customer": {"id": customer_id, "email": "ada@example.com", "phone": "555-625-1199"},
        "orders_to_redact": [299938, 280263],
    }


def recorded_count(webhook_id: str) -> int:
    return db.session.scalar(
        select(func.count()).select_from(WebhookEvent).where(WebhookEvent.webhook_id == webhook_id)
    )


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["message"]


@pytest.fixture
def shop() -> Shop:
    """A shop holding credit for CUSTOMER (customer deliveries only touch credit holders)."""
    shop = ShopFactory()
    CustomerFactory(shop_id=shop.id, shopify_customer_id=CUSTOMER)
    return shop


# -- 200: recorded and enqueued ----------------------------------------------------------------


def test_a_delivery_is_recorded_with_its_headers_and_enqueued_once(
    app_context, deliveries, jobs, shop
):
    response = deliveries.post(
        shop.domain,
        "customers/update",
        customer_payload(),
        webhook_id="wh-recorded-1",
        event_id="ev-recorded-1",
        triggered_at=TRIGGERED,
    )

    assert response.status_code == 200
    assert response.get_json() == {"status": "recorded"}
    event = event_for("wh-recorded-1")
    assert event is not None
    assert (event.shop_id, event.shop_domain, event.topic) == (
        shop.id,
        shop.domain,
        "customers/update",
    )
    assert (event.event_id, event.api_version) == ("ev-recorded-1", "2026-10")
    assert event.triggered_at == datetime(2026, 11, 22, 11, 59, 58, 123456, tzinfo=UTC)
    assert event.shopify_customer_id == CUSTOMER
    assert event.payload == customer_payload()
    assert (event.state, event.attempts, event.claimed_at, event.outcome) == (
        "received",
        0,
        None,
        None,
    )
    assert jobs.job_ids == [job_id(event.id)]
    job = jobs.fetch_job(job_id(event.id))
    assert job.func_name == "jobs.webhooks.process_webhook"
    assert job.args == (event.id,)
    assert job.retries_left == 3  # RQ's Retry policy rides along


@pytest.mark.parametrize(
    ("topic", "payload", "customer"),
    [
        ("customers/create", customer_payload(), CUSTOMER),
        ("customers/delete", {"id": str(CUSTOMER)}, CUSTOMER),
        ("orders/paid", order_payload({"id": CUSTOMER, "email": "ada@example.com"}), CUSTOMER),
        ("orders/paid", order_payload(None), None),  # a guest order
        ("refunds/create", {"id": 509562969, "order_id": 820982911946154508}, None),
        ("customers/update", customer_payload(customer_id=2**64), None),  # past BIGINT
        ("customers/update", customer_payload(customer_id=True), None),
    ],
)
def test_the_customer_a_payload_is_about_is_recorded(
    app_context, deliveries, shop, topic, payload, customer
):
    response = deliveries.post(shop.domain, topic, payload, webhook_id=f"wh-{uuid.uuid4()}")
    assert response.status_code == 200
    event = db.session.scalars(select(WebhookEvent).where(WebhookEvent.shop_id == shop.id)).one()
    assert event.shopify_customer_id == customer


def test_a_compliance_delivery_is_recorded_with_its_customer(app_context, deliveries, shop):
    response = deliveries.post(
        shop.domain, "customers/redact", redact_payload(shop.domain), webhook_id="wh-redact-1"
    )
    assert response.status_code == 200
    event = event_for("wh-redact-1")
    assert event is not None
    assert (event.topic, event.shopify_customer_id) == ("customers/redact", CUSTOMER)


def test_headers_are_case_insensitive_as_http2_sends_them(app_context, deliveries, shop):
    body, headers = deliveries.signed(shop.domain, "customers/update", customer_payload())
    response = deliveries.send(body, {name.lower(): value for name, value in headers.items()})
    assert response.status_code == 200


def test_the_previous_secret_is_accepted_during_a_rotation(app_context, deliveries, shop):
    old = "the-secret-before-the-rotation-0123456789"
    body, headers = deliveries.signed(
        shop.domain, "customers/update", customer_payload(), secret=old
    )

    assert_error(deliveries.send(body, headers), 401, "invalid_hmac")
    with settings_changed(app_context, shopify_api_secret_previous=old):
        assert deliveries.send(body, headers).status_code == 200
        # and the current secret still works beside it
        current = deliveries.post(shop.domain, "customers/update", customer_payload())
        assert current.status_code == 200


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("products/update", {"id": 632910392, "title": "IPod Nano"}),  # no handler
        ("customers/update", customer_payload()),
    ],
)
def test_unknown_shop_and_unhandled_topic_are_recorded_and_answered_200(
    app_context, deliveries, jobs, topic, payload
):
    """The job decides (and marks them ignored, see test_job.py); the intake only records."""
    response = deliveries.post(
        "never-installed.myshopify.com", topic, payload, webhook_id="wh-unknown-1"
    )
    assert response.status_code == 200
    event = event_for("wh-unknown-1")
    assert event is not None
    assert (event.shop_id, event.shop_domain) == (None, "never-installed.myshopify.com")
    assert jobs.job_ids == [job_id(event.id)]


def test_an_uninstalled_shop_s_delivery_is_recorded_and_answered_200(app_context, deliveries):
    shop = ShopFactory(uninstalled_at=datetime.now(UTC))
    response = deliveries.post(
        shop.domain, "customers/update", customer_payload(), webhook_id="wh-gone"
    )
    assert response.status_code == 200
    event = event_for("wh-gone")
    assert event is not None
    assert event.shop_id == shop.id


def test_a_triggered_at_that_cannot_be_read_is_left_empty(app_context, deliveries, shop):
    response = deliveries.post(
        shop.domain, "customers/update", customer_payload(), webhook_id="wh-t", triggered_at="soon"
    )
    assert response.status_code == 200
    event = event_for("wh-t")
    assert event is not None
    assert event.triggered_at is None


def test_a_nul_character_is_stored_as_a_replacement_character(app_context, deliveries, shop):
    """PostgreSQL's jsonb refuses NUL in text; the delivery must still be recorded."""
    response = deliveries.post(
        shop.domain, "customers/update", customer_payload(note="a\u0000b"), webhook_id="wh-nul"
    )
    assert response.status_code == 200
    event = event_for("wh-nul")
    assert event is not None
    assert event.payload["note"] == "a\ufffdb"


# -- duplicates ---------------------------------------------------------------------------------


def test_a_redelivery_is_recorded_once_answered_200_and_not_enqueued_again(
    app_context, deliveries, jobs, shop
):
    body, headers = deliveries.signed(
        shop.domain, "customers/update", customer_payload(), webhook_id="wh-dup-1"
    )

    first = deliveries.send(body, headers)
    second = deliveries.send(body, headers)

    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.get_json(), second.get_json()) == (
        {"status": "recorded"},
        {"status": "duplicate"},
    )
    assert recorded_count("wh-dup-1") == 1
    assert len(jobs.job_ids) == 1


def test_the_same_webhook_id_with_another_body_is_still_a_duplicate(app_context, deliveries, shop):
    """Shopify's webhook id names the delivery; the first recording wins."""
    deliveries.post(shop.domain, "customers/update", customer_payload(), webhook_id="wh-dup-2")
    again = deliveries.post(
        shop.domain,
        "customers/update",
        customer_payload(email="x@example.com"),
        webhook_id="wh-dup-2",
    )
    assert again.get_json() == {"status": "duplicate"}
    event = event_for("wh-dup-2")
    assert event is not None
    assert event.payload["email"] == "ada@example.com"


@pytest.mark.concurrency
def test_concurrent_duplicates_through_the_app_are_recorded_once(
    app, engine: Engine, fake_shopify, jobs, on_postgresql
):
    """16 connections post the same delivery at once: one row, one job, sixteen 200s."""
    if not on_postgresql:
        pytest.skip("PostgreSQL only")
    domain, webhook_id = f"conc-{uuid.uuid4().hex[:10]}.myshopify.com", str(uuid.uuid4())
    with Session(engine) as setup:
        shop = Shop(
            domain=domain,
            currency="USD",
            created_at=datetime.now(UTC),
            installed_at=datetime.now(UTC),
        )
        setup.add(shop)
        setup.commit()
        shop_id = shop.id
    body, headers = fake_shopify.signed_webhook(
        domain, "customers/update", customer_payload(), webhook_id=webhook_id
    )
    threads = 16
    barrier = threading.Barrier(threads)
    answers: list[tuple[int, Any] | BaseException | None] = [None] * threads

    def post(index: int) -> None:
        try:
            client = app.test_client()
            barrier.wait(timeout=30)
            response = client.post("/webhooks", data=body, headers=headers)
            answers[index] = (response.status_code, response.get_json())
        except BaseException as error:  # noqa: BLE001 - asserted below
            answers[index] = error

    workers = [threading.Thread(target=post, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    try:
        assert all(isinstance(answer, tuple) for answer in answers), answers
        assert all(answer[0] == 200 for answer in answers)  # type: ignore[index]
        statuses = sorted(answer[1]["status"] for answer in answers)  # type: ignore[index]
        assert statuses == ["duplicate"] * (threads - 1) + ["recorded"]
        with Session(engine) as check:
            rows = check.scalars(
                select(WebhookEvent).where(WebhookEvent.webhook_id == webhook_id)
            ).all()
            assert len(rows) == 1
            assert rows[0].shop_id == shop_id
            assert jobs.job_ids == [job_id(rows[0].id)]
    finally:
        with Session(engine) as cleanup:
            cleanup.execute(delete(WebhookEvent).where(WebhookEvent.webhook_id == webhook_id))
            cleanup.commit()


@pytest.mark.concurrency
def test_a_second_insert_of_the_same_webhook_id_waits_for_the_first_and_records_nothing(
    engine: Engine, on_postgresql
):
    """The INSERT's ON CONFLICT, step by step: B blocks on A's uncommitted row, then skips."""
    if not on_postgresql:
        pytest.skip("PostgreSQL only")
    webhook_id = str(uuid.uuid4())
    delivery = Incoming(
        webhook_id=webhook_id,
        event_id=None,
        shop_domain="race.myshopify.com",
        topic="customers/update",
        api_version="2026-10",
        triggered_at=None,
        shopify_customer_id=CUSTOMER,
        payload=customer_payload(),
        payload_json=json.dumps(customer_payload()),
    )
    now = datetime.now(UTC)
    second: list[int | None | BaseException] = []

    def insert_second() -> None:
        with Session(engine) as b:
            try:
                second.append(record(b, delivery, now))
            except BaseException as error:  # noqa: BLE001 - asserted below
                second.append(error)

    try:
        with engine.connect() as conn:
            outer = conn.begin()  # A's transaction stays open after record() returns
            with Session(bind=conn, join_transaction_mode="create_savepoint") as a:
                first = record(a, delivery, now)
            thread = threading.Thread(target=insert_second, daemon=True)
            thread.start()  # B: the request path, an autocommitted INSERT on its own connection
            time.sleep(0.3)
            assert thread.is_alive(), "B should wait for A's transaction"
            outer.commit()
        thread.join(timeout=10)
        assert first is not None
        assert second == [None]
    finally:
        with Session(engine) as cleanup:
            cleanup.execute(delete(WebhookEvent).where(WebhookEvent.webhook_id == webhook_id))
            cleanup.commit()


# -- Redis down; no Redis at all ---------------------------------------------------------------


def test_with_redis_down_the_delivery_is_recorded_and_answered_200_then_the_sweeper_enqueues_it(
    app_context, deliveries, jobs, shop
):
    dead = f"redis://127.0.0.1:{closed_port()}/0"
    with settings_changed(app_context, redis_url=dead):
        started = time.perf_counter()
        response = deliveries.post(
            shop.domain, "customers/update", customer_payload(), webhook_id="wh-redis-down"
        )
        took = time.perf_counter() - started

    assert response.status_code == 200
    # Not a speed check: Shopify gives up on a delivery after 5 s and retries it.
    assert took < 5.0, f"a dead Redis held the answer {took:.2f}s"
    event = event_for("wh-redis-down")
    assert event is not None
    assert event.state == "received"
    assert jobs.job_ids == []

    # Redis is back (the test Redis); a sweep a while later finds the delivery and enqueues it.
    too_early = sweep_webhooks((event.received_at + timedelta(seconds=10)).isoformat())
    assert job_id(event.id) not in jobs.job_ids
    later = (event.received_at + timedelta(minutes=2)).isoformat()
    assert sweep_webhooks(later) >= 1
    assert jobs.job_ids.count(job_id(event.id)) == 1
    assert sweep_webhooks(later) >= 0
    assert jobs.job_ids.count(job_id(event.id)) == 1  # already waiting: not queued twice
    assert too_early >= 0

    run_worker(jobs)
    event = event_for("wh-redis-down")
    assert event is not None
    assert (event.state, event.outcome) == (
        "processed",
        {"customer": str(CUSTOMER), "result": "applied"},
    )


@pytest.mark.smoke
def test_without_redis_the_job_runs_inline_after_the_commit(app_context, deliveries):
    """``make run``: no REDIS_URL, SQLite; the delivery is processed before the answer."""
    shop = ShopFactory()
    CustomerFactory(shop_id=shop.id, shopify_customer_id=CUSTOMER)
    webhook_id = f"wh-inline-{uuid.uuid4()}"
    with settings_changed(app_context, redis_url=None):
        response = deliveries.post(
            shop.domain, "customers/update", customer_payload(), webhook_id=webhook_id
        )
    assert response.status_code == 200
    event = event_for(webhook_id)
    assert event is not None
    assert event.state == "processed"
    customer = db.session.scalars(select(Customer).where(Customer.shop_id == shop.id)).one()
    assert customer.email == "ada@example.com"


def test_a_real_worker_takes_the_delivery_from_the_queue_and_processes_it(
    app_context, deliveries, jobs, shop
):
    response = deliveries.post(
        shop.domain, "customers/update", customer_payload(), webhook_id="wh-e2e"
    )
    assert response.status_code == 200

    run_worker(jobs)

    event = event_for("wh-e2e")
    assert event is not None
    assert (event.state, event.attempts) == ("processed", 1)
    job = jobs.fetch_job(job_id(event.id))
    assert job.get_status() == "finished"
    assert job.return_value() == "processed"
    customer = db.session.scalars(select(Customer).where(Customer.shop_id == shop.id)).one()
    assert (customer.shopify_customer_id, customer.email) == (CUSTOMER, "ada@example.com")


# -- 401: not signed by Shopify, or forged ------------------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    ["no_hmac", "empty_hmac", "wrong_secret", "body_changed", "other_body_hmac", "garbage_hmac"],
)
def test_a_missing_or_wrong_hmac_is_401_and_records_nothing(app_context, deliveries, shop, tamper):
    body, headers = deliveries.signed(
        shop.domain, "customers/update", customer_payload(), webhook_id="wh-401"
    )
    other_body, other_headers = deliveries.signed(shop.domain, "customers/update", {"id": 1})
    if tamper == "no_hmac":
        response = deliveries.send(body, headers, drop=("X-Shopify-Hmac-Sha256",))
    elif tamper == "empty_hmac":
        response = deliveries.send(body, headers, override={"X-Shopify-Hmac-Sha256": ""})
    elif tamper == "wrong_secret":
        body, headers = deliveries.signed(
            shop.domain, "customers/update", customer_payload(), webhook_id="wh-401", secret="nope"
        )
        response = deliveries.send(body, headers)
    elif tamper == "body_changed":
        response = deliveries.send(body.replace(b"Ada", b"Eve"), headers)
    elif tamper == "other_body_hmac":
        hmac_of_other = other_headers["X-Shopify-Hmac-Sha256"]
        response = deliveries.send(body, headers, override={"X-Shopify-Hmac-Sha256": hmac_of_other})
    else:
        response = deliveries.send(body, headers, override={"X-Shopify-Hmac-Sha256": "%%%not-b64"})

    assert_error(response, 401, "invalid_hmac")
    assert recorded_count("wh-401") == 0


def test_the_compliance_endpoint_answers_401_for_a_bad_hmac(app_context, deliveries, shop):
    """App Review checks exactly this."""
    body, headers = deliveries.signed(
        shop.domain, "shop/redact", {"shop_id": 1, "shop_domain": shop.domain}, secret="wrong"
    )
    assert_error(deliveries.send(body, headers, path="/webhooks/compliance"), 401, "invalid_hmac")


@pytest.mark.parametrize(
    ("topic", "payload_for"),
    [
        ("customers/redact", lambda shop: redact_payload("victim-shop.myshopify.com")),
        ("shop/redact", lambda shop: {"shop_id": 1, "shop_domain": "victim-shop.myshopify.com"}),
        ("customers/data_request", lambda shop: {**redact_payload(shop), "shop_domain": None}),
        # a compliance body must name its shop: without shop_domain it is another topic's body
        ("customers/redact", lambda shop: order_payload({"id": CUSTOMER})),
        # any payload that names a shop must name this one
        (
            "orders/paid",
            lambda shop: {**order_payload(None), "shop_domain": "victim-shop.myshopify.com"},
        ),
        (
            "app/uninstalled",
            lambda shop: {"id": 1, "myshopify_domain": "victim-shop.myshopify.com"},
        ),
    ],
)
def test_a_payload_naming_another_shop_is_401_as_forged_and_records_nothing(
    app_context, deliveries, jobs, shop, topic, payload_for
):
    response = deliveries.post(shop.domain, topic, payload_for(shop.domain), webhook_id="wh-forged")
    assert_error(response, 401, "forged_delivery")
    assert recorded_count("wh-forged") == 0
    assert jobs.job_ids == []


def test_a_payload_naming_the_same_shop_is_accepted(app_context, deliveries, shop):
    shop_payload = {"id": 1, "myshopify_domain": shop.domain, "domain": "www.custom-domain.com"}
    assert deliveries.post(shop.domain, "app/uninstalled", shop_payload).status_code == 200
    redact = {"shop_id": 1, "shop_domain": shop.domain}
    assert deliveries.post(shop.domain, "shop/redact", redact).status_code == 200


# -- 400: signed, but not a usable delivery -------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    ["X-Shopify-Topic", "X-Shopify-Shop-Domain", "X-Shopify-Webhook-Id", "X-Shopify-API-Version"],
)
@pytest.mark.parametrize("how", ["missing", "blank"])
def test_a_signed_delivery_without_a_required_header_is_400(
    app_context, deliveries, shop, header, how
):
    body, headers = deliveries.signed(
        shop.domain, "customers/update", customer_payload(), webhook_id="wh-400"
    )
    if how == "missing":
        response = deliveries.send(body, headers, drop=(header,))
    else:
        response = deliveries.send(body, headers, override={header: "  "})
    assert_error(response, 400, "missing_header")
    assert recorded_count("wh-400") == 0


def test_an_overlong_header_is_400(app_context, deliveries, shop):
    response = deliveries.post(
        shop.domain, "customers/update", customer_payload(), webhook_id="w" * 256
    )
    assert_error(response, 400, "invalid_header")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"a string"',
        b"null",
        b"42",
        b'{"id": 1',
        b'{"x": NaN}',
        b"\xff\xfe{}",
    ],
)
def test_a_signed_body_that_is_not_a_json_object_is_400(app_context, deliveries, shop, body):
    response = deliveries.post(shop.domain, "customers/update", body, webhook_id="wh-400")
    assert_error(response, 400, "invalid_json")
    assert recorded_count("wh-400") == 0


@pytest.mark.parametrize(
    "domain",
    [
        "Shop.myshopify.com",
        "shop.example.com",
        "shop.myshopify.com.evil.com",
        "-shop.myshopify.com",
        "shop.myshopify.com/admin",
        "myshopify.com",
    ],
)
def test_a_shop_domain_that_is_not_a_myshopify_domain_is_400(app_context, deliveries, domain):
    response = deliveries.post(domain, "customers/update", customer_payload(), webhook_id="wh-400")
    assert_error(response, 400, "invalid_shop_domain")
    assert recorded_count("wh-400") == 0


@pytest.mark.parametrize(
    ("path", "topic", "payload_for"),
    [
        ("/webhooks", "customers/redact", redact_payload),
        ("/webhooks", "shop/redact", lambda shop: {"shop_id": 1, "shop_domain": shop}),
        ("/webhooks/compliance", "customers/update", lambda shop: customer_payload()),
        ("/webhooks/compliance", "products/update", lambda shop: {"id": 1}),
    ],
)
def test_a_topic_on_the_wrong_endpoint_is_400_and_records_nothing(
    app_context, deliveries, shop, path, topic, payload_for
):
    """Decision: refuse, don't record. Shopify sends each topic where shopify.app.toml says;
    a mismatch is a misconfiguration, and a 400 shows in Shopify's delivery metrics."""
    response = deliveries.post(
        shop.domain, topic, payload_for(shop.domain), path=path, webhook_id="wh-400"
    )
    assert_error(response, 400, "wrong_endpoint")
    assert recorded_count("wh-400") == 0


def test_a_body_over_the_limit_is_413(app_context, deliveries, shop):
    big = json.dumps({"id": 1, "note": "x" * MAX_BODY_BYTES}).encode()
    response = deliveries.post(shop.domain, "customers/update", big, webhook_id="wh-big")
    assert_error(response, 413, "request_entity_too_large")
    assert recorded_count("wh-big") == 0


# -- 405 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/webhooks", "/webhooks/compliance"])
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
def test_other_methods_are_405(client, path, method):
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    if method != "HEAD":
        assert response.get_json()["error"]["code"] == "method_not_allowed"
