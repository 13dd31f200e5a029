"""A native sync whose worker is SIGKILLed while Shopify holds the mutation, which then lands.

This is the lost response at its worst: no exception, no ``ambiguous`` flag, no release — the
row is left ``in_flight`` under a claim nobody holds, and Shopify applies the credit after the
worker is gone. Recovery must find that credit, not send it again.

Time is moved on where waiting for it would make the test minutes long, and only there: the
row's claim is aged past the lease (as five real minutes would), and RQ's abandoned-job
clean-up is run with a timestamp an hour ahead (as the next worker's maintenance would); the
retry it schedules is made due now. Everything else is the real thing: ``flask worker --burst``
processes, the fake Shopify over HTTP, the sweeper, data committed on the test database.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import select
from sqlalchemy.orm import Session

from blueprints.settings import current_settings
from jobs.sync import LEASE, QUEUE, enqueue, job_id, sweep_outbox
from ledger import operations
from ledger.book import Actor, Mirror
from ledger.money import Money
from models import ShopifyOutbox
from tests.conftest import settings_changed
from tests.faults.conftest import install_shop, start_worker, stop, wait_for, worker_env

CUSTOMER = 7_900_001
HOLD = 5.0  # seconds the fake Shopify sits on the mutation before applying it


def test_a_sync_killed_while_shopify_holds_the_mutation_lands_exactly_once(
    app, engine, settings, shopify, own_redis, on_postgresql, tmp_path
):
    if not on_postgresql:
        pytest.skip("worker processes need PostgreSQL")
    env = worker_env(settings.database_url, own_redis.url, shopify.origin_template)
    log = tmp_path / "workers.log"
    with settings_changed(
        app, shopify_admin_origin=shopify.origin_template, redis_url=own_redis.url
    ):
        shop_id, domain = install_shop(app, engine, shopify, "killsync")
        shopify.shop(domain).add_customer(CUSTOMER)
        entry_id = _issue(app, engine, shop_id, Money(2500, "USD"))
        with app.app_context():
            assert enqueue(current_settings(), entry_id) == "enqueued"

        shopify.faults.add("slow", operation="storeCreditAccountCredit", delay=HOLD)
        first = start_worker(env, log, burst=True)
        try:
            taken = wait_for(lambda: not shopify.faults.pending, seconds=30)
            assert taken, log.read_text()
            stop(first)  # SIGKILL, worker and work-horse, while Shopify sleeps on the request
        finally:
            stop(first)

        # Shopify finishes the request nobody is waiting for: the credit is there.
        assert wait_for(lambda: len(_native_credits(shopify, domain)) == 1, seconds=HOLD + 10)
        with Session(engine) as look:
            row = look.execute(
                select(ShopifyOutbox).where(ShopifyOutbox.entry_id == uuid.UUID(entry_id))
            ).scalar_one()
            assert (row.state, row.ambiguous, row.native_transaction_gid) == (
                "in_flight",
                False,
                None,
            )

        _time_passes(engine, own_redis.url, entry_id)
        with app.app_context():
            assert sweep_outbox() >= 1  # the row is due again (its enqueue is a no-op: queued)
        second = start_worker(env, log, burst=True)
        try:
            assert second.wait(timeout=60) == 0, log.read_text()
        finally:
            stop(second)

    credits = _native_credits(shopify, domain)
    assert len(credits) == 1, (credits, log.read_text())
    assert shopify.shop(domain).balance(CUSTOMER, "USD") == "25.00"
    with Session(engine) as look:
        row = look.execute(
            select(ShopifyOutbox).where(ShopifyOutbox.entry_id == uuid.UUID(entry_id))
        ).scalar_one()
        assert (row.state, row.native_transaction_gid) == ("done", credits[0]["id"])


def _issue(app, engine, shop_id: int, amount: Money) -> str:
    with app.app_context(), Session(engine) as work:
        by = Actor(
            shop_id,
            datetime.now(UTC),
            "staff:1",
            "goodwill",
            f"kill-{uuid.uuid4()}",
            mirror=Mirror(notify=False),  # as the API does for a shop with native sync on
        )
        receipt = operations.issue(work, by, customer=CUSTOMER, amount=amount)
        return str(receipt.entry["id"])


def _native_credits(shopify, domain: str) -> list[dict]:
    return [t for t in shopify.shop(domain).transactions(CUSTOMER, "USD") if t["type"] == "credit"]


def _time_passes(engine, redis_url: str, entry_id: str) -> None:
    """What five minutes and the next worker's maintenance do, without the wait."""
    with Session(engine) as work:
        row = work.execute(
            select(ShopifyOutbox).where(ShopifyOutbox.entry_id == uuid.UUID(entry_id))
        ).scalar_one()
        row.claimed_at = row.claimed_at - 2 * LEASE  # claimed ten minutes ago: the lease is over
        work.commit()
    with Redis.from_url(redis_url) as connection:
        queue = Queue(QUEUE, connection=connection)
        # The dead horse's job is abandoned: RQ retries it (its Retry), scheduled a little later.
        queue.started_job_registry.cleanup(timestamp=time.time() + 3600)
        job = Job.fetch(job_id(entry_id), connection=connection)
        assert job.get_status() == "scheduled", job.get_status()
        queue.scheduled_job_registry.schedule(job, datetime.now(UTC))
