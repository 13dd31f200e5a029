"""Reconciliation's ledger part: a full run over 1,000,000 entries and an incremental run after
1,000 new ones (issue 4, item 7: goals >= 50,000 entries/s and <= 1 s).

Run it with ``make bench B=reconcile`` (throwaway PostgreSQL with fsync off, Redis). It seeds
one shop of BENCH_ACCOUNTS accounts (10,000) with BENCH_ENTRIES_PER entries each (100):
alternately a 10.00 issue opening a lot and a 4.00 spend from that lot, chained and hashed in
Python with the ledger's own ``canonical_entry``/``chain_hash`` and loaded with COPY (the rows
the ledger would write, much faster than a million operations). Then, through the real job
``reconcile_shop`` in an app context (the shop's native sync is off, so the comparison with
Shopify is off: these are the ledger's own checks, run rows and locks included):

1. a full run, which must find nothing: entries/s over the whole job;
2. BENCH_NEW (1,000) redeems through ``operations.redeem`` on random accounts, then an
   incremental run: its wall time, and how many entries it read (exactly the new ones);
3. one old entry rewritten behind the ledger's back (trigger off, as a superuser could): the
   next incremental run cannot see it (it is before the checkpoint), the next full run must —
   proof that the timed full run really re-hashed every entry (it is timed as well).

Besides wall time it prints the CPU time of this process and of the PostgreSQL backends that
served it (from /proc): on a shared machine the wall time says as much about the neighbours as
about reconciliation. It exits non-zero when a run found something it should not, read more
than it should, or missed the tampered entry.
"""

from __future__ import annotations

import io
import os
import random
import resource
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402
from sqlalchemy import Engine, create_engine, text  # noqa: E402

from bench._common import (  # noqa: E402
    ProcStat,
    insert_shop,
    make_app,
    postgres_url,
    upgrade_schema,
)
from ledger.chain import GENESIS_HASH, canonical_entry, chain_hash  # noqa: E402

ACCOUNTS = int(os.environ.get("BENCH_ACCOUNTS", "10000"))
ENTRIES_PER = int(os.environ.get("BENCH_ENTRIES_PER", "100"))  # even: issue, spend, ...
NEW = int(os.environ.get("BENCH_NEW", "1000"))
CHUNK = 1000  # accounts generated and COPY'd at a time
GOAL_RATE = 50_000
GOAL_INCREMENTAL_S = 1.0
ISSUE, SPEND = 1000, 400
BASE = datetime(2026, 1, 1, tzinfo=UTC)

_ACCOUNT_COLUMNS = (
    "(id, shop_id, customer_id, currency, balance, lifetime_credited, lifetime_debited,"
    " last_sequence, last_hash, created_at, updated_at)"
)
_LOT_COLUMNS = (
    "(id, shop_id, account_id, amount, remaining, status, source, reason, expires_at, created_at)"
)
_ENTRY_COLUMNS = (
    "(id, shop_id, account_id, sequence, kind, amount, balance_before, balance_after, lot_id,"
    " actor, reason, metadata, prev_hash, hash, created_at)"
)
_ALLOCATION_COLUMNS = "(shop_id, entry_id, lot_id, amount)"


# -- seeding --------------------------------------------------------------------------------


class _Chunk:
    """COPY text for one chunk of accounts, table by table."""

    def __init__(self) -> None:
        self.accounts, self.lots = io.StringIO(), io.StringIO()
        self.entries, self.allocations = io.StringIO(), io.StringIO()


