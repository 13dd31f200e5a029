"""Server time of every merchant page and API call on a large shop (issue 5, item 6: p95 ≤ 100 ms).

Run it with ``make bench B=pages`` (throwaway PostgreSQL and Redis; DATABASE_URL and REDIS_URL
set). In one run it:

1. migrates and seeds the large shop with ledger/seed.py (``flask demo seed --large``'s code):
   BENCH_CUSTOMERS customers (10,000) and about BENCH_ENTRIES entries (1,000,000) over two
   years, then VACUUM ANALYZE (what autovacuum leaves a table in: statistics and a visibility
   map); prints how long seeding took;
2. walks the app's url_map for every GET route under /app and /api (routes added later are
   covered as they land) and takes their sample requests from bench/_samples.py (a customer
   with the longest ledger, a multi-currency one, ordinary ones, searches, page-2 cursors);
   a GET route without samples is named in a NO SAMPLE line and not timed;
3. per route: BENCH_WARMUP requests, then BENCH_REQUESTS timed ones rotating among its
   samples, in-process through Flask's test client with a real session token (a Bearer header
   for the API, ``id_token`` for pages): server time, no network. A streamed answer (CSV
   exports) is timed to its first body chunk, not the whole download (marked "ttfb");
4. the writes a merchant waits for: issue credit and debit (POST) on ordinary customers and on
   the longest ledger, with native sync on (the outbox row and the job enqueued to Redis);
5. prints p50 / p95 / p99 / max per route and whether p95 meets the 100 ms goal.

It exits 1 if a sample request fails (4xx/5xx) or a GET route has no samples; a missed goal is
printed, not fatal. Knobs: BENCH_CUSTOMERS, BENCH_ENTRIES, BENCH_REQUESTS (200), BENCH_WARMUP
(10), BENCH_WRITES (200), BENCH_SHOP (a domain: reuse the shop an earlier run seeded on the same
database; seeding it again adds nothing). A quick run: ``BENCH_CUSTOMERS=1000
BENCH_ENTRIES=60000 make bench B=pages``.
"""

from __future__ import annotations

import itertools
import os
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script, sys.path[0] is bench/: keep it from shadowing the project's packages.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import jwt  # noqa: E402
from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402
from sqlalchemy import Engine, create_engine, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench._common import (  # noqa: E402
    API_SECRET,
    TICKS_PER_SECOND,
    ProcStat,
    bench_domain,
    make_app,
    migrate,
    postgres_url,
    print_load_average,
    server_facts,
    verify_sample,
)
from bench._samples import (  # noqa: E402
    SAMPLES,
    Facts,
    Sample,
    create_objects,
    facts_of,
    get_rules,
    missing_samples,
    request_for,
    session_claims,
    stale_samples,
)
from ledger.seed import TABLES, Plan, SeedReport, seed_large_shop  # noqa: E402
from models import Shop  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "10000"))
ENTRIES = int(os.environ.get("BENCH_ENTRIES", "1000000"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "200"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "10"))
WRITES = int(os.environ.get("BENCH_WRITES", "200"))
# A shop seeded by an earlier run on the same database (seeding it again adds nothing).
SHOP = os.environ.get("BENCH_SHOP", "")
GOAL_P95_MS = 100.0
STAFF = "84100000099"


# -- seeding ------------------------------------------------------------------------------------


def seed(url: str) -> tuple[int, str, SeedReport, float]:
    """The large shop, seeded and vacuumed; (shop id, domain, report, vacuum seconds)."""
    engine = create_engine(url)
    shop = _shop(engine, SHOP or bench_domain("pages"))

    def progress(report: SeedReport, customers: int) -> None:
        rate = report.entries / report.seconds if report.seconds else 0
        print(
            f"  seeded {report.customers:,}/{customers:,} customers, {report.entries:,} entries "
            f"({report.seconds:.0f} s, {rate:,.0f} entries/s)",
            flush=True,
        )

    with Session(engine) as session:
        backend = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        cpu = (time.process_time(), _ticks(backend))
        report = seed_large_shop(
            session, shop.id, Plan(CUSTOMERS, ENTRIES), now=datetime.now(UTC), progress=progress
        )
        if report.entries:  # CPU, steadier than wall time on a shared machine
            python, postgres = time.process_time() - cpu[0], _ticks(backend) - cpu[1]
            print(
                f"seeding CPU: Python {python:.0f} s ({python / report.entries * 1e6:.0f} us per"
                f" entry), its PostgreSQL backend {postgres:.0f} s"
                f" ({postgres / report.entries * 1e6:.0f} us per entry)",
                flush=True,
            )
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in TABLES:
            conn.execute(text(f"VACUUM (ANALYZE) {table}"))
    vacuumed = time.perf_counter() - started
    with Session(engine) as session:
        problems = verify_sample(session, shop.id, 50)
    if problems:
        print("SEED BROKEN: " + "; ".join(problems[:3]))
        sys.exit(1)
    engine.dispose()
    return shop.id, shop.domain, report, vacuumed


