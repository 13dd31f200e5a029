"""A 100,000-row CSV to all-issued, through the bulk job in a real worker (issue 4, item 7).

Run it with ``make bench B=bulk`` (throwaway PostgreSQL with fsync off, and Redis; DATABASE_URL
and REDIS_URL set). In one run it:

1. migrates, makes a shop whose customers partly hold credit already (BENCH_KNOWN_SHARE of the
   file's customers have a USD account), and ANALYZEs, as a live database has statistics;
2. writes a CSV of BENCH_ROWS rows (one per customer; USD, some EUR; half with an expiry),
   and times the upload: ``create_import`` (parse and check it whole, store its rows);
3. starts ``flask worker`` (running before the job arrives, as in production), then times the
   import from start to all-issued: the job enqueued on the ``bulk`` queue, run in the
   worker's forked work-horse (its lanes as threads), progress polled meanwhile;
4. checks the books: one entry per row under its row key, every row linked to its entry, the
   lots summing to the report's totals, and ``verify_account`` on a sample of accounts;
5. for comparison, issues BENCH_COMPARE_ROWS more rows in this process with one lane and with
   the job's default lanes (a row is four round trips: one lane mostly waits).

It prints rows/s and times against the goal (<= 60 s for 100,000 rows), CPU per row of the
worker and of PostgreSQL (read from /proc: neighbours loading the machine move it far less
than wall time), and the load average. It exits non-zero if the books do not add up; a missed
goal is printed, not fatal. Knobs: BENCH_ROWS (100000), BENCH_KNOWN_SHARE (0.2),
BENCH_COMPARE_ROWS (10000, 0 skips), BENCH_SAMPLE (200 accounts verified).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Run as a script, sys.path[0] is bench/: keep it from shadowing the project's packages.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import rq  # noqa: E402
from flask import Flask  # noqa: E402
from sqlalchemy import Engine, func, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench._common import (  # noqa: E402
    insert_shop,
    make_app,
    postgres_url,
    print_load_average,
    process_cpu,
    service_pids,
    tree_cpu,
    upgrade_schema,
    verify_sample,
)
from blueprints.settings import current_settings  # noqa: E402
from extensions import db  # noqa: E402
from jobs.bulk import LANES, bulk_issue, enqueue_bulk_issue  # noqa: E402
from ledger import bulk  # noqa: E402
from ledger.money import Money  # noqa: E402
from models import (  # noqa: E402
    GENESIS_HASH,
    BulkImport,
    BulkImportRow,
    CreditLot,
    LedgerEntry,
    Shop,
)

ROWS = int(os.environ.get("BENCH_ROWS", "100000"))
KNOWN_SHARE = float(os.environ.get("BENCH_KNOWN_SHARE", "0.2"))
COMPARE_ROWS = int(os.environ.get("BENCH_COMPARE_ROWS", "10000"))
SAMPLE = int(os.environ.get("BENCH_SAMPLE", "200"))
GOAL_SECONDS = 60.0 * ROWS / 100_000
FIRST_CUSTOMER = 6_100_000_000
ACTOR = "system:bench"


# -- set-up ---------------------------------------------------------------------------------


def new_shop(engine: Engine) -> Shop:
    return insert_shop(
        engine,
        "bulk",
        timezone="America/New_York",
        native_sync=False,  # mirroring is the sync job's, paced by Shopify: not timed here
    )


def seed_known_customers(engine: Engine, shop_id: int, count: int) -> None:
    """Customers who already hold a (USD) account: set-based, it is not what is timed."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customers (shop_id, shopify_customer_id, created_at, updated_at) "
                "SELECT :shop, :first + g, now(), now() FROM generate_series(0, :n - 1) AS g"
            ),
            {"shop": shop_id, "first": FIRST_CUSTOMER, "n": count},
        )
        conn.execute(
            text(
                "INSERT INTO credit_accounts (shop_id, customer_id, currency, balance, "
                "lifetime_credited, lifetime_debited, last_sequence, last_hash, created_at, "
                "updated_at) SELECT shop_id, id, 'USD', 0, 0, 0, 0, :genesis, now(), now() "
                "FROM customers WHERE shop_id = :shop"
            ),
            {"shop": shop_id, "genesis": GENESIS_HASH},
        )
    analyze(engine)


def analyze(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))


