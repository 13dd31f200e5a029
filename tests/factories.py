"""factory_boy factories bound to the current test's session (see conftest)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import factory
from sqlalchemy.orm import Session, scoped_session

from models import Customer, Shop

_session: list[Session | scoped_session[Session]] = []


def bind(session: Session | scoped_session[Session]) -> None:
    _session[:] = [session]


def _current() -> Session | scoped_session[Session]:
    return _session[0]


class _Base(factory.alchemy.SQLAlchemyModelFactory):
    class Meta:
        abstract = True
        sqlalchemy_session_factory = _current
        sqlalchemy_session_persistence = "commit"


class ShopFactory(_Base):
    class Meta:
        model = Shop

    # Unique across runs: concurrency tests commit for real, so names must never repeat.
    domain = factory.LazyFunction(lambda: f"shop-{uuid.uuid4().hex[:12]}.myshopify.com")
    name = "Test shop"
    currency = "USD"
    timezone = "UTC"
    installed_at = factory.LazyFunction(lambda: datetime.now(UTC))
    created_at = factory.LazyFunction(lambda: datetime.now(UTC))
    # Off unless a test is about mirroring: no outbox rows, no sync jobs, no Shopify calls.
    native_sync = False


class CustomerFactory(_Base):
    class Meta:
        model = Customer

    shop_id: Any = None
    shopify_customer_id = factory.Sequence(lambda n: 7_000_000_000 + n)
    email = factory.Sequence(lambda n: f"customer{n}@example.com")
    first_name = "Ada"
    last_name = factory.Sequence(lambda n: f"Customer{n}")
    created_at = factory.LazyFunction(lambda: datetime.now(UTC))
    updated_at = factory.LazyFunction(lambda: datetime.now(UTC))
