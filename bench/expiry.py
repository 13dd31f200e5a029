"""Expiring 1,000,000 lots through the ledger beside a raw batched-SQL expiry of the same rows.

Run it with ``make bench B=expiry`` (a throwaway PostgreSQL with fsync off; DATABASE_URL set).
In one run it:

1. migrates, then seeds shop L with BENCH_LOTS lots (5 per account), all due, with books that
   verify: tests/ledger/bulk_lots.py makes each account's lots and ``issue`` entries with the
   ledger's own ``Book`` (hash chain included) and loads them with COPY, in BENCH_SEED_PROCS
   processes. Foreign-key triggers are off while loading (``session_replication_role =
   replica``, as pg_restore does): the rows are consistent by construction, and checking
   2,000,000 references one by one would double the seeding time;
2. clones L into shop R with INSERT … SELECT: the same customers, amounts, due times and issue
   entries under new ids (R's hash chains no longer verify; nothing reads them);
3. the same at BENCH_SMALL lots (shops l and r), for the memory comparison;
4. VACUUM ANALYZE, then expires: ``expire_due`` on L (what ``flask credits expire`` runs) and,
   on R, the raw statement below, in BENCH_SLICES alternating slices of due time (ledger up to
   t1, raw up to t1, ledger up to t2, …) so that a neighbour's load falls on both alike;
5. prints both times, lots/s and the ratio (goal <= 2x), the peak RSS growth of this process
   during the small and the large run (goal: the large one <= 50 MB more), and checks L's
   books (every lot expired once, balances, chains; verify_account on a sample). Exits
   non-zero if a check fails; a missed goal is printed, not fatal.

The raw expiry is the ledger-anchors.md §5.4 idiom, writing the same rows as the ledger: one
statement per batch of BATCH lots claimed ``FOR NO KEY UPDATE SKIP LOCKED`` from the partial
index, closing the lots (UPDATE … FROM the batch) and inserting per lot an entry (sequence and
balances by window functions, a SHA-256 in SQL where the ledger hashes its canonical JSON)
and an allocation, and per account the new head and an audit row; one commit per batch. It
has no Python in the loop and does not chain hashes within a batch: it is the floor the
ledger's Python (Book, hashing, the claim and write round trips) is measured against.

Knobs: BENCH_LOTS (1000000), BENCH_SMALL (10000), BENCH_SLICES (10), BENCH_SEED_PROCS (2),
BENCH_VERIFY_SAMPLE (200).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path

# Run as a script, sys.path[0] is bench/, where bench/ledger.py would shadow the ledger package.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, create_engine, event, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench._common import (  # noqa: E402
    checkpoint,
    insert_shop,
    migrate,
    postgres_url,
    print_load_average,
    server_facts,
    verify_sample,
)
from ledger.expiry import BATCH_SIZE, expire_due  # noqa: E402
from tests.ledger.bulk_lots import create_accounts, fill_accounts  # noqa: E402

LOTS = int(os.environ.get("BENCH_LOTS", "1000000"))
SMALL = int(os.environ.get("BENCH_SMALL", "10000"))
SLICES = int(os.environ.get("BENCH_SLICES", "10"))
SEED_PROCS = int(os.environ.get("BENCH_SEED_PROCS", "2"))
VERIFY_SAMPLE = int(os.environ.get("BENCH_VERIFY_SAMPLE", "200"))
LOTS_PER_ACCOUNT = 5
RATIO_GOAL = 2.0
MEMORY_GOAL_MB = 50.0

ISSUED_AT = datetime(2026, 1, 1, tzinfo=UTC)
FIRST_DUE = datetime(2026, 3, 1, tzinfo=UTC)
SPREAD = timedelta(days=30)


# -- seeding ------------------------------------------------------------------------------------


def trusted_engine(url: str) -> Engine:
    """An engine whose sessions skip foreign-key triggers (bulk loading known-good rows)."""
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _replica(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
        dbapi_connection.commit()

    return engine


def _fill(url: str, shop_id: int, part: tuple[int, int]) -> int:
    """One seeding process: the lots of the shop's accounts with ``id % n == i``."""
    engine = trusted_engine(url)
    try:
        seeded = fill_accounts(
            engine,
            shop_id,
            lots_per_account=LOTS_PER_ACCOUNT,
            issued_at=ISSUED_AT,
            first_due=FIRST_DUE,
            spread=SPREAD,
            seed=shop_id,
            part=part,
        )
    finally:
        engine.dispose()
    return seeded.lots


