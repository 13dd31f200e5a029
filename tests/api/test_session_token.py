"""Session tokens: what /api accepts, and that every refusal is the same retryable 401.

Refusals are sent to a write route with a valid body, so each case also proves the view never
ran: nothing is written for the shop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from blueprints.settings import EXTENSION_KEY
from tests.api.helpers import Api, assert_error, row_counts
from tests.conftest import API_KEY, API_SECRET, session_token
from tests.factories import ShopFactory

CUSTOMER = 7408348290
CREDIT = {"amount": "10.00", "currency": "USD", "reason": "goodwill"}
OTHER_SECRET = "another-secret-that-is-long-enough-0123456789"
RETRY = "X-Shopify-Retry-Invalid-Session-Request"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    """A JWT built by hand (PyJWT refuses to mint some of the forgeries we need)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b"" if sign is None else sign(signing_input.encode())
    return f"{signing_input}.{b64(signature)}"


def claims_of(shop: str, **overrides: Any) -> dict[str, Any]:
    token = session_token(shop)
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def hs256(claims: dict[str, Any], secret: str = API_SECRET) -> str:
    return handmade(
        {"alg": "HS256", "typ": "JWT"},
        claims,
        lambda data: hmac.new(secret.encode(), data, hashlib.sha256).digest(),
    )


def credit(client: FlaskClient, headers: dict[str, str]) -> Any:
    return client.post(f"/api/customers/{CUSTOMER}/credits", json=CREDIT, headers=headers)


def assert_refused(response: Any) -> None:
    assert_error(response, 401, "invalid_session_token")
    assert response.headers[RETRY] == "1"


def now() -> datetime:
    return datetime.now(UTC)


def seconds(n: int) -> int:
    return int((now() + timedelta(seconds=n)).timestamp())


@pytest.mark.smoke
def test_a_valid_token_authenticates_as_its_shop(client, shop, other_shop):
    Api(client, other_shop).credit(CUSTOMER, "1.00")
    response = client.get("/api/customers", headers=Api(client, shop).headers())
    assert response.status_code == 200
    assert response.get_json() == {"customers": [], "next_cursor": None}
    response = credit(client, {"Authorization": f"Bearer {session_token(shop.domain)}"})
    assert response.status_code == 201
    assert row_counts(shop.id)["ledger_entries"] == 1


@pytest.mark.smoke
def test_a_request_without_a_token_is_a_retryable_401(client, shop):
    response = credit(client, {})
    assert_refused(response)
    assert row_counts(shop.id)["ledger_entries"] == 0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def hs512(claims: dict[str, Any]) -> str:
    return handmade(
        {"alg": "HS512", "typ": "JWT"},
        claims,
        lambda data: hmac.new(API_SECRET.encode(), data, hashlib.sha512).digest(),
    )


def _tampered(domain: str) -> str:
    """A genuine token whose claims were edited after signing (another staff member)."""
    header, _, signature = session_token(domain).split(".")
    payload = b64(json.dumps(claims_of(domain, sub="1")).encode())
    return f"{header}.{payload}.{signature}"


def _lookalike(domain: str) -> str:
    host = f"{domain}.evil.com"
    return session_token(domain, dest=f"https://{host}", iss=f"https://{host}/admin")