def seed(engine: Engine, shop_id: int) -> tuple[float, float]:
    """Customers, accounts, lots, entries, allocations. Returns (generating s, loading s)."""
    with engine.begin() as conn:
        customer_ids = sorted(
            row[0]
            for row in conn.execute(
                text(
                    "INSERT INTO customers (shop_id, shopify_customer_id, created_at, updated_at)"
                    " SELECT :shop, g, :at, :at FROM generate_series(1, :n) AS g RETURNING id"
                ),
                {"shop": shop_id, "at": BASE, "n": ACCOUNTS},
            )
        )
        first_account = conn.execute(text("SELECT coalesce(max(id), 0) + 1 FROM credit_accounts"))
        next_account = int(first_account.scalar_one())
    generating = loading = 0.0
    with engine.begin() as conn:
        cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for start in range(0, ACCOUNTS, CHUNK):
            t0 = time.perf_counter()
            chunk = _Chunk()
            for offset, customer_id in enumerate(customer_ids[start : start + CHUNK]):
                _account(chunk, shop_id, next_account + start + offset, customer_id)
            t1 = time.perf_counter()
            for table, columns, buffer in (
                ("credit_accounts", _ACCOUNT_COLUMNS, chunk.accounts),
                ("credit_lots", _LOT_COLUMNS, chunk.lots),
                ("ledger_entries", _ENTRY_COLUMNS, chunk.entries),
                ("entry_allocations", _ALLOCATION_COLUMNS, chunk.allocations),
            ):
                with cursor.copy(f"COPY {table} {columns} FROM STDIN") as copy:
                    copy.write(buffer.getvalue())
            generating += t1 - t0
            loading += time.perf_counter() - t1
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('credit_accounts', 'id'),"
            " (SELECT max(id) FROM credit_accounts))"
        )
        cursor.close()
    # A ledger in production was written long ago and autovacuumed: its rows carry their
    # hint bits and the visibility map is set. VACUUM gives the bulk-loaded rows the same state
    # (otherwise the first run pays for writing hint bits into a million fresh rows).
    t0 = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return generating, loading + time.perf_counter() - t0


def _account(chunk: _Chunk, shop_id: int, account_id: int, customer_id: int) -> None:
    """ENTRIES_PER chained entries of one account, its lots and allocations, as COPY text."""
    previous, balance = GENESIS_HASH, 0
    lot_id = uuid.uuid4()
    for sequence in range(1, ENTRIES_PER + 1):
        at = BASE + timedelta(seconds=sequence, microseconds=account_id % 1_000_000)
        issuing = sequence % 2 == 1
        if issuing:
            lot_id = uuid.uuid4()
            chunk.lots.write(
                f"{lot_id}\t{shop_id}\t{account_id}\t{ISSUE}\t{ISSUE - SPEND}\tactive\tmanual"
                f"\tbench\t\\N\t{at.isoformat()}\n"
            )
        amount = ISSUE if issuing else -SPEND
        moves = [] if issuing else [(lot_id, -SPEND)]
        entry_id = uuid.uuid4()
        row = {
            "id": entry_id,
            "shop_id": shop_id,
            "account_id": account_id,
            "sequence": sequence,
            "kind": "issue" if issuing else "redeem",
            "amount": amount,
            "balance_before": balance,
            "balance_after": balance + amount,
            "lot_id": lot_id if issuing else None,
            "reverses_entry_id": None,
            "shopify_order_id": None,
            "shopify_refund_id": None,
            "idempotency_key": None,
            "actor": "bench",
            "reason": "bench",
            "note": None,
            "metadata": {},
            "created_at": at,
        }
        digest = chain_hash(previous, canonical_entry(row, moves))
        chunk.entries.write(
            f"{entry_id}\t{shop_id}\t{account_id}\t{sequence}\t{row['kind']}\t{amount}"
            f"\t{balance}\t{balance + amount}\t{lot_id if issuing else chr(92) + 'N'}"
            f"\tbench\tbench\t{{}}\t{previous}\t{digest}\t{at.isoformat()}\n"
        )
        for moved_lot, part in moves:
            chunk.allocations.write(f"{shop_id}\t{entry_id}\t{moved_lot}\t{part}\n")
        previous, balance = digest, balance + amount
    pairs = ENTRIES_PER // 2
    chunk.accounts.write(
        f"{account_id}\t{shop_id}\t{customer_id}\tUSD\t{pairs * (ISSUE - SPEND)}"
        f"\t{pairs * ISSUE}\t{pairs * SPEND}\t{ENTRIES_PER}\t{previous}"
        f"\t{BASE.isoformat()}\t{BASE.isoformat()}\n"
    )