def new_shop(engine: Engine, label: str) -> int:
    return insert_shop(engine, f"expiry-{label}", installed_at=None).id


def seed_shop(url: str, engine: Engine, label: str, lots: int) -> int:
    shop_id = new_shop(engine, label)
    create_accounts(
        engine, shop_id, lots // LOTS_PER_ACCOUNT, at=ISSUED_AT, base=6_000_000_000, currency="USD"
    )
    parts = [(i, SEED_PROCS) for i in range(SEED_PROCS)]
    with ProcessPoolExecutor(len(parts), mp_context=get_context("spawn")) as pool:
        seeded = sum(pool.map(_fill, [url] * len(parts), [shop_id] * len(parts), parts))
    assert seeded == lots, (seeded, lots)
    return shop_id


CLONE = [
    "INSERT INTO customers (shop_id, shopify_customer_id, created_at, updated_at)"
    " SELECT :dst, shopify_customer_id, created_at, updated_at FROM customers WHERE shop_id = :src",
    "INSERT INTO credit_accounts (shop_id, customer_id, currency, balance, lifetime_credited,"
    " lifetime_debited, last_sequence, last_hash, created_at, updated_at)"
    " SELECT :dst, c2.id, a.currency, a.balance, a.lifetime_credited, a.lifetime_debited,"
    " a.last_sequence, a.last_hash, a.created_at, a.updated_at FROM credit_accounts a"
    " JOIN customers c1 ON c1.id = a.customer_id"
    " JOIN customers c2 ON c2.shop_id = :dst AND c2.shopify_customer_id = c1.shopify_customer_id"
    " WHERE a.shop_id = :src",
    "CREATE TEMP TABLE amap ON COMMIT DROP AS SELECT a.id AS old_id, a2.id AS new_id"
    " FROM credit_accounts a JOIN customers c1 ON c1.id = a.customer_id"
    " JOIN customers c2 ON c2.shop_id = :dst AND c2.shopify_customer_id = c1.shopify_customer_id"
    " JOIN credit_accounts a2 ON a2.customer_id = c2.id WHERE a.shop_id = :src",
    "CREATE TEMP TABLE lmap ON COMMIT DROP AS SELECT id AS old_id, gen_random_uuid() AS new_id"
    " FROM credit_lots WHERE shop_id = :src",
    "ANALYZE amap",
    "ANALYZE lmap",
    "INSERT INTO credit_lots (id, shop_id, account_id, amount, remaining, status, source, reason,"
    " note, expires_at, created_at)"
    " SELECT lm.new_id, :dst, am.new_id, l.amount, l.remaining, l.status, l.source, l.reason,"
    " l.note, l.expires_at, l.created_at FROM credit_lots l JOIN lmap lm ON lm.old_id = l.id"
    " JOIN amap am ON am.old_id = l.account_id",
    "INSERT INTO ledger_entries (id, shop_id, account_id, sequence, kind, amount, balance_before,"
    " balance_after, lot_id, actor, reason, note, metadata, prev_hash, hash, created_at)"
    " SELECT gen_random_uuid(), :dst, am.new_id, e.sequence, e.kind, e.amount, e.balance_before,"
    " e.balance_after, lm.new_id, e.actor, e.reason, e.note, e.metadata, e.prev_hash, e.hash,"
    " e.created_at FROM ledger_entries e JOIN lmap lm ON lm.old_id = e.lot_id"
    " JOIN amap am ON am.old_id = e.account_id WHERE e.shop_id = :src",
]


