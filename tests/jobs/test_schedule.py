"""The periodic schedule on real Redis: the table, ticks, two schedulers, the lock, catch-up,
the fan-out over shops, `flask scheduler` and `flask worker --schedule`; and the job that
erases shops whose redaction fell due.

Time is an injected clock: a "period later" is a clock moved forward, never a sleep. Only the
lock's expiry is real Redis time (a 1 s lock). Each test's schedule has its own namespace
(Redis keys and job ids), removed afterwards.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from redis import Redis
from rq import Queue
from rq.job import JOB_ID_PATTERN, Job
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from cli import install_shop
from config import Settings
from extensions import current_session, db
from jobs.maintenance import ERASER, erase_due_shops
from jobs.queues import QUEUES
from jobs.schedule import NAMESPACE, TABLE, Periodic, Scheduler, installed_shops, once
from ledger import operations
from ledger.book import Actor
from ledger.money import Money
from ledger.shops import uninstall
from models import AuditLog, Customer, LedgerEntry, Shop
from tests.factories import CustomerFactory, ShopFactory

ROOT = Path(__file__).resolve().parents[2]
# Ten seconds into a minute, an hour and a day: every job of the table is due at the start.
T0 = datetime(2026, 11, 22, 12, 0, 10, tzinfo=UTC)
ENTRY = {entry.name: entry for entry in TABLE}
MINUTELY = {"webhooks-sweep", "sync-sweep"}


class Clock:
    """The scheduler's time, moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, by: timedelta) -> None:
        self.at += by


@pytest.fixture
def redis_url(settings: Settings) -> str:
    if settings.redis_url is None:
        pytest.skip("needs REDIS_URL (make test provides it)")
    return settings.redis_url


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    connection = Redis.from_url(redis_url)
    yield connection
    connection.close()


def remove_schedule(connection: Redis, namespace: str) -> None:
    """Every job, queue entry and key this namespace's schedule made."""
    for name in QUEUES:
        queue = Queue(name, connection=connection)
        for job_id in queue.get_job_ids():
            if job_id.startswith(f"{namespace}-"):
                queue.remove(job_id)
    for key in connection.scan_iter(match=f"rq:job:{namespace}-*", count=1000):
        connection.delete(key)
    for key in connection.scan_iter(match=f"creditcraft:{namespace}:*"):
        connection.delete(key)


@pytest.fixture
def namespace(redis: Redis) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    remove_schedule(redis, name)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def scheduler(redis_url: str, namespace: str, clock: Clock) -> Iterator[Callable[..., Scheduler]]:
    """Makes schedulers of this test's namespace, each on its own Redis connection."""
    connections: list[Redis] = []

    def make(**options: Any) -> Scheduler:
        connection = Redis.from_url(redis_url)
        connections.append(connection)
        return Scheduler(connection, namespace=namespace, clock=clock, **options)

    yield make
    for connection in connections:
        connection.close()


def queued(connection: Redis, namespace: str) -> list[str]:
    """This schedule's job ids in every queue, one per push (a double push shows twice)."""
    return sorted(
        job_id
        for name in QUEUES
        for job_id in Queue(name, connection=connection).get_job_ids()
        if job_id.startswith(f"{namespace}-")
    )


def job_ids(namespace: str, name: str, at: datetime, shops: list[int] | None = None) -> list[str]:
    entry = ENTRY[name]
    args = [(shop_id,) for shop_id in shops] if shops is not None else [()]
    return [entry.job_id(namespace, a, entry.period_start(at)) for a in args]


def of_shops(ids: list[str], shops: list[int]) -> list[str]:
    """The per-shop job ids among ``ids`` that are for one of ``shops``."""
    return [i for i in ids if any(f"-{shop_id}-" in i for shop_id in shops)]


def _shop(**fields: Any) -> Shop:
    shop: Shop = ShopFactory(**fields)
    return shop


# -- the table -------------------------------------------------------------------------------------


