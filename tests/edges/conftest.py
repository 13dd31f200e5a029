"""The app wired to the fake Shopify: SHOPIFY_ADMIN_ORIGIN points at its loopback server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from flask import Flask

from config import DEFAULT_SCOPES
from tests.conftest import settings_changed
from tests.fake_shopify import FakeShopify


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
