"""The application factory. It only wires: no I/O happens here or at import time.

Run it with ``flask --app app:create_app`` or ``gunicorn 'app:create_app()'``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from flask import Flask
from sqlalchemy import event

from config import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app from ``settings`` (default: the environment; fails fast if incomplete)."""
    from blueprints import register_blueprints
    from blueprints.errors import register_error_handlers
    from blueprints.settings import EXTENSION_KEY
    from cli import register_commands
    from extensions import db, migrate
    from observability.web import init_observability
    from storefront.wiring import init_storefront
    from tenancy import init_app as init_tenancy

    settings = settings or load_settings()
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=settings.engine_options(),
    )
    app.extensions[EXTENSION_KEY] = settings
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order
    db.init_app(app)
    migrate.init_app(app, db, directory="migrations", render_as_batch=True)
    if settings.database_url.startswith("sqlite"):
        with app.app_context():  # creating the engine opens no connection
            event.listen(db.engine, "connect", _sqlite_pragmas)
    init_tenancy(app)  # row-level security: each transaction is told its shop
    init_observability(app, settings)  # logs, metrics, slow queries; its hooks run first
    init_storefront(app, settings)  # before the blueprints: the proxy routes look it up
    register_blueprints(app)
    register_error_handlers(app)
    register_commands(app)
    return app


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """SQLite ignores foreign keys unless asked, and WAL lets the dev server read while writing."""
    if isinstance(connection, sqlite3.Connection):
        cursor = connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA busy_timeout = 5000")
        cursor.close()
