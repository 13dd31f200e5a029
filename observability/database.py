"""Database guards: the slow-query log, and the statement timeout of web requests.

**Slow queries.** Every statement is timed (``before_cursor_execute`` → ``after_cursor_execute``,
or ``handle_error`` when it failed, e.g. cancelled by a timeout); one that took at least
``SLOW_QUERY_MS`` (0 logs them all, like PostgreSQL's ``log_min_duration_statement``) is
logged at WARNING on ``creditcraft.slow_query`` with its duration and its *shape*: the SQL text
as sent, with its placeholders, whitespace collapsed, string literals replaced by ``'?'`` and
cut at ``SHAPE_LIMIT`` characters. Parameter values are never logged.

**Statement timeout.** Each transaction a web request opens starts with ``SET LOCAL
statement_timeout = WEB_STATEMENT_TIMEOUT_MS`` (PostgreSQL; a Session ``after_begin`` hook
reading a flag the request sets in ``g``), so a pathological query cannot hold a worker
thread and a connection for long. Jobs and the CLI never set the flag: expiry and
reconciliation legitimately run long. A request whose statement is cancelled answers 503
``database_timeout`` with ``Retry-After`` (the request was fine; the database was too slow to
answer it now), counted in ``creditcraft_db_statement_timeouts_total``.

The row-level-security hook (``SET LOCAL app.shop_id``) is another ``after_begin`` listener of
its own; the two are independent.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from psycopg.errors import QueryCanceled
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, SessionTransaction

from blueprints.errors import error_response
from blueprints.settings import EXTENSION_KEY as SETTINGS_KEY
from config import Settings
from observability import metrics

slow_log = logging.getLogger("creditcraft.slow_query")
log = logging.getLogger(__name__)

SHAPE_LIMIT = 2000
RETRY_AFTER_SECONDS = 2
_STARTED = "_creditcraft_started"
_TIMEOUT_FLAG = "statement_timeout_ms"
_WHITESPACE = re.compile(r"\s+")
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")


def statement_shape(statement: str, limit: int = SHAPE_LIMIT) -> str:
    """The statement without values: placeholders stay, string literals become ``'?'``."""
    shape = _WHITESPACE.sub(" ", _STRING_LITERAL.sub("'?'", statement)).strip()
    return shape if len(shape) <= limit else shape[:limit] + "…"


# -- slow queries --------------------------------------------------------------------------------


def install_slow_query_log(app: Flask, engine: Engine) -> None:
    """Time every statement on ``engine``; the threshold is read from the app's settings at
    each statement, so a changed setting applies at once."""

    def threshold_ms() -> int:
        settings: Settings = app.extensions[SETTINGS_KEY]
        return settings.slow_query_ms

    def started(
        _conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, *_: Any
    ) -> None:
        if context is not None:
            setattr(context, _STARTED, time.perf_counter())

    def finished(
        _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, *_: Any
    ) -> None:
        _report(context, statement, threshold_ms(), error=None)

    def failed(exception_context: Any) -> None:
        context = exception_context.execution_context
        statement = exception_context.statement
        if statement is not None:
            error = type(exception_context.original_exception).__name__
            _report(context, statement, threshold_ms(), error=error)

    event.listen(engine, "before_cursor_execute", started)
    event.listen(engine, "after_cursor_execute", finished)
    event.listen(engine, "handle_error", failed)


def _report(context: Any, statement: str, threshold: int, *, error: str | None) -> None:
    began = getattr(context, _STARTED, None)
    if began is None:
        return
    elapsed_ms = (time.perf_counter() - began) * 1000
    if elapsed_ms < threshold:
        return
    metrics.SLOW_QUERIES.inc()
    shape = statement_shape(statement)
    extra: dict[str, Any] = {"duration_ms": round(elapsed_ms, 1), "statement": shape}
    if error is None:
        slow_log.warning("slow query (%.0f ms): %s", elapsed_ms, shape, extra=extra)
    else:
        extra["error"] = error
        slow_log.warning(
            "slow query failed (%s, %.0f ms): %s", error, elapsed_ms, shape, extra=extra
        )


# -- the web requests' statement timeout ---------------------------------------------------------


def limit_statements_of_this_request(milliseconds: int) -> None:
    """From now on, transactions of this request start with this statement timeout (0: none)."""
    setattr(g, _TIMEOUT_FLAG, milliseconds)


def _set_statement_timeout(
    _session: Session, _transaction: SessionTransaction, connection: Any
) -> None:
    if not has_request_context():
        return
    milliseconds = g.get(_TIMEOUT_FLAG)
    if not milliseconds or connection.dialect.name != "postgresql":
        return
    connection.exec_driver_sql(f"SET LOCAL statement_timeout = {int(milliseconds)}")


def install_statement_timeout(app: Flask, session_target: Any) -> None:
    """Web requests get WEB_STATEMENT_TIMEOUT_MS; a cancelled statement answers 503."""
    if not event.contains(session_target, "after_begin", _set_statement_timeout):
        event.listen(session_target, "after_begin", _set_statement_timeout)

    @app.before_request
    def _limit_statements() -> None:
        settings: Settings = app.extensions[SETTINGS_KEY]
        limit_statements_of_this_request(settings.web_statement_timeout_ms)

    app.register_error_handler(OperationalError, _operational_error)


def _operational_error(error: OperationalError) -> Response:
    if isinstance(error.orig, QueryCanceled):
        metrics.STATEMENT_TIMEOUTS.inc()
        route = request.url_rule.rule if request.url_rule else metrics.UNMATCHED_ROUTE
        log.warning("statement timeout in %s %s; answered 503", request.method, route)
        response = error_response(
            503,
            "database_timeout",
            "The database took too long to answer; try again in a moment.",
            {"retry_after": RETRY_AFTER_SECONDS},
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    # Anything else is what the app's catch-all makes of an unexpected error.
    log.exception("unhandled error")
    return error_response(500, "internal_error", "Something went wrong on our side.")
