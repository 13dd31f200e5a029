"""RQ queues, by priority, and the worker that drains them.

Nothing connects at import: the Redis connection is made from the app's settings when a queue
or the worker is asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as RedisRetry
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from config import Settings
from extensions import db
from observability.worker import ObservedWorker

# Highest priority first: a worker always takes a webhook before a bulk import row.
QUEUES = ("webhooks", "sync", "default", "bulk")


# What "Redis is down" looks like to an enqueue: the work is recorded, a sweeper sends it later.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)

_shared: dict[tuple[str, str], Queue] = {}
_shared_lock = threading.Lock()


def shared_queue(redis_url: str, name: str) -> Queue:
    """This process's queue ``name`` on ``redis_url``, for enqueueing from requests and jobs.

    One client and pool per process, short socket timeouts and one immediate retry: a dead
    Redis costs a request half a second, not redis-py's default ten retries with backoff.
    """
    key = (redis_url, name)
    queue = _shared.get(key)
    if queue is None:
        with _shared_lock:
            if key not in _shared:
                connection = Redis.from_url(
                    redis_url,
                    socket_connect_timeout=0.5,
                    socket_timeout=1.0,
                    retry=RedisRetry(NoBackoff(), 1),
                )
                _shared[key] = Queue(name, connection=connection)
            queue = _shared[key]
    return queue


# A job in one of these states is over: its hash only lingers for its result's lifetime.
ENDED = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


def enqueue_unique(
    queue: Queue,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    job_id: str,
    retry: Retry,
    description: str,
    timeout: int | None = None,  # seconds
    replace_ended: bool = True,
) -> str:
    """Enqueue under a deterministic job id: ``enqueued``, or ``already_queued`` when a job
    with that id is waiting, running or scheduled for a retry. With ``replace_ended``, a job
    that has ended (finished, or failed with its retries used up) is replaced, since its work
    is due again; without it, any existing job makes the enqueue a no-op."""
    for _ in range(2):
        try:
            queue.enqueue_call(
                func,
                args=args,
                job_id=job_id,
                retry=retry,
                timeout=timeout,
                description=description,
                unique=True,
            )
        except DuplicateJobError:
            if not replace_ended or not _drop_if_ended(queue, job_id):
                return "already_queued"
            continue  # the ended job's record is gone: enqueue afresh
        return "enqueued"
    return "already_queued"


def _drop_if_ended(queue: Queue, job_id: str) -> bool:
    """Delete job ``job_id`` if it has ended; True if no job with that id is left."""
    try:
        job = Job.fetch(job_id, connection=queue.connection)
    except NoSuchJobError:
        return True
    if job.get_status(refresh=False) not in ENDED:
        return False
    job.delete()
    return True


class RedisNotConfigured(RuntimeError):
    """REDIS_URL is unset: there are no queues, and jobs run inline."""


def redis_connection(settings: Settings) -> Redis:
    if settings.redis_url is None:
        raise RedisNotConfigured("REDIS_URL is not set: jobs run inline, there is no queue")
    return Redis.from_url(settings.redis_url)


def queue(settings: Settings, name: str = "default") -> Queue:
    if name not in QUEUES:
        raise ValueError(f"unknown queue {name!r}; the queues are {', '.join(QUEUES)}")
    return Queue(name, connection=redis_connection(settings))


def run_worker(settings: Settings, *, burst: bool) -> bool:
    """Work the queues in priority order (until they are empty, with ``burst``).

    The app is configured once, here; each job runs in a forked work-horse. The parent's pool
    is emptied first so no horse inherits a connection another process is using.
    """
    connection = redis_connection(settings)
    db.engine.dispose()
    queues = [Queue(name, connection=connection) for name in QUEUES]
    worker = ObservedWorker(queues, connection=connection)
    return worker.work(burst=burst, with_scheduler=True)
