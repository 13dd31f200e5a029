"""Malformed input is a 4xx in the error envelope and writes nothing, not even a key or audit row.

Every bad request carries a valid Idempotency-Key, so "nothing written" covers the key too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api.helpers import Api, assert_error, row_counts

CUSTOMER = 7408348290
VALID = {"amount": "10.00", "currency": "USD", "reason": "goodwill"}
MISSING = object()


def body(**changes: Any) -> dict[str, Any]:
    """VALID with fields changed (MISSING removes one)."""
    merged = VALID | changes
    return {k: v for k, v in merged.items() if v is not MISSING}


def in_a_day(naive: bool = False) -> str:
    at = datetime.now(UTC) + timedelta(days=1)
    return (at.replace(tzinfo=None) if naive else at).isoformat()


# (case id, raw body or JSON value, content type, status, code)
RAW_BODIES = [
    ("malformed_json", '{"amount": "10.00",', "application/json", 400, "invalid_json"),
    ("empty_body", "", "application/json", 400, "invalid_json"),
    ("not_utf8", b'{"amount": "\xff"}', "application/json", 400, "invalid_json"),
    ("json_array", json.dumps([VALID]), "application/json", 400, "invalid_json"),
    ("json_string", '"10.00"', "application/json", 400, "invalid_json"),
    ("json_null", "null", "application/json", 400, "invalid_json"),
    ("text_plain", json.dumps(VALID), "text/plain", 415, "unsupported_media_type"),
    ("form", "amount=10.00&currency=USD&reason=x", "application/x-www-form-urlencoded", 415,
     "unsupported_media_type"),
    ("no_content_type", json.dumps(VALID), None, 415, "unsupported_media_type"),
]  # fmt: skip

CREDIT_FIELDS = [
    ("unknown_field", body(colour="blue"), 400, "unknown_field"),
    ("unknown_field_null", body(account_id=None), 400, "unknown_field"),
    ("missing_amount", body(amount=MISSING), 422, "missing_field"),
    ("missing_currency", body(currency=MISSING), 422, "missing_field"),
    ("missing_reason", body(reason=MISSING), 422, "missing_field"),
    ("null_amount", body(amount=None), 422, "missing_field"),
    ("float_amount", body(amount=10.5), 422, "invalid_amount"),
    ("int_amount", body(amount=10), 422, "invalid_amount"),
    ("bool_amount", body(amount=True), 422, "invalid_amount"),
    ("usd_three_decimals", body(amount="10.001"), 422, "invalid_amount"),
    ("jpy_decimals", body(amount="1.5", currency="JPY"), 422, "invalid_amount"),
    ("kwd_four_decimals", body(amount="1.0001", currency="KWD"), 422, "invalid_amount"),
    ("zero", body(amount="0"), 422, "invalid_amount"),
    ("zero_decimals", body(amount="0.00"), 422, "invalid_amount"),
    ("negative", body(amount="-1"), 422, "invalid_amount"),
    ("letters", body(amount="abc"), 422, "invalid_amount"),
    ("exponent", body(amount="1e3"), 422, "invalid_amount"),
    ("thousands", body(amount="1,000.00"), 422, "invalid_amount"),
    ("padded", body(amount=" 10.00"), 422, "invalid_amount"),
    ("too_large", body(amount="1" * 20), 422, "invalid_amount"),
    ("unknown_currency", body(currency="XYZ"), 422, "invalid_currency"),
    ("currency_with_digit", body(currency="usd1"), 422, "invalid_currency"),
    ("currency_number", body(currency=840), 422, "invalid_currency"),
    ("no_minor_unit_currency", body(currency="XAU"), 422, "invalid_currency"),
    ("expiry_without_zone", body(expires_at=in_a_day(naive=True)), 422, "invalid_field"),
    ("expiry_in_past", body(expires_at="2020-01-01T00:00:00Z"), 422, "invalid_expiry"),
    ("expiry_not_a_date", body(expires_at="next tuesday"), 422, "invalid_field"),
    ("expiry_a_number", body(expires_at=1767225600), 422, "invalid_field"),
    ("reason_empty", body(reason=""), 422, "invalid_field"),
    ("reason_blank", body(reason="   "), 422, "invalid_field"),
    ("reason_too_long", body(reason="r" * 256), 422, "invalid_field"),
    ("reason_a_number", body(reason=5), 422, "invalid_field"),
    ("note_too_long", body(note="n" * 1001), 422, "invalid_field"),
    ("source_not_issuable", body(source="refund"), 422, "invalid_field"),
]

DEBIT_FIELDS = [
    ("unknown_field", body(expires_at=in_a_day()), 400, "unknown_field"),
    ("missing_reason", body(reason=MISSING), 422, "missing_field"),
    ("float_amount", body(amount=1.5), 422, "invalid_amount"),
    ("zero", body(amount="0"), 422, "invalid_amount"),
    ("negative", body(amount="-1.00"), 422, "invalid_amount"),
    ("usd_three_decimals", body(amount="1.001"), 422, "invalid_amount"),
    ("unknown_currency", body(currency="XYZ"), 422, "invalid_currency"),
    ("reason_too_long", body(reason="r" * 256), 422, "invalid_field"),
]

REVOKE_FIELDS = [
    ("unknown_field", {"reason": "r", "amount": "1.00"}, 400, "unknown_field"),
    ("missing_reason", {}, 422, "missing_field"),
    ("reason_empty", {"reason": ""}, 422, "invalid_field"),
    ("reason_too_long", {"reason": "r" * 256}, 422, "invalid_field"),
]


@pytest.fixture
def funded(api: Api, shop: Any) -> tuple[str, dict[str, int]]:
    """The customer holds 10.00 USD in one lot; its id and the shop's row counts now."""
    lot = api.credit(CUSTOMER, "10.00")["lot"]["id"]
    return lot, row_counts(shop.id)


