"""The Settings and Audit log pages: this shop's settings, presets and audit rows (never another
shop's), the forms' API paths and methods, the filters as the API reads them (days of the
shop), keyset pages, and exports that hold what the page shows."""

from __future__ import annotations

import html as html_lib
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from blueprints.report_pages import AUDIT_PER_PAGE, DETAILS_SHOWN
from extensions import db
from ledger import audit, presets
from models import Shop
from tests.admin_api.helpers import csv_rows
from tests.conftest import auth
from tests.factories import ShopFactory
from tests.pages.conftest import STAFF_ID, Pages, customer_of, issue
from tests.pages.test_report_pages import attribute, page_error

LOYALTY = {
    "name": "Loyalty <b>10</b>",
    "amount": "10.00",
    "currency": "USD",
    "expiry_days": 90,
    "reason": "Loyalty reward",
    "source": "goodwill",
}


@pytest.fixture
def other_shop(app_context: Any) -> Shop:
    shop: Shop = ShopFactory()
    return shop


def add_preset(shop: Shop, body: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC)
    return presets.create_preset(db.session, shop.id, body, actor="staff:1", now=now)


def form_of(html: str, form_id: str) -> str:
    start = html.index(f'<form id="{form_id}"')
    return html[start : html.index("</form>", start)]


def names_in(form: str) -> set[str]:
    return set(re.findall(r'<(?:input|select)[^>]* name="(\w+)"', form))


# -- Settings ------------------------------------------------------------------------------------


def test_settings_show_the_shop_s_values_and_send_them_with_put(pages, shop):
    shop.default_expiry_days, shop.native_sync = 90, True
    shop.notify_customer, shop.auto_repair = False, True
    db.session.commit()

    html = pages.get("/app/settings").text
    form = form_of(html, "settings-form")

    assert 'data-api-path="/api/settings"' in form
    assert 'data-api-method="PUT"' in form
    assert names_in(form) == {
        "default_expiry_days",
        "native_sync",
        "notify_customer",
        "auto_repair",
    }
    assert attribute(html, "setting-default_expiry_days", "value") == "90"
    checked = dict(
        re.findall(r'type="checkbox" data-testid="setting-(\w+)"[^>]*?( checked)?>', form)
    )
    assert checked == {"native_sync": " checked", "notify_customer": "", "auto_repair": " checked"}
    # An empty expiry is sent as null ("never"), the switches as true/false (static/app.js).
    expiry = re.search(r'<input[^>]*name="default_expiry_days"[^>]*>', form)
    assert expiry is not None
    assert 'data-as="integer"' in expiry.group(0)
    assert 'data-empty="null"' in expiry.group(0)


def test_settings_saved_as_the_form_sends_them_show_on_the_page(pages, shop):
    answer = pages.client.put(
        "/api/settings",
        json={
            "default_expiry_days": None,
            "native_sync": False,
            "notify_customer": True,
            "auto_repair": False,
        },
        headers=auth(shop.domain, sub=STAFF_ID),
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)

    form = form_of(pages.get("/app/settings").text, "settings-form")
    assert re.search(r'name="default_expiry_days" type="number" value=""', form)
    checked = dict(
        re.findall(r'type="checkbox" data-testid="setting-(\w+)"[^>]*?( checked)?>', form)
    )
    assert checked == {"native_sync": "", "notify_customer": " checked", "auto_repair": ""}


def test_presets_of_this_shop_are_listed_with_forms_to_edit_and_delete(pages, shop, other_shop):
    mine = add_preset(shop, LOYALTY)
    plain = add_preset(shop, LOYALTY | {"name": "Apology", "expiry_days": None})
    add_preset(other_shop, LOYALTY | {"name": "Theirs only"})

    html = pages.get("/app/settings").text

    listed = re.findall(r'data-testid="preset-name">([^<]*)<', html)
    assert listed == ["Apology", "Loyalty &lt;b&gt;10&lt;/b&gt;"]  # by name; escaped
    assert "<b>10</b>" not in html
    assert "Theirs only" not in html
    assert "After 90 days" in html
    assert "Never" in html
    for preset in (mine, plain):
        edit = form_of(html, f"preset-edit-{preset['id']}")
        assert f'data-api-path="/api/presets/{preset["id"]}"' in edit
        assert 'data-api-method="PUT"' in edit
        assert names_in(edit) == set(presets.FIELDS)
        delete = form_of(html, f"preset-delete-{preset['id']}")
        assert 'data-api-method="DELETE"' in delete
        assert "data-confirm=" in delete
    edit = form_of(html, f"preset-edit-{mine['id']}")
    assert re.search(r'name="expiry_days" type="number" value="90"', edit)
    assert re.search(r'<option value="goodwill" selected>', edit)
    add = form_of(html, "preset-add")
    assert 'data-api-path="/api/presets"' in add
    assert "data-api-method" not in add  # POST
    assert names_in(add) == set(presets.FIELDS)