def test_the_table_has_every_job_the_issue_lists():
    table = {
        entry.name: (entry.func, dict(entry.kwargs), entry.every, entry.args) for entry in TABLE
    }
    minute, hour, day = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
    assert table == {
        "webhooks-sweep": ("jobs.webhooks.sweep_webhooks", {}, minute, once),
        "sync-sweep": ("jobs.sync.sweep_outbox", {}, minute, once),
        "bulk-sweep": ("jobs.bulk.sweep_bulk_imports", {}, timedelta(minutes=5), once),
        "expire-credits": ("jobs.credits.expire_credits", {}, timedelta(minutes=15), once),
        "reconcile": ("jobs.reconcile.reconcile_shop", {"full": False}, hour, installed_shops),
        "reconcile-full": ("jobs.reconcile.reconcile_shop", {"full": True}, day, installed_shops),
        "purge-idempotency-keys": ("jobs.maintenance.purge_idempotency_keys", {}, hour, once),
        "prune-webhook-payloads": ("jobs.webhooks.prune_webhook_payloads", {}, day, once),
        "erase-due-shops": ("jobs.maintenance.erase_due_shops", {}, hour, once),
        "archive-ledger": ("jobs.maintenance.archive_old_entries", {}, day, once),
    }
    assert {entry.queue for entry in TABLE} <= set(QUEUES)
    assert ENTRY["reconcile-full"].period_start(T0) == datetime(2026, 11, 22, 3, tzinfo=UTC)
    for entry in TABLE:
        assert JOB_ID_PATTERN.fullmatch(entry.job_id(NAMESPACE, (123,), T0)), entry.name
        assert entry.retry.max >= 2, entry.name


@pytest.mark.parametrize("entry", TABLE, ids=lambda entry: entry.name)
def test_every_job_names_a_function_its_arguments_fit(entry: Periodic):
    """What the worker will import and call, with the arguments the schedule gives it."""
    module_name, _, function_name = entry.func.rpartition(".")
    if importlib.util.find_spec(module_name) is None:
        pytest.skip(f"{module_name} is not written yet")
    function = getattr(importlib.import_module(module_name), function_name)
    sample = (1,) if entry.args is installed_shops else ()
    inspect.signature(function).bind(*sample, **entry.kwargs)


# -- ticks -----------------------------------------------------------------------------------------


def test_a_tick_enqueues_each_due_job_once_and_again_only_in_a_new_period(
    app_context, scheduler, redis, namespace, clock
):
    installed = [_shop().id, _shop().id]
    acting = scheduler()

    first = acting.tick()

    assert first is not None
    assert sorted(first) == queued(redis, namespace)  # each pushed exactly once
    for name in ENTRY:
        shops = installed if ENTRY[name].args is installed_shops else None
        expected = job_ids(namespace, name, T0, shops)
        mine = [i for i in first if i.startswith(f"{namespace}-{name}-")]
        assert set(expected) <= set(mine), name
        if shops is None:
            assert mine == expected, name
    job = Job.fetch(job_ids(namespace, "reconcile", T0, installed[:1])[0], connection=redis)
    assert (job.func_name, job.args, job.kwargs) == (
        "jobs.reconcile.reconcile_shop",
        (installed[0],),
        {"full": False},
    )
    assert (job.origin, job.retries_left, job.timeout) == ("default", 3, 15 * 60)
    assert job.result_ttl == 3600  # the id stays taken for the rest of its period

    assert acting.tick() == []  # the same instant
    clock.advance(timedelta(seconds=45))
    assert acting.tick() == []  # the same minute
    clock.advance(timedelta(seconds=20))  # 12:01:15
    assert sorted(acting.tick() or []) == sorted(
        job_ids(namespace, "webhooks-sweep", clock.at) + job_ids(namespace, "sync-sweep", clock.at)
    )
    clock.advance(timedelta(minutes=14))  # 12:15:15: a new quarter, and hours begun at :05, :10
    assert {i.split("-2026")[0] for i in acting.tick() or []} == {
        f"{namespace}-webhooks-sweep",
        f"{namespace}-sync-sweep",
        f"{namespace}-bulk-sweep",
        f"{namespace}-expire-credits",
        f"{namespace}-purge-idempotency-keys",
        f"{namespace}-erase-due-shops",
    }
    assert len(queued(redis, namespace)) == len(set(queued(redis, namespace)))


