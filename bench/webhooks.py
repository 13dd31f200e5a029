"""Webhook intake beside a bare Flask JSON POST route, both under production gunicorn.

Run it with ``make bench B=webhooks`` (throwaway PostgreSQL and Redis; DATABASE_URL and
REDIS_URL set). In one run it:

1. migrates and installs a shop;
2. signs BENCH_BODIES distinct ``orders/paid`` deliveries (REST Order shape, ~1 KB) in Python,
   since wrk's Lua has no HMAC, and writes them into a Lua table;
3. starts gunicorn with gunicorn.conf.py twice on free loopback ports: the real app
   (``app:create_app()``, CREDITCRAFT_ENV=production) and bench/_bare_webhook_app.py (reads
   the body, answers JSON);
4. warms both up, then alternates timed wrk runs (bare, app, bare, app, …: BENCH_ROUNDS each,
   BENCH_SECONDS per side in total) so that a neighbour's load lands on both sides alike,
   then one short run each at BENCH_LIGHT_CONNECTIONS (latency without the queueing of a
   saturated server). Both get the same requests from the same Lua script: it rotates
   through the signed bodies and gives every request its own ``X-Shopify-Webhook-Id`` (run,
   wrk thread, counter). Only the body is signed, so a new id makes a new, valid delivery: no
   id repeats in the run, every request is recorded and enqueued (no RQ worker runs; the
   queue just grows);
5. prints req/s, p50 and p99 for both and the ratios against the goals (throughput >= 0.5x
   bare, p99 < 100 ms), CPU per request of gunicorn, PostgreSQL and Redis (read from /proc:
   it moves far less than req/s when neighbours load the machine), plus evidence: rows
   recorded per answered delivery, distinct ids, jobs queued per row, and PostgreSQL
   transactions per delivery.

It exits non-zero if a request failed or a delivery answered 200 was not recorded and
enqueued exactly once; missed goals are printed, not fatal. Knobs: BENCH_SECONDS (12),
BENCH_ROUNDS (3), BENCH_CONNECTIONS (32), BENCH_LIGHT_CONNECTIONS (4), BENCH_WRK_THREADS
(1), BENCH_BODIES (256), and gunicorn's own (WEB_CONCURRENCY, GUNICORN_THREADS).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

# Run as a script, sys.path[0] is bench/: keep it from shadowing the project's packages.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from bench._common import (  # noqa: E402
    API_SECRET,
    insert_shop,
    migrate,
    postgres_url,
    print_load_average,
    service_pids,
    tree_cpu,
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
from models import WebhookEvent  # noqa: E402
from webhooks.verify import sign  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "12"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
# A light load too: at saturation, latency is mostly waiting in line (connections / rate).
LIGHT_CONNECTIONS = int(os.environ.get("BENCH_LIGHT_CONNECTIONS", "4"))
WRK_THREADS = int(os.environ.get("BENCH_WRK_THREADS", "1"))
BODIES = int(os.environ.get("BENCH_BODIES", "256"))
GOAL_THROUGHPUT = 0.5
GOAL_P99_MS = 100.0

QUEUE_KEY = "rq:queue:webhooks"

WRK_REQUEST = """
local deliveries = {%(deliveries)s}
local shop = "%(shop)s"
local run = "%(run)s"
local next_thread = 0
local counter = 0

setup = function(thread)
  next_thread = next_thread + 1
  thread:set("thread_id", next_thread)
end

