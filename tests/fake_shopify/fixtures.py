"""pytest fixtures for the fake Shopify (registered by tests/conftest.py's pytest_plugins).

``fake_shopify``: one server for the whole run (the schema is built once);
``shopify``: the same server, emptied before the test (shops, tokens, faults, records);
``connected``: that, with the app's SHOPIFY_ADMIN_ORIGIN pointed at it; ``shop_domain``: a
fresh shop name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from flask import Flask

from config import DEFAULT_SCOPES
from tests.conftest import API_KEY, API_SECRET, settings_changed
from tests.fake_shopify.server import FakeShopify


@pytest.fixture(scope="session")
def fake_shopify() -> Iterator[FakeShopify]:
    with FakeShopify(api_key=API_KEY, api_secret=API_SECRET) as fake:
        yield fake


@pytest.fixture
def shopify(fake_shopify: FakeShopify) -> FakeShopify:
    fake_shopify.reset()
    return fake_shopify


@pytest.fixture
def connected(app_context: Flask, shopify: FakeShopify) -> Iterator[FakeShopify]:
    """The fake Shopify, with the app calling it instead of https://{shop}.

    Shops added to it grant what shopify.app.toml asks for (config.DEFAULT_SCOPES).
    """
    granted = shopify.scopes
    shopify.scopes = tuple(DEFAULT_SCOPES.split(","))
    try:
        with settings_changed(app_context, shopify_admin_origin=shopify.origin_template):
            yield shopify
    finally:
        shopify.scopes = granted


@pytest.fixture
def shop_domain() -> str:
    return f"edge-{uuid.uuid4().hex[:10]}.myshopify.com"