def test_a_preset_added_from_settings_is_in_the_customer_page_s_picker(pages, shop):
    answer = pages.client.post(
        "/api/presets",
        json={**LOYALTY, "expiry_days": 30},
        headers=auth(shop.domain, sub=STAFF_ID),
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    ada = customer_of(shop)

    html = pages.get(f"/app/customers/{ada.shopify_customer_id}").text

    picker = html[html.index('data-testid="preset-picker"') :]
    picker = picker[: picker.index("</select>")]
    option = re.search(r'<option value="(\d+)"([^>]*)>([^<]*)<', picker)
    assert option is not None
    assert int(option.group(1)) == answer.get_json()["preset"]["id"]
    assert 'data-amount="10.00"' in option.group(2)
    assert 'data-reason="Loyalty reward"' in option.group(2)
    assert 'data-source="goodwill"' in option.group(2)
    expires = re.search(r'data-expires-on="([\d-]+)"', option.group(2))
    assert expires is not None
    assert expires.group(1) == str(datetime.now(UTC).date() + timedelta(days=30))  # UTC shop
    assert "Loyalty &lt;b&gt;10&lt;/b&gt;" in option.group(3)


@pytest.mark.smoke
def test_a_shop_without_presets_says_how_they_help(pages):
    html = pages.get("/app/settings").text

    assert 'data-testid="no-presets"' in html
    assert 'id="preset-add"' in html


# -- Audit log -----------------------------------------------------------------------------------


def record(shop: Shop, action: str, at: datetime, **fields: Any) -> None:
    audit.record(
        db.session,
        shop.id,
        fields.pop("actor", f"staff:{STAFF_ID}"),
        action,
        audit.Target(fields.pop("target_type", "preset"), fields.pop("target_id", None)),
        at,
        fields.pop("details", {}),
        failure=fields.pop("failure", None),
    )
    db.session.commit()


def audit_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'data-testid="audit-row" data-audit-id="(\d+)"', html)]


@pytest.fixture
def eastern(client: Any) -> Pages:
    """A shop in New York (EST in late November: UTC-5), for the days of the filter."""
    return Pages(client, ShopFactory(timezone="America/New_York"))


def test_the_audit_log_shows_this_shop_s_rows_newest_first(pages, shop, other_shop, now):
    record(
        shop,
        "preset.create",
        now - timedelta(hours=2),
        target_id="5",
        details={"after": {"name": "Loyalty"}},
    )
    record(
        shop,
        "settings.update",
        now - timedelta(hours=1),
        target_type="shop",
        failure=audit.Failure("invalid_field", "native_sync must be true or false."),
        details={"changes": {"native_sync": "yes"}},
    )
    record(
        shop,
        "issue",
        now,
        actor="webhook:orders/paid",
        target_type="ledger_entry",
        target_id="0b5e",
        details={"amount": "<img src=x onerror=alert(1)>"},
    )
    record(other_shop, "issue", now, actor="staff:theirs")

    html = pages.get("/app/audit").text

    ids = audit_ids(html)
    assert len(ids) == 3
    assert ids == sorted(ids, reverse=True)
    assert "staff:theirs" not in html
    rows = html[html.index('data-testid="audit-table"') :].split('data-testid="audit-row"')[1:]
    assert "webhook:orders/paid" in rows[0]
    assert "Ledger entry" in rows[0]
    assert "amount: &lt;img src=x onerror=alert(1)&gt;" in rows[0]
    assert "<img src=x" not in html
    assert "Failure" in rows[1]
    assert re.search(r'data-testid="audit-error-code">invalid_field<', rows[1])
    assert 'changes: {"native_sync":"yes"}' in rows[1].replace("&#34;", '"')
    assert "Success" in rows[2]
    assert 'Preset <span class="mono">5</span>' in rows[2]
    # Who and what link to the log filtered by them.
    assert "actor=webhook%3Aorders%2Fpaid" in rows[0]
    assert "action=settings.update" in rows[1]


def test_filters_by_who_what_outcome_and_days_of_the_shop(eastern, now):
    shop = eastern.shop
    # 20 Nov 03:00 UTC is 19 Nov 22:00 in New York.
    late_evening = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    record(shop, "issue", late_evening)
    record(shop, "revoke", late_evening + timedelta(hours=6), actor="staff:7")
    record(shop, "revoke", late_evening + timedelta(hours=7), failure=audit.Failure("x", "no"))

    def shown(**params: str) -> list[str]:
        html = eastern.get("/app/audit", **params).text
        return re.findall(r'data-testid="audit-row-action"[^>]*>([^<]*)<', html)

    assert shown() == ["revoke", "revoke", "issue"]
    assert shown(action="revoke") == ["revoke", "revoke"]
    assert shown(actor="staff:7") == ["revoke"]
    assert shown(outcome="failure") == ["revoke"]
    assert shown(**{"from": "2026-11-20"}) == ["revoke", "revoke"]
    assert shown(to="2026-11-19") == ["issue"]
    assert shown(**{"from": "2026-11-19", "to": "2026-11-19"}) == ["issue"]
    assert shown(action="nothing.like.this") == []
    assert (
        "Nothing in the audit log matches this filter."
        in eastern.get("/app/audit", action="nothing.like.this").text
    )


