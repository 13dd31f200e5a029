"""Browser tests: the real app served over HTTP, driven by Debian's headless Chromium.

One scratch PostgreSQL database (migrated from nothing, committed data, dropped at the end);
per module, one threaded HTTP server on a free loopback port, one real RQ worker process on a
Redis database of our own (the environment's Redis, db 11) and one browser: the tests take
seconds. Each test gets a fresh browser context (no state between tests) in which Shopify's
CDN is unreachable at once: the pages must work without App Bridge and Polaris, and the tests
must not wait for the network's time-outs.

Chromium is Debian's (/usr/bin/chromium, installed by scripts/with-services.sh); Playwright
never downloads one. Without it the tests fail, saying so: CI must not pass by skipping them.

Screenshots go to tests/artifacts/browser/ (git-ignored) on every run, and also to
docs/screenshots/ when CREDITCRAFT_UPDATE_SCREENSHOTS=1 (the set the README shows).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from flask_migrate import upgrade
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
from redis import Redis
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from cli import DEMO_SHOP
from config import Settings
from ledger import findings, operations
from ledger.book import Actor
from ledger.kinds import LotSource
from ledger.money import Money
from models import CreditAccount, Customer, Shop
from tests.conftest import session_token
from tests.faults.conftest import start_worker, stop, worker_env
from tests.pages.conftest import another_app

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = str(ROOT / "migrations")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
UPDATE_SCREENSHOTS = os.environ.get("CREDITCRAFT_UPDATE_SCREENSHOTS") == "1"
SCREENSHOT_BYTES = 300_000  # the README's set stays small

# The Redis database the browser tests' worker works (the suite's other tests use db 0, and
# the schedule tests db 13): emptied before and after, so no other test's job runs here.
REDIS_DB = 11
STAFF_SUB = "8410000321"
STAFF_ACTOR = f"staff:{STAFF_SUB}"
SEED_STAFF = "staff:8410000107"  # another staff member, who issued the seeded history
TOKEN_LIFETIME = timedelta(minutes=30)
# Jobs that would call Shopify reach a closed port, never the internet (the demo shop keeps
# its credit in CreditCraft only, so none should).
NO_SHOPIFY = "http://127.0.0.1:9"


# Playwright's assertions retry this long (its default, 5 s, is short for a loaded CI machine).
expect.set_options(timeout=15_000)


# -- the browser -----------------------------------------------------------------------------


# Per module, not per run: one Playwright driver may run in a process at a time, and other
# modules (tests/pages/test_form_script.py) start their own.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`; "
            "scripts/with-services.sh, which `make test` runs, installs it)",
            pytrace=False,
        )
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless; Playwright gives it a fresh temporary profile
    (``--user-data-dir``) and removes it on close."""
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
    yield launched
    launched.close()


@dataclass
class Tab:
    """A page of a fresh browser context, with what went wrong in its JavaScript."""

    page: Page
    errors: list[str]


@contextlib.contextmanager
def open_tab(browser: Browser) -> Iterator[Tab]:
    """A fresh context (1280 wide) whose requests to Shopify's CDN fail at once; confirm()
    dialogs are accepted (the merchant says yes); uncaught script errors are collected."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.route("https://cdn.shopify.com/**", lambda route: route.abort())
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        yield Tab(page, errors)
    finally:
        context.close()


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    with open_tab(browser) as opened:
        yield opened
    assert opened.errors == [], "uncaught errors in the page's scripts"


def screenshot(page: Page, name: str) -> Path:
    """The whole page as tests/artifacts/browser/NAME.png, and as docs/screenshots/NAME.png
    when CREDITCRAFT_UPDATE_SCREENSHOTS=1."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True, type="png")
    if UPDATE_SCREENSHOTS:
        size = path.stat().st_size
        assert size <= SCREENSHOT_BYTES, f"{name}.png is {size:,} bytes"
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (DOCS_SCREENSHOTS / path.name).write_bytes(path.read_bytes())
    return path


# -- a scratch database and Redis --------------------------------------------------------------


