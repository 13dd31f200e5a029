"""The Flask side: ``init_observability`` (the one call create_app makes) and ``GET /metrics``.

Per request: a request id (the caller's ``X-Request-Id`` when it is a plain token, else a new
one; always echoed back), the in-flight gauge, the latency histogram by route pattern, a pool
sample, and one access line — ``GET /api/customers/<customer_id> 200`` with method, route,
status and duration_ms — at INFO (DEBUG for /healthz, /readyz and /metrics, which probes and
scrapers call every few seconds). Never the query string, never a header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import Flask, Response, g, request
from sqlalchemy import Engine

from blueprints.settings import current_settings
from config import Settings
from extensions import current_session, db
from jobs.queues import QUEUES, shared_queue
from models import Base
from observability import metrics
from observability.database import install_slow_query_log, install_statement_timeout
from observability.logs import ACCESS_LOGGER, REQUEST_ID_HEADER, configure_logging, request_id_from
from observability.scrape import database_families, redis_families

access_log = logging.getLogger(ACCESS_LOGGER)

QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def init_observability(app: Flask, settings: Settings) -> None:
    """Logging, request hooks, database guards and /metrics. Opens no connection.

    Under CREDITCRAFT_ENV=test the test runner owns logging (it captures records itself), so
    the root logger is left alone there."""
    if settings.env != "test":
        configure_logging(settings)
    with app.app_context():  # creating the engine opens no connection
        engine: Engine = db.engine
    install_slow_query_log(app, engine)
    install_statement_timeout(app, db.session)
    _install_request_hooks(app, engine)
    app.add_url_rule("/metrics", "metrics", _metrics_view(engine), methods=["GET"])


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else metrics.UNMATCHED_ROUTE


def _install_request_hooks(app: Flask, engine: Engine) -> None:
    @app.before_request
    def _begin() -> None:
        g.request_started = time.perf_counter()
        g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        metrics.HTTP_IN_FLIGHT.inc()
        g.counted_in_flight = True
        metrics.sample_pool(engine.pool)

    @app.after_request
    def _finish(response: Response) -> Response:
        started = g.get("request_started")
        if started is None:
            return response
        seconds = time.perf_counter() - started
        route, method, status = _route(), request.method, response.status_code
        metrics.observe_request(route, method, status, seconds)
        response.headers[REQUEST_ID_HEADER] = g.request_id
        level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
        if access_log.isEnabledFor(level):
            access_log.log(
                level,
                "%s %s %d",
                method,
                route,
                status,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )
        return response

    @app.teardown_request
    def _end(_error: BaseException | None) -> None:
        if g.pop("counted_in_flight", False):
            metrics.HTTP_IN_FLIGHT.dec()


def _metrics_view(engine: Engine) -> Callable[[], Response]:
    def view() -> Response:
        """Prometheus' text format: this app's metrics, then what is read at scrape time."""
        settings = current_settings()
        redis = None
        if settings.redis_url is not None:
            redis = shared_queue(settings.redis_url, QUEUES[0]).connection
        scraped = redis_families(redis, QUEUES)
        scraped += database_families(current_session(), Base.metadata.tables.keys())
        metrics.sample_pool(engine.pool)  # after the scrape's own connection went back
        response = Response(metrics.exposition(scraped), content_type=metrics.CONTENT_TYPE)
        response.headers["Cache-Control"] = "no-store"
        return response

    return view