def test_the_exports_hold_what_the_page_shows(eastern, now):
    shop = eastern.shop
    evening = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 19 Nov in New York
    for hours in (0, 6, 7):
        record(shop, "revoke", evening + timedelta(hours=hours))
    record(shop, "issue", evening + timedelta(hours=8))
    customer = customer_of(shop)
    issue(db.session, shop, customer, "5.00", now=evening, currency="EUR")
    issue(db.session, shop, customer, "6.00", now=evening + timedelta(hours=6))

    html = eastern.get("/app/audit", action="revoke", **{"from": "2026-11-20"}).text
    url = attribute(html, "export-audit", "data-download")

    assert urlsplit(url).path == "/api/audit-log.csv"
    assert parse_qs(urlsplit(url).query) == {
        "action": ["revoke"],
        "from": ["2026-11-20T05:00:00Z"],  # New York's midnight
    }
    exported = csv_rows(eastern.client.get(url, headers=auth(shop.domain)))
    assert [int(row["id"]) for row in exported] == audit_ids(html)
    assert len(exported) == 2
    # The ledger of the same days: whole, and per currency customers hold.
    ledger = attribute(html, "export-ledger", "data-download")
    assert parse_qs(urlsplit(ledger).query) == {"from": ["2026-11-20T05:00:00Z"]}
    entries = csv_rows(eastern.client.get(ledger, headers=auth(shop.domain)))
    assert [row["amount"] for row in entries] == ["6.00"]
    euros = attribute(html, "export-ledger-EUR", "data-download")
    assert parse_qs(urlsplit(euros).query)["currency"] == ["EUR"]
    assert 'data-testid="export-ledger-USD"' in html


def test_the_audit_log_pages_back_with_a_cursor(pages, shop, now):
    for n in range(AUDIT_PER_PAGE + 1):
        record(shop, "preset.update", now + timedelta(seconds=n), target_id=str(n))

    first = pages.get("/app/audit", action="preset.update").text
    next_url = attribute(first, "next-page", "href")
    query = {k: v[0] for k, v in parse_qs(urlsplit(next_url).query).items() if k != "shop"}
    second = pages.get("/app/audit", **query).text

    assert len(audit_ids(first)) == AUDIT_PER_PAGE
    assert query["action"] == "preset.update"
    assert len(audit_ids(second)) == 1
    assert audit_ids(second)[0] < min(audit_ids(first))
    assert 'data-testid="next-page"' not in second
    assert 'data-testid="first-page"' in second


def test_long_details_are_cut_with_the_whole_behind_more(pages, shop, now):
    record(shop, "preset.update", now, details={"before": {"reason": "x" * 300}})

    html = pages.get("/app/audit").text

    summary = re.search(r'data-testid="audit-details">([^<]*)<', html)
    assert summary is not None
    shown = html_lib.unescape(summary.group(1))
    assert len(shown) == DETAILS_SHOWN
    assert shown.startswith('before: {"reason":"xxx')
    assert shown.endswith("…")
    assert "<summary>More</summary>" in html
    assert "x" * 300 in html


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"outcome": "maybe"}, "outcome must be one of success, failure."),
        ({"from": "yesterday"}, "from must be a date (YYYY-MM-DD)"),
        ({"from": "2026-11-20", "to": "2026-11-19"}, "from must be before to."),
        ({"actor": "a" * 256}, "actor must be at most 255 characters"),
        ({"after": "not-a-cursor!"}, "The cursor is not one this API gave out."),
        ({"after": "WyJub3ciLCAxXQ"}, "The cursor is not one this API gave out."),
    ],
)
def test_filters_the_api_would_refuse_are_a_400_with_the_message(pages, params, message):
    answer = pages.get("/app/audit", **params)

    assert answer.status_code == 400
    assert page_error(answer.text).startswith(message)
    assert 'data-testid="audit-table"' not in answer.text


@pytest.mark.smoke
def test_an_empty_audit_log_says_what_it_will_hold(pages):
    html = pages.get("/app/audit").text

    assert "Nothing in the audit log yet." in html
    assert attribute(html, "export-audit", "data-download") == "/api/audit-log.csv"


def test_ledger_amounts_in_the_details_show_as_money_not_minor_units(pages, shop, now):
    record(shop, "issue", now, details={"amount": 1250, "currency": "USD", "reason": "goodwill"})
    record(shop, "expire", now, details={"amount": 1200, "currency": "JPY", "lots": 2})

    html = pages.get("/app/audit").text

    # (the database keeps details as JSONB: their keys come back in its order)
    assert "amount: 12.50 ·" in html
    assert "amount: 1200 ·" in html
    assert "amount: 1250" not in html
