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

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# Run as a script, sys.path[0] is bench/: keep it from shadowing the project's packages.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from config import DEVELOPMENT_FERNET_KEY, Settings  # noqa: E402
from models import Shop, WebhookEvent  # noqa: E402
from webhooks.verify import sign  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "12"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
# A light load too: at saturation, latency is mostly waiting in line (connections / rate).
LIGHT_CONNECTIONS = int(os.environ.get("BENCH_LIGHT_CONNECTIONS", "4"))
WRK_THREADS = int(os.environ.get("BENCH_WRK_THREADS", "1"))
BODIES = int(os.environ.get("BENCH_BODIES", "256"))
WARMUP_SECONDS = 3
GOAL_THROUGHPUT = 0.5
GOAL_P99_MS = 100.0

API_SECRET = "bench-api-secret-0123456789abcdef0123456789"
QUEUE_KEY = "rq:queue:webhooks"
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"

WRK_SCRIPT = """
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

done = function(summary, latency, requests)
  local points = {}
  for p = 1, 199 do points[#points + 1] = latency:percentile(p / 2) end
  for _, p in ipairs({99.5, 99.9}) do points[#points + 1] = latency:percentile(p) end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%%d,"duration_us":%%d,"socket_errors":%%d,"non_2xx":%%d,' ..
    '"p50":%%d,"p99":%%d,"points":[%%s]}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), table.concat(points, ",")))
end
"""


# -- one side's figures ---------------------------------------------------------------------


@dataclass
class Side:
    name: str
    runs: list[dict[str, object]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(int(r["requests"]) for r in self.runs)  # type: ignore[call-overload]

    @property
    def seconds(self) -> float:
        return sum(int(r["duration_us"]) for r in self.runs) / 1e6  # type: ignore[call-overload]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def failures(self) -> int:
        return sum(int(r["socket_errors"]) + int(r["non_2xx"]) for r in self.runs)  # type: ignore[call-overload]

    def quantile(self, q: float) -> float:
        """Latency quantile (ms) over all runs: each run's percentile curve, weighted by its
        request count (wrk keeps no raw samples to merge)."""
        weighted: list[tuple[float, float]] = []
        for run in self.runs:
            points = run["points"]
            assert isinstance(points, list)
            weight = int(run["requests"]) / len(points)  # type: ignore[call-overload]
            weighted += [(float(p) / 1000, weight) for p in points]
        weighted.sort()
        total = sum(w for _, w in weighted)
        seen = 0.0
        for value, weight in weighted:
            seen += weight
            if seen >= q * total:
                return value
        return weighted[-1][0]


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


# -- services -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("bench/webhooks.py needs wrk: apt-get install wrk")
    print("installing wrk with apt-get ...", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "check": True}
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, **quiet)  # type: ignore[call-overload]
    subprocess.run(  # type: ignore[call-overload]
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"], env=env, **quiet
    )
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk still missing after apt-get install")
    return found


def migrate(url: str) -> None:
    """The schema the real way: the app factory, then Alembic's upgrade."""
    from flask_migrate import upgrade

    from app import create_app
    from extensions import db

    settings = Settings(
        env="test",
        secret_key="bench-secret-key",
        shopify_api_key="bench-api-key",
        shopify_api_secret=API_SECRET,
        token_encryption_keys=(DEVELOPMENT_FERNET_KEY,),
        database_url=url,
    )
    app = create_app(settings)
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        db.engine.dispose()


def install_shop(url: str) -> str:
    engine = create_engine(url)
    now = datetime.now(UTC)
    with Session(engine) as session:
        shop = Shop(
            domain=f"bench-{uuid.uuid4().hex[:10]}.myshopify.com",
            name="Bench webhooks",
            currency="USD",
            timezone="UTC",
            installed_at=now,
            created_at=now,
        )
        session.add(shop)
        session.commit()
        domain = shop.domain
    engine.dispose()
    return domain


