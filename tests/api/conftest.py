"""Fixtures for the API tests: installed shops and clients signed in as their staff.

Every request goes through the Flask test client, whose db.session is bound to the test's
rolled-back transaction (see tests/conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from models import Shop
from tests.api.helpers import Api
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
def api(client: FlaskClient, shop: Shop) -> Api:
    return Api(client, shop)


@pytest.fixture
def other_api(client: FlaskClient, other_shop: Shop) -> Api:
    return Api(client, other_shop, sub="8410000099")
