"""pytest fixtures for the fake Shopify (registered by tests/conftest.py's pytest_plugins).

``fake_shopify``: one server for the whole run (the schema is built once);
``shopify``: the same server, emptied before the test (shops, tokens, faults, records).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import API_KEY, API_SECRET
from tests.fake_shopify.server import FakeShopify


@pytest.fixture(scope="session")
def fake_shopify() -> Iterator[FakeShopify]:
    with FakeShopify(api_key=API_KEY, api_secret=API_SECRET) as fake:
        yield fake


@pytest.fixture
def shopify(fake_shopify: FakeShopify) -> FakeShopify:
    fake_shopify.reset()
    return fake_shopify
