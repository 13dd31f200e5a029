"""The fake Shopify itself: what other tests rely on it to do, checked over real HTTP.

The client side is plain urllib + json on purpose: these tests pin the fake's HTTP behaviour,
not the app's client (which has its own tests against this fake).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
import pytest

from tests.conftest import API_KEY, API_SECRET
from tests.fake_shopify import (
    FakeShopify,
    StoreCreditError,
    load_admin_schema,
    signing,
    validate_document,
)

SHOP = "acme.myshopify.com"
CUSTOMER = 7001
TOKEN_EXCHANGE = {
    "client_id": API_KEY,
    "client_secret": API_SECRET,
    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
    "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
    "requested_token_type": "urn:shopify:params:oauth:token-type:offline-access-token",
    "expiring": "1",
}

CREDIT = """
mutation Credit($id: ID!, $creditInput: StoreCreditAccountCreditInput!) {
  storeCreditAccountCredit(id: $id, creditInput: $creditInput) {
    storeCreditAccountTransaction {
      id amount { amount currencyCode } balanceAfterTransaction { amount } expiresAt
      remainingAmount { amount } event account { id balance { amount currencyCode } }
    }
    userErrors { code field message }
  }
}"""
DEBIT = """
mutation Debit($id: ID!, $debitInput: StoreCreditAccountDebitInput!) {
  storeCreditAccountDebit(id: $id, debitInput: $debitInput) {
    storeCreditAccountTransaction { id amount { amount } balanceAfterTransaction { amount } }
    userErrors { code field message }
  }
}"""
ACCOUNTS = """
query Accounts($id: ID!, $query: String) {
  customer(id: $id) {
    storeCreditAccounts(first: 5, query: $query) {
      nodes { id balance { amount currencyCode } }
    }
  }
}"""
HISTORY = """
query History($id: ID!, $first: Int!, $after: String) {
  storeCreditAccount(id: $id) {
    balance { amount }
    owner { ... on Customer { id } }
    transactions(first: $first, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes {
        __typename amount { amount } balanceAfterTransaction { amount } event
        origin { ... on OrderTransaction { id kind gateway } }
        ... on StoreCreditAccountCreditTransaction { id expiresAt remainingAmount { amount } }
        ... on StoreCreditAccountDebitTransaction { id }
        ... on StoreCreditAccountDebitRevertTransaction { id debitTransaction { id } }
        ... on StoreCreditAccountExpirationTransaction { creditTransaction { id } }
      }
    }
  }
}"""
ORDER = """
query Order($id: ID!) {
  order(id: $id) {
    id name cancelledAt currencyCode presentmentCurrencyCode customer { id }
    transactions(first: 20) {
      id kind status gateway createdAt processedAt
      amountSet { shopMoney { amount currencyCode } presentmentMoney { amount currencyCode } }
      parentTransaction { id kind gateway }
    }
    refunds(first: 10) {
      id createdAt
      transactions(first: 10) { nodes { id kind gateway amountSet { shopMoney { amount } } } }
    }
  }
}"""


# ---------------------------------------------------------------------- plain HTTP helpers
def post(
    url: str, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read()), dict(error.headers)


def token_request(fake: FakeShopify, **fields: str) -> tuple[int, Any]:
    status, body, _ = post(f"{fake.origin(SHOP)}/admin/oauth/access_token", fields)
    return status, body


def exchange(fake: FakeShopify, **overrides: str) -> tuple[int, Any]:
    fields = {**TOKEN_EXCHANGE, "subject_token": fake.session_token(SHOP), **overrides}
    return token_request(fake, **fields)


def graphql(
    fake: FakeShopify, token: str, query: str, variables: dict[str, Any] | None = None
) -> tuple[int, Any]:
    status, body, _ = post(
        fake.graphql_url(SHOP),
        {"query": query, "variables": variables or {}},
        {"X-Shopify-Access-Token": token},
    )
    return status, body


def credit_input(amount: str, currency: str = "USD", expires_at: str | None = None) -> dict:
    money = {"creditAmount": {"amount": amount, "currencyCode": currency}}
    return {**money, "expiresAt": expires_at} if expires_at else money


def debit_input(amount: str, currency: str = "USD") -> dict:
    return {"debitInput": {"debitAmount": {"amount": amount, "currencyCode": currency}}}


def customer_gid(customer: int = CUSTOMER) -> str:
    return f"gid://shopify/Customer/{customer}"


def in_days(fake: FakeShopify, days: float) -> str:
    return (fake.now() + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def shop(shopify: FakeShopify):
    created = shopify.add_shop(SHOP, currency="USD")
    created.add_customer(CUSTOMER, email="ann@example.com", first_name="Ann", last_name="Lee")
    return created


@pytest.fixture
def token(shopify: FakeShopify, shop) -> str:
    return shopify.issue_token(SHOP)["access_token"]


def ok(fake: FakeShopify, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` of a query that must succeed."""
    status, body = graphql(fake, token, query, variables)
    assert status == 200, body
    assert "errors" not in body, body
    return body["data"]


def history(fake: FakeShopify, token: str, account: str, first: int = 50) -> dict[str, Any]:
    return ok(fake, token, HISTORY, {"id": account, "first": first})["storeCreditAccount"]