def clone_shop(trusted: Engine, engine: Engine, src: int, label: str) -> int:
    dst = new_shop(engine, label)
    with trusted.begin() as conn:
        for statement in CLONE:
            conn.execute(text(statement), {"src": src, "dst": dst})
    return dst


# -- the raw expiry -----------------------------------------------------------------------------

RAW_BATCH = text(
    """
WITH batch AS MATERIALIZED (
    SELECT id, account_id, remaining, expires_at, created_at FROM credit_lots
    WHERE shop_id = :shop_id AND status = 'active' AND expires_at IS NOT NULL
        AND expires_at <= :now
    ORDER BY expires_at LIMIT :limit
    FOR NO KEY UPDATE SKIP LOCKED
), numbered AS MATERIALIZED (
    SELECT b.id, b.account_id, b.remaining, a.balance, a.last_sequence, a.last_hash,
        gen_random_uuid() AS entry_id,
        row_number() OVER w AS n,
        sum(b.remaining) OVER w AS through
    FROM batch AS b JOIN credit_accounts AS a ON a.id = b.account_id
    WINDOW w AS (PARTITION BY b.account_id ORDER BY b.expires_at, b.created_at, b.id)
), lots AS (
    UPDATE credit_lots AS l SET remaining = 0, status = 'expired'
    FROM numbered AS n WHERE l.id = n.id
    RETURNING 1
), entries AS (
    INSERT INTO ledger_entries (id, shop_id, account_id, sequence, kind, amount, balance_before,
        balance_after, lot_id, actor, reason, metadata, prev_hash, hash, created_at)
    SELECT entry_id, :shop_id, account_id, last_sequence + n, 'expire', -remaining,
        balance - through + remaining, balance - through, id, 'system:expiry', 'expired',
        '{}', last_hash, encode(sha256(convert_to(last_hash || entry_id::text, 'UTF8')), 'hex'),
        :now
    FROM numbered
    RETURNING 1
), allocations AS (
    INSERT INTO entry_allocations (shop_id, entry_id, lot_id, amount)
    SELECT :shop_id, entry_id, id, -remaining FROM numbered
    RETURNING 1
), totals AS (
    SELECT account_id, sum(remaining) AS total, count(*) AS k FROM numbered GROUP BY account_id
), heads AS (
    UPDATE credit_accounts AS a SET balance = a.balance - t.total,
        lifetime_debited = a.lifetime_debited + t.total, last_sequence = a.last_sequence + t.k,
        last_hash = encode(sha256(convert_to(a.last_hash || t.k::text, 'UTF8')), 'hex'),
        updated_at = :now
    FROM totals AS t WHERE a.id = t.account_id
    RETURNING 1
), audits AS (
    INSERT INTO audit_log (shop_id, actor, action, target_type, target_id, outcome, details,
        created_at)
    SELECT :shop_id, 'system:expiry', 'expire', 'credit_account', account_id::text, 'success',
        jsonb_build_object('lots', k, 'amount', total, 'currency', 'USD'), :now
    FROM totals
    RETURNING 1
)
SELECT (SELECT count(*) FROM lots), (SELECT count(*) FROM entries),
    (SELECT count(*) FROM allocations), (SELECT count(*) FROM heads),
    (SELECT count(*) FROM audits)
"""
)


def raw_expire(engine: Engine, shop_id: int, now: datetime) -> int:
    done = 0
    with engine.connect() as conn:
        while True:
            lots, entries, allocations, *_ = conn.execute(
                RAW_BATCH, {"shop_id": shop_id, "now": now, "limit": BATCH_SIZE}
            ).one()
            conn.commit()
            assert lots == entries == allocations
            if not lots:
                return done
            done += lots


# -- the timed runs -----------------------------------------------------------------------------


@dataclass
class Side:
    lots: int = 0
    seconds: float = 0.0
    cpu: float = 0.0  # this process's CPU seconds
    slices: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.lots / self.seconds if self.seconds else float("nan")


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """The highest resident set size of this process while the block runs (sampled every
    10 ms; ru_maxrss would remember the peak of the migration and seeding before it)."""

    def __init__(self) -> None:
        self.peak = self.start = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self.start = self.peak = rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mb())


