"""Fixtures for the row-level security tests: a scratch database and login roles of our own.

The suite's own connection is the superuser ``postgres``, which row-level security never
applies to, and each test's data lives in a transaction no other connection can see. These
tests need other roles to read committed data, so they get a database of their own: created
and migrated once per run (as production is: the migrations switch to the owner role), with
two LOGIN roles granted the runtime group roles, and dropped (roles included) at the end.
Tests in it keep apart by using shops of their own.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask_migrate import upgrade
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from config import Settings
from ledger import operations
from ledger.book import Actor, Mirror
from ledger.money import Money

MIGRATIONS = str(Path(__file__).resolve().parents[2] / "migrations")
APP_ROLE = "creditcraft_app"
WORKER_ROLE = "creditcraft_worker"


@dataclass(frozen=True)
class RlsDatabase:
    name: str
    superuser_url: str
    app_url: str  # a LOGIN role granted creditcraft_app (the web)
    worker_url: str  # a LOGIN role granted creditcraft_worker (workers, scheduler, commands)


@pytest.fixture(scope="session")
def rls_database(settings: Settings, on_postgresql: bool) -> Iterator[RlsDatabase]:
    if not on_postgresql:
        pytest.skip("row-level security is PostgreSQL's")
    admin_url = os.environ.get("PGSUPERUSER_URL") or settings.database_url
    suffix = uuid.uuid4().hex[:10]
    name = f"rls_{suffix}"
    logins = {
        APP_ROLE: f"creditcraft_test_app_{suffix}",
        WORKER_ROLE: f"creditcraft_test_worker_{suffix}",
    }
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        superuser_url = make_url(admin_url).set(database=name)
        _migrate(settings, superuser_url.render_as_string(hide_password=False))
        with admin.connect() as conn:
            for group, login in logins.items():  # roles belong to the cluster: unique names
                conn.execute(text(f"CREATE ROLE {login} LOGIN PASSWORD 'rls-test' IN ROLE {group}"))

        def url_of(login: str) -> str:
            url = superuser_url.set(username=login, password="rls-test")
            return url.render_as_string(hide_password=False)

        yield RlsDatabase(
            name=name,
            superuser_url=superuser_url.render_as_string(hide_password=False),
            app_url=url_of(logins[APP_ROLE]),
            worker_url=url_of(logins[WORKER_ROLE]),
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            for login in logins.values():
                conn.execute(text(f"DROP ROLE IF EXISTS {login}"))
        admin.dispose()


def _migrate(settings: Settings, url: str) -> None:
    from app import create_app
    from extensions import db

    app = create_app(dataclasses.replace(settings, database_url=url, redis_url=None))
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        db.engine.dispose()


@pytest.fixture(scope="session")
def superuser(rls_database: RlsDatabase) -> Iterator[Engine]:
    engine = create_engine(rls_database.superuser_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def app_engine(rls_database: RlsDatabase) -> Iterator[Engine]:
    engine = create_engine(rls_database.app_url, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def worker_engine(rls_database: RlsDatabase) -> Iterator[Engine]:
    engine = create_engine(rls_database.worker_url, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


@dataclass(frozen=True)
class SeededShop:
    id: int
    domain: str
    customer: int  # Shopify customer id
    account_id: int


@pytest.fixture(scope="session")
def two_shops(superuser: Engine) -> tuple[SeededShop, SeededShop]:
    """Shops A and B, each with rows in every table the app writes, committed by the owner."""
    with Session(superuser) as session:
        return seed_shop(session, "a"), seed_shop(session, "b")


def seed_shop(session: Session, label: str) -> SeededShop:
    now = datetime.now(UTC)
    domain = f"rls-{label}-{uuid.uuid4().hex[:8]}.myshopify.com"
    shop_id = session.execute(
        text(
            "INSERT INTO shops (domain, currency, timezone, installed_at, created_at) "
            "VALUES (:domain, 'USD', 'UTC', :now, :now) RETURNING id"
        ),
        {"domain": domain, "now": now},
    ).scalar_one()
    session.commit()
    customer = 7_100_000_000 + shop_id
    by = Actor(shop_id, now, "staff:seed", "seed", idempotency_key=f"seed-{label}", mirror=Mirror())
    operations.issue(session, by, customer=customer, amount=Money(5000, "USD"))
    spend = Actor(shop_id, now, "staff:seed", "spend", idempotency_key=f"spend-{label}")
    operations.redeem(session, spend, customer=customer, amount=Money(1000, "USD"))
    for statement in _SIDE_TABLES:
        session.execute(
            text(statement),
            {
                "shop": shop_id,
                "domain": domain,
                "now": now,
                "customer": customer,
                "key": uuid.uuid4().hex,
            },
        )
    session.commit()
    account_id = session.execute(
        text("SELECT id FROM credit_accounts WHERE shop_id = :shop"), {"shop": shop_id}
    ).scalar_one()
    return SeededShop(shop_id, domain, customer, account_id)


# One row per shop in each table the ledger operations above leave empty.
_SIDE_TABLES = (
    "INSERT INTO webhook_events (webhook_id, shop_id, shop_domain, topic, api_version, "
    "received_at, state, attempts, payload) VALUES (:key, :shop, :domain, 'customers/update', "
    "'2026-10', :now, 'processed', 1, '{}')",
    "INSERT INTO data_requests (shop_id, request_key, shopify_customer_id, state, export, "
    "created_at) VALUES (:shop, :key, :customer, 'ready', '{}', :now)",
    "INSERT INTO api_usage (shop_id, day, calls, throttled, requested_cost, actual_cost) "
    "VALUES (:shop, CAST(:now AS date), 1, 0, 10, 10)",
    "INSERT INTO reconciliation_runs (shop_id, kind, state, started_at, accounts_checked, "
    "entries_checked, native_checked, findings_opened, findings_resolved, repairs) "
    "VALUES (:shop, 'full', 'finished', :now, 1, 2, 0, 1, 0, 0)",
    "INSERT INTO reconciliation_findings (shop_id, kind, finding_key, details, first_seen_at, "
    "last_seen_at) VALUES (:shop, 'balance_mismatch', :key, '{}', :now, :now)",
    "INSERT INTO bulk_imports (shop_id, file_hash, state, total_rows, valid_rows, issued_rows, "
    "failed_rows, report, created_by, created_at) "
    "VALUES (:shop, :key, 'validated', 1, 1, 0, 0, '{}', 'staff:seed', :now)",
    "INSERT INTO bulk_import_rows (shop_id, import_id, row_number, shopify_customer_id, amount, "
    "currency, reason, state) SELECT :shop, id, 1, :customer, 100, 'USD', 'seed', 'pending' "
    "FROM bulk_imports WHERE shop_id = :shop",
)
