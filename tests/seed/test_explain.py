"""No hot query scans a ledger table: every GET page and API route, and the storefront look-up,
on a seeded medium shop (1,000 customers, ~60,000 entries), with every statement they send
EXPLAINed.

Each request of bench/_samples.py's table runs through the test client while a
``before_cursor_execute`` listener records the SQL and its parameters. Every read that touches
``ledger_entries``, ``entry_allocations`` or ``credit_lots`` is then EXPLAINed with its
parameters, and no plan may hold a ``Seq Scan`` of those tables. A page that scans them is fast
on a small shop and slow on a large one; this catches it before the bench does.

The plans are the ones PostgreSQL makes for these values (custom plans), a streamed export's as
the cursor it reads through (planned to start at once, ``cursor_tuple_fraction``). A prepared
statement (psycopg prepares a statement on its fifth use) switches to a generic plan only when
that plan is estimated no costlier than the custom ones, so a scan the custom plans avoid stays
avoided.

The liability report's routes are the exception (``READS_MOST_OF_THE_LEDGER``): the first
report in a process sums the shop's whole history once (later ones read only what came since
the remembered closed days), which a sequential scan does as well as any index.

The shop is committed, then VACUUM ANALYZEd (statistics and a visibility map, as autovacuum
leaves a table: without a visibility map an index-only scan is costed as heap reads), and is
erased at the end the way shop/redact erases a shop (the one deletion the ledger allows).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from flask import Flask
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.orm import Session

from bench._samples import (
    SAMPLES,
    Facts,
    create_objects,
    facts_of,
    get_rules,
    missing_samples,
    request_for,
)
from extensions import db
from ledger.privacy import erase_shop
from ledger.seed import TABLES, Plan, seed_large_shop
from models import Shop
from storefront.wiring import EXTENSION_KEY
from tests.conftest import session_token
from tests.proxy.helpers import balance_url

MEDIUM = Plan(customers=1000, entries=60_000)
WATCHED = ("ledger_entries", "entry_allocations", "credit_lots")
_WATCHED = re.compile(r"\b(" + "|".join(WATCHED) + r")\b")
_READ = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)
_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
STAFF = "8410000077"
# Routes whose reads need most of the shop's entries by design: a process's first liability
# report sums the shop's whole history into its memory of closed days (ledger/reports.py), so
# PostgreSQL rightly picks a sequential scan, and no index can make such a read cheap
# (bench/pages.py times the warm reports, which read only what came since).
READS_MOST_OF_THE_LEDGER = {"/api/liability", "/api/liability.csv", "/app/liability"}


@dataclass(frozen=True)
class Medium:
    shop_id: int
    domain: str


@pytest.fixture(scope="module")
def medium(engine: Engine) -> Iterator[Medium]:
    """The medium shop: seeded (committed), vacuumed and analyzed; erased afterwards."""
    now = datetime.now(UTC)
    with Session(engine, expire_on_commit=False) as session:
        shop = Shop(
            domain=f"explain-{uuid.uuid4().hex[:10]}.myshopify.com",
            name="Medium shop",
            currency="USD",
            timezone="UTC",
            installed_at=now,
            created_at=now,
            access_token_encrypted="not-used: no call reaches Shopify",
            native_sync=False,
        )
        session.add(shop)
        session.commit()
        try:
            seed_large_shop(session, shop.id, MEDIUM, now=now)
            _vacuum(engine)
            yield Medium(shop.id, shop.domain)
        finally:
            session.rollback()
            shop.uninstalled_at = datetime.now(UTC)
            erase_shop(session, shop, None, datetime.now(UTC), actor="test:explain")


def _vacuum(engine: Engine) -> None:
    """VACUUM ANALYZE until the visibility map covers the ledger (an autovacuum ANALYZE that
    started during the seed holds back the first VACUUM's horizon for its last chunks).

    INDEX_CLEANUP ON: rows earlier tests wrote and rolled back leave dead line pointers on a
    few pages, and by default (PostgreSQL 14+) VACUUM skips the index pass when under 2% of
    pages have them, which leaves those pages not all-visible."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for _attempt in range(10):
            for table in TABLES:
                conn.execute(text(f"VACUUM (ANALYZE, INDEX_CLEANUP ON) {table}"))
            pages, visible = conn.execute(_VISIBLE).one()
            if visible >= pages:
                return
            time.sleep(0.5)
        holders = conn.execute(_SNAPSHOT_HOLDERS).all()
    pytest.fail(
        f"VACUUM left {pages - visible} of {pages} ledger pages not all-visible: a transaction"
        f" holds an old snapshot, so plans here would not be production's: {holders}"
    )


_VISIBLE = text("SELECT relpages, relallvisible FROM pg_class WHERE relname = 'ledger_entries'")
_SNAPSHOT_HOLDERS = text(
    "SELECT pid, backend_type, state, left(query, 100) FROM pg_stat_activity"
    " WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()"
)


@pytest.fixture(scope="session")
def close_storefront(app: Flask) -> Iterator[None]:
    """The storefront's Redis sockets and listener closed when the run ends (as tests/proxy
    does; closing twice is harmless)."""
    yield
    app.extensions[EXTENSION_KEY].close()


def test_every_get_route_has_samples(app):
    """A new page or API route needs a line in bench/_samples.py's SAMPLES: it is then timed
    by bench/pages.py and its queries are checked here."""
    missing = missing_samples(app)

    assert missing == [], f"GET routes without samples in bench/_samples.py SAMPLES: {missing}"


@dataclass
class Sent:
    route: str
    statement: str
    parameters: Any
    server_side: bool  # read through a cursor (yield_per): planned for its first rows


def test_no_hot_query_scans_a_ledger_table(app, client, medium, close_storefront):
    token = session_token(medium.domain, sub=STAFF, lifetime=timedelta(hours=1))
    facts = _facts(client, medium, token)
    sent: list[Sent] = []
    route = [""]

    def record(_conn, cursor, statement, parameters, _context, executemany):
        if route[0] and not executemany:
            server_side = isinstance(cursor, psycopg.ServerCursor)
            sent.append(Sent(route[0], statement, parameters, server_side))

    connection = db.session.connection()  # the test's: every request runs on it
    event.listen(connection, "before_cursor_execute", record)
    try:
        answers = _every_route(app, client, facts, token, route)
        answers += _storefront_lookups(client, facts, route)
    finally:
        event.remove(connection, "before_cursor_execute", record)

    assert [answer for answer in answers if answer[1] >= 400] == [], "a sample request failed"
    reads = _watched_reads(sent)
    assert len({read.route for read in reads}) >= 5  # the routes really read the ledger tables
    scans = [
        (read.route, table, read.statement)
        for read in reads
        for table in _seq_scanned(_plan(connection, read))
    ]
    assert scans == [], "sequential scans of ledger tables:\n" + "\n\n".join(
        f"{route} scans {table}:\n{statement}" for route, table, statement in scans
    )


# -- requests -----------------------------------------------------------------------------------


def _facts(client, medium: Medium, token: str) -> Facts:
    def post_csv(path: str, data: bytes) -> Any:
        response = client.post(path, data=data, content_type="text/csv", headers=_auth(token))
        assert response.status_code in (200, 201), response.get_data(as_text=True)
        return response.get_json()

    facts = facts_of(db.session, medium.shop_id, medium.domain)
    return create_objects(db.session, facts, post_csv, actor=f"staff:{STAFF}")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _every_route(app, client, facts, token: str, route: list[str]) -> list[tuple[str, int]]:
    def fetch(path: str, params: dict[str, str]) -> Any:
        url, headers = request_for((path, params), token, facts.domain)
        response = client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.get_data(as_text=True)[:500])
        return response.get_json()

    answers = []
    for rule in get_rules(app):
        route[0] = f"GET {rule} (a page-1 request for a cursor)"
        for sample in SAMPLES[rule](facts, fetch):
            url, headers = request_for(sample, token, facts.domain)
            route[0] = f"GET {rule} ({sample[0]} {sample[1]})"
            if rule in READS_MOST_OF_THE_LEDGER:
                route[0] = ""  # not checked: see READS_MOST_OF_THE_LEDGER
            response = client.get(url, headers=headers)
            response.get_data()  # a streamed export read to its end, as a browser would
            response.close()
            answers.append((url, response.status_code))
    return answers


