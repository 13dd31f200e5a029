"""Issuance presets: created, listed, replaced and deleted per shop; bad input refused whole;
every change (and every refusal) audited in the staff member's name."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from extensions import db
from ledger.presets import MAX_PRESETS, list_presets
from models import IssuancePreset, Shop
from tests.admin_api.helpers import audit_rows
from tests.api.helpers import assert_error

GOODWILL = {
    "name": "Goodwill $10, 90 days",
    "amount": "10.00",
    "currency": "USD",
    "expiry_days": 90,
    "reason": "goodwill gesture",
    "source": "goodwill",
}


def create(api, body: dict | None = None) -> dict:
    response = api.post("/api/presets", body or GOODWILL)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["preset"]


def presets_of(api) -> list[dict]:
    response = api.get("/api/presets")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["presets"]


def count(shop_id: int) -> int:
    stmt = select(func.count()).select_from(IssuancePreset).where(IssuancePreset.shop_id == shop_id)
    return db.session.scalar(stmt)


def test_a_preset_is_created_listed_replaced_and_deleted(api):
    created = create(api)
    assert {k: created[k] for k in GOODWILL} == GOODWILL
    assert isinstance(created["id"], int)
    assert created["created_at"] == created["updated_at"]

    assert presets_of(api) == [created]

    replaced = {**GOODWILL, "name": "Goodwill $12", "amount": "12.50", "expiry_days": None}
    response = api.put(f"/api/presets/{created['id']}", replaced)
    assert response.status_code == 200, response.get_data(as_text=True)
    updated = response.get_json()["preset"]
    assert {k: updated[k] for k in GOODWILL} == replaced
    assert presets_of(api) == [updated]

    response = api.delete(f"/api/presets/{created['id']}")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert presets_of(api) == []


def test_every_change_is_audited_with_the_preset_before_and_after(api):
    created = create(api)
    api.put(f"/api/presets/{created['id']}", {**GOODWILL, "amount": "11.00"})
    api.delete(f"/api/presets/{created['id']}")

    rows = audit_rows(api.shop.id)
    assert [(row.action, row.actor, row.outcome, row.target_id) for row in rows] == [
        ("preset.create", api.actor, "success", str(created["id"])),
        ("preset.update", api.actor, "success", str(created["id"])),
        ("preset.delete", api.actor, "success", str(created["id"])),
    ]
    assert rows[0].details["after"]["amount"] == "10.00"
    assert (rows[1].details["before"]["amount"], rows[1].details["after"]["amount"]) == (
        "10.00",
        "11.00",
    )
    assert rows[2].details["before"]["name"] == GOODWILL["name"]


def test_presets_are_listed_by_name_with_defaults_for_source_and_expiry(api):
    body = {"name": "B", "amount": "5", "currency": "jpy", "reason": "thanks"}
    b = create(api, body)
    a = create(api, {**GOODWILL, "name": "A"})

    assert [p["name"] for p in presets_of(api)] == ["A", "B"]
    assert (b["amount"], b["currency"], b["expiry_days"]) == ("5", "JPY", None)
    assert b["source"] == "manual"
    assert a["source"] == "goodwill"


def test_another_shops_staff_can_neither_see_nor_touch_a_preset(api, other_api):
    created = create(api)
    path = f"/api/presets/{created['id']}"

    assert presets_of(other_api) == []
    assert_error(other_api.put(path, GOODWILL | {"amount": "99.00"}), 404, "preset_not_found")
    assert_error(other_api.delete(path), 404, "preset_not_found")

    assert presets_of(api) == [created]
    assert audit_rows(other_api.shop.id) == []


@pytest.mark.parametrize("preset_id", ["0", "abc", "-1", "1.5", str(2**63)])
def test_a_malformed_preset_id_is_a_404(api, preset_id):
    assert_error(api.delete(f"/api/presets/{preset_id}"), 404, "preset_not_found")


def test_a_name_the_shop_uses_already_is_a_409_and_audited(api, other_api):
    first = create(api)
    other = create(api, {**GOODWILL, "name": "Other"})

    assert_error(api.post("/api/presets", GOODWILL), 409, "preset_name_taken")
    renamed = api.put(f"/api/presets/{other['id']}", GOODWILL)
    assert_error(renamed, 409, "preset_name_taken")
    assert create(other_api)["name"] == GOODWILL["name"]  # names are unique per shop only

    assert presets_of(api) == [first, other]
    failures = [row for row in audit_rows(api.shop.id) if row.outcome == "failure"]
    assert [(row.action, row.actor, row.error_code) for row in failures] == [
        ("preset.create", api.actor, "preset_name_taken"),
        ("preset.update", api.actor, "preset_name_taken"),
    ]


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"name": None}, "invalid_field", "name"),
        ({"name": "   "}, "invalid_field", "name"),
        ({"name": "x" * 101}, "invalid_field", "name"),
        ({"name": 7}, "invalid_field", "name"),
        ({"amount": None}, "invalid_field", "amount"),
        ({"amount": "0.00"}, "invalid_amount", None),
        ({"amount": "-5.00"}, "invalid_amount", None),
        ({"amount": 10.5}, "invalid_amount", None),
        ({"amount": "10.001"}, "invalid_amount", None),
        ({"currency": "XXX"}, "invalid_currency", None),
        ({"expiry_days": 0}, "invalid_field", "expiry_days"),
        ({"expiry_days": 3651}, "invalid_field", "expiry_days"),
        ({"expiry_days": "30"}, "invalid_field", "expiry_days"),
        ({"reason": ""}, "invalid_field", "reason"),
        ({"reason": "r" * 256}, "invalid_field", "reason"),
        ({"source": "bulk"}, "invalid_field", "source"),
        ({"source": ["manual"]}, "invalid_field", "source"),
        ({"colour": "red"}, "invalid_field", "colour"),
    ],
)
def test_a_bad_preset_is_refused_whole_and_the_refusal_audited(api, change, code, field):
    existing = create(api, {**GOODWILL, "name": "Existing"})
    body = {**GOODWILL, **change}

    created = api.post("/api/presets", body)
    replaced = api.put(f"/api/presets/{existing['id']}", body)

    for response in (created, replaced):
        error = assert_error(response, 422, code)
        if field is not None:
            assert error["details"]["field"] == field
    assert presets_of(api) == [existing]
    failures = [row for row in audit_rows(api.shop.id) if row.outcome == "failure"]
    assert [(row.action, row.actor, row.error_code) for row in failures] == [
        ("preset.create", api.actor, code),
        ("preset.update", api.actor, code),
    ]


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"{", "application/json", 400, "invalid_json"),
        (b'"preset"', "application/json", 400, "invalid_json"),
        (b"name=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(api, data, content_type, status, code):
    assert_error(api.send("POST", "/api/presets", data, content_type), status, code)
    assert count(api.shop.id) == 0


def test_a_shop_keeps_at_most_so_many_presets(api):
    now = datetime.now(UTC)
    db.session.add_all(
        IssuancePreset(
            shop_id=api.shop.id,
            name=f"Preset {n}",
            amount=100,
            currency="USD",
            reason="r",
            source="manual",
            created_at=now,
            updated_at=now,
        )
        for n in range(MAX_PRESETS)
    )
    db.session.commit()

    assert_error(api.post("/api/presets", GOODWILL), 409, "preset_limit_reached")

    assert count(api.shop.id) == MAX_PRESETS


def test_the_demo_seed_adds_three_presets_once(app_context):
    runner = app_context.test_cli_runner()
    domain = "seed-presets.myshopify.com"
    for _ in range(2):
        result = runner.invoke(args=["demo", "seed", "--shop", domain])
        assert result.exit_code == 0, result.output

    shop = db.session.scalars(select(Shop).where(Shop.domain == domain)).one()
    seeded = [(p["name"], p["amount"], p["expiry_days"]) for p in list_presets(db.session, shop.id)]
    assert seeded == [
        ("Birthday $15, 30 days", "15.00", 30),
        ("Goodwill $10, 90 days", "10.00", 90),
        ("Loyalty $25, 365 days", "25.00", 365),
    ]
