"""AdminClient against the fake Shopify over real HTTP: data, cost, throttling, faults, tokens,
threads. Waits are recorded by an injected ``sleep`` (and really slept only where the fake's
bucket must refill meanwhile)."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import shopify as shopify_api

from config import DEFAULT_API_VERSION
from shopify_client import documents, oauth
from shopify_client.errors import (
    AdminAPIUnavailable,
    AmbiguousMutation,
    GraphQLError,
    InvalidShopDomain,
    Throttled,
    Unauthorized,
)
from shopify_client.graphql import AdminClient, ThrottleStatus, ThrottleTracker
from shopify_client.ids import gid
from tests.conftest import API_KEY, API_SECRET
from tests.shopify_client.conftest import OTHER_SHOP, SHOP, Waits

CUSTOMER = 5001


def credit_variables(amount: str = "10.00", currency: str = "USD", **extra):
    return {
        "id": gid("Customer", CUSTOMER),
        "creditInput": {"creditAmount": {"amount": amount, "currencyCode": currency}, **extra},
    }


def token_of(shopify, shop: str = SHOP) -> str:
    return shopify.issue_token(shop)["access_token"]


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


# --- data and cost ------------------------------------------------------------------------


def test_a_query_returns_data_and_reports_its_cost(shopify, install, admin_client, costs):
    tokens = install(SHOP, currency="EUR", iana_timezone="Europe/Paris")
    client = admin_client(SHOP, tokens.access_token)

    data = client.query(documents.SHOP)

    assert data["shop"]["myshopifyDomain"] == SHOP
    assert data["shop"]["currencyCode"] == "EUR"
    assert data["shop"]["ianaTimezone"] == "Europe/Paris"
    assert client.endpoint == shopify.graphql_url(SHOP, DEFAULT_API_VERSION)
    (cost,) = costs
    assert (cost.shop, cost.operation, cost.throttled) == (SHOP, "Shop", False)
    assert cost.requested == cost.actual == 1
    assert cost.throttle_status is not None
    assert cost.throttle_status.maximum_available == 2000.0
    assert cost.throttle_status.restore_rate == 100.0
    assert 1998 <= cost.throttle_status.currently_available <= 1999


def test_granted_scopes(install, admin_client):
    client = admin_client(SHOP, install().access_token)

    scopes = client.query(documents.APP_SCOPES)["currentAppInstallation"]["accessScopes"]

    assert {"handle": "write_store_credit_account_transactions"} in scopes


def test_credit_and_debit_then_read_accounts_and_transactions(shopify, install, admin_client):
    client = admin_client(SHOP, install().access_token)
    shopify.shop(SHOP).add_customer(CUSTOMER)
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)

    credited = client.mutate(
        documents.STORE_CREDIT_CREDIT, credit_variables("12.50", expiresAt=expires)
    )["storeCreditAccountCredit"]
    debited = client.mutate(
        documents.STORE_CREDIT_DEBIT,
        {
            "id": credited["storeCreditAccountTransaction"]["account"]["id"],
            "debitInput": {"debitAmount": {"amount": "2.5", "currencyCode": "USD"}},
        },
    )["storeCreditAccountDebit"]

    assert credited["userErrors"] == []
    assert debited["userErrors"] == []
    credit = credited["storeCreditAccountTransaction"]
    assert credit["amount"] == {"amount": "12.5", "currencyCode": "USD"}
    assert datetime.fromisoformat(credit["expiresAt"]) == expires
    assert debited["storeCreditAccountTransaction"]["balanceAfterTransaction"]["amount"] == "10.0"
    assert shopify.shop(SHOP).balance(CUSTOMER, "USD") in ("10.0", "10.00")

    accounts = client.query(
        documents.CUSTOMER_STORE_CREDIT_ACCOUNTS, {"id": gid("Customer", CUSTOMER), "first": 10}
    )["customer"]["storeCreditAccounts"]
    (account,) = accounts["nodes"]
    assert account["balance"]["currencyCode"] == "USD"
    page = client.query(documents.STORE_CREDIT_TRANSACTIONS, {"id": account["id"], "first": 10})[
        "storeCreditAccount"
    ]["transactions"]
    assert [node["__typename"] for node in page["nodes"]] == [  # newest first
        "StoreCreditAccountDebitTransaction",
        "StoreCreditAccountCreditTransaction",
    ]
    assert page["nodes"][1]["remainingAmount"]["amount"] == "10.0"
    assert page["pageInfo"]["hasNextPage"] is False
    assert shopify.invalid_documents == []


def test_user_errors_are_data_not_exceptions(shopify, install, admin_client):
    client = admin_client(SHOP, install().access_token)
    shopify.shop(SHOP).add_customer(CUSTOMER)

    result = client.mutate(
        documents.STORE_CREDIT_DEBIT,
        {
            "id": gid("Customer", CUSTOMER),
            "debitInput": {"debitAmount": {"amount": "1.00", "currencyCode": "USD"}},
        },
    )["storeCreditAccountDebit"]

    assert result["storeCreditAccountTransaction"] is None
    assert [error["code"] for error in result["userErrors"]] in (
        ["ACCOUNT_NOT_FOUND"],
        ["INSUFFICIENT_FUNDS"],
    )


def test_graphql_errors_raise_with_messages_and_partial_data(install, admin_client):
    client = admin_client(SHOP, install().access_token)

    with pytest.raises(GraphQLError) as raised:
        client.query(documents.ORDER_STORE_CREDIT, {"id": "not-a-gid"})

    assert raised.value.messages == ["Invalid global id 'not-a-gid'"]
    assert raised.value.data == {"order": None}
    assert raised.value.operation == "OrderStoreCredit"


def test_queries_and_mutations_are_not_interchangeable(install, admin_client):
    client = admin_client(SHOP, install().access_token)
    with pytest.raises(ValueError, match="use mutate"):
        client.query(documents.STORE_CREDIT_CREDIT, credit_variables())
    with pytest.raises(ValueError, match="use query"):
        client.mutate(documents.SHOP, {})


def test_the_client_refuses_a_shop_that_is_not_a_myshopify_domain(shopify):
    with pytest.raises(InvalidShopDomain):
        AdminClient(
            "evil.com",
            "token",
            api_version=DEFAULT_API_VERSION,
            admin_origin_template=shopify.origin_template,
        )
    with pytest.raises(ValueError, match="version"):
        AdminClient(SHOP, "token", api_version="2026-13-x", admin_origin_template="https://{shop}")


def test_the_production_endpoint():
    client = AdminClient(
        SHOP, "token", api_version="2026-10", admin_origin_template="https://{shop}"
    )
    assert client.endpoint == "https://acme.myshopify.com/admin/api/2026-10/graphql.json"


# --- 401 and the token refresh ------------------------------------------------------------


def test_a_401_refreshes_the_token_once_and_retries(shopify, install, admin_client):
    tokens = install()
    refreshed: list[oauth.TokenSet] = []

    def refresh() -> str:
        assert tokens.refresh_token is not None
        refreshed.append(
            oauth.refresh_access_token(
                SHOP,
                tokens.refresh_token,
                api_key=API_KEY,
                api_secret=API_SECRET,
                origin_template=shopify.origin_template,
            )
        )
        return refreshed[-1].access_token

    client = admin_client(SHOP, tokens.access_token, refresh_access_token=refresh)
    shopify.expire_access_token(SHOP)

    assert client.query(documents.SHOP)["shop"]["myshopifyDomain"] == SHOP
    assert client.query(documents.SHOP)["shop"]["myshopifyDomain"] == SHOP  # keeps the new one

    assert len(refreshed) == 1
    graphql = [r.status for r in shopify.requests if r.kind == "graphql"]
    assert graphql == [401, 200, 200]


def test_a_second_401_after_the_refresh_raises(shopify, install, admin_client):
    calls: list[int] = []

    def refresh() -> str:
        calls.append(1)
        return "shpat_not-a-token"

    client = admin_client(SHOP, install().access_token, refresh_access_token=refresh)
    shopify.expire_access_token(SHOP)

    with pytest.raises(Unauthorized, match="after refreshing"):
        client.query(documents.SHOP)
    assert calls == [1]
    assert [r.status for r in shopify.requests if r.kind == "graphql"] == [401, 401]


def test_a_401_without_a_way_to_refresh_raises(shopify, install, admin_client):
    client = admin_client(SHOP, install().access_token)
    shopify.expire_access_token(SHOP)
    with pytest.raises(Unauthorized, match="no way to refresh"):
        client.query(documents.SHOP)


# --- throttling and pacing ----------------------------------------------------------------


def test_throttled_is_retried_after_the_computed_wait(shopify, install, admin_client, costs):
    """Bucket short by ~300 points at 200/s: wait ceil(missing / 200) = 2 s (really slept, so
    that the fake's bucket refills), then the retry goes through."""
    client = admin_client(
        SHOP,
        install(restore_rate=200.0, maximum_available=1000.0).access_token,
        sleep=(waits := Waits(real=True)),
    )
    variables = {"id": gid("StoreCreditAccount", 1), "first": 50}
    shopify.shop(SHOP).bucket.drain()
    throttled_at = 404 - 300  # the fake estimates 404 points for this page of 50
    shopify.shop(SHOP).bucket.drain(-throttled_at)  # drain(-n) puts n points back

    client.query(documents.STORE_CREDIT_TRANSACTIONS, variables)

    throttled, answered = costs
    assert throttled.throttled
    assert throttled.actual is None
    assert throttled.requested == 404
    status = throttled.throttle_status
    assert status is not None
    expected = max(1, math.ceil((404 - status.currently_available) / status.restore_rate))
    assert expected == 2
    assert waits.calls == [expected]
    assert not answered.throttled
    assert answered.actual == 404


def test_a_throttled_mutation_is_retried_and_applied_once(shopify, install, admin_client, costs):
    client = admin_client(SHOP, install().access_token, sleep=(waits := Waits()))
    shopify.shop(SHOP).add_customer(CUSTOMER)
    shopify.faults.add("throttled", operation="storeCreditAccountCredit")

    result = client.mutate(documents.STORE_CREDIT_CREDIT, credit_variables("5.00"))

    assert result["storeCreditAccountCredit"]["userErrors"] == []
    assert waits.calls == [1.0]  # the bucket was full: the minimum wait
    assert [c.throttled for c in costs] == [True, False]
    assert len(shopify.shop(SHOP).transactions(CUSTOMER, "USD")) == 1


def test_429_honours_retry_after(shopify, install, admin_client, costs):
    client = admin_client(SHOP, install().access_token, sleep=(waits := Waits()))
    shopify.faults.add("rate_limited", operation="Shop")

    assert client.query(documents.SHOP)["shop"]["myshopifyDomain"] == SHOP

    assert waits.calls == [1.0]  # Retry-After: 1
    assert costs[0].throttled
    assert costs[0].requested is None
    assert costs[0].throttle_status is None
    assert [r.status for r in shopify.requests if r.kind == "graphql"] == [429, 200]


def test_throttling_on_every_attempt_raises_throttled(shopify, install, admin_client):
    client = admin_client(SHOP, install().access_token, sleep=(waits := Waits()), max_attempts=3)
    shopify.faults.add("throttled", operation="Shop", times=3)

    with pytest.raises(Throttled, match="gave up after 3 attempts: THROTTLED"):
        client.query(documents.SHOP)
    assert waits.calls == [1.0, 1.0]


def test_the_next_call_waits_for_the_bucket_instead_of_being_throttled(
    shopify, install, admin_client, costs
):
    client = admin_client(
        SHOP,
        install(restore_rate=200.0, maximum_available=500.0).access_token,
        sleep=(waits := Waits(real=True)),
    )
    variables = {"id": gid("StoreCreditAccount", 1), "first": 50}

    client.query(documents.STORE_CREDIT_TRANSACTIONS, variables)  # 404 of 500: ~96 left
    client.query(documents.STORE_CREDIT_TRANSACTIONS, variables)

    assert [c.throttled for c in costs] == [False, False]
    (wait,) = waits.calls  # (404 - ~96) / 200 ≈ 1.54 s, paced before sending
    assert 1.4 < wait < 1.6


def test_a_query_the_bucket_can_never_hold_raises_at_once(shopify, install, admin_client):
    client = admin_client(
        SHOP, install(maximum_available=300.0).access_token, sleep=(waits := Waits())
    )
    with pytest.raises(Throttled, match="exceeds the bucket"):
        client.query(
            documents.STORE_CREDIT_TRANSACTIONS, {"id": gid("StoreCreditAccount", 1), "first": 50}
        )
    assert waits.calls == []


def test_the_tracker_estimates_the_refill_and_books_each_call():
    now = [100.0]
    tracker = ThrottleTracker(clock=lambda: now[0])
    assert tracker.reserve(SHOP, "Op") == 0.0  # nothing known yet

    tracker.observe(SHOP, "Op", 300, ThrottleStatus(1000.0, 100.0, 100.0))
    assert tracker.reserve(SHOP, "Op") == pytest.approx(2.0)  # 200 short at 100/s
    now[0] += 2.0  # it waited; the call took its 300 points
    assert tracker.reserve(SHOP, "Op") == pytest.approx(3.0)  # a second caller queues behind
    assert tracker.reserve(OTHER_SHOP, "Op") == 0.0  # buckets are per shop
    now[0] += 60.0
    assert tracker.reserve(SHOP, "Op") == 0.0  # refilled (capped at the maximum)


# --- server errors, lost answers, timeouts ------------------------------------------------


def test_server_errors_on_a_query_are_retried_with_backoff(shopify, install, admin_client):
    client = admin_client(SHOP, install().access_token, sleep=(waits := Waits()))
    shopify.faults.add("server_error", operation="Shop", times=2)

    assert client.query(documents.SHOP)["shop"]["myshopifyDomain"] == SHOP

    assert waits.calls == [1.0, 2.0]
    assert [r.status for r in shopify.requests if r.kind == "graphql"] == [503, 503, 200]


def test_a_query_failing_on_every_attempt_raises_unavailable(shopify, install, admin_client):
    client = admin_client(SHOP, install().access_token, sleep=(waits := Waits()), max_attempts=4)
    shopify.faults.add("server_error", operation="Shop", times=4)

    with pytest.raises(AdminAPIUnavailable, match="after 4 attempts: HTTP 503") as raised:
        client.query(documents.SHOP)
    assert raised.value.status == 503
    assert waits.calls == [1.0, 2.0, 4.0]


def test_a_lost_answer_to_a_query_is_retried(shopify, install, admin_client):
    client = admin_client(SHOP, install().access_token, sleep=(waits := Waits()))
    shopify.faults.add("lost_response", operation="Shop")

    assert client.query(documents.SHOP)["shop"]["myshopifyDomain"] == SHOP
    assert waits.calls == [1.0]


def test_a_server_error_on_a_mutation_is_ambiguous_and_not_repeated(shopify, install, admin_client):
    client = admin_client(SHOP, install().access_token, sleep=(waits := Waits()))
    shopify.shop(SHOP).add_customer(CUSTOMER)
    shopify.faults.add("server_error", operation="StoreCreditCredit")

    with pytest.raises(AmbiguousMutation) as raised:
        client.mutate(documents.STORE_CREDIT_CREDIT, credit_variables("7.00"))

    assert raised.value.status == 503
    assert raised.value.variables == credit_variables("7.00")
    assert waits.calls == []
    assert [r.operation_name for r in shopify.requests if r.kind == "graphql"] == [
        "StoreCreditCredit"
    ]
    assert shopify.shop(SHOP).transactions(CUSTOMER, "USD") == []  # the fake's 503 came first


def test_a_lost_answer_to_a_mutation_is_ambiguous_and_applied_exactly_once(
    shopify, install, admin_client
):
    client = admin_client(SHOP, install().access_token, sleep=(waits := Waits()))
    shopify.shop(SHOP).add_customer(CUSTOMER)
    shopify.faults.add("lost_response", operation="storeCreditAccountCredit")

    with pytest.raises(AmbiguousMutation, match="no answer"):
        client.mutate(documents.STORE_CREDIT_CREDIT, credit_variables("7.00"))

    assert waits.calls == []
    (applied,) = shopify.shop(SHOP).transactions(CUSTOMER, "USD")
    assert shopify.shop(SHOP).balance(CUSTOMER, "USD") in ("7.0", "7.00")
    assert len([r for r in shopify.requests if r.kind == "graphql"]) == 1
    assert applied


def test_a_slow_query_times_out_and_is_retried(shopify, install, admin_client):
    client = admin_client(SHOP, install().access_token, sleep=(waits := Waits()), timeout=0.3)
    shopify.faults.add("slow", operation="Shop", delay=1.5)

    started = time.monotonic()
    assert client.query(documents.SHOP)["shop"]["myshopifyDomain"] == SHOP
    elapsed = time.monotonic() - started

    assert waits.calls == [1.0]
    assert elapsed < 1.2  # the first attempt gave up after 0.3 s, not 1.5 s


def test_a_slow_mutation_times_out_as_ambiguous_and_lands_once(shopify, install, admin_client):
    client = admin_client(SHOP, install().access_token, timeout=0.3)
    shopify.shop(SHOP).add_customer(CUSTOMER)
    shopify.faults.add("slow", operation="StoreCreditCredit", delay=1.0)

    with pytest.raises(AmbiguousMutation, match="timed out"):
        client.mutate(documents.STORE_CREDIT_CREDIT, credit_variables("3.00"))

    # Shopify carries on after we stopped waiting: the credit lands, once.
    wait_until(lambda: shopify.shop(SHOP).transactions(CUSTOMER, "USD") != [])
    time.sleep(0.2)
    assert len(shopify.shop(SHOP).transactions(CUSTOMER, "USD")) == 1


# --- sessions and threads -----------------------------------------------------------------


def active_token() -> str | None:
    return shopify_api.ShopifyResource.get_headers().get("X-Shopify-Access-Token")


def test_two_shops_in_threads_each_call_with_its_own_token(shopify, install, admin_client):
    clients = {shop: admin_client(shop, install(shop).access_token) for shop in (SHOP, OTHER_SHOP)}
    start = threading.Barrier(8)

    def calls(shop: str) -> list[str]:
        start.wait()
        seen = [clients[shop].query(documents.SHOP)["shop"]["myshopifyDomain"] for _ in range(15)]
        assert active_token() is None  # nothing left on this worker thread
        return seen

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {pool.submit(calls, shop): shop for shop in (SHOP, OTHER_SHOP) * 4}
        for future, shop in futures.items():
            assert future.result() == [shop] * 15

    graphql = [r for r in shopify.requests if r.kind == "graphql"]
    assert len(graphql) == 8 * 15
    # The fake accepts a token only on its own shop: a token from the other thread would be 401.
    assert {r.status for r in graphql} == {200}
    assert active_token() is None


def test_a_call_in_flight_is_invisible_to_other_threads_and_cleared_after_errors(
    shopify, install, admin_client
):
    token = install().access_token
    client = admin_client(SHOP, token, timeout=5.0)
    shopify.faults.add("slow", operation="Shop", delay=0.5)
    worker = ThreadPoolExecutor(max_workers=1)
    try:
        in_flight = worker.submit(client.query, documents.SHOP)
        wait_until(lambda: shopify.faults.pending == [])  # the fake is holding the request
        assert active_token() is None  # this thread sees no session
        assert in_flight.result()["shop"]["myshopifyDomain"] == SHOP

        # A connection dropped mid-call raises inside the session block (ShopifyAPI 12.7.0's
        # Session.temp alone would leave this token active on the worker thread).
        shopify.faults.add("lost_response", operation="Shop")
        failing = admin_client(SHOP, token, max_attempts=1)
        with pytest.raises(AdminAPIUnavailable, match="no answer"):
            worker.submit(failing.query, documents.SHOP).result()
        assert worker.submit(active_token).result() is None  # cleared despite the exception
    finally:
        worker.shutdown()
