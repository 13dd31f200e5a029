"""Settings: read, changed whole or refused whole (audited either way), and the default expiry
applied when credit is issued without one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from extensions import db
from tests.admin_api.helpers import audit_rows
from tests.api.helpers import assert_error

DEFAULTS = {
    "default_expiry_days": None,
    "notify_customer": True,
    "native_sync": False,  # the factory's shops keep their credit in CreditCraft only
    "auto_repair": False,
}


def settings_of(api) -> dict:
    response = api.get("/api/settings")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["settings"]


def test_get_shows_the_shops_settings(api):
    assert settings_of(api) == DEFAULTS


def test_put_changes_the_settings_and_audits_before_and_after(api, other_api):
    change = {
        "default_expiry_days": 90,
        "notify_customer": False,
        "native_sync": True,
        "auto_repair": True,
    }

    response = api.put("/api/settings", change)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"settings": change}
    assert settings_of(api) == change
    assert settings_of(other_api) == DEFAULTS
    [row] = audit_rows(api.shop.id, "settings.update")
    assert (row.actor, row.outcome, row.target_type, row.target_id) == (
        api.actor,
        "success",
        "shop",
        str(api.shop.id),
    )
    assert row.details == {
        "before": {name: DEFAULTS[name] for name in change},
        "after": change,
    }


def test_put_of_some_settings_keeps_the_others_and_audits_only_what_changed(api):
    api.put("/api/settings", {"default_expiry_days": 30})

    response = api.put("/api/settings", {"default_expiry_days": None, "auto_repair": False})

    assert response.get_json()["settings"] == DEFAULTS
    rows = audit_rows(api.shop.id, "settings.update")
    assert [row.details for row in rows] == [
        {"before": {"default_expiry_days": None}, "after": {"default_expiry_days": 30}},
        {"before": {"default_expiry_days": 30}, "after": {"default_expiry_days": None}},
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"default_expiry_days": 0}, "default_expiry_days"),
        ({"default_expiry_days": 3651}, "default_expiry_days"),
        ({"default_expiry_days": "30"}, "default_expiry_days"),
        ({"default_expiry_days": 1.5}, "default_expiry_days"),
        ({"default_expiry_days": True}, "default_expiry_days"),
        ({"notify_customer": "yes"}, "notify_customer"),
        ({"native_sync": 1}, "native_sync"),
        ({"auto_repair": None}, "auto_repair"),
        ({"currency": "EUR"}, "currency"),
        ({"auto_repair": True, "default_expiry_days": -1}, "default_expiry_days"),
    ],
)
def test_a_bad_setting_is_a_422_naming_it_and_changes_nothing(api, change, field):
    response = api.put("/api/settings", change)

    error = assert_error(response, 422, "invalid_field")
    assert error["details"]["field"] == field
    assert settings_of(api) == DEFAULTS
    [row] = audit_rows(api.shop.id, "settings.update")
    assert (row.actor, row.outcome, row.error_code) == (api.actor, "failure", "invalid_field")
    assert row.details["changes"] == change
    assert row.details["field"] == field


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"{", "application/json", 400, "invalid_json"),
        (b"[1]", "application/json", 400, "invalid_json"),
        (b"auto_repair=true", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(api, data, content_type, status, code):
    assert_error(api.send("PUT", "/api/settings", data, content_type), status, code)
    assert settings_of(api) == DEFAULTS
    assert audit_rows(api.shop.id, "settings.update") == []


def test_settings_need_a_session_token(client):
    assert_error(client.get("/api/settings"), 401, "invalid_session_token")
    assert_error(client.put("/api/settings", json={}), 401, "invalid_session_token")


# -- the default expiry, applied by the issue route ---------------------------------------------


def test_credit_issued_without_an_expiry_gets_the_shops_default(api):
    api.put("/api/settings", {"default_expiry_days": 30})
    before = datetime.now(UTC)

    lot = api.credit(7_100_001, "10.00")["lot"]

    after = datetime.now(UTC)
    expires = datetime.fromisoformat(lot["expires_at"])
    assert before + timedelta(days=30) <= expires <= after + timedelta(days=30)


def test_an_explicit_expiry_or_an_explicit_null_wins_over_the_default(api):
    api.put("/api/settings", {"default_expiry_days": 30})
    chosen = (datetime.now(UTC) + timedelta(days=5)).replace(microsecond=0)

    explicit = api.credit(7_100_002, "10.00", expires_at=chosen.isoformat())["lot"]
    never = api.credit(7_100_002, "10.00", expires_at=None)["lot"]

    assert datetime.fromisoformat(explicit["expires_at"]) == chosen
    assert never["expires_at"] is None


def test_without_a_default_credit_never_expires(api):
    assert api.credit(7_100_003, "10.00")["lot"]["expires_at"] is None


def test_a_retry_of_a_defaulted_issue_replays_the_first_answer(api):
    """The request holds the number of days, not the instant: a retry is the same request."""
    api.put("/api/settings", {"default_expiry_days": 30})
    key = str(uuid.uuid4())
    first = api.post("/api/customers/7100004/credits", _credit(), key=key)

    again = api.post("/api/customers/7100004/credits", _credit(), key=key)

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()


def _credit() -> dict:
    return {"amount": "10.00", "currency": "USD", "reason": "goodwill"}


def test_the_default_follows_the_setting_as_it_changes(api):
    api.put("/api/settings", {"default_expiry_days": 7})
    first = api.credit(7_100_005, "1.00")["lot"]
    api.put("/api/settings", {"default_expiry_days": None})
    db.session.expire_all()

    second = api.credit(7_100_005, "1.00")["lot"]

    assert first["expires_at"] is not None
    assert second["expires_at"] is None