def run_pair(engine: Engine, ledger_shop: int, raw_shop: int, slices: int) -> tuple[Side, Side]:
    """Alternate ledger and raw over ``slices`` slices of due time, each to its own shop."""
    ledger, raw = Side(), Side()
    for index in range(1, slices + 1):
        now = FIRST_DUE + SPREAD * index / slices
        checkpoint(engine)
        t0, c0 = time.perf_counter(), time.process_time()
        with Session(engine) as session:
            report = expire_due(session, now=now, shop_id=ledger_shop)
        ledger.slices.append(time.perf_counter() - t0)
        ledger.seconds += ledger.slices[-1]
        ledger.cpu += time.process_time() - c0
        ledger.lots += report.lots
        checkpoint(engine)
        t0, c0 = time.perf_counter(), time.process_time()
        raw.lots += raw_expire(engine, raw_shop, now)
        raw.slices.append(time.perf_counter() - t0)
        raw.seconds += raw.slices[-1]
        raw.cpu += time.process_time() - c0
        print(
            f"    slice {index}/{slices}: ledger {report.lots} lots in {ledger.slices[-1]:.2f} s,"
            f" raw in {raw.slices[-1]:.2f} s",
            flush=True,
        )
    return ledger, raw


# -- checks -------------------------------------------------------------------------------------


def check_ledger_shop(engine: Engine, shop_id: int, lots: int) -> list[str]:
    problems: list[str] = []
    with Session(engine) as check:
        expire_entries, distinct_lots = check.execute(
            text(
                "SELECT count(*), count(DISTINCT lot_id) FROM ledger_entries"
                " WHERE shop_id = :shop AND kind = 'expire'"
            ),
            {"shop": shop_id},
        ).one()
        if not expire_entries == distinct_lots == lots:
            problems.append(f"{expire_entries} expire entries for {distinct_lots} of {lots} lots")
        statuses = dict(
            check.execute(
                text("SELECT status, count(*) FROM credit_lots WHERE shop_id = :shop GROUP BY 1"),
                {"shop": shop_id},
            ).all()
        )
        if statuses != {"expired": lots}:
            problems.append(f"lot statuses {statuses}")
        # Every account: balance 0 = its entries' sum; sequence, head and chain without fork.
        off = check.scalar(
            text(
                "SELECT count(*) FROM credit_accounts a JOIN ("
                "  SELECT account_id, sum(amount) AS total, count(*) AS n,"
                "    count(DISTINCT prev_hash) AS prevs, max(sequence) AS last"
                "  FROM ledger_entries WHERE shop_id = :shop GROUP BY account_id) e"
                " ON e.account_id = a.id"
                " JOIN ledger_entries h ON h.account_id = a.id AND h.sequence = e.last"
                " WHERE a.shop_id = :shop AND NOT (a.balance = 0 AND e.total = 0"
                "  AND a.last_sequence = e.n AND e.n = e.prevs AND e.n = e.last"
                "  AND e.n = :per_account AND a.last_hash = h.hash)"
            ),
            {"shop": shop_id, "per_account": 2 * LOTS_PER_ACCOUNT},
        )
        if off:
            problems.append(f"{off} accounts whose head, balance or chain is off")
        problems += verify_sample(check, shop_id, VERIFY_SAMPLE)
    return problems


def check_raw_shop(engine: Engine, shop_id: int, lots: int) -> list[str]:
    with engine.connect() as conn:
        expired, entries, balance = conn.execute(
            text(
                "SELECT"
                " (SELECT count(*) FROM credit_lots WHERE shop_id = :s AND status = 'expired'),"
                " (SELECT count(*) FROM ledger_entries WHERE shop_id = :s AND kind = 'expire'),"
                " (SELECT sum(balance) FROM credit_accounts WHERE shop_id = :s)"
            ),
            {"s": shop_id},
        ).one()
    if (expired, entries, balance) != (lots, lots, 0):
        return [f"raw shop: {expired} lots expired, {entries} entries, balances {balance}"]
    return []