# ---------------------------------------------------------------------- signing
@pytest.mark.parametrize(
    ("logged_in", "expected"),
    [
        ("1", "4c68c8624d737112c91818c11017d24d334b524cb5c2b8ba08daa056f7395ddb"),
        ("", "e072b6d7e6622d85912a5214b860d3100dc1e73d9bc29f43796ac8c9ff8093cb"),
    ],
)
def test_app_proxy_signature_matches_shopifys_published_vectors(logged_in, expected):
    query = (
        "extra=1&extra=2&shop=shop-name.myshopify.com&logged_in_customer_id="
        f"{logged_in}&path_prefix=%2Fapps%2Fawesome_reviews&timestamp=1317327555"
    )
    params = parse_qsl(query, keep_blank_values=True)
    assert signing.proxy_signature("hush", params) == expected


def test_app_proxy_signature_joins_repeated_values_in_received_order():
    params = [("extra", "first"), ("extra", "second")]
    params += [("shop", "shop.myshopify.com"), ("timestamp", "1700000000")]
    assert signing.proxy_signature("my super secret key", params) == (
        "75b176b8aca9c125857524a897df4c3aac1fd06f5cc6d7711188bf0aab6ce6cb"
    )


def test_signed_proxy_query_carries_shopifys_parameters_and_a_valid_signature(shopify):
    query = shopify.signed_proxy_query(
        SHOP, logged_in_customer_id="42", timestamp=1700000000, extra=[("x", "1")]
    )
    params = parse_qsl(query, keep_blank_values=True)
    assert dict(params) == {
        "x": "1",
        "shop": SHOP,
        "logged_in_customer_id": "42",
        "path_prefix": "/apps/credit",
        "timestamp": "1700000000",
        "signature": signing.proxy_signature(API_SECRET, params),
    }
    assert params[-1][0] == "signature"
    guest = dict(parse_qsl(shopify.signed_proxy_query(SHOP), keep_blank_values=True))
    assert guest["logged_in_customer_id"] == ""
    assert abs(int(guest["timestamp"]) - time.time()) < 5


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"shop_id":954889,"shop_domain":"some-shop.myshopify.com"}',
            "Tr2c7Me17fTQwz4kN7AGPjEn0lRCShuYgLnmDSgxA4k=",
        ),
        (b'{"id":1}', "VnKUjZsLuN5iZWjn5EntcBVCF9kMN43LglzCE1/GSeY="),
    ],
)
def test_webhook_hmac_matches_the_reference_vectors(body, expected):
    assert signing.webhook_hmac("hush", body) == expected


def test_signed_webhook_has_shopifys_headers_and_signs_the_raw_body(shopify):
    body, headers = shopify.signed_webhook(
        SHOP, "orders/paid", {"id": 1, "total_price": "5.00"}, webhook_id="w-1"
    )
    assert body == b'{"id":1,"total_price":"5.00"}'
    assert headers["X-Shopify-Hmac-Sha256"] == signing.webhook_hmac(API_SECRET, body)
    assert headers["X-Shopify-Topic"] == "orders/paid"
    assert headers["X-Shopify-Shop-Domain"] == SHOP
    assert headers["X-Shopify-API-Version"] == "2026-10"
    assert headers["X-Shopify-Webhook-Id"] == "w-1"
    assert headers["X-Shopify-Event-Id"] != headers["X-Shopify-Webhook-Id"]
    assert headers["X-Shopify-Triggered-At"].endswith("Z")
    assert headers["Content-Type"] == "application/json"
    raw, signed = shopify.signed_webhook(SHOP, "app/uninstalled", b"{}", secret="old-secret")
    assert signed["X-Shopify-Hmac-Sha256"] == signing.webhook_hmac("old-secret", raw)


@pytest.mark.parametrize(
    ("secret", "params", "expected"),
    [
        (
            "hush",
            [
                ("code", "0907a61c0c8d55e99db179b68161bc00"),
                ("shop", "some-shop.myshopify.com"),
                ("state", "0.6784241404160823"),
                ("timestamp", "1337178173"),
            ],
            "700e2dadb827fcc8609e9d5ce208b2e9cdaab9df07390d2cbca10d7c328fc4bf",
        ),
        (
            "hush",
            [
                ("shop", "some-shop.myshopify.com"),
                ("code", "a94a110d86d2452eb3e2af4cfb8a3828"),
                ("timestamp", "1337178173"),
            ],
            "2cb1a277650a659f1b11e92a4a64275b128e037f2c3390e3c8fd2d8721dac9e2",
        ),
        (
            "hush",
            [("shop", "some-shop.myshopify.com"), ("ids[]", "2"), ("ids[]", "1")],
            "b93b9f82996f6f8bf9f1b7bbddec284c8fabacdc4e12dc80550b4705f3003b1e",
        ),
        (
            "secret",
            [("a", "1&b=2"), ("c=3&d", "4")],
            "8de3c7e965d22fa21e059868e4004f5b6fbdcef293d1622ff9408edd6325bc6b",
        ),
    ],
)
def test_admin_hmac_matches_the_reference_vectors(secret, params, expected):
    assert signing.admin_hmac(secret, [*params, ("hmac", "ignored")]) == expected