def csv_file(rows: int, first: int, seed: int) -> bytes:
    rng = random.Random(seed)
    expiry = (datetime.now(UTC) + timedelta(days=365)).date().isoformat()
    lines = ["customer_id,amount,currency,expires_at,reason"]
    for n in range(rows):
        currency = "EUR" if n % 20 == 19 else "USD"
        amount = f"{rng.randint(1, 200)}.{rng.randint(0, 99):02d}"
        lines.append(
            f"{first + n},{amount},{currency},{expiry if n % 2 else ''},spring promo {seed}"
        )
    return ("\r\n".join(lines) + "\r\n").encode()


# -- measuring --------------------------------------------------------------------------------


def postgres_cpu() -> float:
    """CPU seconds of the PostgreSQL cluster: the postmaster, its reaped children, live ones;
    NaN when scripts/with-services.sh did not start it."""
    postmaster = service_pids().get("postgres")
    return float("nan") if postmaster is None else tree_cpu(postmaster, reaped=True)


class Worker:
    """``flask worker`` running before the job is enqueued, as in production; stopped after."""

    def __init__(self, url: str, redis_url: str) -> None:
        env = os.environ | {"CREDITCRAFT_ENV": "test", "DATABASE_URL": url, "REDIS_URL": redis_url}
        self.redis = redis.Redis.from_url(redis_url)
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and app
            [sys.executable, "-m", "flask", "--app", "app:create_app", "worker"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.perf_counter() + 120
        while rq.Worker.count(connection=self.redis) == 0:
            if self.process.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit(f"the worker did not start:\n{self.stop()}")
            time.sleep(0.2)

    def cpu(self) -> float:
        return process_cpu(self.process.pid)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # RQ's warm shutdown
        _, stderr = self.process.communicate(timeout=60)
        self.redis.close()
        return stderr[-3000:]


def wait_until_finished(engine: Engine, import_id: int, worker: Worker) -> float:
    """Poll the import until it is finished; print progress every 10 s; wall seconds."""
    start = last_print = time.perf_counter()
    while True:
        time.sleep(0.2)
        state, done = progress(engine, import_id)
        now = time.perf_counter()
        if state in ("finished", "failed"):
            return now - start
        if worker.process.poll() is not None:
            raise SystemExit(f"the worker died:\n{worker.stop()}")
        if now - last_print >= 10:
            last_print = now
            elapsed = now - start
            print(
                f"  {elapsed:5.1f} s: {done} rows done ({done / elapsed:,.0f} rows/s)", flush=True
            )


def progress(engine: Engine, import_id: int) -> tuple[str, int]:
    with Session(engine) as session:
        found = session.get(BulkImport, import_id)
        assert found is not None
        return found.state, found.issued_rows + found.failed_rows


# -- checks -----------------------------------------------------------------------------------


def check_books(engine: Engine, shop_id: int, import_id: int, rows: int) -> list[str]:
    problems: list[str] = []
    with Session(engine) as session:
        found = session.get(BulkImport, import_id)
        assert found is not None
        if (found.state, found.issued_rows, found.failed_rows) != ("finished", rows, 0):
            problems.append(
                f"import {found.state}: {found.issued_rows} issued, {found.failed_rows} failed"
            )
        keys = session.scalar(
            select(func.count(func.distinct(LedgerEntry.idempotency_key))).where(
                LedgerEntry.shop_id == shop_id,
                LedgerEntry.idempotency_key.like(f"bulk:{found.file_hash}:%"),
            )
        )
        entries = session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.shop_id == shop_id)
        )
        if keys != rows or entries != rows:
            problems.append(f"{entries} entries under {keys} distinct row keys for {rows} rows")
        unlinked = session.scalar(
            select(func.count())
            .select_from(BulkImportRow)
            .where(BulkImportRow.import_id == import_id, BulkImportRow.entry_id.is_(None))
        )
        if unlinked:
            problems.append(f"{unlinked} rows without their entry")
        lots = dict(
            session.execute(
                select(CreditLot.source, func.sum(CreditLot.amount))
                .where(CreditLot.shop_id == shop_id)
                .group_by(CreditLot.source)
            ).all()
        )
        reported = sum(
            Money.parse(total["amount"], total["currency"]).minor
            for total in found.report["totals"]
        )
        if lots != {"bulk": reported}:
            problems.append(f"lots by source {lots}; the report's totals sum to {reported}")
        problems += verify_sample(session, shop_id, SAMPLE)
    return problems


# -- the comparison: lanes ---------------------------------------------------------------------


