"""The app's Prometheus metrics, defined once; the code that counts imports them from here.

No Flask and nothing of ours is imported: the storefront cache, the jobs and the Shopify
client count through this module (one line each), and ``observability.web`` serves them.

Multiprocess-safe: with ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn with several workers, or an
RQ worker whose jobs run in forked work horses), every process writes its values to memory-
mapped files in that directory and a scrape adds them up (prometheus_client's multiprocess
mode); gunicorn.conf.py marks dead workers so their gauges drop out. An RQ work horse lives
for one job: writing under its own pid would leave a file per job behind, so horses write
under their worker's identity instead (``become_work_horse``). A worker runs one horse at a
time, so that file never has two writers. Without the variable, one process registry.

Label values always come from small fixed sets (route patterns, never paths; known methods;
status classes), so no request can grow the number of series.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# -- which process is writing --------------------------------------------------------------------

_work_horse_of: int | None = None  # the RQ worker's pid, in a work horse it forked


def _process_identity() -> int | str:
    """The name of this process's metric files: its pid, or its worker's in a work horse."""
    if _work_horse_of is None:
        return os.getpid()
    return f"rqhorse-{_work_horse_of}"  # no "_": the collector splits file names on it


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_VARIABLE) or None


if multiprocess_dir():
    # Read once, at import, like prometheus_client itself does: every value created from now
    # on is file-backed and named by _process_identity. The files are created as the metrics
    # are (some right below), so the directory must exist first (gunicorn --preload loads
    # the app before any server hook could make it).
    os.makedirs(os.environ[MULTIPROC_DIR_VARIABLE], exist_ok=True)
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identity)


def become_work_horse() -> None:
    """Called first thing in a work horse: write under the worker's identity from now on."""
    global _work_horse_of
    _work_horse_of = os.getppid()


def in_work_horse() -> bool:
    return _work_horse_of is not None


# -- HTTP ----------------------------------------------------------------------------------------

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"  # 404s and 405s: no url_rule, and never the raw path

