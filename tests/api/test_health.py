"""Liveness, readiness, and the JSON envelope on routing errors."""

from __future__ import annotations

import pytest

from tests.api.helpers import assert_error


@pytest.mark.smoke
def test_healthz_answers_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_checks_the_database_and_redis(client, settings):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"
    expected = "ok" if settings.redis_url else "not_configured"
    assert body["checks"]["redis"] == expected


def test_readyz_is_503_when_redis_is_unreachable(client, app, settings, monkeypatch):
    from dataclasses import replace

    from blueprints.settings import EXTENSION_KEY

    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    broken = replace(settings, redis_url="redis://127.0.0.1:1/0")
    monkeypatch.setitem(app.extensions, EXTENSION_KEY, broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "ok", "redis": "unreachable"}


def test_a_wrong_method_is_a_405_envelope(client):
    error = assert_error(client.post("/healthz"), 405, "method_not_allowed")
    assert error["message"]
    response = client.delete("/api/customers")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize("path", ["/nope", "/api/nope", "/api/customers/1/nope", "/api/lots/x"])
def test_an_unknown_route_is_a_404_envelope(client, path):
    assert_error(client.get(path), 404, "not_found")
