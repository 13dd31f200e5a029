"""process_webhook, sweep_webhooks, prune_webhook_payloads: claims, leases, retries, idempotency.

Jobs run inline in the test's app context (rolled back), except where real concurrency or a
real lock is the point: those commit for real on fresh shops and clean up their deliveries.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rq.job import JobStatus
from sqlalchemy import Connection, Engine, delete, func, null, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from extensions import db
from jobs.webhooks import (
    LEASE,
    MAX_ATTEMPTS,
    PRUNE_BATCH,
    enqueue,
    job_id,
    process_webhook,
    prune_webhook_payloads,
    sweep_webhooks,
)
from models import Customer, Shop, WebhookEvent
from tests.conftest import settings_changed
from tests.factories import CustomerFactory, ShopFactory
from tests.webhooks.conftest import make_event, run_worker

pytestmark = pytest.mark.usefixtures("clean_queue")

CUSTOMER = 7_400_000_001


def customer_payload(customer_id: int = CUSTOMER, **fields: Any) -> dict[str, Any]:
    return {
        "id": customer_id,
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "updated_at": "2026-11-22T11:00:00Z",
        **fields,
    }


def fresh(event: WebhookEvent) -> WebhookEvent:
    db.session.expire_all()
    row = db.session.get(WebhookEvent, event.id)
    assert row is not None
    return row


def customers_of(shop: Shop) -> list[Customer]:
    db.session.expire_all()
    return list(db.session.scalars(select(Customer).where(Customer.shop_id == shop.id)))


@pytest.fixture
def shop(app_context) -> Shop:
    """A shop holding credit for CUSTOMER (customer deliveries only touch credit holders)."""
    shop = ShopFactory()
    CustomerFactory(shop_id=shop.id, shopify_customer_id=CUSTOMER)
    return shop


# -- processing ------------------------------------------------------------------------------------


def test_a_delivery_is_processed_and_a_second_run_changes_nothing(app_context, shop, now):
    event = make_event(shop, "customers/update", customer_payload(), received_at=now)

    assert process_webhook(event.id, now.isoformat()) == "processed"
    done = fresh(event)
    assert (done.state, done.attempts, done.error) == ("processed", 1, None)
    assert done.outcome == {"customer": str(CUSTOMER), "result": "applied"}
    assert done.claimed_at == now
    assert done.processed_at is not None
    [customer] = customers_of(shop)
    assert (customer.email, customer.first_name) == ("ada@example.com", "Ada")

    assert process_webhook(event.id, (now + timedelta(minutes=1)).isoformat()) == "skipped"
    again = fresh(event)
    assert (again.state, again.attempts, again.outcome) == ("processed", 1, done.outcome)
    assert len(customers_of(shop)) == 1


def test_a_rerun_after_a_crash_between_handler_and_outcome_changes_nothing_twice(
    app_context, shop, now
):
    """The handler committed, the worker died before writing the outcome: the lease runs out,
    the delivery runs again, and the idempotent handler finds nothing left to do."""
    event = make_event(shop, "customers/update", customer_payload(), received_at=now)
    process_webhook(event.id, now.isoformat())
    [before] = customers_of(shop)
    updated = before.updated_at
    crashed = fresh(event)
    crashed.state, crashed.outcome = "processing", None  # as left by the dead worker
    db.session.commit()

    later = now + LEASE + timedelta(seconds=1)
    assert process_webhook(event.id, later.isoformat()) == "processed"

    after = fresh(event)
    assert (after.attempts, after.outcome) == (2, {"customer": str(CUSTOMER), "result": "stale"})
    [customer] = customers_of(shop)
    assert (customer.email, customer.updated_at) == ("ada@example.com", updated)


def test_a_second_delivery_of_the_same_change_is_stale(app_context, shop, now):
    """Two subscriptions, or Shopify sending again under a new webhook id: applied once."""
    first = make_event(shop, "customers/update", customer_payload(), received_at=now)
    second = make_event(shop, "customers/update", customer_payload(), received_at=now)
    process_webhook(first.id, now.isoformat())
    process_webhook(second.id, now.isoformat())
    assert fresh(first).outcome["result"] == "applied"
    assert fresh(second).outcome["result"] == "stale"


@pytest.mark.parametrize(
    ("arrange", "topic", "reason"),
    [
        ("unknown_shop", "customers/update", "unknown shop"),
        ("uninstalled", "customers/update", "shop not installed"),
        ("never_installed", "customers/update", "shop not installed"),
        ("erased", "customers/update", "shop erased"),
        ("erased", "shop/redact", "shop erased"),
        ("installed", "products/update", "no handler for topic products/update"),
        ("pruned", "customers/update", "payload pruned"),
    ],
)
def test_deliveries_with_nothing_to_do_are_ignored_with_a_reason(
    app_context, now, arrange, topic, reason
):
    shop: Shop | None = None
    payload: Any = customer_payload()
    if arrange == "uninstalled":
        shop = ShopFactory(uninstalled_at=now - timedelta(hours=1))
    elif arrange == "never_installed":
        shop = ShopFactory(installed_at=None)
    elif arrange == "erased":
        shop = ShopFactory(
            uninstalled_at=now - timedelta(days=3), erased_at=now - timedelta(days=1)
        )
    elif arrange in ("installed", "pruned"):
        shop = ShopFactory()
    if arrange == "pruned":
        payload = null()
    event = make_event(
        shop, topic, payload, received_at=now, shop_domain=None if shop else "nobody.myshopify.com"
    )

    assert process_webhook(event.id, now.isoformat()) == "ignored"

    row = fresh(event)
    assert (row.state, row.outcome, row.attempts) == ("ignored", {"reason": reason}, 1)
    if shop is not None:
        assert customers_of(shop) == []


def test_topics_that_matter_after_an_uninstall_are_still_processed(app_context, now):
    shop = ShopFactory(
        installed_at=now - timedelta(days=9), uninstalled_at=now - timedelta(hours=1)
    )
    uninstalled = make_event(shop, "app/uninstalled", {"id": 1}, received_at=now)
    redact = make_event(
        shop,
        "customers/redact",
        {"shop_domain": shop.domain, "customer": {"id": CUSTOMER}, "orders_to_redact": []},
        received_at=now,
    )
    assert process_webhook(uninstalled.id, now.isoformat()) == "processed"
    assert fresh(uninstalled).outcome == {"result": "already_uninstalled"}
    assert process_webhook(redact.id, now.isoformat()) == "processed"


def test_a_shop_installed_after_the_delivery_was_recorded_is_found_by_domain(app_context, now):
    domain = f"late-{uuid.uuid4().hex[:8]}.myshopify.com"
    event = make_event(
        None, "customers/update", customer_payload(), received_at=now, shop_domain=domain
    )
    shop = ShopFactory(domain=domain)
    CustomerFactory(shop_id=shop.id, shopify_customer_id=CUSTOMER)

    assert process_webhook(event.id, now.isoformat()) == "processed"
    assert fresh(event).shop_id == shop.id


def test_a_handler_that_gives_up_leaves_the_delivery_ignored_and_stages_nothing(
    app_context, shop, now
):
    event = make_event(shop, "customers/update", {"email": "no-id@example.com"}, received_at=now)
    assert process_webhook(event.id, now.isoformat()) == "ignored"
    row = fresh(event)
    assert row.outcome == {"reason": "the payload has no usable customer id"}
    assert [c.shopify_updated_at for c in customers_of(shop)] == [None]  # untouched


# -- claims and leases --------------------------------------------------------------------------


def test_a_live_claim_is_left_alone(app_context, shop, now):
    event = make_event(
        shop,
        "customers/update",
        customer_payload(),
        received_at=now - timedelta(minutes=6),
        state="processing",
        attempts=1,
        claimed_at=now - timedelta(minutes=5),
    )
    assert process_webhook(event.id, now.isoformat()) == "skipped"
    row = fresh(event)
    assert (row.state, row.attempts, row.claimed_at) == (
        "processing",
        1,
        now - timedelta(minutes=5),
    )
    assert [c.shopify_updated_at for c in customers_of(shop)] == [None]  # untouched


def test_an_expired_claim_is_taken_over(app_context, shop, now):
    claimed = now - LEASE - timedelta(seconds=1)
    event = make_event(
        shop,
        "customers/update",
        customer_payload(),
        received_at=claimed,
        state="processing",
        attempts=1,
        claimed_at=claimed,
    )
    assert process_webhook(event.id, now.isoformat()) == "processed"
    row = fresh(event)
    assert (row.state, row.attempts, row.claimed_at) == ("processed", 2, now)


@pytest.mark.parametrize("state", ["processed", "ignored", "failed"])
def test_a_finished_delivery_is_never_claimed_again(app_context, shop, now, state):
    event = make_event(
        shop, "customers/update", customer_payload(), received_at=now, state=state, attempts=1
    )
    assert process_webhook(event.id, now.isoformat()) == "skipped"
    assert fresh(event).state == state


def test_an_unknown_event_id_is_skipped(app_context, now):
    assert process_webhook(2**62, now.isoformat()) == "skipped"


@pytest.mark.concurrency
def test_concurrent_runs_of_one_delivery_process_it_once(app, engine: Engine, on_postgresql, now):
    """Eight workers, each with its own connection, start on the same delivery at once."""
    if not on_postgresql:
        pytest.skip("PostgreSQL only")
    event_id, shop_id = _committed_delivery(engine, now)
    threads = 8
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads

    def work(index: int) -> None:
        with app.app_context():
            try:
                db.session.connection()  # this thread's own connection, before the start line
                barrier.wait(timeout=30)
                results[index] = process_webhook(event_id, now.isoformat())
            except BaseException as error:  # noqa: BLE001 - asserted below
                results[index] = error
            finally:
                db.session.remove()

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    try:
        assert sorted(map(str, results)) == ["processed"] + ["skipped"] * (threads - 1), results
        with Session(engine) as check:
            row = check.get(WebhookEvent, event_id)
            assert row is not None
            assert (row.state, row.attempts) == ("processed", 1)
            customers = check.scalars(select(Customer).where(Customer.shop_id == shop_id)).all()
            assert [c.shopify_customer_id for c in customers] == [CUSTOMER]
    finally:
        _delete_delivery(engine, event_id)


# -- failures and retries -----------------------------------------------------------------------


def test_a_failing_handler_records_the_error_releases_the_delivery_and_raises(
    app_context, connection: Connection, engine: Engine, on_postgresql, now
):
    """A real failure: the customer's row is locked by another transaction past lock_timeout.

    The delivery goes back to ``received`` with the error (RQ's Retry runs it again); once
    the lock is gone the next attempt succeeds.
    """
    if not on_postgresql:
        pytest.skip("PostgreSQL only")
    shop, customer = _committed_shop_with_customer(engine, now)
    connection.execute(text("SET LOCAL lock_timeout = '200ms'"))
    event = make_event(shop, "customers/update", customer_payload(), received_at=now)

    with _row_locked(engine, customer), pytest.raises(OperationalError, match="lock timeout"):
        process_webhook(event.id, now.isoformat())
    failed = fresh(event)
    assert (failed.state, failed.attempts) == ("received", 1)
    assert failed.error is not None
    assert "OperationalError" in failed.error
    assert "lock timeout" in failed.error

    assert process_webhook(event.id, (now + timedelta(seconds=30)).isoformat()) == "processed"
    done = fresh(event)
    assert (done.state, done.attempts, done.error) == ("processed", 2, None)


def test_after_the_last_attempt_a_delivery_is_failed_for_good(
    app_context, connection: Connection, engine: Engine, on_postgresql, jobs, now
):
    if not on_postgresql:
        pytest.skip("PostgreSQL only")
    shop, customer = _committed_shop_with_customer(engine, now)
    connection.execute(text("SET LOCAL lock_timeout = '200ms'"))
    event = make_event(
        shop,
        "customers/update",
        customer_payload(),
        received_at=now - timedelta(hours=1),
        attempts=MAX_ATTEMPTS - 1,
    )

    with _row_locked(engine, customer), pytest.raises(OperationalError):
        process_webhook(event.id, now.isoformat())

    row = fresh(event)
    assert (row.state, row.attempts) == ("failed", MAX_ATTEMPTS)
    assert process_webhook(event.id, now.isoformat()) == "skipped"
    sweep_webhooks((now + timedelta(hours=1)).isoformat())
    assert job_id(event.id) not in jobs.job_ids


# -- the sweeper ------------------------------------------------------------------------------


def test_the_sweeper_enqueues_exactly_the_deliveries_left_behind(app_context, settings, jobs, shop):
    now = datetime.now(UTC)  # the worker at the end runs the jobs at the real time

    def event(
        state: str, received_ago: timedelta, claimed_ago: timedelta | None = None
    ) -> WebhookEvent:
        return make_event(
            shop,
            "customers/update",
            customer_payload(),
            received_at=now - received_ago,
            state=state,
            attempts=0 if claimed_ago is None else 1,
            claimed_at=None if claimed_ago is None else now - claimed_ago,
        )

    never_enqueued = event("received", timedelta(minutes=2))
    just_arrived = event("received", timedelta(seconds=10))
    dead_worker = event(
        "processing", timedelta(minutes=12), claimed_ago=LEASE + timedelta(seconds=1)
    )
    busy_worker = event("processing", timedelta(minutes=2), claimed_ago=timedelta(minutes=1))
    just_failed = event("received", timedelta(minutes=5), claimed_ago=timedelta(seconds=30))
    retries_ran_out = event("received", timedelta(minutes=30), claimed_ago=timedelta(minutes=5))
    still_waiting = event("received", timedelta(minutes=3))
    finished = [
        event(state, timedelta(hours=1), timedelta(hours=1))
        for state in ("processed", "ignored", "failed")
    ]

    assert enqueue(settings, still_waiting.id) == "enqueued"  # its job is still in the queue
    stale_job = jobs.enqueue(process_webhook, retries_ran_out.id, job_id=job_id(retries_ran_out.id))
    jobs.remove(stale_job)
    stale_job.set_status(JobStatus.FAILED)  # RQ's retries ran out; the job hash lingers

    swept = sweep_webhooks(now.isoformat())

    queued = jobs.job_ids
    expected = {never_enqueued.id, dead_worker.id, retries_ran_out.id}
    left_alone = {just_arrived.id, busy_worker.id, just_failed.id, *(e.id for e in finished)}
    assert {job_id(i) for i in expected} <= set(queued)
    assert not {job_id(i) for i in left_alone} & set(queued)
    assert queued.count(job_id(still_waiting.id)) == 1
    assert swept >= len(expected)

    run_worker(jobs)
    for swept_event in (never_enqueued, dead_worker, retries_ran_out, still_waiting):
        assert fresh(swept_event).state == "processed"


@pytest.mark.smoke
def test_without_redis_the_sweeper_runs_the_deliveries_inline(app_context, now):
    shop = ShopFactory()
    CustomerFactory(shop_id=shop.id, shopify_customer_id=CUSTOMER)
    event = make_event(
        shop, "customers/update", customer_payload(), received_at=now - timedelta(minutes=5)
    )
    with settings_changed(app_context, redis_url=None):
        assert sweep_webhooks(now.isoformat()) >= 1
    assert fresh(event).state == "processed"


def test_flask_webhooks_sweep_and_prune(app_context, shop, jobs, now):
    event = make_event(
        shop, "customers/update", customer_payload(), received_at=now - timedelta(days=31)
    )
    runner = app_context.test_cli_runner()

    swept = runner.invoke(args=["webhooks", "sweep", "--now", now.isoformat()])
    assert swept.exit_code == 0, swept.output
    assert swept.output.startswith("enqueued ")
    assert job_id(event.id) in jobs.job_ids

    pruned = runner.invoke(args=["webhooks", "prune", "--now", now.isoformat()])
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.startswith("pruned ")
    assert fresh(event).payload is None


# -- pruning ------------------------------------------------------------------------------------


def test_pruning_drops_old_payloads_and_keeps_the_rows_and_outcomes(app_context, shop, now):
    old = make_event(
        shop,
        "customers/update",
        customer_payload(),
        received_at=now - timedelta(days=30, seconds=1),
        state="processed",
        attempts=1,
        outcome={"customer": str(CUSTOMER), "result": "applied"},
    )
    recent = make_event(
        shop, "customers/update", customer_payload(), received_at=now - timedelta(days=29)
    )

    assert prune_webhook_payloads(now.isoformat()) >= 1

    pruned, kept = fresh(old), fresh(recent)
    assert (pruned.payload, pruned.payload_pruned_at) == (None, now)
    assert (pruned.state, pruned.outcome, pruned.webhook_id) == (
        "processed",
        {"customer": str(CUSTOMER), "result": "applied"},
        old.webhook_id,
    )
    assert kept.payload == customer_payload()
    assert kept.payload_pruned_at is None
    is_sql_null = select(func.count()).where(
        WebhookEvent.id == old.id, WebhookEvent.payload.is_(None)
    )
    assert db.session.scalar(is_sql_null) == 1  # SQL NULL, not JSON null: the index skips it

    assert prune_webhook_payloads(now.isoformat()) == 0  # nothing left to prune


def test_pruning_works_through_a_backlog_in_batches(app_context, shop, now, on_postgresql):
    if not on_postgresql:
        pytest.skip("PostgreSQL only (generate_series)")
    rows = 2 * PRUNE_BATCH + 1
    db.session.execute(
        text(
            "INSERT INTO webhook_events (webhook_id, shop_id, shop_domain, topic, api_version,"
            " payload, received_at, state, attempts)"
            " SELECT 'bulk-' || :tag || '-' || n, :shop_id, :domain, 'customers/update', '2026-10',"
            " '{\"id\": 1}'::jsonb, :received_at, 'processed', 1"
            " FROM generate_series(1, :rows) AS n"
        ),
        {
            "tag": uuid.uuid4().hex,
            "shop_id": shop.id,
            "domain": shop.domain,
            "received_at": now - timedelta(days=40),
            "rows": rows,
        },
    )
    db.session.commit()

    assert prune_webhook_payloads(now.isoformat()) >= rows
    left = select(func.count()).where(
        WebhookEvent.shop_id == shop.id, WebhookEvent.payload.is_not(None)
    )
    assert db.session.scalar(left) == 0
    assert db.session.scalar(select(func.count()).where(WebhookEvent.shop_id == shop.id)) == rows


# -- helpers for the tests that commit for real -----------------------------------------------


def _committed_shop_with_customer(engine: Engine, now: datetime) -> tuple[Shop, Customer]:
    with Session(engine, expire_on_commit=False) as setup:
        shop = Shop(
            domain=f"job-{uuid.uuid4().hex[:10]}.myshopify.com",
            currency="USD",
            created_at=now,
            installed_at=now - timedelta(days=1),
        )
        setup.add(shop)
        setup.flush()
        customer = Customer(
            shop_id=shop.id, shopify_customer_id=CUSTOMER, created_at=now, updated_at=now
        )
        setup.add(customer)
        setup.commit()
    return db.session.get(Shop, shop.id), customer  # type: ignore[return-value]


class _row_locked:  # noqa: N801 - used as a context manager, reads like one
    """Another transaction holds the customer's row (SELECT … FOR UPDATE) until exit."""

    def __init__(self, engine: Engine, customer: Customer) -> None:
        self.session = Session(engine)
        self.customer_id = customer.id

    def __enter__(self) -> None:
        self.session.execute(
            select(Customer.id).where(Customer.id == self.customer_id).with_for_update()
        )

    def __exit__(self, *exc: object) -> None:
        self.session.rollback()
        self.session.close()


def _committed_delivery(engine: Engine, now: datetime) -> tuple[int, int]:
    with Session(engine) as setup:
        shop = Shop(
            domain=f"conc-{uuid.uuid4().hex[:10]}.myshopify.com",
            currency="USD",
            created_at=now,
            installed_at=now - timedelta(days=1),
        )
        setup.add(shop)
        setup.flush()
        setup.add(
            Customer(shop_id=shop.id, shopify_customer_id=CUSTOMER, created_at=now, updated_at=now)
        )
        event = WebhookEvent(
            webhook_id=str(uuid.uuid4()),
            shop_id=shop.id,
            shop_domain=shop.domain,
            topic="customers/update",
            api_version="2026-10",
            payload=customer_payload(),
            received_at=now,
            state="received",
            attempts=0,
        )
        setup.add(event)
        setup.commit()
        return event.id, shop.id


def _delete_delivery(engine: Engine, event_id: int) -> None:
    with Session(engine) as cleanup:
        cleanup.execute(delete(WebhookEvent).where(WebhookEvent.id == event_id))
        cleanup.commit()
