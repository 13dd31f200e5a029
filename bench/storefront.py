"""Storefront balance look-ups beside a bare Flask JSON route, both under production gunicorn.

Run it with ``make bench B=storefront`` (throwaway PostgreSQL and Redis; DATABASE_URL and
REDIS_URL set). In one run it:

1. migrates, seeds an installed shop with BENCH_CUSTOMERS customers (two lots each, one
   expiring);
2. starts gunicorn with gunicorn.conf.py twice on free loopback ports: the real app
   (``app:create_app()``, CREDITCRAFT_ENV=production, Redis cache on, rate limits set so high
   they never refuse but still count) and bench/_bare_app.py (one JSON route);
3. warms both up, then alternates timed wrk runs (bare, app, bare, app, …: BENCH_ROUNDS each,
   BENCH_SECONDS per side in total) so that a neighbour's load lands on both sides alike;
   the app runs rotate over pre-signed, cache-hit look-ups (one URL per customer, signed
   afresh before every run so the timestamps stay inside the 90 s window);
4. prints req/s, p50 and p99 for both and the ratios against the goals (throughput >= 0.8x
   bare, p99 <= 2x bare), the gunicorn workers' CPU per request, and evidence: how often the
   timed look-ups read PostgreSQL (0 balance reads: every look-up was a cache hit) and the
   rate-limit counts that reached Redis.

It exits non-zero if a look-up answered wrong or any request failed; missed goals are printed,
not fatal. Knobs: BENCH_SECONDS (12), BENCH_ROUNDS (12), BENCH_CONNECTIONS (32),
BENCH_WRK_THREADS (1), BENCH_CUSTOMERS (200), and gunicorn's own (WEB_CONCURRENCY,
GUNICORN_THREADS).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

# Run as a script, sys.path[0] is bench/: keep it from shadowing the project's packages.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench._common import (  # noqa: E402
    API_SECRET,
    children_cpu,
    insert_shop,
    migrate,
    postgres_url,
    print_load_average,
)
from bench._serving import (  # noqa: E402
    SIDES_HEADER,
    WARMUP_SECONDS,
    Gunicorn,
    Side,
    describe_gunicorn,
    ensure_wrk,
    production_env,
    run_wrk,
)
from ledger import operations  # noqa: E402
from ledger.book import Actor  # noqa: E402
from ledger.money import Money  # noqa: E402
from storefront.cache import SHOP_TTL  # noqa: E402
from storefront.signature import sign_pairs  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "12"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "12"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
WRK_THREADS = int(os.environ.get("BENCH_WRK_THREADS", "1"))
CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "200"))
STATS_SETTLE = 11.0
GOAL_THROUGHPUT = 0.8
GOAL_P99 = 2.0

FIRST_CUSTOMER = 7_408_300_000
CLIENT_IP = "203.0.113.7"  # as Shopify's proxy reports the storefront visitor

WRK_REQUEST = """
local paths = {%(paths)s}
local i = 0
local headers = {["X-Forwarded-For"] = "%(ip)s, 23.227.38.65"}
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i], headers)
end"""


@dataclass
class ServedSide(Side):
    """A side whose runs also carry ``server_cpu``: the gunicorn workers' CPU seconds."""

    @property
    def cpu_per_request_us(self) -> float:
        """gunicorn workers' CPU per request: steadier than req/s on a shared machine."""
        return sum(float(r["server_cpu"]) for r in self.runs) / self.requests * 1e6  # type: ignore[arg-type]


# -- services -------------------------------------------------------------------------------


def seed(url: str) -> tuple[str, list[int]]:
    """An installed shop whose customers each hold 10.00 (expiring in 30 days) + 2.50."""
    engine = create_engine(url)
    now = datetime.now(UTC)
    expires = (now + timedelta(days=30)).replace(microsecond=0)
    shop = insert_shop(engine, "storefront", name="Bench storefront", installed_at=now)
    with Session(engine) as session:
        customers = list(range(FIRST_CUSTOMER, FIRST_CUSTOMER + CUSTOMERS))
        for customer in customers:
            by = Actor(shop.id, now, "bench", "bench")
            operations.issue(
                session, by, customer=customer, amount=Money(1000, "USD"), expires_at=expires
            )
            operations.issue(session, by, customer=customer, amount=Money(250, "USD"))
    engine.dispose()
    return shop.domain, customers