def _ticks(pid: int) -> float:
    """CPU seconds of a process on this machine (0 if it cannot be read)."""
    stat = ProcStat.read(pid)
    return 0.0 if stat is None else stat.own_ticks / TICKS_PER_SECOND


def _shop(engine: Engine, domain: str) -> Shop:
    """The installed shop ``domain`` (created unless an earlier run did), native sync on."""
    with Session(engine, expire_on_commit=False) as session:
        shop = session.scalars(select(Shop).where(Shop.domain == domain)).one_or_none()
        if shop is None:
            now = datetime.now(UTC)
            shop = Shop(
                domain=domain,
                name="Bench large shop",
                currency="USD",
                timezone="UTC",
                installed_at=now,
                created_at=now,
                access_token_encrypted="bench: never decrypted, no call reaches Shopify",
                native_sync=True,
            )
            session.add(shop)
            session.commit()
        return shop


# -- timing -------------------------------------------------------------------------------------


@dataclass
class Timed:
    route: str
    samples: int
    millis: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    streamed: bool = False
    by_sample: dict[str, list[float]] = field(default_factory=dict)

    def slowest_sample(self) -> str:
        """The sample whose median is highest: where a missed goal comes from."""
        url, millis = max(self.by_sample.items(), key=lambda item: statistics.median(item[1]))
        shown = re.sub(r"(id_token|cursor)=[^&]+", r"\1=…", url)
        return f"{shown} (p50 {statistics.median(millis):.1f} ms)"

    def quantile(self, q: float) -> float:
        ordered = sorted(self.millis)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 400)

    def line(self) -> str:
        p95 = self.quantile(0.95)
        goal = "ok" if p95 <= GOAL_P95_MS else f"MISSED by {p95 - GOAL_P95_MS:.0f} ms"
        name = self.route + (" (ttfb)" if self.streamed else "")
        return (
            f"{name:58} {self.samples:>3} {len(self.millis):>5} "
            f"{statistics.median(self.millis):>7.1f} {p95:>7.1f} {self.quantile(0.99):>7.1f} "
            f"{max(self.millis):>7.1f}  {_statuses(self.statuses):10} {goal}"
        )


HEADER = (
    f"{'route':58} {'smp':>3} {'n':>5} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    f"  {'status':10} p95 <= {GOAL_P95_MS:.0f} ms"
)


def _statuses(counts: Counter[int]) -> str:
    if len(counts) == 1:
        return str(next(iter(counts)))
    return ",".join(f"{status}x{n}" for status, n in sorted(counts.items()))


def time_get(client: FlaskClient, url: str, headers: dict[str, str]) -> tuple[float, int, bool]:
    """Milliseconds to the answer (a streamed answer: to its first body chunk)."""
    started = time.perf_counter()
    response = client.get(url, headers=headers, buffered=False)
    try:
        # The app sized every answer it built whole; a generator's answer has no length.
        streamed = "Content-Length" not in response.headers
        if streamed:
            next(iter(response.response), b"")  # type: ignore[call-overload]
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        response.close()
    return elapsed, response.status_code, streamed


def time_route(
    client: FlaskClient, rule: str, samples: list[Sample], token: str, domain: str
) -> Timed:
    timed = Timed(rule, len(samples))
    requests = [request_for(sample, token, domain) for sample in samples]
    for url, headers in itertools.islice(itertools.cycle(requests), WARMUP):
        time_get(client, url, headers)
    for url, headers in itertools.islice(itertools.cycle(requests), REQUESTS):
        millis, status, streamed = time_get(client, url, headers)
        timed.millis.append(millis)
        timed.by_sample.setdefault(url, []).append(millis)
        timed.statuses[status] += 1
        timed.streamed |= streamed
    return timed


def time_writes(client: FlaskClient, customers: list[int], token: str) -> list[Timed]:
    """Issue credit and debit, as the customer page's forms send them (with an
    Idempotency-Key), rotating among USD customers with long ledgers and ordinary ones."""
    headers = {"Authorization": f"Bearer {token}"}
    results = []
    for name, path, body in (
        ("POST /api/customers/<customer_id>/credits", "credits",
         {"amount": "5.00", "currency": "USD", "reason": "Bench goodwill", "source": "goodwill"}),
        ("POST /api/customers/<customer_id>/debits", "debits",
         {"amount": "0.01", "currency": "USD", "reason": "Bench correction"}),
    ):  # fmt: skip
        timed = Timed(name, len(customers))
        for index, customer in enumerate(itertools.islice(itertools.cycle(customers), WRITES)):
            keyed = headers | {"Idempotency-Key": f"bench-{path}-{time.time_ns()}-{index}"}
            started = time.perf_counter()
            response = client.post(f"/api/customers/{customer}/{path}", json=body, headers=keyed)
            millis = (time.perf_counter() - started) * 1000
            if index >= WARMUP:
                timed.millis.append(millis)
                timed.statuses[response.status_code] += 1
        results.append(timed)
    return results