request = function()
  counter = counter + 1
  local d = deliveries[counter %% #deliveries + 1]
  local id = run .. "-" .. thread_id .. "-" .. counter
  return wrk.format("POST", "%(path)s", {
    ["Content-Type"] = "application/json",
    ["X-Shopify-Topic"] = "orders/paid",
    ["X-Shopify-Hmac-Sha256"] = d[1],
    ["X-Shopify-Shop-Domain"] = shop,
    ["X-Shopify-API-Version"] = "2026-10",
    ["X-Shopify-Webhook-Id"] = id,
    ["X-Shopify-Event-Id"] = "ev-" .. id,
    ["X-Shopify-Triggered-At"] = "2026-11-22T12:00:00.000000000Z",
  }, d[2])
end
"""


# -- the deliveries -------------------------------------------------------------------------


def order_body(n: int) -> bytes:
    """An ``orders/paid`` body of realistic shape (REST Order, trimmed to ~1 KB)."""
    order_id = 5_100_000_000_000 + n
    customer_id = 7_000_000_000 + n
    payload = {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
        "name": f"#{1000 + n}",
        "order_number": 1000 + n,
        "email": f"customer{n}@example.com",
        "customer": {
            "id": customer_id,
            "email": f"customer{n}@example.com",
            "first_name": "Ada",
            "last_name": f"Customer{n}",
            "admin_graphql_api_id": f"gid://shopify/Customer/{customer_id}",
        },
        "currency": "USD",
        "presentment_currency": "USD",
        "total_price": "54.00",
        "subtotal_price": "50.00",
        "total_tax": "4.00",
        "total_discounts": "0.00",
        "total_outstanding": "0.00",
        "financial_status": "paid",
        "payment_gateway_names": ["shopify_store_credit", "shopify_payments"],
        "line_items": [
            {
                "id": 13_000_000_000 + n * 10 + i,
                "title": f"Product {i}",
                "quantity": 1,
                "price": "25.00",
                "sku": f"SKU-{i}",
            }
            for i in range(2)
        ],
        "created_at": "2026-11-22T12:00:00-05:00",
        "updated_at": "2026-11-22T12:00:01-05:00",
        "processed_at": "2026-11-22T12:00:00-05:00",
        "cancelled_at": None,
        "test": False,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def lua_deliveries() -> str:
    """``{hmac, body}`` pairs as Lua table entries (JSON strings are valid Lua strings)."""
    bodies = [order_body(n) for n in range(BODIES)]
    return ",".join(
        f"{{{json.dumps(sign(body, API_SECRET))},{json.dumps(body.decode())}}}" for body in bodies
    )


# -- load -----------------------------------------------------------------------------------


def wrk(
    binary: str,
    base: str,
    path: str,
    shop: str,
    run: str,
    seconds: float,
    logs: Path,
    connections: int = CONNECTIONS,
) -> dict[str, object]:
    request = WRK_REQUEST % {"deliveries": DELIVERIES, "shop": shop, "run": run, "path": path}
    return run_wrk(
        binary,
        request,
        logs / f"{run}.lua",
        base + path,
        seconds=seconds,
        connections=connections,
        threads=WRK_THREADS,
    )


def check_answer(base: str, shop: str) -> None:
    """One delivery by hand: 200 and recorded, before any load."""
    body = order_body(0)
    request = urllib.request.Request(  # noqa: S310 - loopback
        base + "/webhooks",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Shopify-Topic": "orders/paid",
            "X-Shopify-Hmac-Sha256": sign(body, API_SECRET),
            "X-Shopify-Shop-Domain": shop,
            "X-Shopify-API-Version": "2026-10",
            "X-Shopify-Webhook-Id": f"check-{uuid.uuid4()}",
        },
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
        answer = json.loads(response.read())
    if answer != {"status": "recorded"}:
        raise SystemExit(f"wrong answer from the app: {answer}")


@dataclass
class Evidence:
    rows: int  # deliveries of the timed runs recorded
    distinct: int  # distinct webhook ids among them
    transactions: int  # PostgreSQL commits + rollbacks during the timed runs


def install_shop(url: str) -> str:
    engine = create_engine(url)
    domain = insert_shop(engine, "webhooks", name="Bench webhooks").domain
    engine.dispose()
    return domain


def recorded(url: str, runs: list[str]) -> tuple[int, int]:
    engine = create_engine(url)
    rows = distinct = 0
    with engine.connect() as conn:
        for run in runs:
            ours = WebhookEvent.webhook_id.like(f"{run}-%")
            rows += conn.scalar(select(func.count()).where(ours)) or 0
            distinct += (
                conn.scalar(select(func.count(WebhookEvent.webhook_id.distinct())).where(ours)) or 0
            )
    engine.dispose()
    return rows, distinct


def count(url: str, sql: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        value = int(conn.execute(text(sql)).scalar_one())
    engine.dispose()
    return value


class CpuMeter:
    """CPU seconds each server spent during the timed runs of one side."""

    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = processes
        self.spent = dict.fromkeys(processes, 0.0)
        self._start: dict[str, float] = {}

    def __enter__(self) -> None:
        self._start = {name: tree_cpu(pid) for name, pid in self.processes.items()}

    def __exit__(self, *exc: object) -> None:
        for name, pid in self.processes.items():
            self.spent[name] += tree_cpu(pid) - self._start[name]


TRANSACTIONS = (
    "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
)
ALL_ROWS = "SELECT count(*) FROM webhook_events"


# -- the run --------------------------------------------------------------------------------

DELIVERIES = lua_deliveries()


def main() -> int:
    url = postgres_url()
    redis_url = os.environ.get("REDIS_URL", "")
    if not url or not redis_url:
        print("bench/webhooks.py needs DATABASE_URL (PostgreSQL) and REDIS_URL: run `make bench`")
        return 2
    binary = ensure_wrk("bench/webhooks.py")
    print_load_average("before")
    migrate(url)
    shop = install_shop(url)
    queue = redis.Redis.from_url(redis_url)
    queue.delete(QUEUE_KEY)

    env = production_env(url, redis_url)
    tag = uuid.uuid4().hex[:8]
    timed_runs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        logs = Path(tmp)
        with (
            Gunicorn("app", "app:create_app()", env, logs) as app_server,
            Gunicorn("bare", "bench._bare_webhook_app:app", env, logs) as bare_server,
        ):
            app_base, bare_base = app_server.base, bare_server.base
            app_server.wait_ready("/healthz")
            bare_server.wait_ready("/healthz")
            check_answer(app_base, shop)
            print(
                f"gunicorn.conf.py: {describe_gunicorn(env)} each side; "
                f"wrk -t{WRK_THREADS} -c{CONNECTIONS}; "
                f"{ROUNDS} alternating rounds, {SECONDS:g} s per side; {BODIES} signed bodies,"
                f" a new webhook id per request",
                flush=True,
            )
            wrk(binary, app_base, "/webhooks", shop, f"{tag}-warm", WARMUP_SECONDS, logs)
            wrk(binary, bare_base, "/bare", shop, f"{tag}-warm", WARMUP_SECONDS, logs)
            bare, app = Side("bare Flask route"), Side("webhook intake")
            services = service_pids()
            bare_cpu = CpuMeter({"gunicorn": bare_server.pid})
            app_cpu = CpuMeter({"gunicorn": app_server.pid} | services)
            transactions = 0
            for round_ in range(ROUNDS):
                run = f"{tag}-r{round_}"
                with bare_cpu:
                    bare.runs.append(
                        wrk(binary, bare_base, "/bare", shop, run, SECONDS / ROUNDS, logs)
                    )
                time.sleep(1.2)  # pg_stat_database lags by up to a second
                before = count(url, TRANSACTIONS)
                with app_cpu:
                    app.runs.append(
                        wrk(binary, app_base, "/webhooks", shop, run, SECONDS / ROUNDS, logs)
                    )
                timed_runs.append(run)
                time.sleep(1.2)
                transactions += count(url, TRANSACTIONS) - before - 1
            light_bare, light_app = Side("bare Flask route"), Side("webhook intake")
            light_seconds = SECONDS / ROUNDS
            light_bare.runs.append(
                wrk(
                    binary,
                    bare_base,
                    "/bare",
                    shop,
                    f"{tag}-l",
                    light_seconds,
                    logs,
                    LIGHT_CONNECTIONS,
                )
            )
            light_app.runs.append(
                wrk(
                    binary,
                    app_base,
                    "/webhooks",
                    shop,
                    f"{tag}-l",
                    light_seconds,
                    logs,
                    LIGHT_CONNECTIONS,
                )
            )
    rows, distinct = recorded(url, timed_runs)
    jobs, all_rows = int(queue.llen(QUEUE_KEY)), count(url, ALL_ROWS)
    queue.close()
    print_cpu(bare, bare_cpu, app, app_cpu)
    return report(
        bare, app, Evidence(rows, distinct, transactions), jobs, all_rows, (light_bare, light_app)
    )


def print_cpu(bare: Side, bare_cpu: CpuMeter, app: Side, app_cpu: CpuMeter) -> None:
    """CPU per request: unlike req/s, it hardly depends on what else the machine is doing."""
    print()
    print("CPU per request (ms), timed runs:")
    for side, meter in ((bare, bare_cpu), (app, app_cpu)):
        parts = ", ".join(
            f"{name} {seconds / side.requests * 1000:.3f}" for name, seconds in meter.spent.items()
        )
        total = sum(meter.spent.values()) / side.requests * 1000
        print(f"  {side.name:18} {parts}; total {total:.3f}")


def report(
    bare: Side,
    app: Side,
    evidence: Evidence,
    jobs: int,
    all_rows: int,
    light: tuple[Side, Side],
) -> int:
    print()
    print(SIDES_HEADER)
    for side in (bare, app):
        print(side.row())
    print(f"the same at {LIGHT_CONNECTIONS} connections (one run each, after the timed rounds):")
    for side in light:
        print(side.row())
    throughput = app.rate / bare.rate
    p99 = app.quantile(0.99)
    met = "met" if throughput >= GOAL_THROUGHPUT else "NOT met"
    print(f"\nthroughput ratio {throughput:.2f} (goal >= {GOAL_THROUGHPUT}): {met}")
    met = "met" if p99 < GOAL_P99_MS else "NOT met"
    print(f"p99              {p99:.1f} ms (goal < {GOAL_P99_MS:g} ms): {met}")
    per_run = ", ".join(
        f"{a['requests'] / b['requests']:.2f}"  # type: ignore[operator]
        for a, b in zip(app.runs, bare.runs, strict=True)
    )
    print(f"per-round throughput ratios: {per_run}")
    print(
        f"recorded: {evidence.rows:,d} rows, {evidence.distinct:,d} distinct webhook ids for"
        f" {app.requests:,d} answered timed deliveries (in flight at a run's end: recorded,"
        f" not counted by wrk); {jobs:,d} jobs queued for {all_rows:,d} rows in all"
    )
    print(
        f"PostgreSQL transactions per timed delivery: {evidence.transactions / app.requests:.2f}"
        " (autocommitted INSERT: 1)"
    )
    problems = []
    if bare.failures or app.failures or any(side.failures for side in light):
        problems.append("some requests failed (non-2xx or socket errors)")
    if not app.requests <= evidence.rows <= app.requests + CONNECTIONS * ROUNDS:
        problems.append("answered deliveries and recorded rows disagree")
    if evidence.distinct != evidence.rows:
        problems.append("a webhook id was recorded twice")
    if jobs != all_rows:
        problems.append("recorded deliveries and queued jobs disagree")
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