@pytest.fixture(scope="session")
def scratch_database(settings: Settings, on_postgresql: bool) -> Iterator[str]:
    """A database of the browser tests' own, migrated from nothing; dropped at the end. The
    server and the worker commit to it for real (their own connections)."""
    if not on_postgresql:
        pytest.skip("the browser tests run on PostgreSQL")
    admin_url = os.environ.get("PGSUPERUSER_URL") or settings.database_url
    name = f"browser_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        with (
            another_app(settings, database_url=url, redis_url=None) as migrator,
            migrator.app_context(),
        ):
            upgrade(directory=MIGRATIONS)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def scratch_engine(scratch_database: str) -> Iterator[Engine]:
    engine = create_engine(scratch_database, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def scratch_redis(settings: Settings) -> Iterator[str | None]:
    """Database 11 of the environment's Redis, emptied before and after; None without
    REDIS_URL (then jobs run inline, in the request that starts them)."""
    if settings.redis_url is None:
        yield None
        return
    url = settings.redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    with Redis.from_url(url) as connection:
        connection.flushdb()
        try:
            yield url
        finally:
            connection.flushdb()


# -- the served app, its worker and the demo shop ------------------------------------------------


@dataclass(frozen=True)
class Served:
    """The app at ``base`` (http://127.0.0.1:PORT), and the way into its pages."""

    base: str
    app: Flask
    engine: Engine
    worker_log: Path | None  # None: no Redis, jobs run inline
    shop_domain: str = DEMO_SHOP

    def url(self, path: str, *, sub: str = STAFF_SUB, **params: str) -> str:
        """``path`` as Shopify admin opens it: the shop and a fresh session token of ``sub``."""
        token = session_token(self.shop_domain, sub=sub, lifetime=TOKEN_LIFETIME)
        query = {"shop": self.shop_domain, "id_token": token, **params}
        return f"{self.base}{path}?{urlencode(query)}"

    def worker_output(self) -> str:
        """The worker's log (its last lines), to explain a job that did not finish."""
        if self.worker_log is None:
            return "(no worker: REDIS_URL is not set, jobs run inline)"
        return self.worker_log.read_text(errors="replace")[-4000:]

    def shop_id(self) -> int:
        with Session(self.engine) as session:
            return session.execute(
                select(Shop.id).where(Shop.domain == self.shop_domain)
            ).scalar_one()


class _Handler(WSGIRequestHandler):
    # One request per connection: a request's thread ends with its answer, so stopping the
    # server can wait for every request in flight (none is left holding a connection to a
    # database about to be dropped).
    protocol_version = "HTTP/1.0"

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """Not a line per request in the test output (a page's fetches are many)."""


@contextlib.contextmanager
def serving(app: Flask) -> Iterator[str]:
    """``app`` behind werkzeug's threaded server on a free loopback port, in a thread."""
    server: BaseWSGIServer = make_server(
        "127.0.0.1", 0, app, threaded=True, request_handler=_Handler
    )
    server.daemon_threads = False  # request threads are joined by server_close()
    server.block_on_close = True
    thread = threading.Thread(target=server.serve_forever, name="browser-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")  # its worker and server stop with the module's tests
def served(
    settings: Settings,
    scratch_database: str,
    scratch_redis: str | None,
    scratch_engine: Engine,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """The app (test mode) on the scratch database, a real worker beside it, the demo shop
    seeded with a month of history."""
    worker, log = None, None
    if scratch_redis is not None:
        log = tmp_path_factory.mktemp("browser") / "worker.log"
        env = worker_env(scratch_database, scratch_redis, NO_SHOPIFY)
        worker = start_worker(env, log, burst=False)
    try:
        with (
            another_app(settings, database_url=scratch_database, redis_url=scratch_redis) as app,
            serving(app) as base,
        ):
            seed_demo_shop(app, scratch_engine)
            yield Served(base, app, scratch_engine, log)
    finally:
        if worker is not None:
            stop(worker)


def seed_demo_shop(app: Flask, engine: Engine) -> None:
    """What `flask demo seed` makes (its own command), then a month of a shop's life: more
    customers, credit issued and spent over the last 30 days, lapsed lots expired, a
    reconciliation run and two findings it might have left."""
    cli = app.test_cli_runner()
    flask_command(cli, "demo", "seed")
    with Session(engine) as session:
        shop = session.execute(select(Shop).where(Shop.domain == DEMO_SHOP)).scalar_one()
        shop_id = shop.id
        shop.name = "Northwind Outfitters"
        session.commit()
        now = datetime.now(UTC).replace(microsecond=0)
        _more_customers(session, shop_id, now - timedelta(days=40))
        lapsed = _a_month_of_history(session, shop_id, now)
    for due in lapsed:  # the nightly expiry, on the nights they lapsed
        expired = flask_command(cli, "credits", "expire", "--shop", DEMO_SHOP, "--now", due)
        assert expired.startswith("expired 1 lots"), expired
    flask_command(cli, "credits", "reconcile", "--shop", DEMO_SHOP)  # a run, nothing found
    with Session(engine) as session:
        _findings(session, shop_id, now)


def flask_command(cli: FlaskCliRunner, *args: str) -> str:
    done = cli.invoke(args=list(args))
    assert done.exit_code == 0, done.output
    return str(done.output)


# Extra customers of the demo shop: (Shopify id, first name, last name). Fixed, so the
# screenshots show the same shop every time.
MORE_CUSTOMERS = [
    (7408348300 + index, first, last)
    for index, (first, last) in enumerate(
        [
            ("Margaret", "Hamilton"),
            ("Donald", "Knuth"),
            ("Frances", "Allen"),
            ("John", "Backus"),
            ("Radia", "Perlman"),
            ("Dennis", "Ritchie"),
            ("Katherine", "Johnson"),
            ("Niklaus", "Wirth"),
            ("Adele", "Goldberg"),
            ("Tony", "Hoare"),
            ("Shafi", "Goldwasser"),
            ("Leslie", "Lamport"),
            ("Mary", "Kenneth Keller"),
            ("Butler", "Lampson"),
            ("Jean", "Sammet"),
            ("Robin", "Milner"),
            ("Sophie", "Wilson"),
            ("Guido", "van Rossum"),
        ]
    )
]


def _more_customers(session: Session, shop_id: int, since: datetime) -> None:
    for shopify_id, first, last in MORE_CUSTOMERS:
        email = f"{first.lower()}.{last.split()[-1].lower()}@example.com"
        session.add(
            Customer(
                shop_id=shop_id,
                shopify_customer_id=shopify_id,
                email=email,
                first_name=first,
                last_name=last,
                created_at=since,
                updated_at=since,
            )
        )
    session.commit()


def _a_month_of_history(session: Session, shop_id: int, now: datetime) -> list[str]:
    """Goodwill and cashback issued over the last 30 days, some spent at checkout, a
    correction, and lots that lapsed: each account's entries in time order, as the ledger
    writes them. Returns when the lapsed lots are due to expire (ISO, in order)."""
    lapsed: list[str] = []
    pick = random.Random(4)  # noqa: S311 - fixed demo data, not secrets
    for index, (customer, _, _) in enumerate(MORE_CUSTOMERS):
        day = 29 - index
        at = now - timedelta(days=day, hours=pick.randint(1, 9))
        by = functools.partial(_seed_actor, shop_id, customer)
        amount = Money(pick.choice([1000, 1500, 2000, 2500, 5000]), "USD")
        source = LotSource.GOODWILL if index % 3 else LotSource.CASHBACK
        expires = now + timedelta(days=pick.randint(5, 120))
        if index % 7 == 3:
            expires = at + timedelta(days=day // 2 + 1)  # lapsed before today
            lapsed.append((expires + timedelta(hours=1)).isoformat())
        reason = "sorry for the late parcel" if source is LotSource.GOODWILL else "cashback"
        operations.issue(
            session,
            by("issue", at, reason),
            customer=customer,
            amount=amount,
            expires_at=expires,
            source=source,
        )
        if index % 2 == 0 and day > 2:
            spent = Money(min(amount.minor, pick.choice([500, 800, 1200])), "USD")
            operations.redeem(
                session,
                by("order", at + timedelta(days=2), "order", "webhook:orders/paid"),
                customer=customer,
                amount=spent,
                shopify_order_id=5_100_000_000 + index,
            )
        if index == 5:
            operations.adjust(
                session,
                by("fix", at + timedelta(days=1), "duplicate goodwill"),
                customer=customer,
                amount=Money(-500, "USD"),
            )
    session.commit()
    return sorted(lapsed)


def _seed_actor(
    shop_id: int, customer: int, step: str, when: datetime, reason: str, who: str = SEED_STAFF
) -> Actor:
    return Actor(shop_id, when, who, reason, idempotency_key=f"browser:{customer}:{step}")


def _findings(session: Session, shop_id: int, now: datetime) -> None:
    """Two open findings, as a reconciliation against Shopify might leave them: an order
    whose store credit was not recorded (a job can repair it) and a balance that differs."""
    order_customer, balance_customer = MORE_CUSTOMERS[1][0], MORE_CUSTOMERS[3][0]
    account_id = session.execute(
        select(CreditAccount.id)
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(Customer.shop_id == shop_id, Customer.shopify_customer_id == balance_customer)
    ).scalar_one()
    for finding in (
        findings.Finding(
            kind=findings.NATIVE_ORDER_UNRECORDED,
            key="order:5100000042",
            shopify_customer_id=order_customer,
            details={"order_id": "5100000042"},
        ),
        findings.Finding(
            kind=findings.NATIVE_BALANCE_MISMATCH,
            key=f"balance:{account_id}",
            account_id=account_id,
            shopify_customer_id=balance_customer,
            currency="USD",
            expected=2500,
            actual=2000,
            details={"count": 1},
        ),
    ):
        findings.record_finding(session, shop_id, finding, now - timedelta(hours=3))
    session.commit()