# -- main ---------------------------------------------------------------------------------------


def main() -> int:
    url = postgres_url()
    if not url:
        print("bench/expiry.py needs DATABASE_URL on PostgreSQL: run `make bench B=expiry`")
        return 2
    print_load_average("before")
    migrate(url)
    engine = create_engine(url)
    trusted = trusted_engine(url)

    t0 = time.perf_counter()
    small_ledger = seed_shop(url, engine, "l", SMALL)
    large_ledger = seed_shop(url, engine, "L", LOTS)
    seeded_s = time.perf_counter() - t0
    print(
        f"seeded {LOTS + SMALL:,} lots with their issue entries (Book + COPY, {SEED_PROCS}"
        f" processes) in {seeded_s:.1f} s ({(LOTS + SMALL) / seeded_s:,.0f} lots/s)",
        flush=True,
    )
    t0 = time.perf_counter()
    small_raw = clone_shop(trusted, engine, small_ledger, "r")
    large_raw = clone_shop(trusted, engine, large_ledger, "R")
    print(f"cloned both for the raw side in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("customers", "credit_accounts", "credit_lots", "ledger_entries"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))
    print(f"VACUUM ANALYZE in {time.perf_counter() - t0:.1f} s", flush=True)
    trusted.dispose()

    print(f"expiring {SMALL:,} lots (ledger, raw) ...", flush=True)
    with PeakRss() as small_rss:
        small = run_pair(engine, small_ledger, small_raw, 1)
    print(f"expiring {LOTS:,} lots (ledger, raw) in {SLICES} alternating slices ...", flush=True)
    with PeakRss() as large_rss:
        large = run_pair(engine, large_ledger, large_raw, SLICES)
    # Both measured from the RSS before the small run: what the large run holds beyond it.
    small_growth = small_rss.peak - small_rss.start
    large_growth = large_rss.peak - small_rss.start

    problems = [
        *check_ledger_shop(engine, small_ledger, SMALL),
        *check_ledger_shop(engine, large_ledger, LOTS),
        *check_raw_shop(engine, small_raw, SMALL),
        *check_raw_shop(engine, large_raw, LOTS),
    ]
    facts = server_facts(engine)
    engine.dispose()

    print()
    print(f"expiry bench ({facts}; {os.cpu_count()} cores; batches of {BATCH_SIZE} lots)")
    print(f"{'lots':>10}{'ledger s':>10}{'raw s':>8}{'ledger/s':>10}{'raw/s':>9}{'ratio':>7}")
    for label, (led, raw) in ((f"{SMALL:,}", small), (f"{LOTS:,}", large)):
        print(
            f"{label:>10}{led.seconds:>10.1f}{raw.seconds:>8.1f}{led.rate:>10,.0f}"
            f"{raw.rate:>9,.0f}{led.seconds / raw.seconds:>6.2f}x"
        )
    led, raw = large
    ratio = led.seconds / raw.seconds
    print(
        f"ratio ledger/raw at {LOTS:,}: {ratio:.2f}x (goal <= {RATIO_GOAL:g}x:"
        f" {'met' if ratio <= RATIO_GOAL else 'MISSED'}); Python CPU in this process:"
        f" ledger {led.cpu / led.lots * 1e6:.0f} us/lot, raw {raw.cpu / raw.lots * 1e6:.0f} us/lot"
    )
    extra = large_growth - small_growth
    print(
        f"peak RSS growth: {small_growth:.1f} MB expiring {SMALL:,} lots,"
        f" {large_growth:.1f} MB after {LOTS:,}: {extra:+.1f} MB"
        f" (goal <= {MEMORY_GOAL_MB:g} MB: {'met' if extra <= MEMORY_GOAL_MB else 'MISSED'})"
    )
    if problems:
        print("CHECKS FAILED:")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(
        f"checks: every lot expired once, every account's balance, head and chain right,"
        f" verify_account clean on {VERIFY_SAMPLE} sampled accounts per shop"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
