"""The slow-query log (shape, never values) and the web requests' statement timeout."""

from __future__ import annotations

from flask import Flask, jsonify
from sqlalchemy import text

from extensions import db
from observability.database import statement_shape
from tests.conftest import settings_changed

SLEEP = text("SELECT pg_sleep(:seconds), :email AS email, 'literal-secret' AS kept")


def slow_lines(captured) -> list[dict]:
    return [line for line in captured.lines() if line["logger"] == "creditcraft.slow_query"]


def test_a_slow_statement_is_logged_with_its_shape_and_no_values(captured, app_context):
    with settings_changed(app_context, slow_query_ms=100):
        db.session.execute(SLEEP, {"seconds": 0.15, "email": "ada@example.com"})
    (line,) = [line for line in slow_lines(captured) if "pg_sleep" in line["statement"]]
    assert line["level"] == "WARNING"
    assert line["duration_ms"] >= 150
    assert line["statement"] == "SELECT pg_sleep(%(seconds)s), %(email)s AS email, '?' AS kept"
    assert "ada@example.com" not in captured.raw_text()  # nor in SQLAlchemy's own lines
    assert "literal-secret" not in line["message"]
    assert "0.15" not in line["message"]


def test_below_the_threshold_nothing_is_logged(captured, app_context):
    with settings_changed(app_context, slow_query_ms=60_000):
        db.session.execute(SLEEP, {"seconds": 0.05, "email": "ada@example.com"})
    assert slow_lines(captured) == []


def test_zero_logs_every_statement(captured, app_context):
    with settings_changed(app_context, slow_query_ms=0):
        db.session.execute(text("SELECT 1"))
    assert "SELECT 1" in [line["statement"] for line in slow_lines(captured)]


def test_the_shape_collapses_whitespace_and_cuts_long_statements():
    assert statement_shape("SELECT  a,\n\t b FROM t WHERE x = 'it''s'") == (
        "SELECT a, b FROM t WHERE x = '?'"
    )
    cut = statement_shape("SELECT " + "x, " * 2000 + "y", limit=50)
    assert len(cut) == 51
    assert cut.endswith("…")


# -- statement timeout ---------------------------------------------------------------------------


def _with_sleep_route(app: Flask) -> Flask:
    """A route whose query sleeps, and one that says the timeout its transaction got."""

    @app.get("/_ops/sleep/<seconds>")
    def sleep(seconds: str):  # type: ignore[no-untyped-def]
        db.session.execute(text("SELECT pg_sleep(:s)"), {"s": float(seconds)})
        return jsonify(slept=True)

    @app.get("/_ops/timeout")
    def timeout():  # type: ignore[no-untyped-def]
        return jsonify(timeout=db.session.execute(text("SHOW statement_timeout")).scalar_one())

    return app


def test_a_request_past_the_timeout_is_a_503_and_a_job_is_not_limited(own_app, captured):
    app = _with_sleep_route(own_app(web_statement_timeout_ms=100, redis_url=None))
    client = app.test_client()

    answer = client.get("/_ops/sleep/2")

    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "2"
    assert answer.get_json()["error"]["code"] == "database_timeout"
    assert client.get("/_ops/timeout").get_json() == {"timeout": "100ms"}
    assert client.get("/_ops/sleep/0.01").status_code == 200
    # A job (no request) runs the same sleep past the limit, untouched by it, on a pooled
    # connection that requests used: SET LOCAL ended with their transactions.
    with app.app_context():
        db.session.execute(text("SELECT pg_sleep(0.3)"))
        assert db.session.execute(text("SHOW statement_timeout")).scalar_one() == "0"
        db.session.rollback()
    warned = [line for line in captured.lines() if "statement timeout" in line["message"]]
    assert warned[0]["message"] == "statement timeout in GET /_ops/sleep/<seconds>; answered 503"


def test_requests_get_the_configured_timeout_and_zero_turns_it_off(own_app):
    default = _with_sleep_route(own_app(redis_url=None)).test_client()
    assert default.get("/_ops/timeout").get_json() == {"timeout": "5s"}
    off = _with_sleep_route(own_app(web_statement_timeout_ms=0, redis_url=None)).test_client()
    assert off.get("/_ops/timeout").get_json() == {"timeout": "0"}