HTTP_REQUEST_DURATION = Histogram(
    "creditcraft_http_request_duration_seconds",
    "Time to answer an HTTP request, by route pattern, method and status class.",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_IN_FLIGHT = Gauge(
    "creditcraft_http_requests_in_flight",
    "HTTP requests being answered right now.",
    multiprocess_mode="livesum",
)


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    method = method if method in HTTP_METHODS else "other"
    HTTP_REQUEST_DURATION.labels(route, method, f"{status // 100}xx").observe(seconds)


# -- webhooks ------------------------------------------------------------------------------------

WEBHOOK_DELIVERIES = Counter(
    "creditcraft_webhook_deliveries_total",
    "Webhook deliveries at intake: recorded (new), duplicate (seen before), rejected (4xx).",
    ["topic", "outcome"],
)
WEBHOOK_JOBS = Counter(
    "creditcraft_webhook_jobs_total",
    "Webhook jobs by outcome: processed, ignored (unknown or uninstalled shop, no handler), "
    "failed (an attempt raised; retried until its attempts are used up).",
    ["topic", "outcome"],
)
WEBHOOK_LAG = Histogram(
    "creditcraft_webhook_processing_lag_seconds",
    "From a delivery's arrival to the end of its processing (processed_at - received_at).",
    ["topic"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
_TOPIC = re.compile(r"[a-z_]{1,32}/[a-z_]{1,32}")


def webhook_topic(topic: str | None) -> str:
    """A topic as a label: Shopify's ``resource/event`` shape, else ``invalid``."""
    return topic if topic and _TOPIC.fullmatch(topic) else "invalid"


def webhook_delivery(topic: str, outcome: str) -> None:
    WEBHOOK_DELIVERIES.labels(webhook_topic(topic), outcome).inc()


def webhook_rejected(status: int, topic: str | None) -> None:
    """A refused delivery; without a valid HMAC its topic header is anyone's: ``unverified``."""
    label = "unverified" if status == 401 else webhook_topic(topic)
    WEBHOOK_DELIVERIES.labels(label, "rejected").inc()


def webhook_job(topic: str, outcome: str, lag_seconds: float | None = None) -> None:
    label = webhook_topic(topic)
    WEBHOOK_JOBS.labels(label, outcome).inc()
    if lag_seconds is not None:
        WEBHOOK_LAG.labels(label).observe(max(lag_seconds, 0.0))


# -- storefront cache ----------------------------------------------------------------------------

CACHE_LOOKUPS = Counter(
    "creditcraft_storefront_cache_lookups_total",
    "Storefront balance look-ups by cache level (local: this process; redis: shared) and "
    "result (hit, miss; error: Redis failed or is being left alone, the database answered).",
    ["level", "result"],
)
# Bound once: the cached look-up is the hottest path there is.
CACHE_LOCAL_HIT = CACHE_LOOKUPS.labels("local", "hit")
CACHE_LOCAL_MISS = CACHE_LOOKUPS.labels("local", "miss")
CACHE_REDIS_HIT = CACHE_LOOKUPS.labels("redis", "hit")
CACHE_REDIS_MISS = CACHE_LOOKUPS.labels("redis", "miss")
CACHE_REDIS_ERROR = CACHE_LOOKUPS.labels("redis", "error")

# -- native sync and the Shopify client ----------------------------------------------------------

SYNC_SENDS = Counter(
    "creditcraft_native_sync_attempts_total",
    "Native-sync attempts by outcome: done, skipped, dead, deferred (throttled or shop "
    "disconnected, not counted), retrying, ambiguous (may have landed: matched first next "
    "time), not_due.",
    ["outcome"],
)
THROTTLE_WAITS = Counter(
    "creditcraft_shopify_throttle_waits_total",
    "Waits before an Admin API call: pace (the shop's bucket could not afford it yet), "
    "throttled (THROTTLED answer), 429.",
    ["reason"],
)
THROTTLE_WAIT_SECONDS = Counter(
    "creditcraft_shopify_throttle_wait_seconds_total",
    "Seconds spent in those waits.",
    ["reason"],
)


def sync_attempt(outcome: str) -> None:
    SYNC_SENDS.labels(outcome).inc()


def throttle_wait(reason: str, seconds: float) -> None:
    THROTTLE_WAITS.labels(reason).inc()
    THROTTLE_WAIT_SECONDS.labels(reason).inc(seconds)


# -- jobs ----------------------------------------------------------------------------------------

JOB_DURATION = Histogram(
    "creditcraft_job_duration_seconds",
    "RQ jobs run by work horses, by queue and outcome (ok, failed).",
    ["queue", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0),
)

# -- database ------------------------------------------------------------------------------------

DB_POOL = Gauge(
    "creditcraft_db_pool_connections",
    "Connections of the SQLAlchemy pool: checked_out (in use), checked_in (idle), overflow "
    "(beyond pool_size). Sampled at every request start and at each scrape.",
    ["state"],
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "creditcraft_db_pool_size",
    "Configured pool_size (summed over live processes).",
    multiprocess_mode="livesum",
)
_POOL_OUT, _POOL_IN, _POOL_OVERFLOW = (
    DB_POOL.labels("checked_out"),
    DB_POOL.labels("checked_in"),
    DB_POOL.labels("overflow"),
)
SLOW_QUERIES = Counter(
    "creditcraft_db_slow_queries_total",
    "Statements slower than SLOW_QUERY_MS (each one is logged with its shape).",
)
STATEMENT_TIMEOUTS = Counter(
    "creditcraft_db_statement_timeouts_total",
    "Web requests answered 503 because a statement ran past WEB_STATEMENT_TIMEOUT_MS.",
)


def sample_pool(pool: Any) -> None:
    """Publish ``pool``'s state (a QueuePool's; other pools have no such counts)."""
    if _work_horse_of is not None:
        return  # a horse's pool dies with it: its last state would linger in the shared file
    try:
        size, idle, out, overflow = (
            pool.size(),
            pool.checkedin(),
            pool.checkedout(),
            pool.overflow(),
        )
    except AttributeError:
        return
    DB_POOL_SIZE.set(size)
    _POOL_OUT.set(out)
    _POOL_IN.set(idle)
    _POOL_OVERFLOW.set(max(overflow, 0))  # negative while the pool is below pool_size


# -- exposition ----------------------------------------------------------------------------------


class _Families(Collector):
    """A collector of metric families read at scrape time (queue depths, backlogs, ...)."""

    def __init__(self, families: Iterable[Any]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Any]:
        return self.families


def exposition(scraped: Iterable[Any] = ()) -> bytes:
    """The text page: every process's metrics (or this one's), then the families ``scraped``."""
    directory = multiprocess_dir()
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    return body + generate_latest(_Families(scraped))
