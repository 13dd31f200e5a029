"""Liveness and readiness for load balancers and on-call."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from blueprints.settings import current_settings
from extensions import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up and serving; says nothing about its dependencies."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the database answers and, if configured, Redis does too."""
    checks = {"database": _database_ok(), "redis": _redis_ok()}
    ready = all(state in ("ok", "not_configured") for state in checks.values())
    return jsonify(status="ready" if ready else "unavailable", checks=checks), (
        200 if ready else 503
    )


def _database_ok() -> str:
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return "unreachable"
    finally:
        db.session.rollback()
    return "ok"


def _redis_ok() -> str:
    url = current_settings().redis_url
    if url is None:
        return "not_configured"
    import redis  # only when configured: `make run` needs no Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # One attempt of at most a second: a probe must answer before the balancer gives up on it
    # (redis-py would otherwise retry with backoff). The database side is bounded by
    # DB_CONNECT_TIMEOUT and the web statement timeout.
    try:
        with redis.Redis.from_url(
            url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        ) as client:
            client.ping()
    except redis.RedisError:
        return "unreachable"
    return "ok"