def test_session_token_is_an_app_bridge_id_token(shopify):
    claims = jwt.decode(
        shopify.session_token(SHOP, sub="42"), API_SECRET, algorithms=["HS256"], audience=API_KEY
    )
    assert claims["iss"] == f"https://{SHOP}/admin"
    assert claims["dest"] == f"https://{SHOP}"
    assert claims["sub"] == "42"
    assert claims["exp"] - claims["nbf"] == 60
    assert claims["jti"]
    assert claims["sid"]


# ---------------------------------------------------------------------- tokens
def test_token_exchange_gives_an_expiring_offline_token_that_opens_graphql(shopify, shop):
    status, answer = exchange(shopify)
    assert status == 200
    assert set(answer) == {
        "access_token",
        "scope",
        "expires_in",
        "refresh_token",
        "refresh_token_expires_in",
    }
    assert answer["expires_in"] == 3600
    assert answer["refresh_token"].startswith("shprt_")
    assert answer["refresh_token_expires_in"] == 7_776_000
    assert "write_store_credit_account_transactions" in answer["scope"].split(",")
    status, body = graphql(shopify, answer["access_token"], "{ shop { myshopifyDomain } }")
    assert (status, body["data"]) == (200, {"shop": {"myshopifyDomain": SHOP}})
    assert shopify.requests[0].grant_type == TOKEN_EXCHANGE["grant_type"]


