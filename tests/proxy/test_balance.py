"""GET /proxy/balance over HTTP: the exact answers, and every request it refuses.

Requests are signed by tests/proxy/helpers.py (checked against Shopify's vectors) with the
app's secret, exactly as the App Proxy forwards them.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from extensions import db
from models import Shop
from tests.conftest import API_SECRET
from tests.factories import ShopFactory
from tests.proxy.conftest import in_days, storefront_configured
from tests.proxy.helpers import balance_url, proxy_pairs, proxy_signature, signed_query

CUSTOMER = 7408348290
PRIVATE = "private, no-store"


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == PRIVATE
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


# -- what a signed-in customer sees ---------------------------------------------------------


@pytest.mark.smoke
def test_balances_body_is_exactly_the_contract(client: FlaskClient, shop: Shop, credit):
    soon, later = in_days(10), in_days(40)
    credit(shop, CUSTOMER, "5.00", expires_at=soon)
    credit(shop, CUSTOMER, "2.50", expires_at=soon)  # same instant: summed in next_expiry
    credit(shop, CUSTOMER, "3.00", expires_at=later)
    credit(shop, CUSTOMER, "2.00")  # never expires
    credit(shop, CUSTOMER, "1000", currency="JPY")

    response = client.get(balance_url(shop.domain, CUSTOMER))

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == PRIVATE
    body = json.loads(response.get_data())
    assert body == {
        "logged_in": True,
        "customer_id": str(CUSTOMER),
        "balances": [
            {"currency": "JPY", "amount": "1000", "next_expiry": None},
            {
                "currency": "USD",
                "amount": "12.50",
                "next_expiry": {
                    "amount": "7.50",
                    "expires_at": soon.isoformat().replace("+00:00", "Z"),
                },
            },
        ],
    }
    assert list(body) == ["logged_in", "customer_id", "balances"]
    assert list(body["balances"][1]) == ["currency", "amount", "next_expiry"]
    assert list(body["balances"][1]["next_expiry"]) == ["amount", "expires_at"]


@pytest.mark.smoke
def test_guest_gets_logged_in_false_only(client: FlaskClient, shop: Shop):
    response = client.get(balance_url(shop.domain, ""))
    assert response.status_code == 200
    assert response.get_json() == {"logged_in": False}
    assert response.headers["Cache-Control"] == PRIVATE


def test_customer_without_account_has_no_balances(client: FlaskClient, shop: Shop):
    response = client.get(balance_url(shop.domain, 123456789))
    assert response.get_json() == {"logged_in": True, "customer_id": "123456789", "balances": []}


def test_spent_account_shows_zero(client: FlaskClient, shop: Shop, credit):
    from ledger import operations
    from ledger.book import Actor
    from ledger.money import Money

    credit(shop, CUSTOMER, "4.00")
    by = Actor(shop.id, datetime.now(UTC), "staff:test", "spent")
    operations.redeem(db.session, by, customer=CUSTOMER, amount=Money.parse("4.00", "USD"))
    balances = client.get(balance_url(shop.domain, CUSTOMER)).get_json()["balances"]
    assert balances == [{"currency": "USD", "amount": "0.00", "next_expiry": None}]


def test_only_the_signed_in_customer_of_that_shop(
    client: FlaskClient, shop: Shop, other_shop: Shop, credit
):
    credit(other_shop, CUSTOMER, "9.00")  # same Shopify id, another shop
    credit(shop, CUSTOMER + 1, "1.00")  # another customer of this shop
    response = client.get(balance_url(shop.domain, CUSTOMER))
    assert response.get_json()["balances"] == []
    response = client.get(balance_url(other_shop.domain, CUSTOMER))
    assert response.get_json()["balances"][0]["amount"] == "9.00"


def test_a_lot_past_its_expiry_is_not_shown_before_the_job_sweeps_it(
    client: FlaskClient, shop: Shop, credit
):
    long_ago = datetime.now(UTC) - timedelta(days=3)
    credit(shop, CUSTOMER, "6.00", expires_at=long_ago + timedelta(days=1), at=long_ago)
    credit(shop, CUSTOMER, "1.00")
    balances = client.get(balance_url(shop.domain, CUSTOMER)).get_json()["balances"]
    assert balances == [{"currency": "USD", "amount": "1.00", "next_expiry": None}]


def test_timestamps_within_90_seconds_either_way_are_accepted(client: FlaskClient, shop: Shop):
    for skew in (-85, 85):
        url = balance_url(shop.domain, CUSTOMER, timestamp=int(time.time()) + skew)
        assert client.get(url).status_code == 200


# -- refused requests -----------------------------------------------------------------------


@pytest.mark.smoke
def test_forged_signature_is_401(client: FlaskClient, shop: Shop):
    url = balance_url(shop.domain, CUSTOMER).replace(str(CUSTOMER), str(CUSTOMER + 1))
    assert_error(client.get(url), 401, "invalid_signature")


def test_missing_signature_is_401(client: FlaskClient, shop: Shop):
    query = urlencode(proxy_pairs(shop.domain, CUSTOMER))
    assert_error(client.get("/proxy/balance?" + query), 401, "invalid_signature")


def test_wrong_secret_is_401(client: FlaskClient, shop: Shop):
    assert_error(
        client.get(balance_url(shop.domain, CUSTOMER, secret="someone-elses-secret")),
        401,
        "invalid_signature",
    )


def test_previous_secret_is_accepted(client: FlaskClient, shop: Shop, app_context):
    old = "the-previous-api-secret"
    with storefront_configured(app_context, secrets=(API_SECRET, old)):
        assert client.get(balance_url(shop.domain, CUSTOMER, secret=old)).status_code == 200
    assert_error(
        client.get(balance_url(shop.domain, CUSTOMER, secret=old)), 401, "invalid_signature"
    )


@pytest.mark.parametrize("skew", [-91, 91])
def test_stale_timestamp_is_401(client: FlaskClient, shop: Shop, skew):
    url = balance_url(shop.domain, CUSTOMER, timestamp=int(time.time()) + skew)
    assert_error(client.get(url), 401, "stale_request")


def test_non_integer_timestamp_is_401(client: FlaskClient, shop: Shop):
    pairs = [(k, f"{v}.0" if k == "timestamp" else v) for k, v in proxy_pairs(shop.domain, 1)]
    assert_error(client.get("/proxy/balance?" + signed_query(pairs)), 401, "invalid_timestamp")


@pytest.mark.parametrize(
    "name", ["shop", "timestamp", "logged_in_customer_id", "path_prefix", "signature"]
)
def test_repeated_parameter_is_400(client: FlaskClient, shop: Shop, other_shop: Shop, name):
    pairs = proxy_pairs(shop.domain, CUSTOMER)
    second = {
        "shop": other_shop.domain,
        "timestamp": str(int(time.time())),
        "logged_in_customer_id": str(CUSTOMER + 1),
        "path_prefix": "/apps/other",
    }
    if name in second:
        pairs.append((name, second[name]))
    query = signed_query(pairs)  # validly signed: the repeated values are joined by ","
    if name == "signature":
        query += "&signature=" + proxy_signature(pairs, API_SECRET)
    assert_error(client.get("/proxy/balance?" + query), 400, "repeated_parameter")


def test_unknown_shop_is_404(client: FlaskClient, shop: Shop):
    assert_error(
        client.get(balance_url("never-installed.myshopify.com", CUSTOMER)), 404, "shop_not_found"
    )


@pytest.mark.parametrize(
    "state",
    [
        {"uninstalled_at": datetime(2026, 1, 1, tzinfo=UTC)},
        {"installed_at": None},
        {"erased_at": datetime(2026, 1, 1, tzinfo=UTC)},
    ],
)
def test_shop_not_serving_is_404_and_reveals_nothing(
    client: FlaskClient, app_context, credit, state
):
    shop = ShopFactory()
    credit(shop, CUSTOMER, "3.00")
    for name, value in state.items():
        setattr(shop, name, value)
    db.session.commit()
    response = client.get(balance_url(shop.domain, CUSTOMER))
    assert_error(response, 404, "shop_not_found")
    assert b"3.00" not in response.get_data()


@pytest.mark.parametrize("domain", ["evil.com", "Shop.myshopify.com", "-a.myshopify.com", ""])
def test_shop_that_is_not_a_myshopify_domain_is_400(client: FlaskClient, shop: Shop, domain):
    assert_error(client.get(balance_url(domain, CUSTOMER)), 400, "invalid_shop")


@pytest.mark.parametrize("customer", ["abc", "-1", "0", "1.5", "99999999999999999999", "١٢"])
def test_customer_id_that_is_not_a_shopify_id_is_400(client: FlaskClient, shop: Shop, customer):
    assert_error(client.get(balance_url(shop.domain, customer)), 400, "invalid_customer_id")


def test_unknown_format_is_400(client: FlaskClient, shop: Shop):
    url = balance_url(shop.domain, CUSTOMER, extra=[("format", "xml")])
    assert_error(client.get(url), 400, "unsupported_format")


def test_other_methods_are_405_and_private(client: FlaskClient, shop: Shop):
    response = client.post(balance_url(shop.domain, CUSTOMER))
    assert_error(response, 405, "method_not_allowed")


def test_nothing_is_written(client: FlaskClient, shop: Shop, credit):
    credit(shop, CUSTOMER, "1.00")
    counts = "SELECT (SELECT count(*) FROM ledger_entries), (SELECT count(*) FROM customers)"
    before = db.session.execute(text(counts)).one()
    client.get(balance_url(shop.domain, CUSTOMER))
    client.get(balance_url(shop.domain, CUSTOMER + 5))
    client.get(balance_url(shop.domain, CUSTOMER, secret="forged"))
    assert db.session.execute(text(counts)).one() == before


# -- the Liquid variant ---------------------------------------------------------------------


def test_liquid_variant_renders_balances_in_the_theme(client: FlaskClient, shop: Shop, credit):
    soon = in_days(10)
    credit(shop, CUSTOMER, "5.00", expires_at=soon)
    credit(shop, CUSTOMER, "1.25")
    response = client.get(balance_url(shop.domain, CUSTOMER, extra=[("format", "liquid")]))
    assert response.status_code == 200
    assert response.mimetype == "application/liquid"
    assert response.headers["Cache-Control"] == PRIVATE
    body = response.get_data(as_text=True)
    assert "6.25 USD" in body
    assert f"5.00 USD expires on {soon.date().isoformat()}" in body
    assert "{% layout" not in body  # rendered inside the shop's theme layout


def test_liquid_variant_echoes_no_request_input(client: FlaskClient, shop: Shop, credit):
    credit(shop, CUSTOMER, "1.00")
    payloads = [
        ("q", "{{ shop.secret }}"),
        ("path", "{% render 'x' %}"),
        ("x", "<script>alert(1)</script>"),
        ("path_prefix_extra", '"><img src=x onerror=alert(1)>'),
    ]
    pairs = [(k, v) for k, v in proxy_pairs(shop.domain, CUSTOMER) if k != "path_prefix"]
    pairs += [("path_prefix", "/apps/{{ evil }}<b>"), ("format", "liquid"), *payloads]
    response = client.get("/proxy/balance?" + signed_query(pairs))
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    for needle in ("evil", "<b>", "shop.secret", "render", "<script", "onerror", str(CUSTOMER)):
        assert needle not in body
    # The only Liquid in the answer is ours: none in this logged-in body at all.
    assert "{{" not in body
    assert "{%" not in body


def test_liquid_variant_for_a_guest(client: FlaskClient, shop: Shop):
    response = client.get(balance_url(shop.domain, "", extra=[("format", "liquid")]))
    assert response.mimetype == "application/liquid"
    body = response.get_data(as_text=True)
    assert "routes.account_login_url" in body
    assert "Log in" in body


def test_liquid_text_neutralises_liquid_and_html():
    from blueprints.proxy import _text

    assert _text('{{ x }}{% y %}<a href="j">&') == (
        "&#123;&#123; x &#125;&#125;&#123;% y %&#125;&lt;a href=&quot;j&quot;&gt;&amp;"
    )