def _ids(cases: list[tuple[Any, ...]]) -> list[str]:
    return [case[0] for case in cases]


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code"),
    [case[1:] for case in RAW_BODIES],
    ids=_ids(RAW_BODIES),
)
@pytest.mark.parametrize("route", ["credits", "debits", "revoke"])
def test_a_body_that_is_not_a_json_object_writes_nothing(
    api, shop, funded, route, raw, content_type, status, code
):
    lot, before = funded
    path = {
        "credits": f"/api/customers/{CUSTOMER}/credits",
        "debits": f"/api/customers/{CUSTOMER}/debits",
        "revoke": f"/api/lots/{lot}/revoke",
    }[route]
    headers = api.headers(key=f"bad-{route}")
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = api.client.post(path, data=raw, headers=headers)
    assert_error(response, status, code)
    assert row_counts(shop.id) == before


@pytest.mark.parametrize(
    ("payload", "status", "code"), [case[1:] for case in CREDIT_FIELDS], ids=_ids(CREDIT_FIELDS)
)
def test_bad_credit_fields_write_nothing(api, shop, payload, status, code):
    response = api.post(f"/api/customers/{CUSTOMER}/credits", payload, key="bad-credit")
    assert_error(response, status, code)
    assert set(row_counts(shop.id).values()) == {0}  # not even the customer


@pytest.mark.parametrize(
    ("payload", "status", "code"), [case[1:] for case in DEBIT_FIELDS], ids=_ids(DEBIT_FIELDS)
)
def test_bad_debit_fields_write_nothing(api, shop, funded, payload, status, code):
    _, before = funded
    response = api.post(f"/api/customers/{CUSTOMER}/debits", payload, key="bad-debit")
    assert_error(response, status, code)
    assert row_counts(shop.id) == before


@pytest.mark.parametrize(
    ("payload", "status", "code"), [case[1:] for case in REVOKE_FIELDS], ids=_ids(REVOKE_FIELDS)
)
def test_bad_revoke_fields_write_nothing(api, shop, funded, payload, status, code):
    lot, before = funded
    response = api.post(f"/api/lots/{lot}/revoke", payload, key="bad-revoke")
    assert_error(response, status, code)
    assert row_counts(shop.id) == before


@pytest.mark.parametrize("customer", ["abc", "0", "-5", "12abc", "1.5", "٣", str(2**63), "9" * 40])
@pytest.mark.parametrize("route", ["detail", "ledger", "credits", "debits"])
def test_a_customer_id_that_is_not_a_shopify_id_is_404(api, shop, route, customer):
    path = f"/api/customers/{customer}"
    if route == "detail":
        response = api.get(path)
    elif route == "ledger":
        response = api.get(f"{path}/ledger")
    else:
        response = api.post(f"{path}/{route}", VALID, key="bad-customer")
    error = assert_error(response, 404, "customer_not_found")
    assert error["message"] == "No such customer."
    assert set(row_counts(shop.id).values()) == {0}


def test_the_error_names_the_offending_field(api):
    response = api.post(f"/api/customers/{CUSTOMER}/credits", body(colour="blue", size="L"))
    assert assert_error(response, 400, "unknown_field")["details"] == {"fields": ["colour", "size"]}
    response = api.post(f"/api/customers/{CUSTOMER}/credits", body(reason="r" * 256))
    assert assert_error(response, 422, "invalid_field")["details"] == {"field": "reason"}
    response = api.post(f"/api/customers/{CUSTOMER}/credits", body(amount="10.001"))
    details = assert_error(response, 422, "invalid_amount")["details"]
    assert details == {"amount": "10.001", "currency": "USD"}


def test_the_largest_allowed_reason_and_lowercase_currency_are_accepted(api):
    """The edges of the table above, so the refusals are not an accident."""
    credited = api.credit(CUSTOMER, "0.01", "usd", reason="r" * 255, expires_at=in_a_day())
    assert (credited["entry"]["amount"], credited["entry"]["currency"]) == ("0.01", "USD")
    assert credited["entry"]["reason"] == "r" * 255