BAD_HEADERS: dict[str, Callable[[str], dict[str, str]]] = {
    "empty_authorization": lambda d: {"Authorization": ""},
    "bearer_without_token": lambda d: {"Authorization": "Bearer "},
    "basic_scheme": lambda d: {"Authorization": f"Basic {session_token(d)}"},
    "token_without_scheme": lambda d: {"Authorization": session_token(d)},
    "not_a_jwt": lambda d: bearer("not-a-jwt"),
    "bad_signature": lambda d: bearer(session_token(d, secret=OTHER_SECRET)),
    "tampered_claims": lambda d: bearer(_tampered(d)),
    "wrong_audience": lambda d: bearer(session_token(d, audience="someone-elses-api-key")),
    "expired_beyond_leeway": lambda d: bearer(session_token(d, exp=seconds(-15))),
    "not_yet_valid_beyond_leeway": lambda d: bearer(session_token(d, nbf=seconds(15))),
    "iss_names_another_shop": lambda d: bearer(
        session_token(d, iss="https://someone-else.myshopify.com/admin")
    ),
    "iss_not_the_admin": lambda d: bearer(session_token(d, iss=f"https://{d}/")),
    "dest_over_http": lambda d: bearer(session_token(d, dest=f"http://{d}")),
    "dest_not_myshopify": lambda d: bearer(
        session_token(d, dest="https://evil.example.com", iss="https://evil.example.com/admin")
    ),
    "dest_lookalike_host": lambda d: bearer(_lookalike(d)),
    "missing_sub": lambda d: bearer(hs256(claims_of(d, sub=None))),
    "missing_exp": lambda d: bearer(hs256(claims_of(d, exp=None))),
    "missing_dest": lambda d: bearer(hs256(claims_of(d, dest=None))),
    "alg_none": lambda d: bearer(handmade({"alg": "none", "typ": "JWT"}, claims_of(d))),
    "alg_hs512": lambda d: bearer(hs512(claims_of(d))),
    "hs256_header_unsigned": lambda d: bearer(handmade({"alg": "HS256"}, claims_of(d))),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_every_bad_token_is_a_retryable_401_that_writes_nothing(client, shop, case):
    before = row_counts(shop.id)
    response = credit(client, BAD_HEADERS[case](shop.domain))
    assert_refused(response)
    assert row_counts(shop.id) == before


def test_the_handmade_tokens_are_right_apart_from_their_flaw(client, shop):
    """Guards the table above: the same hand-built token, correctly signed, is accepted."""
    response = credit(client, {"Authorization": f"Bearer {hs256(claims_of(shop.domain))}"})
    assert response.status_code == 201


def test_the_scheme_is_case_insensitive(client, shop):
    response = client.get(
        "/api/customers", headers={"Authorization": f"bearer {session_token(shop.domain)}"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("claim", "offset", "accepted"),
    [
        ("exp", -5, True),
        ("exp", -15, False),
        ("nbf", 5, True),
        ("nbf", 15, False),
    ],
)
def test_exp_and_nbf_have_ten_seconds_of_leeway(client, shop, claim, offset, accepted):
    token = session_token(shop.domain, **{claim: seconds(offset)})
    response = client.get("/api/customers", headers={"Authorization": f"Bearer {token}"})
    if accepted:
        assert response.status_code == 200
    else:
        assert_refused(response)


def test_a_token_for_an_unknown_shop_is_refused(client, shop):
    response = credit(client, bearer(session_token("nobody-here.myshopify.com")))
    assert_refused(response)
    assert row_counts(shop.id)["ledger_entries"] == 0


@pytest.mark.parametrize(
    "state",
    [
        {"uninstalled_at": datetime(2026, 1, 1, tzinfo=UTC)},
        {"installed_at": None},
    ],
    ids=["uninstalled", "never_installed"],
)
def test_a_token_for_a_shop_without_the_app_is_refused(client, app_context, state):
    shop = ShopFactory(**state)
    response = credit(client, {"Authorization": f"Bearer {session_token(shop.domain)}"})
    assert_refused(response)
    assert row_counts(shop.id)["ledger_entries"] == 0


@pytest.fixture
def rotated(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app mid-rotation: a new secret, with the old one (the tests' API_SECRET) previous."""
    settings = app.extensions[EXTENSION_KEY]
    monkeypatch.setitem(
        app.extensions,
        EXTENSION_KEY,
        replace(settings, shopify_api_secret=OTHER_SECRET, shopify_api_secret_previous=API_SECRET),
    )


def test_during_a_rotation_both_the_new_and_the_previous_secret_are_accepted(client, shop, rotated):
    for secret in (OTHER_SECRET, API_SECRET):
        token = session_token(shop.domain, secret=secret)
        response = client.get("/api/customers", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, secret


def test_during_a_rotation_a_third_secret_and_a_bad_claim_are_still_refused(client, shop, rotated):
    third = session_token(shop.domain, secret="a-third-secret-nobody-configured-0123456789")
    response = client.get("/api/customers", headers={"Authorization": f"Bearer {third}"})
    assert_refused(response)
    # A token signed with the previous secret is still checked in full.
    wrong_aud = session_token(shop.domain, audience="not-" + API_KEY)
    response = client.get("/api/customers", headers={"Authorization": f"Bearer {wrong_aud}"})
    assert_refused(response)


def test_without_a_rotation_the_previous_secret_is_not_accepted(client, shop, app):
    assert app.extensions[EXTENSION_KEY].shopify_api_secret_previous is None
    token = session_token(shop.domain, secret=OTHER_SECRET)
    response = client.get("/api/customers", headers={"Authorization": f"Bearer {token}"})
    assert_refused(response)
