"""The periodic schedule: one table of jobs, and the scheduler that enqueues them on time.

Each job runs once per *period*: ``[start, start + every)``, periods aligned on UTC midnight
plus ``at`` (so "every day at 03:00 UTC" is ``every=1 day, at=3 h``). The scheduler enqueues a
job when its current period has not been enqueued yet; that is the whole rule, and it gives:

- **One run per period, whoever enqueues it.** The job id is deterministic
  (``sched-<name>[-<shop id>]-<period start>``) and enqueued with RQ's unique enqueue (an
  atomic check-and-save in Lua), so a second enqueue of the same period is a no-op. The job's
  hash is kept for a period after it finishes (``result_ttl``), so the id stays taken for the
  whole period.
- **A missed run caught up once.** The last period enqueued per job is kept in Redis (a hash,
  only ever moved forward, and written after the enqueue so a crash in between re-enqueues the
  same ids, which are no-ops). After any downtime the job is due once, for the current period.
- **One scheduler acting at a time.** Only the holder of a Redis lock ticks (redis-py's
  ``Lock``: SET NX PX, token-checked renewal and release in Lua). It is renewed at every tick
  and expires ``LOCK_TTL`` after the last renewal, so a scheduler that dies stops holding it
  and another takes over. A scheduler that stalls past the expiry while another takes over
  is harmless: the job ids above keep every period's run single.
- **Stale queued runs dropped.** A job not started within a period (workers down) expires
  (``ttl``); the next period's run does the same work, so a backlog never piles up.

Why not RQ's own cron? In rq 3.0.0 ``rq.cron.CronScheduler`` keeps its schedule in memory:
two ``rq cron`` processes enqueue everything twice (no lock between them), ids are random,
the next run is computed from "now" (a run missed while it was down is never caught up), and
its arguments are fixed at registration (no fan-out over shops). RQ's worker scheduler
(``with_scheduler``) only moves jobs already scheduled (``enqueue_at``, ``Retry``) to their
queues. Neither gives the guarantees above, so this is a small loop of its own.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import LockError
from redis.lock import Lock
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from sqlalchemy import select

from config import Settings
from extensions import current_session
from jobs.queues import RedisNotConfigured
from models import Shop

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from flask import Flask

log = logging.getLogger(__name__)

# The lock is renewed at every tick; a scheduler silent this long is taken for dead.
LOCK_TTL = timedelta(seconds=30)
# How often the loop wakes: a job runs at most this late in its period. An idle tick is
# two Redis round trips.
POLL = timedelta(seconds=1)
# Retries within the period (the next period runs the job anyway).
RETRY_SOON = Retry(max=2, interval=[10, 30])
RETRY_LATER = Retry(max=3, interval=[60, 300, 900])
# A failed run stays visible to operators this long (at least a period: it holds its id).
FAILURE_KEPT = timedelta(days=7)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NAMESPACE = "sched"


# -- what runs -------------------------------------------------------------------------------------


def once() -> list[tuple[Any, ...]]:
    """One job per period, without arguments."""
    return [()]


def installed_shops() -> list[tuple[Any, ...]]:
    """One job per period for each installed, not erased shop: ``(shop_id,)``, by id."""
    session = current_session()
    try:
        ids = session.scalars(
            select(Shop.id)
            .where(
                Shop.installed_at.is_not(None),
                Shop.uninstalled_at.is_(None),
                Shop.erased_at.is_(None),
            )
            .order_by(Shop.id)
        ).all()
    except BaseException:
        session.rollback()
        raise
    session.commit()  # read only: hold no snapshot open until the next tick
    return [(shop_id,) for shop_id in ids]


@dataclass(frozen=True)
class Periodic:
    """A job of the schedule: ``func`` (a dotted path the worker imports) on ``queue``."""

    name: str
    func: str
    every: timedelta
    queue: str
    at: timedelta = timedelta(0)
    args: Callable[[], Sequence[tuple[Any, ...]]] = once
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    timeout: timedelta = timedelta(minutes=3)
    retry: Retry = RETRY_LATER

    def period_start(self, now: datetime) -> datetime:
        """The start of the period ``now`` falls in."""
        origin = EPOCH + self.at
        return origin + ((now - origin) // self.every) * self.every

    def job_id(self, namespace: str, args: tuple[Any, ...], period: datetime) -> str:
        parts = [namespace, self.name, *map(str, args), period.strftime("%Y%m%dT%H%MZ")]
        return "-".join(parts)


MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)

# The schedule. Queues by urgency: the webhook sweeper beside the deliveries it re-enqueues,
# the outbox sweeper on ``sync``, the heavy nightly full reconciliation on ``bulk``.
TABLE: tuple[Periodic, ...] = (
    Periodic(
        "webhooks-sweep",
        "jobs.webhooks.sweep_webhooks",
        every=MINUTE,
        queue="webhooks",
        retry=RETRY_SOON,
    ),
    Periodic("sync-sweep", "jobs.sync.sweep_outbox", every=MINUTE, queue="sync", retry=RETRY_SOON),
    Periodic(
        "bulk-sweep",
        "jobs.bulk.sweep_bulk_imports",
        every=timedelta(minutes=5),
        queue="bulk",
        retry=RETRY_SOON,
    ),
    Periodic(
        "expire-credits",
        "jobs.credits.expire_credits",
        every=timedelta(minutes=15),
        queue="default",
        timeout=timedelta(minutes=30),
    ),
    Periodic(
        "reconcile",
        "jobs.reconcile.reconcile_shop",
        every=HOUR,
        at=timedelta(minutes=20),
        queue="default",
        args=installed_shops,
        kwargs={"full": False},
        timeout=timedelta(minutes=15),
    ),
    Periodic(
        "reconcile-full",
        "jobs.reconcile.reconcile_shop",
        every=DAY,
        at=timedelta(hours=3),
        queue="bulk",
        args=installed_shops,
        kwargs={"full": True},
        timeout=timedelta(hours=2),
    ),
    Periodic(
        "purge-idempotency-keys",
        "jobs.maintenance.purge_idempotency_keys",
        every=HOUR,
        at=timedelta(minutes=5),
        queue="default",
        timeout=timedelta(minutes=10),
    ),
    Periodic(
        "prune-webhook-payloads",
        "jobs.webhooks.prune_webhook_payloads",
        every=DAY,
        at=timedelta(hours=4),
        queue="default",
        timeout=timedelta(minutes=30),
    ),
    Periodic(
        "erase-due-shops",
        "jobs.maintenance.erase_due_shops",
        every=HOUR,
        at=timedelta(minutes=10),
        queue="default",
        timeout=timedelta(hours=1),
    ),
    # Retention: does nothing unless LEDGER_RETENTION_DAYS is set.
    Periodic(
        "archive-ledger",
        "jobs.maintenance.archive_old_entries",
        every=DAY,
        at=timedelta(hours=5),
        queue="bulk",
        timeout=timedelta(hours=2),
    ),
)


# -- the scheduler ---------------------------------------------------------------------------------

# Move a job's last enqueued period forward, never back (a late scheduler cannot rewind it).
_ADVANCE = """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > last then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    return 1
end
return 0
"""


def utc_now() -> datetime:
    return datetime.now(UTC)


def _is_due(entry: Periodic, now: datetime, last: datetime | None) -> bool:
    """Due: the period ``now`` falls in is later than the last one enqueued (or none was)."""
    return last is None or last < entry.period_start(now)


def _from_seconds(raw: bytes | str) -> datetime:
    return EPOCH + timedelta(seconds=int(raw))


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class Scheduler:
    """Enqueues the jobs of ``table`` that are due, while it holds the scheduler lock.

    ``clock`` says what time it is (tests drive it); ``namespace`` prefixes the Redis keys and
    the job ids, so schedules that must not see each other (tests) can share a Redis.
    """

    def __init__(
        self,
        connection: Redis,
        table: Sequence[Periodic] = TABLE,
        *,
        clock: Callable[[], datetime] = utc_now,
        lock_ttl: timedelta = LOCK_TTL,
        namespace: str = NAMESPACE,
    ) -> None:
        self.connection = connection
        self.table = table
        self.clock = clock
        self.namespace = namespace
        self.lock_key = f"creditcraft:{namespace}:lock"
        self.last_key = f"creditcraft:{namespace}:last"
        self._lock = Lock(
            connection,
            self.lock_key,
            timeout=lock_ttl.total_seconds(),
            blocking=False,
            thread_local=False,  # one scheduler, one owner, whichever thread renews it
        )
        self._advance = connection.register_script(_ADVANCE)

    # -- leadership

    def lead(self) -> bool:
        """True while this scheduler holds the lock: renew it if ours, else try to take it."""
        if self._lock.local.token is not None:
            try:
                self._lock.reacquire()
                return True
            except LockError:
                log.warning("scheduler lock lost (expired or taken over); trying to take it again")
                self._lock.local.token = None
        if self._lock.acquire(blocking=False):
            log.info("this scheduler now acts (lock %s)", self.lock_key)
            return True
        return False

    def resign(self) -> None:
        """Give the lock up (if still ours), so another scheduler acts without waiting."""
        if self._lock.local.token is None:
            return
        # Expired already, or another scheduler holds it now: nothing of ours to free.
        with suppress(LockError):
            self._lock.release()

    # -- ticking

    def tick(self) -> list[str] | None:
        """Enqueue every job due now; the ids enqueued, or None if another scheduler acts.

        A tick with nothing due costs two round trips (the renewal, the last periods).
        """
        if not self.lead():
            return None
        now = self.clock()
        last = self.last_periods()
        due = [entry for entry in self.table if _is_due(entry, now, last.get(entry.name))]
        enqueued: list[str] = []
        for index, entry in enumerate(due):
            # Renewed before each job, so a long fan-out keeps the lock; if it was lost all
            # the same, whoever holds it now carries on (ids already enqueued are no-ops).
            if index and not self.lead():
                break
            try:
                enqueued += self.enqueue_if_due(entry, now)
            except Exception:  # one job's failure (its shops unreadable) holds up no other
                log.exception(
                    "%s: could not be enqueued; trying again at the next tick", entry.name
                )
        return enqueued

    def last_periods(self) -> dict[str, datetime]:
        """The last period enqueued, per job name."""
        raw = self.connection.hgetall(self.last_key)
        return {_text(name): _from_seconds(value) for name, value in raw.items()}

    def last_period(self, entry: Periodic) -> datetime | None:
        raw = self.connection.hget(self.last_key, entry.name)
        return None if raw is None else _from_seconds(raw)

    def enqueue_if_due(self, entry: Periodic, now: datetime) -> list[str]:
        """Enqueue ``entry`` for the period of ``now`` unless it is enqueued already.

        The caller holds the lock; but two schedulers doing this at once (one stalled past
        its lock's expiry) still enqueue the period's jobs once: the ids are deterministic and
        enqueued uniquely, and the last period only moves forward.
        """
        period = entry.period_start(now)
        last = self.last_period(entry)
        if not _is_due(entry, now, last):
            return []
        queue = Queue(entry.queue, connection=self.connection)
        enqueued = [
            job_id
            for args in entry.args()
            if (job_id := self._enqueue(queue, entry, args, period)) is not None
        ]
        seconds = int((period - EPOCH).total_seconds())
        self._advance(keys=[self.last_key], args=[entry.name, seconds])
        if last is not None and period - last > entry.every:
            log.info("%s: caught up once for the periods missed since %s", entry.name, last)
        log.info("%s: %d jobs enqueued for the period from %s", entry.name, len(enqueued), period)
        return enqueued

    def _enqueue(
        self, queue: Queue, entry: Periodic, args: tuple[Any, ...], period: datetime
    ) -> str | None:
        job_id = entry.job_id(self.namespace, args, period)
        every = int(entry.every.total_seconds())
        try:
            queue.enqueue_call(
                entry.func,
                args=args,
                kwargs=dict(entry.kwargs),
                job_id=job_id,
                unique=True,
                retry=entry.retry,
                timeout=int(entry.timeout.total_seconds()),
                ttl=every,  # not started within a period: the next period's run replaces it
                result_ttl=every,  # the id stays taken until the period is over
                failure_ttl=int(max(FAILURE_KEPT, entry.every).total_seconds()),
                description=f"{entry.name} for the period from {period.isoformat()}",
                meta={"schedule": entry.name, "period": period.isoformat()},
            )
        except DuplicateJobError:
            return None  # this period's run is enqueued already
        return job_id

    # -- running

    def run(
        self,
        stop: threading.Event,
        *,
        poll: timedelta = POLL,
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        """Tick every ``poll`` until ``stop`` is set (or ``alive()`` turns false), then resign.

        A failing tick (Redis or the database unavailable) is logged and tried again at the
        next poll: the scheduler outlives the outage, and catches up once when it ends.
        """
        log.info("scheduler started (%d periodic jobs, lock %s)", len(self.table), self.lock_key)
        try:
            while not stop.is_set() and alive():
                try:
                    self.tick()
                except Exception:
                    log.exception("scheduler tick failed; trying again in %s", poll)
                stop.wait(poll.total_seconds())
        finally:
            try:
                self.resign()
            except Exception:
                log.exception("could not release the scheduler lock; it expires by itself")
            log.info("scheduler stopped")


# -- processes -------------------------------------------------------------------------------------


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT (the previous handlers are put back afterwards)."""
    stop = threading.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    saved = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        signal.signal(sig, lambda _signum, _frame: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextmanager
def beside_worker(
    app: Flask, settings: Settings, *, grace: timedelta = timedelta(seconds=10)
) -> Iterator[BaseProcess]:
    """The schedule in a child process while a worker runs (``flask worker --schedule``).

    A process, not a thread: the RQ worker forks a work-horse per job, and a fork taken while
    a scheduler thread holds a Redis or database pool lock would hand the horse a lock nobody
    releases. It is forked before the worker starts. On the way out it is asked to stop
    (SIGTERM: it releases the lock), and killed if it does not within ``grace``; if the worker
    dies without a word, the child sees it has a new parent and stops by itself.
    """
    if settings.redis_url is None:
        raise RedisNotConfigured("REDIS_URL is not set: there is no queue to schedule jobs on")
    context = multiprocessing.get_context("fork")
    process = context.Process(
        target=_scheduler_process,
        args=(app, settings.redis_url, os.getpid()),
        name="creditcraft-scheduler",
        daemon=True,
    )
    process.start()
    try:
        yield process
    finally:
        process.terminate()
        process.join(grace.total_seconds())
        if process.is_alive():
            process.kill()
            process.join()


def _scheduler_process(app: Flask, redis_url: str, parent_pid: int) -> None:
    from extensions import db

    with app.app_context():
        db.engine.dispose(close=False)  # the parent's pooled connections stay the parent's
        connection = Redis.from_url(redis_url)
        try:
            with stop_on_signals() as stop:
                Scheduler(connection).run(stop, alive=lambda: os.getppid() == parent_pid)
        finally:
            connection.close()