# -- load -----------------------------------------------------------------------------------


def signed_paths(domain: str, customers: list[int]) -> list[str]:
    """One look-up URL per customer, signed now like Shopify's App Proxy signs them."""
    timestamp = str(int(time.time()))
    paths = []
    for customer in customers:
        pairs = [
            ("shop", domain),
            ("logged_in_customer_id", str(customer)),
            ("path_prefix", "/apps/credit"),
            ("timestamp", timestamp),
        ]
        signature = sign_pairs(pairs, API_SECRET)
        paths.append("/proxy/balance?" + urlencode([*pairs, ("signature", signature)]))
    return paths


def wrk(
    binary: str, base: str, paths: list[str], seconds: float, logs: Path, master: int = 0
) -> dict[str, object]:
    """One wrk run rotating over ``paths``; with ``master``, the CPU its workers spent."""
    lua_paths = ",".join(json.dumps(p) for p in paths)  # JSON strings are valid Lua strings
    request = WRK_REQUEST % {"paths": lua_paths, "ip": CLIENT_IP}
    cpu = children_cpu(master) if master else 0.0
    result = run_wrk(
        binary,
        request,
        logs / "paths.lua",
        base,
        seconds=seconds,
        connections=CONNECTIONS,
        threads=WRK_THREADS,
    )
    result["server_cpu"] = (children_cpu(master) - cpu) if master else 0.0
    return result


def check_answer(base: str, path: str) -> None:
    with urllib.request.urlopen(base + path, timeout=5) as response:  # noqa: S310 - loopback
        body = json.loads(response.read())
        cache_control = response.headers["Cache-Control"]
    balances = body["balances"]
    ok = (
        body["logged_in"] is True
        and len(balances) == 1
        and balances[0]["amount"] == "12.50"
        and balances[0]["next_expiry"]["amount"] == "10.00"
        and cache_control == "private, no-store"
    )
    if not ok:
        raise SystemExit(f"wrong answer from the app: {body} (Cache-Control: {cache_control})")