# -- the runs -------------------------------------------------------------------------------


def new_entries(app: Flask, shop_id: int) -> float:
    """NEW one-cent redeems through the ledger on random accounts; returns seconds."""
    from extensions import current_session
    from ledger import operations
    from ledger.book import Actor
    from ledger.money import Money

    rng = random.Random(4)
    started = time.perf_counter()
    with app.app_context():
        session = current_session()
        for index in range(NEW):
            by = Actor(shop_id, datetime.now(UTC), "bench", "bench", f"bench-new-{index}")
            operations.redeem(
                session, by, customer=rng.randint(1, ACCOUNTS), amount=Money(1, "USD")
            )
    return time.perf_counter() - started


@dataclass
class Timed:
    result: dict[str, Any]
    wall: float
    python_cpu: float  # this process
    server_cpu: float  # the PostgreSQL backends serving it

    @property
    def cpu(self) -> float:
        return self.python_cpu + self.server_cpu


def reconcile(app: Flask, engine: Engine, shop_id: int, *, full: bool) -> Timed:
    """Run the job; wall time and CPU time (ours and the server's: the machine may be busy)."""
    from jobs.reconcile import reconcile_shop

    with app.app_context():
        server_before = _backend_cpu(engine)
        cpu_before = time.process_time()
        started = time.perf_counter()
        result = reconcile_shop(shop_id, full=full)
        wall = time.perf_counter() - started
        python_cpu = time.process_time() - cpu_before
        server_after = _backend_cpu(engine)
    server = sum(ticks - server_before.get(pid, 0) for pid, ticks in server_after.items())
    return Timed(result, wall, python_cpu, server / os.sysconf("SC_CLK_TCK"))


def _backend_cpu(engine: Engine) -> dict[int, int]:
    """CPU ticks (user + system) of every backend of this database, from /proc."""
    with engine.connect() as conn:
        pids: list[int] = list(
            conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
        )
    stats = (ProcStat.read(pid) for pid in pids)
    return {stat.pid: stat.own_ticks for stat in stats if stat is not None}  # None: gone


