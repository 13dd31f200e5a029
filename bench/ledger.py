"""Redeems per second through the ledger beside the raw-SQL ceiling (issue 2, item 10).

Run it with ``make bench B=ledger``: a throwaway PostgreSQL, DATABASE_URL set. In one process
and one run, with the same client threads:

* hot: every client redeems 1 minor unit from ONE account (``operations.redeem``), and the
  raw ceiling runs ``UPDATE bench_balances SET balance = balance - 1 WHERE id = :id AND
  balance >= 1`` then ``INSERT INTO bench_transactions``, one transaction per op, on one row;
* uniform: the same over 10,000 accounts (10,000 rows), a random one per op.

It prints ops/s, ledger/raw ratios against the goals (>= 0.7 hot, >= 0.5 uniform) and p50/p99
latency, then checks the books (verify_account, balance arithmetic, raw sums) and exits
non-zero if anything does not add up. Environment knobs: BENCH_SECONDS (8), BENCH_WARMUP (1),
BENCH_CLIENTS (16), BENCH_ACCOUNTS (10000), BENCH_SETUP_THREADS (4).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# Run as a script, sys.path[0] is bench/, where this very file would shadow the ledger package.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, create_engine, func, select, text  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from bench._common import (  # noqa: E402
    checkpoint,
    insert_shop,
    migrate,
    postgres_url,
    print_load_average,
    server_facts,
)
from ledger import operations  # noqa: E402
from ledger.book import Actor  # noqa: E402
from ledger.money import Money  # noqa: E402
from ledger.verify import verify_account  # noqa: E402
from models import CreditAccount, Customer, LedgerEntry  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "1"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
ACCOUNTS = int(os.environ.get("BENCH_ACCOUNTS", "10000"))
SETUP_THREADS = int(os.environ.get("BENCH_SETUP_THREADS", "4"))

HOT_LOTS = 3
HOT_LOT_MINOR = 10**12  # three lots of ten billion dollars: never runs dry
UNIFORM_MINOR = 10**9
HOT_RAW_ID = 0  # bench_balances: row 0 is the hot row, 1..ACCOUNTS the uniform ones
GOALS = {"hot": 0.7, "uniform": 0.5}
ONE_CENT = Money(1, "USD")


# -- the measuring loop ---------------------------------------------------------------------


@dataclass
class Run:
    """What one timed run of CLIENTS threads produced."""

    name: str
    done: int = 0  # ops that succeeded, warm-up included (for the balance arithmetic)
    window: list[float] = field(default_factory=list)  # latencies of ops ending in the window
    errors: list[str] = field(default_factory=list)
    seconds: float = SECONDS
    cpu: float = 0.0  # this process's CPU seconds (all threads) inside the window

    @property
    def cpu_ms_per_op(self) -> float:
        return self.cpu / len(self.window) * 1000 if self.window else float("nan")

    @property
    def rate(self) -> float:
        return len(self.window) / self.seconds

    def quantile(self, q: float) -> float:
        if not self.window:
            return float("nan")
        ordered = sorted(self.window)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


Op = Callable[[random.Random, int], bool]


def measure(name: str, make_op: Callable[[int], Op]) -> Run:
    """Run ``make_op(client)()`` in CLIENTS threads: WARMUP s, then SECONDS s counted."""
    run = Run(name)
    lock = threading.Lock()
    ready = threading.Barrier(CLIENTS + 1)
    clock: dict[str, float] = {}

    def client(index: int) -> None:
        op = make_op(index)
        rng = random.Random(index)
        latencies: list[float] = []
        done = 0
        errors: list[str] = []
        ready.wait()
        start, end = clock["start"], clock["end"]
        i = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            try:
                ok = op(rng, i)
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                ok = False
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
            t1 = time.perf_counter()
            i += 1
            if ok:
                done += 1
                if start <= t1 < end:
                    latencies.append(t1 - t0)
            elif not errors:
                errors.append("op reported failure")
        with lock:
            run.done += done
            run.window.extend(latencies)
            run.errors.extend(errors)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    now = time.perf_counter()
    clock["start"] = now + WARMUP
    clock["end"] = now + WARMUP + SECONDS
    ready.wait()
    # Client CPU per op does not depend on how busy the machine is: sample it over the window.
    time.sleep(max(0.0, clock["start"] - time.perf_counter()))
    cpu_start = time.process_time()
    time.sleep(max(0.0, clock["end"] - time.perf_counter()))
    run.cpu = time.process_time() - cpu_start
    for thread in threads:
        thread.join()
    return run


# -- ledger side ----------------------------------------------------------------------------


def actor(shop_id: int, key: str) -> Actor:
    return Actor(
        shop_id=shop_id, now=datetime.now(UTC), actor="bench", reason="bench", idempotency_key=key
    )


def fund(sessions: sessionmaker[Session], shop_id: int, customers: range, minor: int) -> float:
    """Issue ``minor`` to every customer through operations.issue, in SETUP_THREADS threads."""
    started = time.perf_counter()
    chunks = [customers[i::SETUP_THREADS] for i in range(SETUP_THREADS)]
    failures: list[BaseException] = []

    def work(chunk: range) -> None:
        try:
            with sessions() as session:
                for customer in chunk:
                    operations.issue(
                        session,
                        actor(shop_id, f"fund-{customer}"),
                        customer=customer,
                        amount=Money(minor, "USD"),
                    )
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return time.perf_counter() - started


def ledger_redeem(
    sessions: sessionmaker[Session], shop_id: int, case: str, pick: Callable[[random.Random], int]
) -> Callable[[int], Op]:
    def make(index: int) -> Op:
        session = sessions()
        prefix = f"{case}-{index}-{uuid.uuid4().hex[:8]}"

        def op(rng: random.Random, i: int) -> bool:
            operations.redeem(
                session, actor(shop_id, f"{prefix}-{i}"), customer=pick(rng), amount=ONE_CENT
            )
            return True

        return op

    return make


# -- raw side -------------------------------------------------------------------------------

RAW_DEBIT = text("UPDATE bench_balances SET balance = balance - 1 WHERE id = :id AND balance >= 1")
RAW_ENTRY = text("INSERT INTO bench_transactions (balance_id, amount) VALUES (:id, -1)")


def raw_setup(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_transactions, bench_balances"))
        conn.execute(
            text(
                "CREATE TABLE bench_balances (id bigint PRIMARY KEY,"
                " balance bigint NOT NULL CHECK (balance >= 0))"
            )
        )
        conn.execute(
            text(
                "CREATE TABLE bench_transactions (id bigserial PRIMARY KEY, balance_id bigint,"
                " amount bigint, created_at timestamptz DEFAULT now())"
            )
        )
        conn.execute(
            text("INSERT INTO bench_balances VALUES (:id, :balance)"),
            {"id": HOT_RAW_ID, "balance": HOT_LOTS * HOT_LOT_MINOR},
        )
        conn.execute(
            text("INSERT INTO bench_balances SELECT g, :balance FROM generate_series(1, :n) AS g"),
            {"balance": UNIFORM_MINOR, "n": ACCOUNTS},
        )
        conn.execute(text("ANALYZE bench_balances"))


def raw_debit(engine: Engine, pick: Callable[[random.Random], int]) -> Callable[[int], Op]:
    def make(_index: int) -> Op:
        def op(rng: random.Random, _i: int) -> bool:
            row = pick(rng)
            with engine.begin() as conn:
                if conn.execute(RAW_DEBIT, {"id": row}).rowcount != 1:  # type: ignore[attr-defined]
                    return False
                conn.execute(RAW_ENTRY, {"id": row})
            return True

        return op

    return make


# -- checks ---------------------------------------------------------------------------------


def check_hot(sessions: sessionmaker[Session], account_id: int, run: Run) -> list[str]:
    problems: list[str] = []
    with sessions() as session:
        violations = verify_account(session, account_id)
        if violations:
            problems.append(f"hot ledger: verify_account found {len(violations)}: {violations[:3]}")
        balance = session.get(CreditAccount, account_id).balance  # type: ignore[union-attr]
        expected = HOT_LOTS * HOT_LOT_MINOR - run.done
        if balance != expected:
            problems.append(f"hot ledger: balance {balance} != {expected} (initial - successes)")
    return problems


def check_uniform(sessions: sessionmaker[Session], shop_id: int, run: Run) -> list[str]:
    problems: list[str] = []
    with sessions() as session:
        total = session.scalar(
            select(func.sum(CreditAccount.balance)).where(CreditAccount.shop_id == shop_id)
        )
        expected = ACCOUNTS * UNIFORM_MINOR - run.done
        if total != expected:
            problems.append(f"uniform ledger: balances sum to {total}, expected {expected}")
        # Every account: cached balance = sum of its entries (one query for all of them).
        sums = (
            select(LedgerEntry.account_id, func.sum(LedgerEntry.amount).label("total"))
            .where(LedgerEntry.shop_id == shop_id)
            .group_by(LedgerEntry.account_id)
            .subquery()
        )
        off = session.scalar(
            select(func.count())
            .select_from(CreditAccount)
            .join(sums, sums.c.account_id == CreditAccount.id)
            .where(CreditAccount.shop_id == shop_id, sums.c.total != CreditAccount.balance)
        )
        if off:
            problems.append(f"uniform ledger: {off} accounts whose entries do not sum to balance")
        # The full verifier (chain, sequence, lots) on the most-redeemed accounts and a sample.
        busiest = session.scalars(
            select(LedgerEntry.account_id)
            .where(LedgerEntry.shop_id == shop_id)
            .group_by(LedgerEntry.account_id)
            .order_by(func.count().desc())
            .limit(25)
        ).all()
        sample = session.scalars(
            select(CreditAccount.id)
            .where(CreditAccount.shop_id == shop_id)
            .order_by(func.random())
            .limit(75)
        ).all()
        for account_id in {*busiest, *sample}:
            violations = verify_account(session, account_id)
            if violations:
                problems.append(f"uniform ledger: account {account_id}: {violations[:3]}")
    return problems


def check_raw(engine: Engine, case: str, ids: tuple[int, int], initial: int, run: Run) -> list[str]:
    with engine.connect() as conn:
        balance = conn.scalar(
            text("SELECT sum(balance) FROM bench_balances WHERE id BETWEEN :lo AND :hi"),
            {"lo": ids[0], "hi": ids[1]},
        )
        moved, count = conn.execute(
            text(
                "SELECT coalesce(sum(amount), 0), count(*) FROM bench_transactions"
                " WHERE balance_id BETWEEN :lo AND :hi"
            ),
            {"lo": ids[0], "hi": ids[1]},
        ).one()
    problems = []
    if initial - balance != -moved:
        problems.append(f"{case} raw: balance fell by {initial - balance}, entries sum to {moved}")
    if count != run.done:
        problems.append(f"{case} raw: {count} entries, {run.done} successful debits")
    return problems


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    url = postgres_url()
    if not url:
        print("bench/ledger.py needs DATABASE_URL on PostgreSQL: run `make bench B=ledger`")
        return 2
    print_load_average("before")

    t0 = time.perf_counter()
    migrate(url)
    engine = create_engine(url, pool_size=max(20, CLIENTS + 2), max_overflow=0)
    sessions = sessionmaker(bind=engine)
    print(f"schema migrated in {time.perf_counter() - t0:.1f} s", flush=True)

    hot_shop = insert_shop(engine, "hot", name="Bench hot").id
    with sessions() as session:
        for lot in range(HOT_LOTS):
            operations.issue(
                session,
                actor(hot_shop, f"hot-fund-{lot}"),
                customer=1,
                amount=Money(HOT_LOT_MINOR, "USD"),
            )
        hot_account = session.scalar(
            select(CreditAccount.id)
            .join(Customer, Customer.id == CreditAccount.customer_id)
            .where(Customer.shop_id == hot_shop, Customer.shopify_customer_id == 1)
        )
    assert hot_account is not None

    uniform_shop = insert_shop(engine, "uniform", name="Bench uniform").id
    setup_s = fund(sessions, uniform_shop, range(1, ACCOUNTS + 1), UNIFORM_MINOR)
    print(
        f"funded {ACCOUNTS} accounts via operations.issue in {SETUP_THREADS} threads:"
        f" {setup_s:.1f} s ({ACCOUNTS / setup_s:.0f} issues/s)",
        flush=True,
    )
    raw_setup(engine)
    with engine.connect() as conn:  # fresh tables have no statistics: plan as production would
        conn.execute(text("ANALYZE"))

    def hot_pick(_rng: random.Random) -> int:
        return 1

    def uniform_pick(rng: random.Random) -> int:
        return rng.randint(1, ACCOUNTS)

    def raw_hot_pick(_rng: random.Random) -> int:
        return HOT_RAW_ID

    runs: dict[str, Run] = {}
    plan: list[tuple[str, Callable[[int], Op]]] = [
        ("hot ledger", ledger_redeem(sessions, hot_shop, "hot", hot_pick)),
        ("hot raw", raw_debit(engine, raw_hot_pick)),
        ("uniform ledger", ledger_redeem(sessions, uniform_shop, "uni", uniform_pick)),
        ("uniform raw", raw_debit(engine, uniform_pick)),
    ]
    for name, make in plan:
        checkpoint(engine)
        runs[name] = measure(name, make)
        run = runs[name]
        print(
            f"  {name:<15} {run.rate:8.0f} ops/s  ({len(run.window)} in {SECONDS:g} s,"
            f" client CPU {run.cpu_ms_per_op:.2f} ms/op, {len(run.errors)} errors)",
            flush=True,
        )

    cores = os.cpu_count()
    print()
    print(
        f"ledger bench ({server_facts(engine)}; {CLIENTS} clients, {SECONDS:g} s per run"
        f" after {WARMUP:g} s warm-up, {cores} cores, one Python process)"
    )
    print(
        f"{'case':<9}{'ledger/s':>10}{'raw/s':>9}{'ratio':>7}{'goal':>6}"
        f"{'':>3}{'p50 ms ledger/raw':>19}{'p99 ms ledger/raw':>19}{'CPU ms/op ledger/raw':>22}"
    )
    for case in ("hot", "uniform"):
        led, raw = runs[f"{case} ledger"], runs[f"{case} raw"]
        ratio = led.rate / raw.rate if raw.rate else float("nan")
        mark = "met" if ratio >= GOALS[case] else "MISS"
        p50 = f"{led.quantile(0.5):.1f}/{raw.quantile(0.5):.1f}"
        p99 = f"{led.quantile(0.99):.1f}/{raw.quantile(0.99):.1f}"
        cpu = f"{led.cpu_ms_per_op:.2f}/{raw.cpu_ms_per_op:.2f}"
        print(
            f"{case:<9}{led.rate:>10.0f}{raw.rate:>9.0f}{ratio:>7.2f}{GOALS[case]:>6.1f}"
            f" {mark:<4}{p50:>17}{p99:>19}{cpu:>22}"
        )
    print(
        "(client CPU = this process's CPU time per op over the window: the Python side's cost,"
        " steady however busy the machine is; load average now"
        f" {os.getloadavg()[0]:.2f})"
    )

    problems: list[str] = []
    for run in runs.values():
        if run.errors:
            problems.append(f"{run.name}: {len(run.errors)} errors, first: {run.errors[0]}")
    problems += check_hot(sessions, hot_account, runs["hot ledger"])
    problems += check_uniform(sessions, uniform_shop, runs["uniform ledger"])
    problems += check_raw(
        engine, "hot", (HOT_RAW_ID, HOT_RAW_ID), HOT_LOTS * HOT_LOT_MINOR, runs["hot raw"]
    )
    problems += check_raw(
        engine, "uniform", (1, ACCOUNTS), ACCOUNTS * UNIFORM_MINOR, runs["uniform raw"]
    )
    engine.dispose()
    if problems:
        print("FAILED")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(
        "OK: hot account verify_account() == [] and balance = initial - successes; uniform"
        " balances = entries and sample verified; raw entries sum to the balance drop"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