def test_a_scheduler_down_for_five_periods_catches_up_with_one_run(
    app_context, scheduler, redis, namespace, clock
):
    shop_id = _shop().id
    stopped = scheduler()
    stopped.tick()
    stopped.resign()

    clock.advance(timedelta(hours=5))  # 17:00:10: five hourly periods missed
    restarted = scheduler()
    caught_up = restarted.tick() or []

    for name in ("purge-idempotency-keys", "erase-due-shops", "webhooks-sweep", "expire-credits"):
        assert [i for i in caught_up if i.startswith(f"{namespace}-{name}-")] == job_ids(
            namespace, name, clock.at
        ), name
    assert of_shops(caught_up, [shop_id]) == job_ids(namespace, "reconcile", clock.at, [shop_id])
    assert not any(i.startswith(f"{namespace}-reconcile-full-") for i in caught_up)  # same day
    reconcile_runs = [
        i for i in queued(redis, namespace) if i.startswith(f"{namespace}-reconcile-{shop_id}-")
    ]
    assert reconcile_runs == sorted(
        job_ids(namespace, "reconcile", T0, [shop_id])
        + job_ids(namespace, "reconcile", clock.at, [shop_id])
    )
    assert restarted.last_period(ENTRY["reconcile"]) == datetime(2026, 11, 22, 16, 20, tzinfo=UTC)
    assert restarted.tick() == []


def test_a_crash_between_enqueueing_and_recording_the_period_enqueues_nothing_twice(
    app_context, scheduler, redis, namespace
):
    """The jobs went out, the last period was not written: the next tick's enqueues no-op."""
    acting = scheduler()
    before = acting.tick()
    redis.delete(acting.last_key)

    assert acting.tick() == []
    assert queued(redis, namespace) == sorted(before or [])
    assert acting.last_period(ENTRY["erase-due-shops"]) == ENTRY["erase-due-shops"].period_start(T0)


def test_per_shop_jobs_fan_out_over_installed_shops_only(app_context, scheduler, namespace, now):
    installed = _shop()
    uninstalled = _shop(uninstalled_at=now, redact_due_at=now + timedelta(hours=48))
    erased = _shop(uninstalled_at=now - timedelta(days=3), erased_at=now - timedelta(days=1))
    reinstalled = _shop(installed_at=now, uninstalled_at=None, erased_at=None)
    never_installed = _shop(installed_at=None)
    mine = [installed.id, uninstalled.id, erased.id, reinstalled.id, never_installed.id]

    fanned = [shop_id for (shop_id,) in installed_shops() if shop_id in mine]
    enqueued = scheduler().tick() or []

    assert fanned == [installed.id, reinstalled.id]
    assert sorted(of_shops(enqueued, mine)) == sorted(
        job_ids(namespace, "reconcile", T0, fanned)
        + job_ids(namespace, "reconcile-full", T0, fanned)
    )


# -- one scheduler at a time -----------------------------------------------------------------------


@pytest.fixture
def committed_shops(engine: Engine) -> Iterator[list[int]]:
    """Two installed shops committed for real (other threads' connections see them)."""
    with Session(engine) as session:
        shops = [
            Shop(domain=f"sched-{uuid.uuid4().hex[:10]}.myshopify.com", created_at=T0)
            for _ in range(2)
        ]
        for shop in shops:
            shop.installed_at = T0
        session.add_all(shops)
        session.commit()
        ids = [shop.id for shop in shops]
    yield ids
    with Session(engine) as session:
        session.execute(delete(Shop).where(Shop.id.in_(ids)))
        session.commit()


