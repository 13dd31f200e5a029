"""The audit log: the shop's rows newest first, filtered by actor, action, outcome and time,
in cursor pages; the same as CSV; never another shop's rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from extensions import db
from ledger import audit
from tests.admin_api.helpers import audit_rows, csv_rows
from tests.api.helpers import assert_error

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def rows_at(shop_id: int) -> None:
    """Six rows over six hours: two staff members, three actions, one failure."""
    plan = [
        ("staff:1", "settings.update", None),
        ("staff:2", "preset.create", None),
        ("staff:1", "preset.create", audit.Failure("preset_name_taken", "taken")),
        ("staff:2", "finding.resolve", None),
        ("system:reconciliation", "issue", None),
        ("staff:1", "preset.delete", None),
    ]
    for hour, (actor, action, failure) in enumerate(plan):
        audit.record(
            db.session, shop_id, actor, action, audit.Target("preset", str(hour)),
            T0 + timedelta(hours=hour), {"hour": hour}, failure=failure,
        )  # fmt: skip
    db.session.commit()


def page(api, **params) -> dict:
    response = api.get("/api/audit-log", **params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def hours(rows: list[dict]) -> list[int]:
    return [row["details"]["hour"] for row in rows]


def test_the_log_is_newest_first_with_every_field(api):
    rows_at(api.shop.id)

    body = page(api)

    assert hours(body["audit_log"]) == [5, 4, 3, 2, 1, 0]
    assert body["next_cursor"] is None
    failure = body["audit_log"][3]
    assert failure == {
        "id": failure["id"],
        "created_at": "2026-05-01T02:00:00Z",
        "actor": "staff:1",
        "action": "preset.create",
        "target_type": "preset",
        "target_id": "2",
        "outcome": "failure",
        "error_code": "preset_name_taken",
        "details": {"hour": 2, "message": "taken"},
    }


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"actor": "staff:1"}, [5, 2, 0]),
        ({"action": "preset.create"}, [2, 1]),
        ({"outcome": "failure"}, [2]),
        ({"outcome": "success", "actor": "staff:2"}, [3, 1]),
        ({"from": "2026-05-01T03:00:00Z"}, [5, 4, 3]),
        ({"to": "2026-05-01T03:00:00+00:00"}, [2, 1, 0]),
        ({"from": "2026-05-01T01:00:00Z", "to": "2026-05-01T04:00:00Z"}, [3, 2, 1]),
        ({"to": "2026-05-01"}, [5, 4, 3, 2, 1, 0]),  # a date includes its whole day
        ({"actor": "staff:3"}, []),
    ],
)
def test_filters(api, params, expected):
    rows_at(api.shop.id)

    assert hours(page(api, **params)["audit_log"]) == expected


def test_pages_follow_the_cursor_to_the_end(api):
    rows_at(api.shop.id)

    seen, cursor = [], None
    while True:
        body = page(api, limit=4, **({"cursor": cursor} if cursor else {}))
        seen += hours(body["audit_log"])
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert seen == [5, 4, 3, 2, 1, 0]


def test_another_shops_rows_are_never_shown(api, other_api):
    rows_at(other_api.shop.id)

    assert page(api)["audit_log"] == []
    exported = csv_rows(api.get("/api/audit-log.csv"))
    assert [(row["actor"], row["action"]) for row in exported] == [(api.actor, "audit_log.export")]


@pytest.mark.parametrize(
    "params",
    [
        {"outcome": "maybe"},
        {"from": "May 1st"},
        {"to": "2026-05-01T00:00:00"},
        {"actor": "a" * 256},
        {"cursor": "not-a-cursor"},
        {"cursor": "WyJ4IiwgMV0"},  # ["x", 1]
        {"limit": "0"},
    ],
)
def test_bad_parameters_are_a_400(api, params):
    response = api.get("/api/audit-log", **params)

    assert response.status_code == 400, response.get_data(as_text=True)
    assert_error(response, 400, response.get_json()["error"]["code"])


def test_the_csv_has_the_same_rows_and_its_export_is_audited(api):
    rows_at(api.shop.id)

    response = api.get("/api/audit-log.csv", actor="staff:1")

    rows = csv_rows(response)
    assert response.headers["Cache-Control"] == "no-store"
    assert [row["action"] for row in rows] == ["preset.delete", "preset.create", "settings.update"]
    assert rows[1]["outcome"] == "failure"
    assert rows[1]["error_code"] == "preset_name_taken"
    assert rows[1]["details"] == '{"hour":2,"message":"taken"}'
    assert rows[1]["created_at"] == "2026-05-01T02:00:00Z"
    [export] = audit_rows(api.shop.id, "audit_log.export")
    assert export.actor == api.actor
    assert export.details["actor"] == "staff:1"


def test_the_log_needs_a_session_token(client):
    assert_error(client.get("/api/audit-log"), 401, "invalid_session_token")
