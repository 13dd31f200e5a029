"""Fixtures for the storefront look-up tests: shops, credit issued through the ledger, and
the app's Storefront swapped for one configured otherwise (limits, Redis) for a test."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from ledger import operations
from ledger.book import Actor
from ledger.money import Money
from models import Shop
from storefront.service import Storefront
from storefront.wiring import EXTENSION_KEY
from tests.factories import ShopFactory


@pytest.fixture(scope="session")
def close_storefront(app: Flask) -> Iterator[None]:
    """The app's storefront (listener thread, Redis sockets) closed when the run ends."""
    yield
    app.extensions[EXTENSION_KEY].close()


@pytest.fixture
def client(app_context: Flask) -> FlaskClient:
    """A test client from an address of its own: the app's per-IP limit (120/min) is shared
    by every test in the run, so each test gets a fresh address to count against."""
    test_client = app_context.test_client()
    test_client.environ_base["REMOTE_ADDR"] = str(ipaddress.IPv4Address(next(_addresses)))
    return test_client


_addresses = itertools.count(int(ipaddress.IPv4Address("10.0.0.1")))


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set: run with scripts/with-services.sh")
    return url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def shop(app_context: Any, close_storefront: None) -> Shop:
    shop: Shop = ShopFactory()
    return shop


@pytest.fixture
def other_shop(app_context: Any) -> Shop:
    shop: Shop = ShopFactory()
    return shop


Credit = Callable[..., Any]


@pytest.fixture
def credit(app_context: Any) -> Credit:
    """``credit(shop, customer, "12.50", currency="USD", expires_at=None, at=None)``: an
    ``issue`` through the ledger on the app's session (committed, so invalidation runs)."""
    from extensions import db

    def issue(
        shop: Shop,
        customer: int,
        amount: str,
        *,
        currency: str = "USD",
        expires_at: datetime | None = None,
        at: datetime | None = None,
    ) -> Any:
        by = Actor(shop.id, at or datetime.now(UTC), "staff:test", "test credit")
        return operations.issue(
            db.session,
            by,
            customer=customer,
            amount=Money.parse(amount, currency),
            expires_at=expires_at,
        )

    return issue


def in_days(days: float) -> datetime:
    """A whole-second instant ``days`` from now (the wire shows seconds)."""
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)


@contextmanager
def storefront_configured(app: Flask, **changes: Any) -> Iterator[Storefront]:
    """The app serves with a Storefront whose config differs by ``changes``, for a while."""
    original: Storefront = app.extensions[EXTENSION_KEY]
    replacement = Storefront(dataclasses.replace(original.config, **changes))
    app.extensions[EXTENSION_KEY] = replacement
    try:
        yield replacement
    finally:
        app.extensions[EXTENSION_KEY] = original
        replacement.close()
