"""rq-dashboard behind basic auth: refused without credentials, served with them."""

from __future__ import annotations

import base64

import pytest

from config import ConfigError
from observability.dashboard import create_dashboard

USER, PASSWORD = "ops", "correct horse battery staple"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def dashboard(settings):
    if settings.redis_url is None:
        pytest.skip("needs REDIS_URL")
    app = create_dashboard(
        {
            "REDIS_URL": settings.redis_url,
            "RQ_DASHBOARD_USERNAME": USER,
            "RQ_DASHBOARD_PASSWORD": PASSWORD,
        }
    )
    yield app.test_client()
    app.redis_conn.close()


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({}, "RQ_DASHBOARD_USERNAME, RQ_DASHBOARD_PASSWORD, REDIS_URL"),
        ({"REDIS_URL": "redis://x", "RQ_DASHBOARD_USERNAME": "ops"}, "RQ_DASHBOARD_PASSWORD"),
        ({"RQ_DASHBOARD_USERNAME": "ops", "RQ_DASHBOARD_PASSWORD": " "}, "PASSWORD, REDIS_URL"),
    ],
)
def test_it_refuses_to_start_without_credentials_and_redis(environ, named):
    with pytest.raises(ConfigError, match=named):
        create_dashboard(environ)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic(USER, "wrong"),
        basic("root", PASSWORD),
        basic(USER, PASSWORD + "x"),
        {"Authorization": "Bearer " + PASSWORD},
    ],
)
def test_without_the_right_credentials_every_path_is_a_401(dashboard, headers):
    for path in ("/", "/0/data/queues.json", "/static/favicon.ico", "/no/such/page"):
        answer = dashboard.get(path, headers=headers)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert b"queues" not in answer.data


def test_with_them_it_serves_the_queues(dashboard):
    page = dashboard.get("/", headers=basic(USER, PASSWORD))
    assert page.status_code == 200
    assert b"RQ Dashboard" in page.data or b"rq-dashboard" in page.data.lower()
    data = dashboard.get("/0/data/queues.json", headers=basic(USER, PASSWORD))
    assert data.status_code == 200
    assert "queues" in data.get_json()


def test_a_cross_site_request_is_refused_even_with_credentials(dashboard):
    auth = basic(USER, PASSWORD)
    refused = dashboard.post(
        "/queue/webhooks/failed/empty",
        headers=auth | {"Origin": "https://evil.example", "Host": "ops.example"},
    )
    assert refused.status_code == 403
    navigated = dashboard.get("/requeue/webhooks", headers=auth | {"Sec-Fetch-Site": "cross-site"})
    assert navigated.status_code == 403
    same = dashboard.get("/0/data/queues.json", headers=auth | {"Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200