def tick_in_threads(
    app: Flask, schedulers: list[Scheduler], clock: Clock, periods: int, step: timedelta
) -> list[list[list[str] | None]]:
    """Each scheduler ticks in its own thread with its own app context, all at once, once a
    period for ``periods`` periods; what each tick returned, per scheduler."""
    start = threading.Barrier(len(schedulers), action=lambda: clock.advance(step))
    results: list[list[list[str] | None]] = [[] for _ in schedulers]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        with app.app_context():
            try:
                for _ in range(periods):
                    start.wait(timeout=30)
                    results[index].append(schedulers[index].tick())
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)
                start.abort()
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(schedulers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


@pytest.mark.concurrency
def test_two_schedulers_ticking_at_once_enqueue_each_job_once_per_period(
    app, on_postgresql, committed_shops, scheduler, redis, namespace, clock
):
    if not on_postgresql:
        pytest.skip("PostgreSQL only")
    clock.at = T0 - timedelta(minutes=1)  # the barrier's first step brings it to T0
    a, b = scheduler(), scheduler()

    results = tick_in_threads(app, [a, b], clock, periods=4, step=timedelta(minutes=1))

    for ticks in zip(*results, strict=True):
        assert sum(tick is not None for tick in ticks) == 1, ticks  # one acted, one stood by
    enqueued = [i for ticks in results for tick in ticks for i in tick or []]
    in_queues = queued(redis, namespace)
    assert sorted(enqueued) == in_queues
    assert len(in_queues) == len(set(in_queues))
    minutes = [T0 + timedelta(minutes=n) for n in range(4)]
    for name in MINUTELY:
        assert [i for i in in_queues if i.startswith(f"{namespace}-{name}-")] == sorted(
            i for at in minutes for i in job_ids(namespace, name, at)
        )
    assert sorted(of_shops(in_queues, committed_shops)) == sorted(
        job_ids(namespace, "reconcile", T0, committed_shops)
        + job_ids(namespace, "reconcile-full", T0, committed_shops)
    )


@pytest.mark.concurrency
def test_two_schedulers_that_both_act_still_enqueue_each_job_once(
    app, on_postgresql, committed_shops, scheduler, redis, namespace
):
    """As if the lock had run out under a stalled scheduler while another took over: both
    enqueue the same periods at the same moment; the unique ids and the forward-only last
    period keep one run per period."""
    if not on_postgresql:
        pytest.skip("PostgreSQL only")
    both = [scheduler(), scheduler()]
    start = threading.Barrier(2)
    results: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def act(index: int) -> None:
        with app.app_context():
            try:
                for period in range(3):
                    start.wait(timeout=30)
                    at = T0 + timedelta(minutes=period)
                    for entry in TABLE:
                        results[index] += both[index].enqueue_if_due(entry, at)
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)
                start.abort()
            finally:
                db.session.remove()

    threads = [threading.Thread(target=act, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    in_queues = queued(redis, namespace)
    assert len(in_queues) == len(set(in_queues))
    assert sorted(results[0] + results[1]) == in_queues  # no id claimed by both
    for name in MINUTELY:
        assert len([i for i in in_queues if i.startswith(f"{namespace}-{name}-")]) == 3
    assert len(of_shops(in_queues, committed_shops)) == 4  # two shops, hourly and nightly


def test_the_lock_runs_out_when_its_scheduler_dies_and_another_takes_over(
    app_context, scheduler, redis, namespace, clock
):
    dying = scheduler(lock_ttl=timedelta(seconds=1))
    standby = scheduler()
    assert dying.tick() is not None
    assert standby.tick() is None

    clock.advance(timedelta(minutes=1))  # the dying scheduler never ticks (nor renews) again
    deadline = time.monotonic() + 10
    while redis.exists(dying.lock_key) and time.monotonic() < deadline:
        time.sleep(0.05)
    taken_over = standby.tick()

    assert sorted(taken_over or []) == sorted(
        job_ids(namespace, "webhooks-sweep", clock.at) + job_ids(namespace, "sync-sweep", clock.at)
    )  # the new minute's jobs; nothing the dead scheduler enqueued comes twice
    assert dying.tick() is None  # back from a stall: the lock is the other's now
    assert len(queued(redis, namespace)) == len(set(queued(redis, namespace)))


def test_a_live_scheduler_renews_its_lock_and_gives_it_up_when_stopped(
    app_context, scheduler, redis
):
    acting = scheduler()  # a 30 s lock
    standby = scheduler()
    acting.tick()
    redis.pexpire(acting.lock_key, 200)  # about to run out

    acting.tick()

    assert redis.pttl(acting.lock_key) > 20_000  # renewed to its full 30 s
    assert standby.tick() is None
    acting.resign()
    assert standby.tick() == []  # acts at once (nothing is due: the period is done)
    assert acting.tick() is None


def test_the_loop_ticks_until_stopped_then_gives_the_lock_up(app_context, scheduler, redis):
    acting = scheduler()
    stop = threading.Event()
    ticked = threading.Event()
    checks: list[int] = []

    def alive() -> bool:
        checks.append(1)
        if len(checks) == 2:  # asked again: one tick is done
            ticked.set()
        return True

    loop = threading.Thread(
        target=acting.run,
        args=(stop,),
        kwargs={"poll": timedelta(milliseconds=20), "alive": alive},
        daemon=True,
    )
    loop.start()
    assert ticked.wait(timeout=10)
    stop.set()
    loop.join(timeout=10)

    assert not loop.is_alive()
    assert acting.last_period(ENTRY["expire-credits"]) == ENTRY["expire-credits"].period_start(T0)
    assert not redis.exists(acting.lock_key)


# -- flask scheduler, flask worker --schedule ------------------------------------------------------


@pytest.fixture
def default_schedule(redis: Redis) -> Iterator[str]:
    """The production namespace, emptied before and after (the test Redis is throwaway)."""
    remove_schedule(redis, NAMESPACE)
    yield NAMESPACE
    remove_schedule(redis, NAMESPACE)


def test_flask_scheduler_once_enqueues_what_is_due(app_context, redis, default_schedule):
    runner = app_context.test_cli_runner()

    first = runner.invoke(args=["scheduler", "--once"])
    second = runner.invoke(args=["scheduler", "--once"])

    assert first.exit_code == 0, first.output
    count = len(queued(redis, default_schedule))
    assert count >= len(TABLE) - 2  # the per-shop jobs need installed shops
    assert first.output == f"enqueued {count} periodic jobs\n"
    assert second.output == "enqueued 0 periodic jobs\n"
    assert not redis.exists(f"creditcraft:{default_schedule}:lock")


def test_flask_scheduler_once_stands_by_while_another_scheduler_acts(
    app_context, redis, default_schedule
):
    other = Scheduler(redis)
    other.lead()
    try:
        done = app_context.test_cli_runner().invoke(args=["scheduler", "--once"])
    finally:
        other.resign()
    assert done.output == "another scheduler is acting: nothing enqueued\n"
    assert queued(redis, default_schedule) == []


def test_flask_worker_refuses_schedule_with_burst(app_context):
    done = app_context.test_cli_runner().invoke(args=["worker", "--burst", "--schedule"])
    assert done.exit_code == 2
    assert "--schedule runs until stopped" in done.output


@pytest.fixture
def scratch_redis(redis_url: str) -> Iterator[tuple[str, Redis]]:
    """Another database of the test Redis: a real worker runs there, away from other tests."""
    url = redis_url.rsplit("/", 1)[0] + "/13"
    connection = Redis.from_url(url)
    connection.flushdb()
    yield url, connection
    connection.flushdb()
    connection.close()


def start_worker_with_schedule(
    settings: Settings, redis_url: str, log: Path
) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "CREDITCRAFT_ENV": "test",
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": redis_url,
        # Jobs that would call Shopify reach a closed port, never the internet.
        "SHOPIFY_ADMIN_ORIGIN": "http://127.0.0.1:9",
    }
    command = [sys.executable, "-m", "flask", "--app", "app:create_app", "worker", "--schedule"]
    with log.open("wb") as out:  # not a pipe: the scheduler child may outlive the worker
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_make_worker_runs_the_schedule_beside_the_worker_and_stops_it(
    app, settings, scratch_redis, tmp_path
):
    url, connection = scratch_redis
    last = f"creditcraft:{NAMESPACE}:last"
    worker = start_worker_with_schedule(settings, url, tmp_path / "worker.log")
    try:
        ticked = wait_for(lambda: connection.hlen(last) == len(TABLE))
        assert ticked, (tmp_path / "worker.log").read_text()
        assert connection.exists(f"creditcraft:{NAMESPACE}:lock")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, (tmp_path / "worker.log").read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert not connection.exists(f"creditcraft:{NAMESPACE}:lock")  # released on the way out


def test_a_scheduler_whose_worker_was_killed_stops_by_itself(
    app, settings, scratch_redis, tmp_path
):
    url, connection = scratch_redis
    lock = f"creditcraft:{NAMESPACE}:lock"
    worker = start_worker_with_schedule(settings, url, tmp_path / "worker.log")
    try:
        assert wait_for(lambda: bool(connection.exists(lock))), (
            tmp_path / "worker.log"
        ).read_text()
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    # Within a poll (1 s) the orphan sees its new parent, stops and releases the lock; left
    # to expire, the lock (renewed every second) would stand for 30 s.
    assert wait_for(lambda: not connection.exists(lock), seconds=15)


# -- erase_due_shops -------------------------------------------------------------------------------


def _holding_credit(shop: Shop, at: datetime) -> None:
    customer: Customer = CustomerFactory(shop_id=shop.id)
    by = Actor(shop.id, at, "staff:1", "goodwill", idempotency_key=f"erase-{uuid.uuid4()}")
    operations.issue(
        current_session(), by, customer=customer.shopify_customer_id, amount=Money(500, "USD")
    )


def test_erase_due_shops_erases_a_due_shop_and_not_a_reinstalled_or_undue_one(app_context, now):
    """Uninstalled three days ago, and no shop/redact came; beside it a shop uninstalled as
    long ago but installed again since, and one uninstalled just now."""
    due, reinstalled, not_yet_due = (_shop(installed_at=now - timedelta(days=30)) for _ in "abc")
    for shop in (due, reinstalled, not_yet_due):
        _holding_credit(shop, now - timedelta(days=10))
    for shop in (due, reinstalled):
        assert uninstall(shop, now - timedelta(days=3), now - timedelta(days=3)) == "applied"
    assert uninstall(not_yet_due, now, now) == "applied"
    current_session().commit()
    install_shop(reinstalled.domain, "offline-token", native_sync=True, now=now - timedelta(days=1))

    assert erase_due_shops(now.isoformat()) == 1

    session = current_session()
    session.expire_all()

    def entries(shop: Shop) -> int:
        statement = select(LedgerEntry.id).where(LedgerEntry.shop_id == shop.id)
        return len(session.scalars(statement).all())

    assert due.erased_at == now
    assert (entries(due), due.access_token_encrypted, due.name) == (0, None, None)
    assert session.scalars(select(Customer).where(Customer.shop_id == due.id)).all() == []
    audit = session.scalars(select(AuditLog).where(AuditLog.shop_id == due.id)).one()
    assert (audit.actor, audit.action, audit.outcome) == (ERASER, "shop.erase", "success")
    assert audit.details["ledger_entries"] == 1
    for kept in (reinstalled, not_yet_due):
        assert kept.erased_at is None
        assert entries(kept) == 1

    assert erase_due_shops((now + timedelta(hours=1)).isoformat()) == 0  # nothing twice
    assert len(session.scalars(select(AuditLog).where(AuditLog.shop_id == due.id)).all()) == 1