def lanes_compare(app: Flask, engine: Engine, shop: Shop) -> list[str]:
    lines = []
    for index, lanes in enumerate((1, LANES)):
        first = FIRST_CUSTOMER + 10_000_000 * (index + 1)
        data = csv_file(COMPARE_ROWS, first, seed=100 + index)
        with Session(engine, expire_on_commit=False) as session:
            created = bulk.create_import(
                session, shop, data, filename=None, actor=ACTOR, now=datetime.now(UTC)
            )
            bulk.start_import(
                session, shop.id, created.bulk_import.id, actor=ACTOR, now=datetime.now(UTC)
            )
        with app.app_context():
            start = time.perf_counter()
            bulk_issue(created.bulk_import.id, lanes=lanes)
            seconds = time.perf_counter() - start
            db.session.remove()
        lines.append(
            f"  {lanes} lane{'s' if lanes > 1 else ''}: {COMPARE_ROWS} rows in {seconds:.1f} s "
            f"= {COMPARE_ROWS / seconds:,.0f} rows/s"
        )
    return lines


# -- main ---------------------------------------------------------------------------------------


def main() -> int:
    url = postgres_url()
    redis_url = os.environ.get("REDIS_URL")
    if not url or not redis_url:
        print("bench/bulk.py needs DATABASE_URL (PostgreSQL) and REDIS_URL: `make bench B=bulk`")
        return 2
    print_load_average("before")

    app = make_app(url, redis_url)
    upgrade_schema(app)
    with app.app_context():
        engine = db.engine
        shop = new_shop(engine)
        known = int(ROWS * KNOWN_SHARE)
        seed_known_customers(engine, shop.id, known)
        print(f"shop {shop.domain}: {known} of the file's {ROWS} customers hold credit already")

        data = csv_file(ROWS, FIRST_CUSTOMER, seed=1)
        started_at = time.perf_counter()
        with Session(engine, expire_on_commit=False) as session:
            created = bulk.create_import(
                session, shop, data, filename="bench.csv", actor=ACTOR, now=datetime.now(UTC)
            )
        upload = time.perf_counter() - started_at
        found = created.bulk_import
        report = found.report
        totals = ", ".join(f"{t['amount']} {t['currency']}" for t in report["totals"])
        print(
            f"upload: {len(data) / 1e6:.1f} MB, {report['rows']} rows checked and stored in "
            f"{upload:.1f} s ({found.state}; {totals})",
            flush=True,
        )
        if found.state != "validated":
            print(f"FAILED: the import is {found.state}: {report['errors'][:3]}")
            return 1

        worker = Worker(url, redis_url)
        try:
            pg_before, cpu_before = postgres_cpu(), worker.cpu()
            issue_start = time.perf_counter()
            with Session(engine, expire_on_commit=False) as session:
                bulk.start_import(session, shop.id, found.id, actor=ACTOR, now=datetime.now(UTC))
            how = enqueue_bulk_issue(current_settings(), found.id)
            wait_until_finished(engine, found.id, worker)
            issue = time.perf_counter() - issue_start
            pg_cpu, worker_cpu = postgres_cpu() - pg_before, worker.cpu() - cpu_before
        finally:
            worker.stop()

        problems = check_books(engine, shop.id, found.id, ROWS)
        compare = lanes_compare(app, engine, shop) if COMPARE_ROWS else []
        engine.dispose()

    total = upload + issue
    print()
    print(f"bulk issue: {ROWS} rows, job {how}, {LANES} lanes in one running worker")
    print(f"  upload (parse, check, store rows): {upload:6.1f} s")
    print(f"  start to all-issued (the job):     {issue:6.1f} s  ({ROWS / issue:,.0f} rows/s)")
    print(f"  total, file to all-issued:         {total:6.1f} s  ({ROWS / total:,.0f} rows/s)")
    verdict = "met" if total <= GOAL_SECONDS else f"missed by {total / GOAL_SECONDS:.2f}x"
    print(f"  goal <= {GOAL_SECONDS:.0f} s: {verdict}")
    print(
        f"  CPU per row: worker {worker_cpu / ROWS * 1000:.2f} ms, "
        f"PostgreSQL {pg_cpu / ROWS * 1000:.2f} ms ({os.cpu_count()} CPUs)"
    )
    if compare:
        print("lanes, in this process:")
        print("\n".join(compare))
    print_load_average("after")
    if problems:
        print("FAILED: the books do not add up:")
        print("\n".join(f"  {p}" for p in problems))
        return 1
    print(
        f"books: {ROWS} entries under {ROWS} row keys, every row linked, totals tie out, "
        f"{SAMPLE} accounts verified"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
