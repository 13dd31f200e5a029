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
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
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

from config import DEVELOPMENT_FERNET_KEY, Settings  # noqa: E402
from ledger import operations  # noqa: E402
from ledger.book import Actor  # noqa: E402
from ledger.money import Money  # noqa: E402
from models import Shop  # noqa: E402
from storefront.cache import SHOP_TTL  # noqa: E402
from storefront.signature import sign_pairs  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "12"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "12"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
WRK_THREADS = int(os.environ.get("BENCH_WRK_THREADS", "1"))
CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "200"))
WARMUP_SECONDS = 3
STATS_SETTLE = 11.0
GOAL_THROUGHPUT = 0.8
GOAL_P99 = 2.0

API_SECRET = "bench-api-secret-0123456789abcdef0123456789"
FIRST_CUSTOMER = 7_408_300_000
CLIENT_IP = "203.0.113.7"  # as Shopify's proxy reports the storefront visitor
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"

WRK_SCRIPT = """
local paths = {%(paths)s}
local i = 0
local headers = {["X-Forwarded-For"] = "%(ip)s, 23.227.38.65"}
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i], headers)
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
    def cpu_per_request_us(self) -> float:
        """gunicorn workers' CPU per request: steadier than req/s on a shared machine."""
        return sum(float(r["server_cpu"]) for r in self.runs) / self.requests * 1e6  # type: ignore[arg-type]

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
        raise SystemExit("bench/storefront.py needs wrk: apt-get install wrk")
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


def seed(url: str) -> tuple[str, list[int]]:
    """An installed shop whose customers each hold 10.00 (expiring in 30 days) + 2.50."""
    engine = create_engine(url)
    now = datetime.now(UTC)
    expires = (now + timedelta(days=30)).replace(microsecond=0)
    with Session(engine) as session:
        shop = Shop(
            domain=f"bench-{uuid.uuid4().hex[:10]}.myshopify.com",
            name="Bench storefront",
            currency="USD",
            timezone="UTC",
            installed_at=now,
            created_at=now,
        )
        session.add(shop)
        session.commit()
        customers = list(range(FIRST_CUSTOMER, FIRST_CUSTOMER + CUSTOMERS))
        for customer in customers:
            by = Actor(shop.id, now, "bench", "bench")
            operations.issue(
                session, by, customer=customer, amount=Money(1000, "USD"), expires_at=expires
            )
            operations.issue(session, by, customer=customer, amount=Money(250, "USD"))
        domain = shop.domain
    engine.dispose()
    return domain, customers


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
    deadline = time.monotonic() + 180  # a loaded 2-core machine boots ten workers slowly
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


def server_cpu(master: int) -> float:
    """CPU seconds (user + system) used so far by a gunicorn master's workers."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == master:  # ppid
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


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
    script = logs / "paths.lua"
    lua_paths = ",".join(json.dumps(p) for p in paths)  # JSON strings are valid Lua strings
    script.write_text(WRK_SCRIPT % {"paths": lua_paths, "ip": CLIENT_IP})
    command = [
        binary,
        f"-t{WRK_THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{max(1, round(seconds))}s",  # wrk takes whole seconds
        "--timeout",
        "5s",
        "-s",
        str(script),
        base,
    ]
    cpu = server_cpu(master) if master else 0.0
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("BENCH "))
    result: dict[str, object] = json.loads(line[len("BENCH ") :])
    result["server_cpu"] = (server_cpu(master) - cpu) if master else 0.0
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
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    redis_url = os.environ.get("REDIS_URL", "")
    if not url.startswith("postgresql") or not redis_url:
        print("bench/storefront.py needs DATABASE_URL (PostgreSQL) and REDIS_URL: run `make bench`")
        return 2
    binary = ensure_wrk()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    migrate(url)
    domain, customers = seed(url)
    print(f"seeded {len(customers)} customers in {domain}", flush=True)

    env = dict(os.environ) | {
        "CREDITCRAFT_ENV": "production",
        "SECRET_KEY": "bench-secret-key-" + "x" * 40,
        "SHOPIFY_API_KEY": "bench-api-key",
        "SHOPIFY_API_SECRET": API_SECRET,
        "TOKEN_ENCRYPTION_KEYS": DEVELOPMENT_FERNET_KEY,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "PROXY_RATE_LIMIT_PER_IP": str(10**12),  # never refuses, still counts
        "PROXY_RATE_LIMIT_PER_SHOP": str(10**12),
        "PYTHONPATH": str(ROOT / "bench"),  # for the bare app's module
    }
    app_port, bare_port = free_port(), free_port()
    app_base, bare_base = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{bare_port}"
    with tempfile.TemporaryDirectory(prefix="bench-storefront-") as tmp:
        logs = Path(tmp)
        app_server = serve("app:create_app()", app_port, env, logs, "app")
        bare_server = serve("_bare_app:app", bare_port, env, logs, "bare")
        try:
            wait_ready(app_base + "/healthz", app_server, logs, "app")
            wait_ready(bare_base + "/bare", bare_server, logs, "bare")
            check_answer(app_base, signed_paths(domain, customers[:1])[0])
            workers = env.get("WEB_CONCURRENCY") or f"{(os.cpu_count() or 1) * 2 + 1}"
            print(
                f"gunicorn.conf.py: {workers} workers x {env.get('GUNICORN_THREADS', '4')} "
                f"threads (gthread) each side; wrk -t{WRK_THREADS} -c{CONNECTIONS}; "
                f"{ROUNDS} alternating rounds, {SECONDS:g} s per side",
                flush=True,
            )
            # Warm-up: every worker of the app fills its in-process copy of every customer.
            wrk(binary, app_base, signed_paths(domain, customers), WARMUP_SECONDS, logs)
            wrk(binary, bare_base, ["/bare"], WARMUP_SECONDS, logs)
            bare, app = Side("bare Flask route"), Side("balance look-up")
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
        finally:
            stop(app_server)
            stop(bare_server)
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


def report(bare: Side, app: Side, misses: dict[str, int], counted: int) -> int:
    print()
    print(
        f"{'':18} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'failed':>7} "
        f"{'server CPU/req':>15}"
    )
    for side in (bare, app):
        print(
            f"{side.name:18} {side.rate:9,.0f} {side.quantile(0.5):8.2f} "
            f"{side.quantile(0.99):8.2f} {side.requests:9,d} {side.failures:7d} "
            f"{side.cpu_per_request_us:12.0f} us"
        )
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
