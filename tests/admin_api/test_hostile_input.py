"""Input PostgreSQL cannot store or compare (NUL, lone surrogates, offsets past ±15:59, years
past 9999) is a 4xx naming it, never a 500, and a refused change is still audited."""

from __future__ import annotations

import json

import pytest

from tests.admin_api.helpers import audit_rows
from tests.api.helpers import assert_error

PRESET = {"name": "Goodwill", "amount": "10.00", "currency": "USD", "reason": "goodwill"}


def raw_json(api, method: str, path: str, text: str):
    """Send ``text`` as the JSON body as is (json.dumps would refuse nothing here either)."""
    return api.send(method, path, text.encode(), "application/json")


@pytest.mark.parametrize(
    "name", ["a\u0000b", "\ud800", "caf\udce9"], ids=["nul", "lone-high", "lone-low"]
)
def test_an_unstorable_preset_name_is_a_422_and_its_refusal_audited(api, name):
    body = json.dumps({**PRESET, "name": name})  # escapes the surrogate as \\ud800

    error = assert_error(raw_json(api, "POST", "/api/presets", body), 422, "invalid_field")

    assert error["details"]["field"] == "name"
    assert api.get("/api/presets").get_json()["presets"] == []
    [row] = audit_rows(api.shop.id, "preset.create")
    assert (row.outcome, row.error_code) == ("failure", "invalid_field")
    assert "\u0000" not in row.details["preset"]["name"]


def test_an_unstorable_setting_name_is_a_422_and_its_refusal_audited(api):
    response = raw_json(api, "PUT", "/api/settings", '{"\\u0000": true}')

    error = assert_error(response, 422, "invalid_field")
    assert error["details"]["field"] == "\u0000"
    [row] = audit_rows(api.shop.id, "settings.update")
    assert row.outcome == "failure"
    assert row.details["field"] == "\ufffd"


def test_an_unstorable_resolution_note_is_a_422(api):
    response = raw_json(api, "POST", "/api/reconciliation/findings/1/resolve", '{"note": "a"}')
    assert_error(response, 404, "finding_not_found")
    response = raw_json(
        api, "POST", "/api/reconciliation/findings/1/resolve", '{"note": "a\\u0000"}'
    )
    assert_error(response, 422, "invalid_field")


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/audit-log", "actor=a%00b"),
        ("/api/audit-log", "action=%00"),
        ("/api/audit-log", "to=9999-12-31"),
        ("/api/audit-log", "from=9999-12-31T23:00:00-05:00"),
        ("/api/audit-log.csv", "actor=%00"),
        ("/api/ledger.csv", "from=0000-01-01"),
        ("/api/ledger.csv", "currency=%00SD"),
        ("/api/reconciliation/findings", "kind=%00"),
    ],
)
def test_odd_query_parameters_are_4xx(api, path, query):
    response = api.client.get(f"{path}?{query}", headers=api.headers())

    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    assert_error(response, response.status_code, response.get_json()["error"]["code"])


def test_an_offset_postgresql_refuses_is_read_in_utc(api):
    response = api.get("/api/audit-log", **{"from": "2026-01-01T00:00:00+20:00"})

    assert response.status_code == 200, response.get_data(as_text=True)