def _storefront_lookups(client, facts, route: list[str]) -> list[tuple[str, int]]:
    answers = []
    for customer in (facts.long_customer, facts.multi_currency_customer, *facts.customers[:5]):
        route[0] = f"GET /proxy/balance (customer {customer})"
        response = client.get(balance_url(facts.domain, customer, timestamp=int(time.time())))
        answers.append((route[0], response.status_code))
    return answers


# -- plans --------------------------------------------------------------------------------------


def _watched_reads(sent: list[Sent]) -> list[Sent]:
    """Each distinct read of a watched table, once (with the first route that sent it)."""
    seen: set[str] = set()
    reads = []
    for item in sent:
        statement = item.statement
        if not _READ.match(statement) or _WRITES.search(statement):
            continue
        if not _WATCHED.search(statement):
            continue
        key = f"{statement}\x00{sorted((item.parameters or {}).items())}"
        if key not in seen:
            seen.add(key)
            reads.append(item)
    return reads


def _plan(conn: Connection, read: Sent) -> Any:
    """The statement's plan for its own parameters, as it was run: a streamed read is planned
    as the cursor it was (for its first rows, ``cursor_tuple_fraction``). In a savepoint: a
    failure must not end the test's transaction."""
    statement = read.statement
    if read.server_side:
        statement = f"DECLARE explained NO SCROLL CURSOR FOR {statement}"
    with conn.begin_nested():
        return conn.exec_driver_sql(
            f"EXPLAIN (FORMAT JSON) {statement}", read.parameters or {}
        ).scalar_one()


def _seq_scanned(plan: Any) -> list[str]:
    """The watched tables a plan reads by a sequential scan."""
    found = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in WATCHED:
            found.append(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    for item in plan:
        walk(item["Plan"])
    return found
