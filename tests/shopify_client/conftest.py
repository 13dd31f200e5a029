"""Helpers for the Admin API client tests, which run against the fake Shopify over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from config import DEFAULT_API_VERSION
from shopify_client.graphql import AdminClient, CallCost, ThrottleTracker
from shopify_client.oauth import TokenSet, exchange_session_token
from tests.conftest import API_KEY, API_SECRET
from tests.fake_shopify import FakeShopify

SHOP = "acme.myshopify.com"
OTHER_SHOP = "globex.myshopify.com"


class Waits:
    """A ``sleep`` that records how long it was asked to wait.

    ``real=True`` also waits, for tests where the fake's bucket must refill meanwhile.
    """

    def __init__(self, *, real: bool = False) -> None:
        self.real = real
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.real:
            time.sleep(seconds)


@pytest.fixture
def install(shopify: FakeShopify) -> Callable[..., TokenSet]:
    """Add a shop to the fake and get its tokens by token exchange, as the embedded app does."""

    def install(domain: str = SHOP, **shop_options: Any) -> TokenSet:
        shopify.add_shop(domain, **shop_options)
        return exchange_session_token(
            domain,
            shopify.session_token(domain),
            api_key=API_KEY,
            api_secret=API_SECRET,
            origin_template=shopify.origin_template,
        )

    return install


@pytest.fixture
def costs() -> list[CallCost]:
    return []


@pytest.fixture
def admin_client(shopify: FakeShopify, costs: list[CallCost]) -> Callable[..., AdminClient]:
    """An AdminClient on the fake, with its own throttle tracker and costs recorded."""

    def admin_client(domain: str, access_token: str, **options: Any) -> AdminClient:
        options.setdefault("on_cost", costs.append)
        options.setdefault("throttle", ThrottleTracker())
        options.setdefault("sleep", Waits())
        return AdminClient(
            domain,
            access_token,
            api_version=DEFAULT_API_VERSION,
            admin_origin_template=shopify.origin_template,
            **options,
        )

    return admin_client
