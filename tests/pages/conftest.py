"""Fixtures for the pages: an installed shop, a client that opens pages as its staff, and an
app built in development mode (where the dev login exists)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine
from werkzeug.test import TestResponse

from config import Settings
from ledger import operations
from ledger.book import Actor
from ledger.kinds import LotSource
from ledger.money import Money
from models import Customer, Shop
from tests import factories
from tests.conftest import session_token
from tests.factories import CustomerFactory, ShopFactory
from tokens import TokenBox

STAFF_ID = "8410000077"


@dataclass
class Pages:
    """The test client, opening pages as staff member ``sub`` of ``shop`` (id_token)."""

    client: FlaskClient
    shop: Shop
    sub: str = STAFF_ID

    def get(self, path: str, **params: Any) -> TestResponse:
        token = session_token(self.shop.domain, sub=self.sub)
        query = {"shop": self.shop.domain, "id_token": token} | params
        return self.client.get(path, query_string=query)


def installed(domain: str | None, settings: Settings) -> Shop:
    """A shop with its offline token stored, as after install (no token exchange on /app)."""
    token = TokenBox(settings.token_encryption_keys).encrypt("shpat_pages_test")
    fields: dict[str, Any] = {"domain": domain} if domain else {}
    shop: Shop = ShopFactory(name="Pages Test Shop", access_token_encrypted=token, **fields)
    return shop


@pytest.fixture
def shop(app_context: Any, settings: Settings) -> Shop:
    return installed(None, settings)


@pytest.fixture
def pages(client: FlaskClient, shop: Shop) -> Pages:
    return Pages(client, shop)


def issue(
    session: Any,
    shop: Shop,
    customer: Customer,
    amount: str,
    *,
    now: datetime,
    currency: str = "USD",
    reason: str = "goodwill",
    actor: str = "staff:1",
    expires_at: datetime | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    receipt = operations.issue(
        session,
        Actor(shop_id=shop.id, now=now, actor=actor, reason=reason, idempotency_key=key),
        customer=customer.shopify_customer_id,
        amount=Money.parse(amount, currency),
        expires_at=expires_at,
        source=LotSource.MANUAL,
    )
    return receipt.entry


def customer_of(shop: Shop, **fields: Any) -> Customer:
    customer: Customer = CustomerFactory(shop_id=shop.id, **fields)
    return customer


# -- apps in other modes, bound to the test's rolled-back transaction --------------------------


@contextmanager
def another_app(settings: Settings, **changes: Any) -> Iterator[Flask]:
    """An app built with ``settings`` changed (routes are registered by create_app, so a mode's
    routes need an app of that mode). create_app configures the process's logging: the test
    run's configuration is put back after, so later tests log as before."""
    from app import create_app
    from extensions import db

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        flask_app = create_app(dataclasses.replace(settings, **changes))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    try:
        yield flask_app
    finally:
        with flask_app.app_context():
            db.engine.dispose()


@pytest.fixture(scope="session")
def dev_app(settings: Settings) -> Iterator[Flask]:
    with another_app(settings, env="development") as flask_app:
        yield flask_app


@pytest.fixture
def dev_client(dev_app: Flask, connection: Connection | Engine) -> Iterator[FlaskClient]:
    """A client of the development app whose db.session sees the test's data (as app_context)."""
    from extensions import db

    with dev_app.app_context():
        engines = db.engines
        original = engines[None]
        engines[None] = connection  # type: ignore[assignment]
        db.session.remove()
        db.session.session_factory.configure(join_transaction_mode="create_savepoint")
        factories.bind(db.session)
        try:
            yield dev_app.test_client()
        finally:
            db.session.remove()
            engines[None] = original
