"""Soak: a burst of signed webhook deliveries, duplicated and forged, through the whole pipeline.

Run it with ``make bench B=webhook_burst`` (throwaway PostgreSQL and Redis; DATABASE_URL and
REDIS_URL set). Not part of ``make test``. In one run it:

1. migrates, starts the fake Shopify in this process (tests/fake_shopify) and installs a shop
   from it by token exchange; BENCH_CUSTOMERS customers hold 1,000.00 of credit each, in the
   ledger and natively;
2. builds BENCH_DELIVERIES requests: 1% forged (signed with another secret), 30% duplicates
   (Shopify's retries: same webhook id, same body; a third of them sent right beside the
   original, so both are in flight at once), the rest unique deliveries with topics mixed —
   customers/update on known customers, orders/paid with store credit (orders placed in the
   fake first, so the job's look-up finds them) and without, app/scopes_update;
3. serves the app with production gunicorn (gunicorn.conf.py) and starts two ``flask worker``
   processes, posts everything from BENCH_THREADS threads, then waits for the queue to drain;
4. prints delivered / recorded / processed / applied-twice / forged-accepted counts, the
   send rate and the time to drain, and exits 1 unless 0 lost, 0 applied twice and 0 forged
   accepted.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Run as a script, sys.path[0] is bench/: keep it from shadowing the project's packages.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from config import DEFAULT_SCOPES, DEVELOPMENT_FERNET_KEY, Settings  # noqa: E402
from models import WebhookEvent  # noqa: E402
from tests.fake_shopify import FakeShopify  # noqa: E402

DELIVERIES = int(os.environ.get("BENCH_DELIVERIES", "10000"))
CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "200"))
THREADS = int(os.environ.get("BENCH_THREADS", "16"))
DRAIN_LIMIT = float(os.environ.get("BENCH_DRAIN_LIMIT", "900"))
DUPLICATE_SHARE, FORGED_SHARE = 0.30, 0.01
CUSTOMER_BASE, ORDER_BASE = 8_100_000_000, 6_200_000_000_000

API_KEY = "bench-api-key"
API_SECRET = "bench-api-secret-0123456789abcdef0123456789"
FORGER_SECRET = "not-the-app-secret-0123456789abcdef012345"
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"


@dataclass
class Request:
    webhook_id: str
    topic: str
    body: bytes
    headers: dict[str, str]
    forged: bool = False
    order_credit: int = 0  # minor units of store credit the order spent (orders/paid)
    order_id: int | None = None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- set-up --------------------------------------------------------------------------------------


def settings(url: str, fake: FakeShopify) -> Settings:
    return Settings(
        env="test",
        secret_key="bench-secret-key",
        shopify_api_key=API_KEY,
        shopify_api_secret=API_SECRET,
        token_encryption_keys=(DEVELOPMENT_FERNET_KEY,),
        database_url=url,
        shopify_admin_origin=fake.origin_template,
    )


def prepare(url: str, fake: FakeShopify) -> tuple[int, str]:
    """Migrate, install a shop by token exchange, give every customer 1,000.00 of credit."""
    from flask_migrate import upgrade

    from app import create_app
    from blueprints.settings import current_settings
    from extensions import db
    from ledger import operations
    from ledger.book import Actor
    from ledger.money import Money
    from shop_access import install_with_session_token

    app = create_app(settings(url, fake))
    domain = f"burst-{uuid.uuid4().hex[:10]}.myshopify.com"
    fake.scopes = tuple(DEFAULT_SCOPES.split(","))
    fake_shop = fake.add_shop(domain, restore_rate=1e9, maximum_available=1e9)
    now = datetime.now(UTC)
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        with Session(db.engine) as session:
            shop = install_with_session_token(
                session, current_settings(), domain, fake.session_token(domain), now
            )
            shop_id = int(shop.id)
            for n in range(CUSTOMERS):
                customer = CUSTOMER_BASE + n
                fake_shop.add_customer(customer, email=f"c{n}@example.com")
                fake_shop.credit(customer, "1000.00", "USD")
                by = Actor(shop_id, now, "system:bench", "opening balance", f"burst-open-{n}")
                operations.issue(session, by, customer=customer, amount=Money(100_000, "USD"))
        db.engine.dispose()
    return shop_id, domain


def build(fake: FakeShopify, domain: str, rng: random.Random) -> list[Request]:
    """The requests in sending order: unique deliveries, duplicates beside or after them, and
    forged ones, shuffled together."""
    fake_shop = fake.shop(domain)
    forged = round(DELIVERIES * FORGED_SHARE)
    duplicates = round(DELIVERIES * DUPLICATE_SHARE)
    unique = [
        _delivery(fake, fake_shop, domain, i, rng) for i in range(DELIVERIES - forged - duplicates)
    ]
    sequence: list[Request] = list(unique)
    rng.shuffle(sequence)
    for n in range(forged):
        body = json.dumps(_customer(rng.randrange(CUSTOMERS), n)).encode()
        _, headers = fake.signed_webhook(domain, "customers/update", body, secret=FORGER_SECRET)
        sequence.insert(
            rng.randrange(len(sequence) + 1),
            Request(
                headers["X-Shopify-Webhook-Id"], "customers/update", body, headers, forged=True
            ),
        )
    for n in range(duplicates):
        original = rng.choice(unique)
        at = sequence.index(original)
        # A third right beside the original (in flight together), the rest later on.
        where = at + 1 if n % 3 == 0 else rng.randrange(at + 1, len(sequence) + 1)
        sequence.insert(where, original)
    return sequence


def _customer(n: int, version: int) -> dict[str, Any]:
    return {
        "id": CUSTOMER_BASE + n,
        "email": f"c{n}@example.com",
        "first_name": "Ada",
        "last_name": f"Burst{version}",
        "updated_at": (datetime(2026, 11, 22, tzinfo=UTC) + timedelta(seconds=version)).isoformat(),
    }


def _delivery(
    fake: FakeShopify, fake_shop: Any, domain: str, i: int, rng: random.Random
) -> Request:
    roll = rng.random()
    order_id, credit = None, 0
    if roll < 0.40:
        topic, payload = "customers/update", _customer(rng.randrange(CUSTOMERS), i)
    elif roll < 0.90:
        topic, order_id = "orders/paid", ORDER_BASE + i
        customer = CUSTOMER_BASE + rng.randrange(CUSTOMERS)
        credit = rng.randint(100, 500) if roll < 0.65 else 0
        fake_shop.place_order(
            order_id,
            customer,
            "USD",
            store_credit=f"{credit // 100}.{credit % 100:02d}",
            other="20.00",
        )
        payload = fake_shop.order_payload(order_id)
    else:
        topic, payload = (
            "app/scopes_update",
            {
                "id": i,
                "previous": DEFAULT_SCOPES.split(","),
                "current": DEFAULT_SCOPES.split(","),
                "updated_at": datetime.now(UTC).isoformat(),
            },
        )
    body, headers = fake.signed_webhook(domain, topic, payload, webhook_id=str(uuid.uuid4()))
    return Request(
        headers["X-Shopify-Webhook-Id"],
        topic,
        body,
        headers,
        order_credit=credit,
        order_id=order_id,
    )


# -- processes -----------------------------------------------------------------------------------


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return
            connection.close()
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"gunicorn did not come up:\n{log.read_text()[-3000:]}")


# -- sending -------------------------------------------------------------------------------------


def send_all(port: int, requests: list[Request]) -> list[int]:
    """POST every request from THREADS threads (one kept-alive connection each), in order."""
    local = threading.local()
    statuses = [0] * len(requests)

    def post(index: int) -> None:
        request = requests[index]
        for _ in range(3):
            connection = getattr(local, "connection", None)
            if connection is None:
                connection = local.connection = http.client.HTTPConnection(
                    "127.0.0.1", port, timeout=30
                )
            try:
                connection.request("POST", "/webhooks", body=request.body, headers=request.headers)
                response = connection.getresponse()
                response.read()
                statuses[index] = response.status
                return
            except (OSError, http.client.HTTPException):
                connection.close()
                local.connection = None
        statuses[index] = -1

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(post, range(len(requests))))
    return statuses


def drain(engine: Any, queue: redis.Redis, shop_id: int) -> float:
    """Seconds until no delivery of the shop is waiting or running and the queue is empty."""
    started = time.monotonic()
    unfinished = select(func.count()).where(
        WebhookEvent.shop_id == shop_id, WebhookEvent.state.in_(("received", "processing"))
    )
    while time.monotonic() - started < DRAIN_LIMIT:
        with Session(engine) as look:
            waiting = look.scalar(unfinished)
        if waiting == 0 and queue.llen("rq:queue:webhooks") == 0:
            return time.monotonic() - started
        time.sleep(0.2)
    return float("inf")


# -- figures -------------------------------------------------------------------------------------


def report(
    engine: Any,
    shop_id: int,
    requests: list[Request],
    statuses: list[int],
    sent_s: float,
    drain_s: float,
) -> bool:
    genuine = [r for r, s in zip(requests, statuses, strict=True) if not r.forged]
    answers = Counter(s for r, s in zip(requests, statuses, strict=True) if not r.forged)
    forged_answers = Counter(s for r, s in zip(requests, statuses, strict=True) if r.forged)
    ids = {r.webhook_id for r in genuine}
    forged_ids = [r.webhook_id for r in requests if r.forged]
    orders = {r.order_id: r.order_credit for r in genuine if r.order_credit}
    with Session(engine) as look:
        states = Counter(
            dict(
                look.execute(
                    select(WebhookEvent.state, func.count())
                    .where(WebhookEvent.shop_id == shop_id)
                    .group_by(WebhookEvent.state)
                ).all()
            )
        )
        recorded_ids = set(
            look.scalars(select(WebhookEvent.webhook_id).where(WebhookEvent.shop_id == shop_id))
        )
        forged_recorded = look.scalar(
            select(func.count()).where(WebhookEvent.webhook_id.in_(forged_ids))
        )
        redeems: dict[int, int] = dict(
            look.execute(
                text(
                    "SELECT shopify_order_id, count(*) FROM ledger_entries"
                    " WHERE shop_id = :shop AND kind = 'redeem' GROUP BY 1"
                ),
                {"shop": shop_id},
            ).all()
        )
        attempts = Counter(
            look.scalars(select(WebhookEvent.attempts).where(WebhookEvent.shop_id == shop_id))
        )
    lost = len(ids - recorded_ids)
    done = states["processed"] + states["ignored"]
    not_done = len(recorded_ids) - done
    applied_twice = len([n for n in redeems.values() if n > 1])
    missing_spends = len([order for order in orders if order not in redeems])
    forged_accepted = sum(n for s, n in forged_answers.items() if 200 <= s < 300) + (
        forged_recorded or 0
    )
    duplicates = len(genuine) - len(ids)
    print(
        f"deliveries sent          {len(requests)} ({len(ids)} unique, "
        f"{duplicates} duplicates, {len(forged_ids)} forged)"
    )
    rate = len(requests) / sent_s
    print(f"send                     {sent_s:.1f} s, {rate:.0f} req/s from {THREADS} threads")
    print(f"delivered (answered)     {dict(answers)}  forged: {dict(forged_answers)}")
    print(f"recorded                 {len(recorded_ids)}  (lost: {lost})")
    print(f"processed                {done}  {dict(states)}  attempts: {dict(attempts)}")
    print(
        f"store-credit orders      {len(orders)}  applied: {len(redeems)}  "
        f"applied twice: {applied_twice}  missing: {missing_spends}"
    )
    print(f"forged accepted          {forged_accepted}")
    print(f"time to drain the queue  {drain_s:.1f} s after the last answer")
    ok = (
        lost == 0
        and not_done == 0
        and applied_twice == 0
        and missing_spends == 0
        and forged_accepted == 0
    )
    ok = ok and all(200 <= s < 300 for s in answers)
    print("goal (0 lost, 0 applied twice, 0 forged accepted):", "met" if ok else "NOT met")
    return ok


def main() -> int:
    url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not url or not url.startswith("postgresql") or not redis_url:
        raise SystemExit("run through `make bench B=webhook_burst` (PostgreSQL and Redis needed)")
    rng = random.Random(20261122)
    with (
        FakeShopify(api_key=API_KEY, api_secret=API_SECRET) as fake,
        tempfile.TemporaryDirectory(prefix="bench-burst-") as tmp,
    ):
        shop_id, domain = prepare(url, fake)
        requests = build(fake, domain, rng)
        env = dict(os.environ) | {
            "CREDITCRAFT_ENV": "production",
            "SECRET_KEY": "bench-secret-key-" + "x" * 40,
            "SHOPIFY_API_KEY": API_KEY,
            "SHOPIFY_API_SECRET": API_SECRET,
            "TOKEN_ENCRYPTION_KEYS": DEVELOPMENT_FERNET_KEY,
            "SHOPIFY_ADMIN_ORIGIN": fake.origin_template,
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
        }
        logs, port = Path(tmp), free_port()
        queue = redis.Redis.from_url(redis_url)
        engine = create_engine(url)
        web = start(
            [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), "app:create_app()"],
            env | {"GUNICORN_BIND": f"127.0.0.1:{port}"},
            logs / "gunicorn.log",
        )
        worker = [sys.executable, "-m", "flask", "--app", "app:create_app", "worker"]
        workers = [start(worker, env, logs / f"worker{n}.log") for n in (1, 2)]
        try:
            wait_ready(port, web, logs / "gunicorn.log")
            began = time.monotonic()
            statuses = send_all(port, requests)
            sent_s = time.monotonic() - began
            drain_s = drain(engine, queue, shop_id)
        finally:
            for process in (web, *workers):
                stop(process)
        ok = report(engine, shop_id, requests, statuses, sent_s, drain_s)
        if not ok:
            for log in sorted(logs.glob("*.log")):
                print(f"--- {log.name} (last lines)\n{log.read_text()[-2000:]}", file=sys.stderr)
        engine.dispose()
        queue.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
