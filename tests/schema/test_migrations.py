"""The migrations: one head, a clean round trip on an empty database, no drift from the models."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from app import create_app
from config import Settings
from models import Base

MIGRATIONS = str(Path(__file__).resolve().parents[2] / "migrations")
TABLES = {
    "shops",
    "customers",
    "credit_accounts",
    "credit_lots",
    "ledger_entries",
    "entry_allocations",
    "idempotency_keys",
    "audit_log",
}


@pytest.mark.smoke
def test_there_is_exactly_one_head():
    assert len(ScriptDirectory(MIGRATIONS).get_heads()) == 1


@pytest.fixture
def empty_database_url(settings: Settings, on_postgresql: bool, tmp_path: Path) -> Iterator[str]:
    """A brand-new, empty database of the kind under test."""
    if not on_postgresql:
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    name = f"migrations_{uuid.uuid4().hex[:10]}"
    admin = create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(settings.database_url).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.smoke
def test_upgrade_downgrade_upgrade_on_an_empty_database(settings, empty_database_url):
    app = create_app(dataclasses.replace(settings, database_url=empty_database_url))
    with app.app_context():
        from extensions import db

        upgrade(directory=MIGRATIONS)
        assert set(inspect(db.engine).get_table_names()) >= TABLES
        downgrade(directory=MIGRATIONS, revision="base")
        assert not TABLES & set(inspect(db.engine).get_table_names())
        upgrade(directory=MIGRATIONS)
        assert set(inspect(db.engine).get_table_names()) >= TABLES
        db.engine.dispose()


def test_the_migrated_schema_matches_the_models(engine):
    """Autogenerate against the migrated database finds nothing: models and migrations agree."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
