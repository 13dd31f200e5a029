"""RQ queues, by priority, and the worker that drains them.

Nothing connects at import: the Redis connection is made from the app's settings when a queue
or the worker is asked for.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue, Worker

from config import Settings
from extensions import db

# Highest priority first: a worker always takes a webhook before a bulk import row.
QUEUES = ("webhooks", "sync", "default", "bulk")


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
    worker = Worker([Queue(name, connection=connection) for name in QUEUES], connection=connection)
    return worker.work(burst=burst, with_scheduler=True)
