"""Streamed CSV downloads give their database connection back when they end, however they end:
read to the end, or closed after one chunk or none (a WSGI server closes the body when the
client aborts the download), with no help from the garbage collector; and they hold the
shop's rows under row-level security, though Flask has ended the request before the body is
read (blueprints/downloads.py).

The downloads run in a production-like app: its own engine, connected as a LOGIN role of the
web's runtime group (row-level security applies), on the scratch database of the row-level
security tests (tests/tenancy/conftest.py), with a small pool. The export generators
themselves are checked for their server-side cursors on the test's own connection.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from werkzeug.test import EnvironBuilder

from config import Settings
from ledger import audit, operations
from ledger.book import Actor
from ledger.export import LedgerRange, ledger_csv_rows
from ledger.money import Money
from storefront.wiring import EXTENSION_KEY as STOREFRONT_KEY
from tests.conftest import auth
from tests.factories import ShopFactory
from tests.tenancy.conftest import (  # the scratch database and its superuser engine
    RlsDatabase,
    SeededShop,
    rls_database,  # noqa: F401
    seed_shop,
    superuser,  # noqa: F401
)

POOL_SIZE, MAX_OVERFLOW = 2, 1
# More downloads of each kind than the pool has connections: one leaked each would exhaust it.
DOWNLOADS = POOL_SIZE + MAX_OVERFLOW + 1


@dataclasses.dataclass(frozen=True)
class Seeded:
    shop: SeededShop
    bulk_import_id: int


@pytest.fixture(scope="module")
def seeded(superuser: Engine) -> Seeded:  # noqa: F811
    """A shop with entries, audit rows and a bulk import, committed."""
    with Session(superuser) as session:
        shop = seed_shop(session, "downloads")
        bulk_import_id = session.execute(
            text("SELECT id FROM bulk_imports WHERE shop_id = :shop"), {"shop": shop.id}
        ).scalar_one()
    return Seeded(shop, bulk_import_id)


@pytest.fixture(scope="module")
def web(settings: Settings, rls_database: RlsDatabase) -> Iterator[Flask]:  # noqa: F811
    """The web as production runs it (its role, its own engine), on a pool of three: a second
    waited for a connection is a failed request, not a slow test."""
    from app import create_app
    from extensions import db

    app = create_app(
        dataclasses.replace(
            settings,
            database_url=rls_database.app_url,
            redis_url=None,
            db_pool_size=POOL_SIZE,
            db_max_overflow=MAX_OVERFLOW,
            db_pool_timeout=1,
        )
    )
    try:
        yield app
    finally:
        app.extensions[STOREFRONT_KEY].close()
        with app.app_context():
            db.engine.dispose()


def downloads(seeded: Seeded) -> dict[str, str]:
    """Each CSV download, and text it holds when the shop's rows are seen."""
    shop = seeded.shop
    return {
        "/api/ledger.csv": str(shop.customer),
        "/api/audit-log.csv": "ledger.export",  # the ledger.csv downloads before it
        f"/api/bulk-imports/{seeded.bulk_import_id}/result": str(shop.customer),
        "/api/liability.csv": "USD,",
    }


def download(app: Flask, path: str, domain: str, chunks: int | None) -> tuple[str, bytes]:
    """GET ``path`` as a WSGI server would, read ``chunks`` of the body (None: all), close it."""
    environ = EnvironBuilder(path=path, headers=auth(domain)).get_environ()
    started: list[str] = []
    body = app.wsgi_app(environ, lambda status, headers, exc_info=None: started.append(status))
    read = b""
    try:
        for number, chunk in enumerate(body):
            if chunks is not None and number >= chunks:
                break
            read += chunk
    finally:
        body.close()  # type: ignore[attr-defined]
    return started[0], read


@contextmanager
def garbage_collector_off() -> Iterator[None]:
    """What is released must be released by the app, not when a collection happens to run."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def idle_in_transaction(superuser: Engine, rls_database: RlsDatabase) -> list[str]:  # noqa: F811
    """The queries of the web role's connections left in an open transaction."""
    role = make_url(rls_database.app_url).username
    with superuser.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT query FROM pg_stat_activity WHERE datname = :db AND usename = :role "
                "AND state LIKE 'idle in transaction%'"
            ),
            {"db": rls_database.name, "role": role},
        )
        return list(rows.scalars())


def test_aborted_downloads_give_their_connection_back_and_show_the_shops_rows(
    web: Flask,
    seeded: Seeded,
    superuser: Engine,  # noqa: F811
    rls_database: RlsDatabase,  # noqa: F811
) -> None:
    from extensions import db

    with web.app_context():
        pool = db.engine.pool
    domain = seeded.shop.domain
    baseline = pool.checkedout()
    with garbage_collector_off():
        for path, shop_text in downloads(seeded).items():
            for chunks in (0, 1, None, 1):
                for _ in range(DOWNLOADS if chunks == 1 else 1):
                    status, read = download(web, path, domain, chunks)
                    assert status == "200 OK", (path, read)
                    if chunks is None:
                        assert shop_text in read.decode(), (path, read)
        assert pool.checkedout() == baseline
        assert idle_in_transaction(superuser, rls_database) == []
        status, read = download(web, "/api/ledger.csv", domain, None)
    assert status == "200 OK"
    assert str(seeded.shop.customer) in read.decode()
    assert pool.checkedout() == baseline


# -- the generators' server-side cursors -------------------------------------------------------


def open_cursors(session: Session) -> int:
    count: int = session.execute(text("SELECT count(*) FROM pg_cursors")).scalar_one()
    return count


def test_the_export_generators_close_their_cursor_when_closed_early(session: Session) -> None:
    now = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    shop = ShopFactory()
    for number in range(3):
        by = Actor(shop.id, now, "staff:1", "goodwill", idempotency_key=f"abort-{number}")
        operations.issue(session, by, customer=7_300_001, amount=Money(100, "USD"))
    session.commit()
    exports = {
        "ledger": ledger_csv_rows(session, shop.id, LedgerRange(), batch=1),
        "audit log": audit.audit_csv_rows(session, shop.id, audit.AuditFilter(), batch=1),
    }
    for name, rows in exports.items():
        first = next(rows)
        assert len(first.splitlines()) == 2, (name, first)  # the header and one row
        assert open_cursors(session) == 1, name  # the rest is still on the server
        rows.close()  # what a download cut short does
        assert open_cursors(session) == 0, name
