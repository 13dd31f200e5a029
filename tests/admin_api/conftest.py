"""Fixtures for the admin API tests: two installed shops, each with a signed-in staff member.

Requests go through the Flask test client, whose db.session is bound to the test's rolled-back
transaction (tests/conftest.py). Shops have native sync off unless a test installs one against
the fake Shopify.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from models import Shop
from tests.admin_api.helpers import OTHER_STAFF, STAFF, AdminApi
from tests.factories import ShopFactory


@pytest.fixture
def shop(app_context: Any) -> Shop:
    shop: Shop = ShopFactory()
    return shop


@pytest.fixture
def other_shop(app_context: Any) -> Shop:
    shop: Shop = ShopFactory()
    return shop


@pytest.fixture
def api(client: FlaskClient, shop: Shop) -> AdminApi:
    return AdminApi(client, shop, sub=STAFF)


@pytest.fixture
def other_api(client: FlaskClient, other_shop: Shop) -> AdminApi:
    return AdminApi(client, other_shop, sub=OTHER_STAFF)
