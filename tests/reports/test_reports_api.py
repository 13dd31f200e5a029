"""GET /api/liability, /api/liability.csv and /api/dashboard: parameters, status codes, shapes,
the CSV, and tenant isolation, on the known history of tests/reports/history.py."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from extensions import current_session
from ledger import reports
from models import Shop
from tests.api.helpers import assert_error
from tests.conftest import auth
from tests.factories import ShopFactory
from tests.reports.history import History, build_history

ROUTES = ("/api/liability", "/api/liability.csv", "/api/dashboard")
OCTOBER = {"from": "2026-10-01", "to": "2026-10-31", "as_of": "2026-10-31"}


@pytest.fixture
def history(app_context: Any) -> History:
    return build_history(current_session())


@pytest.fixture
def bare_shop(app_context: Any) -> str:
    """A shop with no credit at all, for what does not need figures: its domain."""
    shop: Shop = ShopFactory(timezone="Europe/Paris")
    return shop.domain


def get(client: FlaskClient, domain: str, path: str, **params: str) -> Any:
    return client.get(path, query_string=params, headers=auth(domain))


@pytest.mark.smoke
def test_the_october_report_with_local_dates(client, history):
    response = get(client, history.domain_a, "/api/liability", **OCTOBER)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"as_of", "from", "to", "liability", "roll_forward", "aging", "breakage"}
    # Dates are whole days in the shop's zone (EDT): from starts Oct 1, to and as_of take in
    # all of Oct 31.
    assert body["from"] == "2026-10-01T04:00:00Z"
    assert body["to"] == "2026-11-01T04:00:00Z"
    assert body["as_of"] == "2026-11-01T03:59:59.999999Z"
    usd = {row["currency"]: row for row in body["roll_forward"]}["USD"]
    assert usd == {
        "currency": "USD",
        "opening": "145.00",
        "issued": "40.00",
        "refunded": "0.00",
        "redeemed": "0.00",
        "reversed": "0.00",
        "expired": "75.00",
        "revoked": "20.00",
        "adjusted": "15.00",
        "external": "7.00",
        "closing": "112.00",
        "ties_out": True,
    }
    assert body["liability"] == [
        {"currency": "JPY", "amount": "1100", "accounts": 1},
        {"currency": "USD", "amount": "112.00", "accounts": 2},
    ]
    assert [row["currency"] for row in body["aging"]] == ["JPY", "USD"]
    assert [month["month"] for month in body["breakage"][1]["months"]] == ["2026-10"]


def test_times_with_a_zone_name_the_same_period(client, history):
    by_dates = get(client, history.domain_a, "/api/liability", **OCTOBER).get_json()
    by_times = get(
        client,
        history.domain_a,
        "/api/liability",
        **{
            "from": "2026-10-01T00:00:00-04:00",
            "to": "2026-11-01T04:00:00Z",
            "as_of": "2026-11-01T03:59:59.999999+00:00",
        },
    ).get_json()
    assert by_times == by_dates


def test_defaults_are_now_and_the_current_local_month(client, history):
    before = datetime.now(UTC)
    body = get(client, history.domain_a, "/api/liability").get_json()
    after = datetime.now(UTC)
    end = datetime.fromisoformat(body["to"])
    assert before <= end <= after
    assert body["as_of"] == body["to"]
    zone = reports.zone_named("America/New_York")
    assert datetime.fromisoformat(body["from"]) == reports.default_period(end, zone)
    assert all(row["ties_out"] for row in body["roll_forward"])
    # Only "to" given: the period is that day's month.
    body = get(client, history.domain_a, "/api/liability", to="2026-09-20").get_json()
    assert (body["from"], body["to"]) == ("2026-09-01T04:00:00Z", "2026-09-21T04:00:00Z")


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"as_of": "yesterday"}, "as_of"),
        ({"as_of": "2026-13-01"}, "as_of"),
        ({"as_of": "2026-02-30"}, "as_of"),
        ({"to": "2026-10-01T12:00:00"}, "to"),  # no zone
        ({"from": "20261001"}, "from"),
        ({"from": "1969-12-31"}, "from"),
        ({"as_of": "9999-12-31"}, "as_of"),
        ({"from": "2026-10-05", "to": "2026-10-01"}, "from"),  # from after to
        ({"from": "2010-01-01", "to": "2026-01-01"}, "from"),  # over ten years
    ],
)
@pytest.mark.parametrize("path", ["/api/liability", "/api/liability.csv"])
def test_bad_parameters_are_400s_naming_the_parameter(client, bare_shop, path, params, parameter):
    error = assert_error(get(client, bare_shop, path, **params), 400, "invalid_parameter")
    assert error["details"] == {"parameter": parameter}


def test_an_empty_period_is_allowed_and_ties_out(client, history):
    body = get(
        client, history.domain_a, "/api/liability", **{"from": "2026-10-10", "to": "2026-10-09"}
    ).get_json()  # to is the end of Oct 9: the next midnight, where from starts
    assert body["from"] == body["to"]
    assert all(row["ties_out"] and row["opening"] == row["closing"] for row in body["roll_forward"])


@pytest.mark.parametrize("path", ROUTES)
def test_no_session_token_is_a_401(client, bare_shop, path):
    response = client.get(path)
    assert_error(response, 401, "invalid_session_token")
    assert response.headers["X-Shopify-Retry-Invalid-Session-Request"] == "1"


def test_the_csv_download(client, history):
    response = get(client, history.domain_a, "/api/liability.csv", **OCTOBER)
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="liability-20261001-20261101.csv"'
    )
    assert response.headers["Cache-Control"] == "no-store"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == ["Roll-forward", "from", "2026-10-01T04:00:00Z", "to", "2026-11-01T04:00:00Z"]
    assert rows[1] == [
        "currency",
        "opening",
        "issued",
        "refunded",
        "redeemed",
        "reversed",
        "expired",
        "revoked",
        "adjusted",
        "external",
        "closing",
        "ties_out",
    ]
    assert rows[3] == [
        "USD",
        *("145.00", "40.00", "0.00", "0.00", "0.00", "75.00", "20.00", "15.00", "7.00"),
        *("112.00", "true"),
    ]
    assert rows[4] == []
    assert rows[5] == ["Aging", "as_of", "2026-11-01T03:59:59.999999Z"]
    assert rows[6][0] == "currency"
    assert rows[6][-1] == "total"
    usd_aging = rows[8]
    assert usd_aging[0] == "USD"
    assert usd_aging[-1] == "139.00"  # aging reads the lots as they are now
    breakage = rows[rows.index(["currency", "month", "expired", "credited", "rate"]) + 1 :]
    assert ["USD", "2026-10", "75.00", "40.00", "1.8750"] in breakage
    assert ["JPY", "total", "3800", "1100", "3.4545"] in breakage


def test_the_dashboard(client, history):
    before = datetime.now(UTC)
    response = get(client, history.domain_a, "/api/dashboard")
    after = datetime.now(UTC)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"liability", "activity", "expiring_soon", "open_findings", "failed_syncs"}
    assert body["liability"] == reports.liability_as_of(current_session(), history.shop_a, after)
    zone = reports.zone_named("America/New_York")
    today = {before.astimezone(zone).date().isoformat(), after.astimezone(zone).date().isoformat()}
    activity = body["activity"]
    assert activity["to"] in today
    first = datetime.fromisoformat(activity["to"]) - timedelta(days=29)
    assert activity["from"] == first.date().isoformat()
    assert len(activity["days"]) == 60  # 30 days × JPY and USD
    assert {row["currency"] for row in body["expiring_soon"]} == {"JPY", "USD"}
    assert (body["open_findings"], body["failed_syncs"]) == (0, 0)


def test_each_shop_sees_only_its_own_figures(client, history):
    a = get(client, history.domain_a, "/api/liability", **OCTOBER).get_json()
    b = get(client, history.domain_b, "/api/liability", **OCTOBER).get_json()
    a_usd = {row["currency"]: row for row in a["roll_forward"]}["USD"]
    b_usd = {row["currency"]: row for row in b["roll_forward"]}["USD"]
    assert (a_usd["expired"], b_usd["expired"]) == ("75.00", "899.00")
    assert b["liability"] == [
        {"currency": "JPY", "amount": "70000", "accounts": 1},
        {"currency": "USD", "amount": "0.00", "accounts": 0},
    ]
    b_dashboard = get(client, history.domain_b, "/api/dashboard").get_json()
    assert b_dashboard["liability"] == [
        {"currency": "JPY", "amount": "70000", "accounts": 1},
        {"currency": "USD", "amount": "333.00", "accounts": 1},
    ]