def tamper(engine: Engine, shop_id: int) -> int:
    """Rewrite an old entry's reason, the append-only trigger off; returns its account id."""
    with engine.begin() as conn:
        account_id = int(
            conn.execute(
                text(
                    "SELECT id FROM credit_accounts WHERE shop_id = :shop ORDER BY id"
                    " OFFSET :n LIMIT 1"
                ),
                {"shop": shop_id, "n": ACCOUNTS // 2},
            ).scalar_one()
        )
        conn.execute(text("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only"))
        conn.execute(
            text(
                "UPDATE ledger_entries SET reason = 'approved by the owner'"
                " WHERE account_id = :account AND sequence = :sequence"
            ),
            {"account": account_id, "sequence": ENTRIES_PER // 3},
        )
        conn.execute(text("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only"))
    return account_id


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    url = postgres_url()
    if not url:
        print("bench/reconcile.py needs DATABASE_URL on PostgreSQL: run `make bench B=reconcile`")
        return 2
    from extensions import db

    app = make_app(url, os.environ.get("REDIS_URL"))
    upgrade_schema(app)
    engine = create_engine(url)
    shop_id = insert_shop(
        engine,
        "reconcile",
        installed_at=BASE,
        created_at=BASE,
        native_sync=False,
        auto_repair=True,
        notify_customer=False,
    ).id
    total = ACCOUNTS * ENTRIES_PER
    print(f"seeding {total:,} entries ({ACCOUNTS:,} accounts x {ENTRIES_PER}) ...", flush=True)
    generating, loading = seed(engine, shop_id)
    print(f"  generated and hashed in {generating:.1f} s, COPY + VACUUM ANALYZE {loading:.1f} s")

    problems: list[str] = []
    full = reconcile(app, engine, shop_id, full=True)
    checked = full.result["entries_checked"]
    rate = checked / full.wall
    if checked != total or full.result["open_findings"]:
        problems.append(f"full run: {full.result}")
    print(
        f"full run:        {checked:,} entries, {full.result['accounts_checked']:,} accounts"
        f" in {full.wall:.2f} s = {rate:,.0f} entries/s"
        f" (goal >= {GOAL_RATE:,}: {'met' if rate >= GOAL_RATE else 'MISSED'});"
        f" {full.result['open_findings']} findings",
        flush=True,
    )
    print(
        f"                 CPU: Python {full.python_cpu:.1f} s + PostgreSQL {full.server_cpu:.1f} s"
        f" = {checked / full.cpu:,.0f} entries per CPU-second"
        f" ({checked / max(full.python_cpu, full.server_cpu):,.0f}/s if the two overlapped"
        " on two idle cores)",
        flush=True,
    )

    writing = new_entries(app, shop_id)
    incremental = reconcile(app, engine, shop_id, full=False)
    if incremental.result["entries_checked"] != NEW or incremental.result["open_findings"]:
        problems.append(f"incremental run: {incremental.result}")
    print(
        f"incremental run: {incremental.result['entries_checked']:,} entries in"
        f" {incremental.result['accounts_checked']:,} accounts, {incremental.wall:.3f} s"
        f" (goal <= {GOAL_INCREMENTAL_S:g} s:"
        f" {'met' if incremental.wall <= GOAL_INCREMENTAL_S else 'MISSED'}); CPU: Python"
        f" {incremental.python_cpu:.3f} s + PostgreSQL {incremental.server_cpu:.3f} s;"
        f" after {NEW:,} redeems through the ledger ({writing:.1f} s)",
        flush=True,
    )
    idle = reconcile(app, engine, shop_id, full=False)
    print(
        f"incremental run, nothing new: {idle.result['entries_checked']} entries, {idle.wall:.3f} s"
    )

    tampered = tamper(engine, shop_id)
    blind = reconcile(app, engine, shop_id, full=False)
    caught = reconcile(app, engine, shop_id, full=True)
    key = f"ledger:{tampered}:hash_mismatch"
    with app.app_context():
        from ledger.findings import open_finding_keys

        keys = open_finding_keys(db.session(), shop_id)
        db.session.remove()
    if blind.result["open_findings"] or keys != [key]:
        problems.append(f"tampering: incremental {blind.result}, full found {keys}")
    again = caught.result["entries_checked"] / caught.wall
    print(
        f"tampered entry (before the checkpoint): incremental found"
        f" {blind.result['open_findings']}, full found {keys}"
    )
    print(
        f"full run again:  {caught.result['entries_checked']:,} entries in {caught.wall:.2f} s ="
        f" {again:,.0f} entries/s (goal >= {GOAL_RATE:,}:"
        f" {'met' if again >= GOAL_RATE else 'MISSED'});"
        f" CPU: Python {caught.python_cpu:.1f} s + PostgreSQL {caught.server_cpu:.1f} s"
    )
    load = os.getloadavg()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with engine.connect() as conn:
        version: str = conn.execute(text("SHOW server_version")).scalar_one()
        fsync: str = conn.execute(text("SHOW fsync")).scalar_one()
    print(
        f"(PostgreSQL {version}, fsync={fsync}; {os.cpu_count()} cores, load average"
        f" {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; one Python process;"
        f" native comparison off; peak RSS {peak:.0f} MB, the seed's buffers included)"
    )
    engine.dispose()
    with app.app_context():
        db.engine.dispose()
    if problems:
        print("FAILED")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print("OK: the full run found nothing in consistent data and found the tampered entry")
    return 0


if __name__ == "__main__":
    sys.exit(main())
