"""What ``/metrics`` reads at scrape time: queue depths from Redis, backlogs from the database.

Each read is cheap and bounded: Redis answers a couple of pipelined round trips (LLEN, ZCARD,
SMEMBERS, EXISTS — no key scans) under the shared client's socket timeouts; the database
answers four small queries under a statement timeout of ``STATEMENT_TIMEOUT_MS``, each served
by an index or by PostgreSQL's own statistics (row counts are ``pg_stat_user_tables``'
estimates, never ``COUNT(*)`` of a big table). A source that fails is reported as
``creditcraft_redis_up 0`` / ``creditcraft_database_up 0`` and its figures are left out:
the scrape itself never fails.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

from prometheus_client.core import GaugeMetricFamily
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.worker_registration import REDIS_WORKER_KEYS
from sqlalchemy import bindparam, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

STATEMENT_TIMEOUT_MS = 2000
REGISTRIES = (
    ("started", StartedJobRegistry),
    ("scheduled", ScheduledJobRegistry),
    ("deferred", DeferredJobRegistry),
    ("failed", FailedJobRegistry),
)
OUTBOX_STATES = ("pending", "in_flight", "ambiguous", "dead")
WEBHOOK_BACKLOG_STATES = ("received", "processing")

# Cross-shop counts (row-level security shows the web one shop's rows at most): on PostgreSQL
# through creditcraft_ops_counts(), a SECURITY DEFINER function of migration 0008 that answers
# these aggregates and nothing else; SQLite has no row-level security and runs the query.
# Each part is served by a partial index: ix_shopify_outbox_due (pending, in flight),
# ix_shopify_outbox_dead, ix_webhook_events_unfinished, ix_reconciliation_findings_open.
OPS_COUNTS = """
SELECT 'native_sync_backlog' AS metric,
       CASE WHEN ambiguous THEN 'ambiguous' ELSE state END AS label, count(*) AS value
  FROM shopify_outbox WHERE state IN ('pending', 'in_flight') GROUP BY 1, 2
UNION ALL
SELECT 'native_sync_backlog', 'dead', count(*) FROM shopify_outbox WHERE state = 'dead'
UNION ALL
SELECT 'webhook_backlog', state, count(*) FROM webhook_events
 WHERE state IN ('received', 'processing') GROUP BY 1, 2
UNION ALL
SELECT 'findings_open', kind, count(*) FROM reconciliation_findings
 WHERE resolved_at IS NULL GROUP BY 1, 2
"""
_OPS_COUNTS = {
    "postgresql": text("SELECT metric, label, value FROM creditcraft_ops_counts()"),
    "sqlite": text(OPS_COUNTS),
}
_TABLE_ROWS = text(
    "SELECT relname, n_live_tup FROM pg_stat_user_tables "
    "WHERE schemaname = current_schema() AND relname IN :tables"
).bindparams(bindparam("tables", expanding=True))


def gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


# -- Redis ---------------------------------------------------------------------------------------


def redis_families(connection: Redis | None, queue_names: Sequence[str]) -> list[Any]:
    """``creditcraft_redis_up``, and when it is 1: jobs per queue and state, live workers."""
    up = gauge("creditcraft_redis_up", "1 if Redis answered this scrape (0 also if unset).")
    if connection is None:
        up.add_metric([], 0)
        return [up]
    try:
        depths, workers = _read_queues(connection, queue_names)
    except RedisError as error:
        log.warning("metrics: Redis unavailable (%s); queue figures left out", type(error).__name__)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    jobs = gauge(
        "creditcraft_queue_jobs",
        "RQ jobs per queue and state: queued (waiting), started, scheduled (retries "
        "waiting for their time), deferred, failed (retries used up, kept for inspection).",
        ["queue", "state"],
    )
    for (queue, state), count in depths.items():
        jobs.add_metric([queue, state], count)
    alive = gauge("creditcraft_rq_workers", "RQ workers alive (registered, heartbeat current).")
    alive.add_metric([], workers)
    return [up, jobs, alive]


def _read_queues(
    connection: Redis, queue_names: Sequence[str]
) -> tuple[dict[tuple[str, str], int], int]:
    pipe = connection.pipeline(transaction=False)
    slots: list[tuple[str, str]] = []
    for name in queue_names:
        pipe.llen(Queue(name, connection=connection).key)
        slots.append((name, "queued"))
        for state, registry in REGISTRIES:
            pipe.zcard(registry(name, connection=connection).key)
            slots.append((name, state))
    pipe.smembers(REDIS_WORKER_KEYS)
    *counts, members = pipe.execute()
    # A worker that died without deregistering stays in the set until RQ's maintenance
    # cleans it; its own key expires with its heartbeat, so count the keys that exist.
    workers = int(connection.exists(*members)) if members else 0
    return dict(zip(slots, (int(c) for c in counts), strict=True)), workers


# -- the database --------------------------------------------------------------------------------


def database_families(session: Session, tables: Iterable[str]) -> list[Any]:
    """``creditcraft_database_up``, and when it is 1: backlogs, open findings, row estimates.

    Runs in one read-only transaction of ``session``, rolled back at the end."""
    up = gauge("creditcraft_database_up", "1 if the database answered this scrape.")
    try:
        families = list(_read_database(session, sorted(tables)))
    except SQLAlchemyError as error:
        log.warning(
            "metrics: database unavailable (%s); its figures left out", type(error).__name__
        )
        up.add_metric([], 0)
        return [up]
    finally:
        session.rollback()
    up.add_metric([], 1)
    return [up, *families]


def _read_database(session: Session, tables: list[str]) -> Iterator[Any]:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
    counts: dict[str, dict[str, int]] = {
        "native_sync_backlog": dict.fromkeys(OUTBOX_STATES, 0),
        "webhook_backlog": dict.fromkeys(WEBHOOK_BACKLOG_STATES, 0),
        "findings_open": {},
    }
    found = cast(list[tuple[str, str, int]], session.execute(_OPS_COUNTS[dialect]).all())
    for metric, label, value in found:
        by_label = counts[metric]
        by_label[label] = by_label.get(label, 0) + int(value)

    yield _labelled(
        "creditcraft_native_sync_backlog",
        "Outbox rows not yet mirrored to Shopify: pending, in_flight, ambiguous (the last "
        "attempt may have landed: matched before any resend), dead (attempts used up; "
        "reconciliation settles them).",
        "state",
        counts["native_sync_backlog"],
    )
    yield _labelled(
        "creditcraft_webhook_backlog",
        "Webhook deliveries recorded but not finished: received (waiting), processing.",
        "state",
        counts["webhook_backlog"],
    )
    yield _labelled(
        "creditcraft_reconciliation_findings_open",
        "Open reconciliation findings by kind.",
        "kind",
        counts["findings_open"],
    )
    if dialect == "postgresql":  # SQLite (make run) keeps no statistics to read cheaply
        rows = cast(list[tuple[str, int]], session.execute(_TABLE_ROWS, {"tables": tables}).all())
        yield _labelled(
            "creditcraft_table_rows",
            "Rows per table: PostgreSQL's estimate (pg_stat_user_tables.n_live_tup).",
            "table",
            {table: int(count) for table, count in rows},
        )


def _labelled(name: str, documentation: str, label: str, values: dict[str, int]) -> Any:
    family = gauge(name, documentation, [label])
    for value_label, value in values.items():
        family.add_metric([value_label], value)
    return family
