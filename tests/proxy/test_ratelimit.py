"""Rate limits: 429 with Retry-After per client IP and per shop over HTTP, and the limiter's
counting (shared through real Redis in batches, per process without it)."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from models import Shop
from storefront.ratelimit import RateLimiter
from tests.proxy.conftest import storefront_configured
from tests.proxy.helpers import balance_url
from tests.proxy.test_balance import assert_error

CUSTOMER = 7408348290


def via_proxy(client: FlaskClient, url: str, ip: str):
    return client.get(url, headers={"X-Forwarded-For": f"{ip}, 23.227.38.65"})


def test_over_the_per_ip_limit_is_429_with_retry_after(
    client: FlaskClient, shop: Shop, app_context: Flask
):
    with storefront_configured(app_context, limit_per_ip=3):
        for _ in range(3):
            assert (
                via_proxy(client, balance_url(shop.domain, CUSTOMER), "203.0.113.5").status_code
                == 200
            )
        refused = via_proxy(client, balance_url(shop.domain, CUSTOMER), "203.0.113.5")
        assert_error(refused, 429, "rate_limited")
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.get_json()["error"]["details"]["retry_after"] == int(
            refused.headers["Retry-After"]
        )
        # Another storefront visitor behind the same proxy has a budget of their own.
        assert (
            via_proxy(client, balance_url(shop.domain, CUSTOMER), "203.0.113.6").status_code == 200
        )


def test_the_client_is_the_first_forwarded_address_not_the_proxy(
    client: FlaskClient, shop: Shop, app_context: Flask
):
    with storefront_configured(app_context, limit_per_ip=2):
        # Shopify's proxy is the peer for all of them: only the first address is the client.
        for ip in ("198.51.100.1", "198.51.100.2", "198.51.100.3", "2001:db8::1"):
            assert via_proxy(client, balance_url(shop.domain, ""), ip).status_code == 200
            assert via_proxy(client, balance_url(shop.domain, ""), ip).status_code == 200
        assert via_proxy(client, balance_url(shop.domain, ""), "198.51.100.1").status_code == 429


def test_over_the_per_shop_limit_is_429_for_that_shop_only(
    client: FlaskClient, shop: Shop, other_shop: Shop, app_context: Flask
):
    with storefront_configured(app_context, limit_per_shop=3):
        for i in range(3):
            ip = f"192.0.2.{i + 1}"
            assert via_proxy(client, balance_url(shop.domain, CUSTOMER), ip).status_code == 200
        assert_error(
            via_proxy(client, balance_url(shop.domain, CUSTOMER), "192.0.2.99"), 429, "rate_limited"
        )
        assert (
            via_proxy(client, balance_url(other_shop.domain, CUSTOMER), "192.0.2.99").status_code
            == 200
        )


def test_unsigned_requests_count_against_the_sending_address(
    client: FlaskClient, shop: Shop, app_context: Flask
):
    forged = balance_url(shop.domain, CUSTOMER, secret="guess")
    with storefront_configured(app_context, limit_per_ip=2):
        # A forged X-Forwarded-For does not buy a fresh budget: unsigned, the peer counts.
        assert via_proxy(client, forged, "203.0.113.1").status_code == 401
        assert via_proxy(client, forged, "203.0.113.2").status_code == 401
        assert_error(via_proxy(client, forged, "203.0.113.3"), 429, "rate_limited")


# -- the limiter ----------------------------------------------------------------------------

WINDOW_START = 60 * 29_000_000  # a whole minute: elapsed = now - WINDOW_START


@pytest.fixture
def limiters(redis_url: str):
    made: list[RateLimiter] = []
    prefix = f"test-rl-{uuid.uuid4().hex[:8]}"

    def make(url: str | None = redis_url, interval: float = 3600) -> RateLimiter:
        client = None if url is None else redis.Redis.from_url(url, socket_timeout=0.5)
        limiter = RateLimiter(client, window=60, sync_interval=interval, prefix=prefix)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        limiter.close()
        if limiter.client is not None:
            limiter.client.close()


def shared(redis_client: redis.Redis, limiter: RateLimiter, scope: str, key: str) -> int:
    window = WINDOW_START // 60
    value = redis_client.get(f"{limiter.prefix}:{scope}:{key}:{window}")
    return int(value or 0)


def test_a_small_limit_is_shared_on_every_hit(limiters):
    first, second = limiters(), limiters()  # two processes
    now = WINDOW_START + 10
    for _ in range(5):
        assert first.hit("ip", "a", 10, now) is None
        assert second.hit("ip", "a", 10, now) is None
    # limit / 50 < 1: every admission goes to Redis at once and reads the total back, so a
    # process is at most one admission behind: ``second`` shared last and knows all ten,
    # ``first`` knew nine and admits one more, then knows eleven.
    assert second.hit("ip", "a", 10, now) is not None
    assert first.hit("ip", "a", 10, now) is None
    assert first.hit("ip", "a", 10, now) is not None
    assert second.hit("ip", "a", 10, now) is not None


def test_a_large_limit_is_shared_in_batches(limiters, redis_client):
    first, second = limiters(), limiters()
    now = WINDOW_START + 10
    for _ in range(19):
        assert first.hit("shop", "s", 1000, now) is None
    assert shared(redis_client, first, "shop", "s") == 0  # no round trip yet
    assert first.hit("shop", "s", 1000, now) is None  # the 20th: 1000 / 50
    assert shared(redis_client, first, "shop", "s") == 20
    for _ in range(20):
        second.hit("shop", "s", 1000, now)
    assert shared(redis_client, first, "shop", "s") == 40
    # ``first`` learns the others' counts when it next shares: it may admit up to one batch
    # more than the limit meanwhile (the over-admission the module docstring bounds).
    for _ in range(19):
        first.hit("shop", "s", 1000, now)
    first.hit("shop", "s", 1000, now)
    assert shared(redis_client, first, "shop", "s") == 60


def test_counts_are_shared_at_least_every_interval(limiters, redis_client):
    limiter = limiters(interval=0.05)
    now = WINDOW_START + 10
    assert limiter.hit("shop", "t", 1000, now) is None
    assert shared(redis_client, limiter, "shop", "t") == 0
    time.sleep(0.06)
    assert limiter.hit("shop", "t", 1000, now) is None
    assert shared(redis_client, limiter, "shop", "t") == 2


def test_an_over_limit_process_learns_it_from_the_others(limiters):
    first, second = limiters(), limiters()
    now = WINDOW_START + 10
    for _ in range(100):
        assert first.hit("shop", "u", 100, now) is None  # shared every 2 hits
    # ``second`` has shared nothing yet, so it has read nothing back either: it admits one
    # batch (100 / 50 = 2), shares it, reads back 102 and refuses from then on.
    assert second.hit("shop", "u", 100, now) is None
    assert second.hit("shop", "u", 100, now) is None
    assert second.hit("shop", "u", 100, now) is not None


def test_without_redis_each_process_counts_alone(limiters):
    limiter = limiters(None)
    now = WINDOW_START + 10
    assert [limiter.hit("shop", "s", 3, now) for _ in range(3)] == [None, None, None]
    wait = limiter.hit("shop", "s", 3, now)
    assert wait == 70  # 50 s to the window's end, then 20 s until 3 * (1 - 20/60) + 1 <= 3
    assert limiter.hit("shop", "s", 3, now + wait - 5) is not None
    assert limiter.hit("shop", "s", 3, now + wait) is None
    assert limiter.hit("shop", "other", 3, now) is None  # keys are separate


def test_the_previous_window_weighs_in_as_it_slides_out(limiters):
    limiter = limiters(None)
    now = WINDOW_START + 59
    for _ in range(4):
        assert limiter.hit("ip", "b", 4, now) is None
    # One second into the next window, 4 * 59/60 of the last one still counts.
    assert limiter.hit("ip", "b", 4, now + 2) is not None
    # Half way through: 2 from before + this one.
    assert limiter.hit("ip", "b", 4, WINDOW_START + 60 + 30) is None
    # Two windows later nothing of it remains.
    assert [limiter.hit("ip", "b", 4, WINDOW_START + 180 + 1) for _ in range(4)] == [None] * 4


def test_redis_unreachable_keeps_counting_here(limiters):
    limiter = limiters("redis://127.0.0.1:1/0")
    now = WINDOW_START + 10
    assert limiter.hit("ip", "c", 2, now) is None
    limiter.sync()  # fails: logged, the count stays here
    assert limiter.hit("ip", "c", 2, now) is None
    limiter.sync()
    assert limiter.hit("ip", "c", 2, now) is not None
