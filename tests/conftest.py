"""Fixtures: the Alembic-migrated schema applied once, each test in a transaction rolled back.

``make test`` starts a throwaway PostgreSQL and Redis and exports TEST_DATABASE_URL and
REDIS_URL. ``pytest --database sqlite -m smoke`` runs the smoke subset on a fresh SQLite
file instead (the embedded default); there, tests are isolated by giving each its own shop.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from config import DEVELOPMENT_FERNET_KEY, Settings
from tests import factories

pytest_plugins = ["tests.fake_shopify.fixtures"]

API_KEY = "test-api-key-creditcraft"
API_SECRET = "test-api-secret-creditcraft-0123456789abcdef"  # ≥ 32 bytes: PyJWT warns below


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=("postgresql", "sqlite"),
        default="postgresql",
        help="postgresql (TEST_DATABASE_URL, the default) or sqlite (the smoke subset)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--database") == "sqlite":
        skip = pytest.mark.skip(reason="PostgreSQL only (not in the SQLite smoke subset)")
        for item in items:
            if "smoke" not in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def on_postgresql(pytestconfig: pytest.Config) -> bool:
    return pytestconfig.getoption("--database") == "postgresql"


@pytest.fixture(scope="session")
def database_url(on_postgresql: bool, tmp_path_factory: pytest.TempPathFactory) -> str:
    if not on_postgresql:
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'smoke.sqlite3'}"
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.exit("TEST_DATABASE_URL is not set: run the suite with `make test`", returncode=2)
    return url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        env="test",
        secret_key="test-secret-key",
        shopify_api_key=API_KEY,
        shopify_api_secret=API_SECRET,
        token_encryption_keys=(DEVELOPMENT_FERNET_KEY,),
        database_url=database_url,
        redis_url=os.environ.get("REDIS_URL"),
    )


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[Flask]:
    """The app, once per run, with the schema migrated once by Alembic (as in production)."""
    from flask_migrate import upgrade

    from app import create_app
    from extensions import db

    flask_app = create_app(settings)
    with flask_app.app_context():
        upgrade(directory=str(Path(__file__).parent.parent / "migrations"))
    yield flask_app
    with flask_app.app_context():
        db.engine.dispose()  # close pooled connections before the interpreter collects them


@pytest.fixture(scope="session")
def engine(app: Flask) -> Engine:
    from extensions import db

    with app.app_context():
        return db.engine


@pytest.fixture
def connection(engine: Engine, on_postgresql: bool) -> Iterator[Connection | Engine]:
    """A connection inside a transaction rolled back after the test (PostgreSQL)."""
    if not on_postgresql:
        yield engine
        return
    conn = engine.connect()
    outer = conn.begin()
    try:
        yield conn
    finally:
        outer.rollback()
        conn.close()


@pytest.fixture
def session(connection: Connection | Engine) -> Iterator[Session]:
    """A plain SQLAlchemy session; its commits only release savepoints of the test's transaction."""
    db_session = Session(bind=connection, join_transaction_mode="create_savepoint")
    factories.bind(db_session)
    try:
        yield db_session
    finally:
        db_session.close()


@pytest.fixture
def app_context(app: Flask, connection: Connection | Engine) -> Iterator[Flask]:
    """The app's db.session bound to the test's connection, so requests see test data."""
    from extensions import db

    with app.app_context():
        engines = db.engines
        original = engines[None]
        engines[None] = connection  # type: ignore[assignment]
        db.session.remove()
        db.session.session_factory.configure(join_transaction_mode="create_savepoint")
        factories.bind(db.session)
        try:
            yield app
        finally:
            db.session.remove()
            engines[None] = original


@pytest.fixture
def client(app_context: Flask) -> FlaskClient:
    return app_context.test_client()


@pytest.fixture
def now() -> datetime:
    return datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@contextmanager
def settings_changed(app: Flask, **changes: object) -> Iterator[None]:
    """Run with the app's Settings changed (e.g. env="production"), restored afterwards."""
    from blueprints.settings import EXTENSION_KEY

    original = app.extensions[EXTENSION_KEY]
    app.extensions[EXTENSION_KEY] = dataclasses.replace(original, **changes)
    try:
        yield
    finally:
        app.extensions[EXTENSION_KEY] = original


def session_token(
    shop_domain: str,
    *,
    sub: str = "8410000001",
    secret: str = API_SECRET,
    audience: str = API_KEY,
    issued: datetime | None = None,
    lifetime: timedelta = timedelta(minutes=1),
    **overrides: object,
) -> str:
    """A session token as App Bridge would mint it for ``shop_domain``."""
    at = issued or datetime.now(UTC)
    claims: dict[str, object] = {
        "iss": f"https://{shop_domain}/admin",
        "dest": f"https://{shop_domain}",
        "aud": audience,
        "sub": sub,
        "exp": int((at + lifetime).timestamp()),
        "nbf": int(at.timestamp()),
        "iat": int(at.timestamp()),
        "jti": str(uuid.uuid4()),
        "sid": "session-id",
    }
    claims.update(overrides)
    return jwt.encode(claims, secret, algorithm="HS256")


def auth(shop_domain: str, **kwargs: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {session_token(shop_domain, **kwargs)}"}  # type: ignore[arg-type]