def test_token_endpoint_accepts_form_bodies_and_non_expiring_requests(shopify, shop):
    fields = {**TOKEN_EXCHANGE, "subject_token": shopify.session_token(SHOP), "expiring": "0"}
    request = urllib.request.Request(
        f"{shopify.origin(SHOP)}/admin/oauth/access_token",
        data=urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    assert set(answer) == {"access_token", "scope"}


@pytest.mark.parametrize(
    "subject_token",
    [
        pytest.param(lambda f: f.session_token("other.myshopify.com"), id="another-shop"),
        pytest.param(
            lambda f: signing.session_token(SHOP, API_KEY, "wrong-secret-" * 4, "1"),
            id="wrong-secret",
        ),
        pytest.param(
            lambda f: signing.session_token(SHOP, "another-app", API_SECRET, "1"), id="wrong-aud"
        ),
        pytest.param(
            lambda f: f.session_token(SHOP, exp=int(time.time()) - 11), id="expired-past-leeway"
        ),
        pytest.param(lambda f: "not-a-jwt", id="garbage"),
    ],
)
def test_token_exchange_refuses_a_bad_id_token(shopify, shop, subject_token):
    status, answer = exchange(shopify, subject_token=subject_token(shopify))
    assert (status, answer["error"]) == (400, "invalid_subject_token")


def test_token_exchange_tolerates_ten_seconds_of_clock_skew(shopify, shop):
    skewed = shopify.session_token(SHOP, nbf=int(time.time()) + 8)
    assert exchange(shopify, subject_token=skewed)[0] == 200


def test_wrong_client_secret_is_invalid_client(shopify, shop):
    status, answer = exchange(shopify, client_secret="not-the-secret")
    assert (status, answer["error"]) == (401, "invalid_client")


def test_refresh_rotates_both_tokens_and_a_used_refresh_token_is_refused(shopify, shop):
    first = exchange(shopify)[1]
    refresh = {"client_id": API_KEY, "client_secret": API_SECRET, "grant_type": "refresh_token"}
    status, second = token_request(shopify, **refresh, refresh_token=first["refresh_token"])
    assert status == 200
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["expires_in"] == 3600
    # The old access token works until it expires; the new one works too.
    assert graphql(shopify, first["access_token"], "{ shop { id } }")[0] == 200
    assert graphql(shopify, second["access_token"], "{ shop { id } }")[0] == 200

    # A lost response: the immediate retry of the same refresh token gets the same pair.
    status, again = token_request(shopify, **refresh, refresh_token=first["refresh_token"])
    assert (status, again) == (200, second)

    # Once the replacement has been used, the old refresh token is dead.
    status, third = token_request(shopify, **refresh, refresh_token=second["refresh_token"])
    assert status == 200
    status, answer = token_request(shopify, **refresh, refresh_token=first["refresh_token"])
    assert (status, answer["error"]) == (400, "invalid_grant")

    # And a retry outside the window is refused even while the replacement is unused.
    shopify.advance(11)
    status, answer = token_request(shopify, **refresh, refresh_token=second["refresh_token"])
    assert (status, answer["error"]) == (400, "invalid_grant")
    assert token_request(shopify, **refresh, refresh_token=third["refresh_token"])[0] == 200


def test_a_new_token_exchange_retires_the_previous_refresh_token(shopify, shop):
    first = exchange(shopify)[1]
    exchange(shopify)
    status, answer = token_request(
        shopify,
        client_id=API_KEY,
        client_secret=API_SECRET,
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
    )
    assert (status, answer["error"]) == (400, "invalid_grant")
    assert graphql(shopify, first["access_token"], "{ shop { id } }")[0] == 200


def test_expired_access_tokens_answer_401_like_shopify(shopify, shop):
    answer = exchange(shopify)[1]
    shopify.advance(3601)
    status, body = graphql(shopify, answer["access_token"], "{ shop { id } }")
    assert status == 401
    assert body == {
        "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
    }
    fresh = shopify.issue_token(SHOP)["access_token"]
    shopify.expire_access_token(SHOP)
    assert graphql(shopify, fresh, "{ shop { id } }")[0] == 401
    assert graphql(shopify, "shpat_unknown", "{ shop { id } }")[0] == 401


def test_authorization_code_grant_accepts_a_code_once(shopify, shop):
    code = shopify.authorization_code(SHOP)
    fields = {"client_id": API_KEY, "client_secret": API_SECRET, "code": code, "expiring": "1"}
    status, answer = token_request(shopify, **fields)
    assert status == 200
    assert answer["refresh_token"].startswith("shprt_")
    status, answer = token_request(shopify, **fields)
    assert (status, answer["error"]) == (400, "invalid_request")


def test_authorize_redirects_back_with_a_signed_callback_whose_code_works(shopify, shop):
    query = urlencode(
        {
            "client_id": API_KEY,
            "scope": "read_orders",
            "redirect_uri": "https://app.example/auth/callback",
            "state": "nonce123",
        }
    )
    connection = http.client.HTTPConnection("127.0.0.1", shopify.port, timeout=10)
    try:
        connection.request("GET", f"/stores/{SHOP}/admin/oauth/authorize?{query}")
        response = connection.getresponse()
        response.read()
        location = response.getheader("Location")
    finally:
        connection.close()
    assert response.status == 302
    assert location.startswith("https://app.example/auth/callback?")
    params = parse_qsl(urlsplit(location).query)
    values = dict(params)
    assert (values["state"], values["shop"]) == ("nonce123", SHOP)
    assert values["hmac"] == signing.admin_hmac(API_SECRET, params)
    fields = {"client_id": API_KEY, "client_secret": API_SECRET, "code": values["code"]}
    assert token_request(shopify, **fields)[0] == 200


# ---------------------------------------------------------------------- store credit
def test_debits_spend_the_soonest_expiring_credit_first(shopify, shop, token):
    def credit(amount: str, expires_at: str | None) -> dict[str, Any]:
        variables = {"id": customer_gid(), "creditInput": credit_input(amount, "USD", expires_at)}
        body = graphql(shopify, token, CREDIT, variables)[1]
        payload = body["data"]["storeCreditAccountCredit"]
        assert payload["userErrors"] == []
        return payload["storeCreditAccountTransaction"]

    no_expiry = credit("10.00", None)
    later = credit("5", in_days(shopify, 30))
    sooner = credit("5.00", in_days(shopify, 10))
    assert sooner["balanceAfterTransaction"] == {"amount": "20.0"}
    account = sooner["account"]["id"]
    assert no_expiry["account"]["id"] == account  # one account per currency

    debit = ok(shopify, token, DEBIT, {"id": account, **debit_input("7")})[
        "storeCreditAccountDebit"
    ]
    assert debit["userErrors"] == []
    assert debit["storeCreditAccountTransaction"]["amount"] == {"amount": "-7.0"}
    assert debit["storeCreditAccountTransaction"]["balanceAfterTransaction"] == {"amount": "13.0"}

    remaining = {
        node["id"]: node["remainingAmount"]["amount"]
        for node in history(shopify, token, account)["transactions"]["nodes"]
        if node["__typename"] == "StoreCreditAccountCreditTransaction"
    }
    assert remaining == {sooner["id"]: "0.0", later["id"]: "3.0", no_expiry["id"]: "10.0"}
    assert shop.balance(CUSTOMER, "USD") == "13.00"


def test_a_staff_debit_with_equal_expiry_spends_the_older_credit_first(shopify, shop):
    expiry = shopify.now() + timedelta(days=5)
    older = shop.credit(CUSTOMER, "4.00", "USD", expires_at=expiry)
    newer = shop.credit(CUSTOMER, "4.00", "USD", expires_at=expiry)
    shop.debit(CUSTOMER, "5.00", "USD")
    by_id = {tx["id"]: tx for tx in shop.transactions(CUSTOMER, "USD")}
    assert (by_id[older]["remaining"], by_id[newer]["remaining"]) == ("0.00", "3.00")
    with pytest.raises(StoreCreditError) as refused:
        shop.debit(CUSTOMER, "3.01", "USD")
    assert refused.value.code == "INSUFFICIENT_FUNDS"


DEBIT_AMOUNT = ["debitInput", "debitAmount", "amount"]
CREDIT_AMOUNT = ["creditInput", "creditAmount", "amount"]
CREDIT_CURRENCY = ["creditInput", "creditAmount", "currencyCode"]


def credit_of(amount: str, currency: str = "USD", expires_at: str | None = None) -> dict:
    return {"creditInput": credit_input(amount, currency, expires_at)}


def past_expiry() -> dict[str, Any]:
    return credit_of("1.00", "USD", "2020-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("mutation", "target", "payload", "code", "field"),
    [
        (DEBIT, "customer", debit_input("10.01"), "INSUFFICIENT_FUNDS", DEBIT_AMOUNT),
        (CREDIT, "customer", past_expiry(), "EXPIRES_AT_IN_PAST", ["creditInput", "expiresAt"]),
        (
            CREDIT,
            "customer",
            credit_of("0"),
            "NEGATIVE_OR_ZERO_AMOUNT",
            CREDIT_AMOUNT,
        ),
        (DEBIT, "customer", debit_input("-1"), "NEGATIVE_OR_ZERO_AMOUNT", DEBIT_AMOUNT),
        (
            CREDIT,
            "account",
            credit_of("1", "EUR"),
            "MISMATCHING_CURRENCY",
            CREDIT_CURRENCY,
        ),
        (
            CREDIT,
            "gid://shopify/Customer/999",
            credit_of("1"),
            "OWNER_NOT_FOUND",
            ["id"],
        ),
        (
            CREDIT,
            "gid://shopify/StoreCreditAccount/9",
            credit_of("1"),
            "ACCOUNT_NOT_FOUND",
            ["id"],
        ),
        (DEBIT, "gid://shopify/Customer/999", debit_input("1"), "ACCOUNT_NOT_FOUND", ["id"]),
        (DEBIT, "customer", debit_input("1", "EUR"), "ACCOUNT_NOT_FOUND", ["id"]),
    ],
)
def test_refused_store_credit_mutations_answer_user_errors_and_change_nothing(
    shopify, shop, token, mutation, target, payload, code, field
):
    shop.credit(CUSTOMER, "10.00", "USD")
    account = shop.transactions(CUSTOMER, "USD")[0]["id"]
    account_gid = history_account(shopify, token)
    ids = {"customer": customer_gid(), "account": account_gid}
    data = ok(shopify, token, mutation, {"id": ids.get(target, target), **payload})
    (result,) = data.values()
    assert result["storeCreditAccountTransaction"] is None
    assert [(e["code"], e["field"]) for e in result["userErrors"]] == [(code, field)]
    assert [tx["id"] for tx in shop.transactions(CUSTOMER, "USD")] == [account]
    assert shop.balance(CUSTOMER, "USD") == "10.00"


def history_account(fake: FakeShopify, token: str, query: str | None = None) -> str:
    body = graphql(fake, token, ACCOUNTS, {"id": customer_gid(), "query": query})[1]
    return body["data"]["customer"]["storeCreditAccounts"]["nodes"][0]["id"]


def test_money_finer_than_the_currency_is_refused(shopify, shop, token):
    variables = {"id": customer_gid(), "creditInput": credit_input("1.005")}
    status, body = graphql(shopify, token, CREDIT, variables)
    assert status == 200
    assert "more decimals than USD" in body["errors"][0]["message"]
    assert shop.balance(CUSTOMER, "USD") == "0.00"


def test_each_currency_gets_its_own_account_and_accounts_filter_by_currency(shopify, shop, token):
    for amount, currency in (("5.00", "USD"), ("700", "JPY")):
        variables = {"id": customer_gid(), "creditInput": credit_input(amount, currency)}
        created = ok(shopify, token, CREDIT, variables)["storeCreditAccountCredit"]
        assert created["userErrors"] == []
    data = ok(shopify, token, ACCOUNTS, {"id": customer_gid()})
    balances = [n["balance"] for n in data["customer"]["storeCreditAccounts"]["nodes"]]
    assert balances == [
        {"amount": "5.0", "currencyCode": "USD"},
        {"amount": "700.0", "currencyCode": "JPY"},
    ]
    data = ok(shopify, token, ACCOUNTS, {"id": customer_gid(), "query": "currency_code:JPY"})
    assert len(data["customer"]["storeCreditAccounts"]["nodes"]) == 1
    assert shop.balance(CUSTOMER, "JPY") == "700"


def test_credits_expire_lazily_with_an_expiration_transaction(shopify, shop, token):
    credit_id = shop.credit(CUSTOMER, "8.00", "USD", expires_at=shopify.now() + timedelta(hours=1))
    shop.credit(CUSTOMER, "2.00", "USD")
    shop.debit(CUSTOMER, "3.00", "USD")
    account = history_account(shopify, token)
    shopify.advance(timedelta(hours=2))
    token = shopify.issue_token(SHOP)["access_token"]  # the first one expired meanwhile

    seen = history(shopify, token, account)
    assert seen["balance"] == {"amount": "2.0"}
    *_, expiration = seen["transactions"]["nodes"]
    assert expiration == {
        "__typename": "StoreCreditAccountExpirationTransaction",
        "amount": {"amount": "-5.0"},
        "balanceAfterTransaction": {"amount": "2.0"},
        "event": "ADJUSTMENT",
        "origin": None,
        "creditTransaction": {"id": credit_id},
    }
    expired = next(n for n in seen["transactions"]["nodes"] if n.get("id") == credit_id)
    assert expired["remainingAmount"] == {"amount": "5.0"}  # what was left when it expired
    assert shop.balance(CUSTOMER, "USD") == "2.00"
    assert len(history(shopify, token, account)["transactions"]["nodes"]) == 4  # expired once


def test_transactions_page_with_cursors_and_require_first_or_last(shopify, shop, token):
    for amount in ("1.00", "2.00", "3.00"):
        shop.credit(CUSTOMER, amount, "USD")
    account = history_account(shopify, token)
    page = history(shopify, token, account, first=2)["transactions"]
    assert [n["amount"]["amount"] for n in page["nodes"]] == ["1.0", "2.0"]
    assert page["pageInfo"]["hasNextPage"] is True
    variables = {"id": account, "first": 2, "after": page["pageInfo"]["endCursor"]}
    body = graphql(shopify, token, HISTORY, variables)[1]
    rest = body["data"]["storeCreditAccount"]["transactions"]
    assert [n["amount"]["amount"] for n in rest["nodes"]] == ["3.0"]
    assert rest["pageInfo"]["hasNextPage"] is False

    query = "query($id: ID!) { storeCreditAccount(id: $id) { transactions { nodes { event } } } }"
    body = graphql(shopify, token, query, {"id": account})[1]
    assert body["errors"][0]["message"] == "you must provide one of first or last"


def test_transactions_filter_by_type_with_shopify_search_syntax(shopify, shop, token):
    shop.credit(CUSTOMER, "5.00", "USD")
    shop.debit(CUSTOMER, "1.00", "USD")
    account = history_account(shopify, token)
    query = """query($id: ID!, $q: String) { storeCreditAccount(id: $id) {
      transactions(first: 10, query: $q) { nodes { __typename } } } }"""
    body = graphql(shopify, token, query, {"id": account, "q": "type:debit"})[1]
    nodes = body["data"]["storeCreditAccount"]["transactions"]["nodes"]
    assert nodes == [{"__typename": "StoreCreditAccountDebitTransaction"}]


# ---------------------------------------------------------------------- cost and throttling
def test_every_response_reports_cost_and_the_bucket(shopify, shop, token):
    body = graphql(shopify, token, "{ shop { id } }")[1]
    cost = body["extensions"]["cost"]
    assert cost["requestedQueryCost"] == cost["actualQueryCost"] == 1
    assert cost["throttleStatus"]["maximumAvailable"] == 2000.0
    assert cost["throttleStatus"]["restoreRate"] == 100.0
    assert 1998 <= cost["throttleStatus"]["currentlyAvailable"] <= 2000


def test_a_drained_bucket_throttles_without_effect_then_recovers(shopify):
    shop = shopify.add_shop("slowpoke.myshopify.com", restore_rate=20.0, maximum_available=25.0)
    shop.add_customer(1)
    token = shopify.issue_token(shop.domain)["access_token"]
    variables = {"id": "gid://shopify/Customer/1", "creditInput": credit_input("1.00")}

    def credit() -> dict[str, Any]:
        status, body, _ = post(
            shopify.graphql_url(shop.domain),
            {"query": CREDIT, "variables": variables},
            {"X-Shopify-Access-Token": token},
        )
        assert status == 200
        return body

    assert "errors" not in credit()
    assert "errors" not in credit()  # 25 - 2 x 10 leaves about 5 points
    throttled = credit()
    assert throttled["errors"] == [
        {
            "message": "Throttled",
            "extensions": {
                "code": "THROTTLED",
                "documentation": "https://shopify.dev/api/usage/rate-limits",
            },
        }
    ]
    assert "data" not in throttled
    cost = throttled["extensions"]["cost"]
    assert (cost["requestedQueryCost"], cost["actualQueryCost"]) == (10, None)
    assert cost["throttleStatus"]["currentlyAvailable"] < 10
    assert shop.balance(1, "USD") == "2.00"

    wait = (10 - cost["throttleStatus"]["currentlyAvailable"]) / 20.0
    time.sleep(wait + 0.05)
    assert "errors" not in credit()
    assert shop.balance(1, "USD") == "3.00"


def test_a_query_over_the_single_query_limit_is_refused(shopify, shop, token):
    query = """query($id: ID!) { customer(id: $id) { storeCreditAccounts(first: 250) {
      nodes { transactions(first: 250) { nodes { createdAt } } } } } }"""
    body = graphql(shopify, token, query, {"id": customer_gid()})[1]
    assert body["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
    assert "data" not in body


# ---------------------------------------------------------------------- faults
def credit_once(fake: FakeShopify, token: str) -> tuple[int, Any, dict[str, str]]:
    variables = {"id": customer_gid(), "creditInput": credit_input("1.00")}
    return post(
        fake.graphql_url(SHOP),
        {"query": CREDIT, "variables": variables, "operationName": "Credit"},
        {"X-Shopify-Access-Token": token},
    )


@pytest.mark.parametrize("operation", ["storeCreditAccountCredit", "Credit", None])
def test_server_error_answers_503_before_any_effect(shopify, shop, token, operation):
    shopify.faults.add("server_error", operation=operation)
    status, body, _ = credit_once(shopify, token)
    assert status == 503
    assert shop.balance(CUSTOMER, "USD") == "0.00"
    assert credit_once(shopify, token)[0] == 200  # times=1: the next call goes through
    assert shop.balance(CUSTOMER, "USD") == "1.00"
    assert [r.fault for r in shopify.requests] == ["server_error", None]


def test_faults_only_hit_matching_operations_and_count_down(shopify, shop, token):
    shopify.faults.add("server_error", operation="storeCreditAccountDebit", times=2)
    assert credit_once(shopify, token)[0] == 200
    assert graphql(shopify, token, "{ shop { id } }")[0] == 200
    debit = {"id": customer_gid(), **debit_input("1")}
    assert [graphql(shopify, token, DEBIT, debit)[0] for _ in range(3)] == [503, 503, 200]
    assert shopify.faults.pending == []


def test_slow_waits_then_answers(shopify, shop, token):
    shopify.faults.add("slow", operation="Credit", delay=0.3)
    started = time.monotonic()
    assert credit_once(shopify, token)[0] == 200
    assert time.monotonic() - started >= 0.3
    assert shop.balance(CUSTOMER, "USD") == "1.00"


def test_lost_response_applies_the_effect_then_drops_the_connection(shopify, shop, token):
    shopify.faults.add("lost_response", operation="storeCreditAccountCredit")
    with pytest.raises(http.client.RemoteDisconnected):
        credit_once(shopify, token)
    assert shop.balance(CUSTOMER, "USD") == "1.00"  # applied, though the client never heard
    assert shopify.requests[-1].status is None
    assert shopify.requests[-1].fault == "lost_response"


def test_throttled_fault_is_shopifys_200_throttled_without_effect(shopify, shop, token):
    shopify.faults.add("throttled", operation="Credit")
    status, body, _ = credit_once(shopify, token)
    assert status == 200
    assert body["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert body["extensions"]["cost"]["actualQueryCost"] is None
    assert shop.balance(CUSTOMER, "USD") == "0.00"


def test_rate_limited_is_429_with_retry_after(shopify, shop, token):
    shopify.faults.add("rate_limited")
    status, _, headers = credit_once(shopify, token)
    assert (status, headers["Retry-After"]) == (429, "1")
    assert shop.balance(CUSTOMER, "USD") == "0.00"


def test_token_endpoint_faults(shopify, shop):
    shopify.faults.add("server_error", operation="token")
    assert exchange(shopify)[0] == 503
    shopify.faults.add("lost_response", operation="token")
    with pytest.raises(http.client.RemoteDisconnected):
        exchange(shopify)
    assert len(shopify.tokens.access) == 1  # the lost exchange did issue a token
    with pytest.raises(ValueError, match="not throttled"):
        shopify.faults.add("throttled", operation="token")


# ---------------------------------------------------------------------- orders and refunds
def order_view(fake: FakeShopify, token: str, order_id: int) -> dict[str, Any]:
    return ok(fake, token, ORDER, {"id": f"gid://shopify/Order/{order_id}"})["order"]


def test_an_order_paid_with_store_credit_debits_soonest_expiry_first(shopify, shop, token):
    later = shop.credit(CUSTOMER, "10.00", "USD", expires_at=shopify.now() + timedelta(days=60))
    sooner = shop.credit(CUSTOMER, "6.00", "USD", expires_at=shopify.now() + timedelta(days=3))
    payload = shop.place_order(501, CUSTOMER, "USD", store_credit="8.00", other="12.00")
    assert payload["payment_gateway_names"] == ["shopify_store_credit", "shopify_payments"]
    assert payload["financial_status"] == "paid"
    assert payload["total_price"] == "20.00"
    assert payload["customer"]["id"] == CUSTOMER
    assert payload["admin_graphql_api_id"] == "gid://shopify/Order/501"

    order = order_view(shopify, token, 501)
    assert order["customer"] == {"id": customer_gid()}
    sale, other = order["transactions"]
    assert (sale["kind"], sale["status"], sale["gateway"]) == (
        "SALE",
        "SUCCESS",
        "shopify_store_credit",
    )
    assert sale["amountSet"]["shopMoney"] == {"amount": "8.0", "currencyCode": "USD"}
    assert (other["gateway"], other["amountSet"]["presentmentMoney"]["amount"]) == (
        "shopify_payments",
        "12.0",
    )
    native = shop.transactions(CUSTOMER, "USD")
    debit = native[-1]
    assert (debit["type"], debit["event"]) == ("debit", "ORDER_PAYMENT")
    assert debit["origin"] == sale["id"]
    remaining = {tx["id"]: tx["remaining"] for tx in native if tx["type"] == "credit"}
    assert remaining == {sooner: "0.00", later: "8.00"}


def test_placing_an_order_beyond_the_balance_raises_and_records_nothing(shopify, shop):
    shop.credit(CUSTOMER, "5.00", "USD")
    with pytest.raises(StoreCreditError) as refused:
        shop.place_order(502, CUSTOMER, "USD", store_credit="5.01")
    assert refused.value.code == "INSUFFICIENT_FUNDS"
    assert shop.orders == {}
    assert shop.order_transactions == {}
    assert shop.balance(CUSTOMER, "USD") == "5.00"


def test_cancelling_reverts_the_store_credit_payment_onto_its_credits(shopify, shop, token):
    credit = shop.credit(CUSTOMER, "10.00", "USD", expires_at=shopify.now() + timedelta(days=9))
    shop.place_order(503, CUSTOMER, "USD", store_credit="4.00", other="1.00")
    payload = shop.cancel_order(503, refund_id=9001)
    assert payload["cancelled_at"] is not None
    assert payload["financial_status"] == "refunded"

    order = order_view(shopify, token, 503)
    assert order["cancelledAt"] is not None
    sale = order["transactions"][0]
    refunds = [tx for tx in order["transactions"] if tx["kind"] == "REFUND"]
    assert [(r["gateway"], r["parentTransaction"]["id"]) for r in refunds] == [
        ("shopify_store_credit", sale["id"]),
        ("shopify_payments", order["transactions"][1]["id"]),
    ]
    (refund,) = order["refunds"]
    assert refund["id"] == "gid://shopify/Refund/9001"
    assert len(refund["transactions"]["nodes"]) == 2

    revert = shop.transactions(CUSTOMER, "USD")[-1]
    assert (revert["type"], revert["event"], revert["amount"]) == (
        "debit_revert",
        "ORDER_CANCELLATION",
        "4.00",
    )
    assert revert["origin"] == refunds[0]["id"]
    assert shop.balance(CUSTOMER, "USD") == "10.00"
    remaining = {tx["id"]: tx["remaining"] for tx in shop.transactions(CUSTOMER, "USD")}
    assert remaining[credit] == "10.00"
    assert shop.refund_payload(9001)["transactions"][0]["parent_id"] == int(
        sale["id"].rsplit("/", 1)[1]
    )


def test_a_payment_reverted_onto_an_expired_credit_expires_again(shopify, shop):
    shop.credit(CUSTOMER, "5.00", "USD", expires_at=shopify.now() + timedelta(hours=1))
    shop.place_order(504, CUSTOMER, "USD", store_credit="3.00")
    shopify.advance(timedelta(hours=2))
    shop.cancel_order(504)
    kinds = [(tx["type"], tx["amount"]) for tx in shop.transactions(CUSTOMER, "USD")]
    assert kinds == [
        ("credit", "5.00"),
        ("debit", "-3.00"),
        ("expiration", "-2.00"),
        ("debit_revert", "3.00"),
        ("expiration", "-3.00"),
    ]
    assert shop.balance(CUSTOMER, "USD") == "0.00"


def test_refunds_to_store_credit_and_of_the_store_credit_payment(shopify, shop, token):
    shop.credit(CUSTOMER, "10.00", "USD")
    shop.place_order(505, CUSTOMER, "USD", store_credit="6.00", other="20.00")
    refund = shop.refund(505, 9100, to_store_credit="5.00", store_credit_payment="2.50")
    by_gateway = {(tx["gateway"], tx["parent_id"] is None): tx for tx in refund["transactions"]}
    sc_sale = next(t for t in shop.order(505).transactions if t.gateway == "shopify_store_credit")
    back = by_gateway[("shopify_store_credit", False)]
    assert (back["kind"], back["amount"], back["parent_id"]) == ("refund", "2.50", sc_sale.id)
    as_credit = by_gateway[("shopify_store_credit", True)]
    assert (as_credit["kind"], as_credit["amount"], as_credit["status"]) == (
        "refund",
        "5.00",
        "success",
    )
    assert refund["order_id"] == 505

    native = shop.transactions(CUSTOMER, "USD")
    revert = next(tx for tx in native if tx["type"] == "debit_revert")
    new_credit = native[-1]
    assert (revert["event"], revert["amount"]) == ("ORDER_REFUND", "2.50")
    assert (new_credit["type"], new_credit["event"], new_credit["amount"]) == (
        "credit",
        "ORDER_REFUND",
        "5.00",
    )
    assert new_credit["origin"] == as_credit["admin_graphql_api_id"]
    assert shop.balance(CUSTOMER, "USD") == "11.50"  # 10 - 6 + 2.50 + 5

    order = order_view(shopify, token, 505)
    assert [r["id"] for r in order["refunds"]] == ["gid://shopify/Refund/9100"]
    assert shop.order_payload(505)["financial_status"] == "partially_refunded"
    with pytest.raises(ValueError, match="less store-credit payment"):
        shop.refund(505, 9101, store_credit_payment="3.51")


# ---------------------------------------------------------------------- schema validation
def test_invalid_documents_are_recorded_and_answered_with_errors(shopify, shop, token):
    status, body = graphql(shopify, token, "query Bad { shop { id nmae } }")
    assert status == 200
    assert "data" not in body
    assert body["errors"][0]["message"] == (
        "Cannot query field 'nmae' on type 'Shop'. Did you mean 'name'?"
    )
    assert body["errors"][0]["locations"] == [{"line": 1, "column": 23}]
    assert graphql(shopify, token, "query { shop { id ")[0] == 200  # a syntax error
    assert [d.operation_name for d in shopify.invalid_documents] == ["Bad", None]
    assert "Syntax Error" in shopify.invalid_documents[1].errors[0]


def test_validate_document_against_the_real_admin_schema():
    schema = load_admin_schema("2026-10")
    assert load_admin_schema("2026-10") is schema  # built once
    for document in (CREDIT, DEBIT, ACCOUNTS, HISTORY, ORDER):
        assert validate_document(schema, document) == []
    errors = validate_document(schema, 'query { order(id: "gid://shopify/Order/1") { total } }')
    assert errors == [
        "Cannot query field 'total' on type 'Order'. Did you mean 'note' or 'totalTax'? (at 1:46)"
    ]
    assert validate_document(schema, "query {")[0].startswith("Syntax Error")


def test_fields_the_fake_does_not_model_are_named_in_an_error(shopify, shop, token):
    body = graphql(shopify, token, "{ shop { id billingAddress { city } } }")[1]
    assert body["errors"][0]["message"] == "The fake Shopify does not model Shop.billingAddress"
    assert shopify.invalid_documents == []


def test_fixture_resets_between_tests(shopify):
    assert shopify.shops == {}
    assert shopify.requests == []
    assert shopify.invalid_documents == []
    assert shopify.origin_template == f"http://127.0.0.1:{shopify.port}/stores/{{shop}}"
    assert shopify.now() - datetime.now(UTC) < timedelta(seconds=1)