# -- the run ------------------------------------------------------------------------------------


def main() -> int:
    url = postgres_url()
    redis_url = os.environ.get("REDIS_URL", "")
    if not url or not redis_url:
        print("bench/pages.py needs DATABASE_URL (PostgreSQL) and REDIS_URL: run `make bench`")
        return 2
    print_load_average("before")
    migrate(url)
    print(f"seeding {CUSTOMERS:,} customers, about {ENTRIES:,} entries ...", flush=True)
    shop_id, domain, report, vacuumed = seed(url)
    if not report.customers:
        print(f"{domain} was seeded by an earlier run: {report.already:,} customers", flush=True)
    print(
        f"seeded in {report.seconds:.0f} s ({report.entries / max(report.seconds, 1e-9):,.0f} "
        f"entries/s): {report.customers:,} customers, {report.accounts:,} accounts, "
        f"{report.lots:,} lots, {report.entries:,} entries, {report.allocations:,} allocations, "
        f"{report.audits:,} audit rows; VACUUM ANALYZE {vacuumed:.0f} s",
        flush=True,
    )
    app = make_app(url, redis_url)
    engine = create_engine(url)
    print(server_facts(engine))
    engine.dispose()
    token = jwt.encode(session_claims(domain, "bench-api-key", STAFF), API_SECRET)
    client = app.test_client()
    facts = _facts(app, client, shop_id, domain, token)
    print(
        f"samples: longest ledger customer {facts.long_customer}, multi-currency "
        f"{facts.multi_currency_customer}, {len(facts.customers)} ordinary customers; "
        f"{WARMUP} warm-up + {REQUESTS} timed requests per route",
        flush=True,
    )
    failed = False
    for rule in missing_samples(app):
        print(f"NO SAMPLE: GET {rule} is not timed: add its samples to bench/_samples.py SAMPLES")
        failed = True
    if stale_samples(app):
        print(f"(samples for routes this app does not have: {', '.join(stale_samples(app))})")
    fetch = _fetcher(client, token, domain)
    results = [
        time_route(client, f"GET {rule}", SAMPLES[rule](facts, fetch), token, domain)
        for rule in get_rules(app)
        if rule in SAMPLES
    ]
    results += time_writes(client, _usd_holders(url, shop_id), token)
    print(HEADER)
    for timed in results:
        print(timed.line())
    for timed in results:
        if timed.quantile(0.95) > GOAL_P95_MS and timed.by_sample:
            print(f"  {timed.route}: slowest sample {timed.slowest_sample()}")
    missed = [t for t in results if t.quantile(0.95) > GOAL_P95_MS]
    print(
        f"{len(results) - len(missed)} of {len(results)} routes meet p95 <= {GOAL_P95_MS:.0f} ms"
        + (f"; missed: {', '.join(t.route for t in missed)}" if missed else "")
    )
    print("ttfb: streamed answers timed to their first body chunk, not the whole download")
    print_load_average("after")
    broken = [t.route for t in results if t.failed]
    if broken:
        print(f"FAILED requests on: {', '.join(broken)}")
    return 1 if failed or broken else 0


def _usd_holders(url: str, shop_id: int) -> list[int]:
    """Customers a debit of 0.01 USD always succeeds for: the ten longest USD ledgers holding
    at least 10.00, and forty ordinary holders."""
    engine = create_engine(url)
    query = (
        "SELECT c.shopify_customer_id FROM credit_accounts a JOIN customers c"
        " ON c.id = a.customer_id WHERE a.shop_id = :shop AND a.currency = 'USD'"
        " AND a.balance >= 1000 ORDER BY {order} LIMIT :n"
    )
    with engine.connect() as conn:
        longest = conn.scalars(
            text(query.format(order="a.last_sequence DESC")), {"shop": shop_id, "n": 10}
        ).all()
        ordinary = conn.scalars(
            text(query.format(order="md5(a.id::text)")), {"shop": shop_id, "n": 40}
        ).all()
    engine.dispose()
    return [*longest, *ordinary]


def _fetcher(client: FlaskClient, token: str, domain: str) -> Callable[[str, dict[str, str]], Any]:
    def fetch(path: str, params: dict[str, str]) -> Any:
        url, headers = request_for((path, params), token, domain)
        response = client.get(url, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.get_data()[:300]!r}")
        return response.get_json()

    return fetch


def _facts(app: Flask, client: FlaskClient, shop_id: int, domain: str, token: str) -> Facts:
    from extensions import db

    def post_csv(path: str, data: bytes) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        response = client.post(path, data=data, content_type="text/csv", headers=headers)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"POST {path}: {response.status_code} {response.get_data()!r}")
        return response.get_json()

    with app.app_context():
        facts = facts_of(db.session, shop_id, domain)
        facts = create_objects(db.session, facts, post_csv, actor=f"staff:{STAFF}")
        db.session.remove()
    return facts


if __name__ == "__main__":
    sys.exit(main())
