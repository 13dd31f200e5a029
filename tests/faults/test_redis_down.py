"""Redis stopped while webhooks arrive: every delivery is still processed, once.

A Redis of the test's own (the suite's keeps running) takes the first deliveries' jobs, then
goes away with SHUTDOWN NOSAVE — those queued jobs are lost with it — while more deliveries
(and Shopify's retries of some) arrive and are answered 200. Redis comes back empty; the sweeper
finds every delivery still ``received`` and a real ``flask worker --burst`` drains them.
The sweeper's clock is moved on past SWEEP_AFTER rather than waited for.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.webhooks import SWEEP_AFTER, sweep_webhooks
from models import Customer, WebhookEvent
from tests import factories
from tests.conftest import settings_changed
from tests.factories import CustomerFactory
from tests.faults.conftest import install_shop, start_worker, stop, worker_env

CUSTOMER_BASE = 7_950_000_000


def _customer(number: int) -> dict[str, Any]:
    return {
        "id": CUSTOMER_BASE + number,
        "email": f"customer{number}@example.com",
        "first_name": "Ada",
        "last_name": f"Number{number}",
        "updated_at": "2026-11-22T11:59:58Z",
    }


def _credit_holders(engine, shop_id: int, count: int) -> None:
    with Session(engine) as setup:
        factories.bind(setup)
        for number in range(count):
            CustomerFactory(shop_id=shop_id, shopify_customer_id=CUSTOMER_BASE + number)
        setup.commit()


def test_deliveries_while_redis_is_down_are_all_processed_once_it_is_back(
    app, engine, settings, shopify, own_redis, on_postgresql, tmp_path
):
    if not on_postgresql:
        pytest.skip("worker processes need PostgreSQL")
    log = tmp_path / "worker.log"
    with settings_changed(
        app, shopify_admin_origin=shopify.origin_template, redis_url=own_redis.url
    ):
        shop_id, domain = install_shop(app, engine, shopify, "redisdown")
        _credit_holders(engine, shop_id, 15)  # customer deliveries only touch credit holders
        client = app.test_client()
        sent: dict[str, int] = {}  # webhook id -> customer number

        def deliver(number: int, webhook_id: str | None = None) -> None:
            webhook_id = webhook_id or str(uuid.uuid4())
            body, headers = shopify.signed_webhook(
                domain, "customers/update", _customer(number), webhook_id=webhook_id
            )
            answer = client.post("/webhooks", data=body, headers=headers)
            assert answer.status_code == 200, answer.get_data(as_text=True)
            sent[webhook_id] = number

        for number in range(5):  # enqueued; lost when Redis goes down with them
            deliver(number)
        own_redis.shutdown()
        for number in range(5, 15):  # Redis down: recorded and answered, nothing enqueued
            deliver(number)
        for webhook_id, number in list(sent.items())[3:8]:  # Shopify retries a few
            deliver(number, webhook_id)
        own_redis.start()  # back, empty

        with app.app_context():
            later = datetime.now(UTC) + SWEEP_AFTER + timedelta(seconds=5)
            assert sweep_webhooks(later.isoformat()) == len(sent)
            assert sweep_webhooks(later.isoformat()) == 0  # already waiting: not queued twice
        env = worker_env(settings.database_url, own_redis.url, shopify.origin_template)
        worker = start_worker(env, log, burst=True)
        try:
            assert worker.wait(timeout=120) == 0, log.read_text()
        finally:
            stop(worker)

    with Session(engine) as look:
        events = look.execute(select(WebhookEvent).where(WebhookEvent.shop_id == shop_id)).all()
        recorded = {event.webhook_id: event for (event,) in events}
        assert sorted(recorded) == sorted(sent)  # each delivery recorded once, retries included
        assert {(e.state, e.attempts) for e in recorded.values()} == {("processed", 1)}, log
        emails = look.scalars(select(Customer.email).where(Customer.shop_id == shop_id)).all()
        assert sorted(emails) == sorted(f"customer{n}@example.com" for n in range(15))