def serve(app: str, port: int, env: dict[str, str], logs: Path, name: str) -> subprocess.Popen:
    log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), app],
        cwd=ROOT,
        env=env | {"GUNICORN_BIND": f"127.0.0.1:{port}"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log = log  # type: ignore[attr-defined]
    return process


def wait_ready(url: str, process: subprocess.Popen, logs: Path, name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    print((logs / f"{name}.log").read_text()[-3000:], file=sys.stderr)
    raise SystemExit(f"{name} did not come up on {url}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    process.log.close()  # type: ignore[attr-defined]


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
    script = logs / f"{run}.lua"
    script.write_text(
        WRK_SCRIPT % {"deliveries": DELIVERIES, "shop": shop, "run": run, "path": path}
    )
    command = [
        binary,
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        base + path,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("BENCH "))
    result: dict[str, object] = json.loads(line[len("BENCH ") :])
    return result


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


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of process ``root`` and its live children, from /proc."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(entry) == root or int(fields[1]) == root:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def service_pids() -> dict[str, int]:
    """The throwaway PostgreSQL's postmaster and Redis, as scripts/with-services.sh started
    them (their pid files sit in PGHOST_SOCKET_DIR); empty when run some other way."""
    directory = Path(os.environ.get("PGHOST_SOCKET_DIR", "/nonexistent"))
    pids = {}
    for name, pid_file in (("postgres", "pgdata/postmaster.pid"), ("redis", "redis.pid")):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids[name] = int((directory / pid_file).read_text().split()[0])
    return pids


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
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    redis_url = os.environ.get("REDIS_URL", "")
    if not url.startswith("postgresql") or not redis_url:
        print("bench/webhooks.py needs DATABASE_URL (PostgreSQL) and REDIS_URL: run `make bench`")
        return 2
    binary = ensure_wrk()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    migrate(url)
    shop = install_shop(url)
    queue = redis.Redis.from_url(redis_url)
    queue.delete(QUEUE_KEY)

    env = dict(os.environ) | {
        "CREDITCRAFT_ENV": "production",
        "SECRET_KEY": "bench-secret-key-" + "x" * 40,
        "SHOPIFY_API_KEY": "bench-api-key",
        "SHOPIFY_API_SECRET": API_SECRET,
        "TOKEN_ENCRYPTION_KEYS": DEVELOPMENT_FERNET_KEY,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
    }
    app_port, bare_port = free_port(), free_port()
    app_base, bare_base = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{bare_port}"
    tag = uuid.uuid4().hex[:8]
    timed_runs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        logs = Path(tmp)
        app_server = serve("app:create_app()", app_port, env, logs, "app")
        bare_server = serve("bench._bare_webhook_app:app", bare_port, env, logs, "bare")
        try:
            wait_ready(app_base + "/healthz", app_server, logs, "app")
            wait_ready(bare_base + "/healthz", bare_server, logs, "bare")
            check_answer(app_base, shop)
            workers = env.get("WEB_CONCURRENCY") or f"{(os.cpu_count() or 1) * 2 + 1}"
            print(
                f"gunicorn.conf.py: {workers} workers x {env.get('GUNICORN_THREADS', '4')} "
                f"threads (gthread) each side; wrk -t{WRK_THREADS} -c{CONNECTIONS}; "
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
        finally:
            stop(app_server)
            stop(bare_server)
    rows, distinct = recorded(url, timed_runs)
    jobs, all_rows = int(queue.llen(QUEUE_KEY)), count(url, ALL_ROWS)
    queue.close()
    print_cpu(bare, bare_cpu, app, app_cpu)
    return report(
        bare, app, Evidence(rows, distinct, transactions), jobs, all_rows, (light_bare, light_app)
    )


def print_side(side: Side) -> None:
    print(
        f"{side.name:18} {side.rate:9,.0f} {side.quantile(0.5):8.2f} "
        f"{side.quantile(0.99):8.2f} {side.requests:9,d} {side.failures:7d}"
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
    print(f"{'':18} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'failed':>7}")
    for side in (bare, app):
        print_side(side)
    print(f"the same at {LIGHT_CONNECTIONS} connections (one run each, after the timed rounds):")
    for side in light:
        print_side(side)
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