def table_reads(url: str) -> dict[str, int]:
    """Scans (index or sequential) of the tables a look-up reads on a miss, as PostgreSQL counts
    them: a balance miss scans ``customers`` once, a shop-state miss ``shops`` once."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) "
                "FROM pg_stat_user_tables WHERE relname IN ('customers', 'shops')"
            )
        )
        reads = {name: int(count) for name, count in rows}
    engine.dispose()
    return reads


def rate_limit_counts(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match="cc:rl:ip:*", count=1000))
        return sum(int(v) for v in client.mget(keys) if v is not None) if keys else 0
    finally:
        client.close()


# -- the run --------------------------------------------------------------------------------


def main() -> int:
    url = postgres_url()
    redis_url = os.environ.get("REDIS_URL", "")
    if not url or not redis_url:
        print("bench/storefront.py needs DATABASE_URL (PostgreSQL) and REDIS_URL: run `make bench`")
        return 2
    binary = ensure_wrk("bench/storefront.py")
    print_load_average("before")
    migrate(url)
    domain, customers = seed(url)
    print(f"seeded {len(customers)} customers in {domain}", flush=True)

    env = production_env(
        url,
        redis_url,
        PROXY_RATE_LIMIT_PER_IP=str(10**12),  # never refuses, still counts
        PROXY_RATE_LIMIT_PER_SHOP=str(10**12),
        PYTHONPATH=str(ROOT / "bench"),  # for the bare app's module
    )
    with tempfile.TemporaryDirectory(prefix="bench-storefront-") as tmp:
        logs = Path(tmp)
        with (
            Gunicorn("app", "app:create_app()", env, logs) as app_server,
            Gunicorn("bare", "_bare_app:app", env, logs) as bare_server,
        ):
            app_base, bare_base = app_server.base, bare_server.base
            app_server.wait_ready("/healthz")
            bare_server.wait_ready("/bare")
            check_answer(app_base, signed_paths(domain, customers[:1])[0])
            print(
                f"gunicorn.conf.py: {describe_gunicorn(env)} each side; "
                f"wrk -t{WRK_THREADS} -c{CONNECTIONS}; "
                f"{ROUNDS} alternating rounds, {SECONDS:g} s per side",
                flush=True,
            )
            # Warm-up: every worker of the app fills its in-process copy of every customer.
            wrk(binary, app_base, signed_paths(domain, customers), WARMUP_SECONDS, logs)
            wrk(binary, bare_base, ["/bare"], WARMUP_SECONDS, logs)
            bare, app = ServedSide("bare Flask route"), ServedSide("balance look-up")
            # PostgreSQL publishes a backend's counts after up to PGSTAT_IDLE_INTERVAL (10 s)
            # of idleness: settle before and after to count the timed section's reads.
            time.sleep(STATS_SETTLE)
            before = table_reads(url)
            for _ in range(ROUNDS):
                bare.runs.append(
                    wrk(binary, bare_base, ["/bare"], SECONDS / ROUNDS, logs, bare_server.pid)
                )
                paths = signed_paths(domain, customers)
                app.runs.append(
                    wrk(binary, app_base, paths, SECONDS / ROUNDS, logs, app_server.pid)
                )
            time.sleep(STATS_SETTLE)
            after = table_reads(url)
            misses = {name: after[name] - before[name] for name in after}
            counted = rate_limit_counts(redis_url)
        problems = [
            line
            for line in (logs / "app.log").read_text(errors="replace").splitlines()
            if any(
                mark in line
                for mark in ("storefront cache:", "rate limits:", "[ERROR]", "Traceback")
            )
        ]
        if problems:
            print(f"the app logged {len(problems)} warnings/errors, first: {problems[:3]}")
    return report(bare, app, misses, counted)


def report(bare: ServedSide, app: ServedSide, misses: dict[str, int], counted: int) -> int:
    print()
    print(f"{SIDES_HEADER} {'server CPU/req':>15}")
    for side in (bare, app):
        print(f"{side.row()} {side.cpu_per_request_us:12.0f} us")
    throughput = app.rate / bare.rate
    p99 = app.quantile(0.99) / bare.quantile(0.99)
    met = "met" if throughput >= GOAL_THROUGHPUT else "NOT met"
    print(f"\nthroughput ratio {throughput:.3f} (goal >= {GOAL_THROUGHPUT}): {met}")
    met = "met" if p99 <= GOAL_P99 else "NOT met"
    print(f"p99 ratio        {p99:.3f} (goal <= {GOAL_P99}): {met}")
    rounds = sorted(
        int(a["requests"]) / int(b["requests"])  # type: ignore[call-overload]
        for a, b in zip(app.runs, bare.runs, strict=True)
    )
    print(
        f"per-round throughput ratios: {', '.join(f'{r:.2f}' for r in rounds)} "
        f"(median {statistics.median(rounds):.2f}; a spread means neighbours loaded the machine)"
    )
    extra = app.cpu_per_request_us - bare.cpu_per_request_us
    print(
        f"server CPU per request: {app.cpu_per_request_us / bare.cpu_per_request_us:.2f}x bare "
        f"({extra:+.0f} us for verification, rate limits, cache and answer)"
    )
    print(
        f"PostgreSQL reads during the timed look-ups: {misses['customers']} of balances (cache "
        f"misses), {misses['shops']} of shop states (each worker every {SHOP_TTL:g} s)"
    )
    print(
        f"rate-limit counts in Redis: {counted:,d} for {app.requests:,d} timed look-ups + warm-up"
    )
    if bare.failures or app.failures:
        print("FAILED: some requests failed (non-2xx or socket errors)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
