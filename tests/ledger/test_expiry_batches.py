"""Expiry at scale: set-based batches, racing spends, overlapping runs, a run killed mid-way.

The first test runs in the rolled-back ``session`` (and on SQLite in the smoke subset). The
others commit for real on PostgreSQL, each in a fresh shop, from threads with their own
connections or from a real ``flask credits expire`` process; the many lots they need are
seeded by tests/ledger/bulk_lots.py (the ledger's own Book rows, loaded with COPY).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session

from config import Settings
from ledger import operations
from ledger.errors import InsufficientFunds
from ledger.expiry import EXPIRY_ACTOR, ExpiryReport, expire_due
from ledger.money import Money
from ledger.verify import verify_account
from models import AuditLog, CreditAccount, CreditLot, EntryAllocation, LedgerEntry, Shop
from tests import factories
from tests.factories import ShopFactory
from tests.ledger.bulk_lots import seed_due_lots
from tests.ledger.helpers import actor, usd

ROOT = Path(__file__).resolve().parents[2]


# -- 1. what a run writes, on random books -----------------------------------------------------


def _random_books(session: Session, rng: random.Random, now: datetime) -> int:
    """A shop whose customers hold lots due long ago, exactly now, a microsecond from now, later
    and never, in two currencies, partly spent (in spend order) before ``now``."""
    shop_id = int(ShopFactory().id)
    start = now - timedelta(days=40)
    clock = iter(start + timedelta(minutes=minute) for minute in range(1, 100_000))
    due_choices = [
        lambda: now - timedelta(days=rng.randint(1, 20), seconds=rng.randint(0, 86_399)),
        lambda: now,  # due exactly at the run's time: expires
        lambda: now + timedelta(microseconds=1),  # not yet: never before its time
        lambda: now + timedelta(days=rng.randint(1, 9)),
        lambda: None,
    ]
    for customer in range(1, 15):
        for currency in rng.sample(["USD", "EUR"], rng.randint(1, 2)):
            for _ in range(rng.randint(1, 7)):
                operations.issue(
                    session,
                    actor(shop_id, next(clock)),
                    customer=customer,
                    amount=Money(rng.randint(1, 5000), currency),
                    expires_at=rng.choices(due_choices, weights=[6, 1, 1, 2, 2])[0](),
                )
            for _ in range(rng.randint(0, 3)):
                with contextlib.suppress(InsufficientFunds):  # more than is left: refused
                    operations.redeem(
                        session,
                        actor(shop_id, next(clock)),
                        customer=customer,
                        amount=Money(rng.randint(1, 4000), currency),
                    )
    return shop_id


def _lots(session: Session, shop_id: int) -> dict[uuid.UUID, CreditLot]:
    rows = session.scalars(
        select(CreditLot)
        .where(CreditLot.shop_id == shop_id)
        .execution_options(populate_existing=True)
    )
    return {lot.id: lot for lot in rows}


@pytest.mark.smoke
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_batches_expire_each_due_lot_once_with_its_own_entry_and_every_book_verifies(
    session, now, seed
):
    rng = random.Random(seed)
    shop_id = _random_books(session, rng, now)
    other_shop = _random_books(session, rng, now)
    before = {
        lot_id: (lot.account_id, lot.remaining, lot.status, lot.expires_at)
        for lot_id, lot in _lots(session, shop_id).items()
    }
    due = {
        lot_id: facts
        for lot_id, facts in before.items()
        if facts[2] == "active" and facts[3] is not None and facts[3] <= now
    }
    balances = dict(
        session.execute(
            select(CreditAccount.id, CreditAccount.balance).where(CreditAccount.shop_id == shop_id)
        ).all()
    )
    other_before = {lot_id: lot.remaining for lot_id, lot in _lots(session, other_shop).items()}
    batch_size = rng.randint(2, 9)
    session.rollback()

    report = expire_due(session, now=now, shop_id=shop_id, batch_size=batch_size)

    assert len(due) >= 10  # the books really had work for several batches
    assert report.lots == len(due)
    assert report.batches == -(-len(due) // batch_size)  # nobody else held a lot: full batches
    expected_amounts: Counter[str] = Counter()
    lots = _lots(session, shop_id)
    for lot_id, (account_id, remaining, status, _due_at) in before.items():
        lot = lots[lot_id]
        if lot_id in due:
            assert (lot.status, lot.remaining) == ("expired", 0)
            currency = session.get(CreditAccount, account_id).currency  # type: ignore[union-attr]
            expected_amounts[currency] += remaining
        else:
            assert (lot.status, lot.remaining) == (status, remaining)  # untouched
    assert dict(report.amounts) == dict(expected_amounts)
    # Exactly one expire entry per due lot, for what it held, with its one allocation.
    expires = session.execute(
        select(LedgerEntry.lot_id, LedgerEntry.amount, LedgerEntry.actor, EntryAllocation.amount)
        .join(EntryAllocation, EntryAllocation.entry_id == LedgerEntry.id)
        .where(LedgerEntry.shop_id == shop_id, LedgerEntry.kind == "expire")
    ).all()
    assert sorted((row[0], row[1]) for row in expires) == sorted(
        (lot_id, -facts[1]) for lot_id, facts in due.items()
    )
    assert all(row[2] == EXPIRY_ACTOR and row[3] == row[1] for row in expires)
    for account_id, balance in balances.items():
        account = session.get(CreditAccount, account_id, populate_existing=True)
        expired = sum(facts[1] for facts in due.values() if facts[0] == account_id)
        assert account is not None
        assert account.balance == balance - expired
        assert verify_account(session, account_id) == []
    # One audit row per account and batch, adding up to the report.
    audits = session.scalars(
        select(AuditLog.details).where(
            AuditLog.shop_id == shop_id, AuditLog.action == "expire", AuditLog.actor == EXPIRY_ACTOR
        )
    ).all()
    assert len(audits) == report.accounts
    assert sum(details["lots"] for details in audits) == report.lots
    assert sum(details["amount"] for details in audits) == sum(expected_amounts.values())
    # Another shop's lots were not the run's business; a second run finds nothing.
    assert {i: lot.remaining for i, lot in _lots(session, other_shop).items()} == other_before
    again = expire_due(session, now=now, shop_id=shop_id, batch_size=batch_size)
    assert (again.lots, again.batches) == (0, 0)


# -- harness for the real-concurrency tests ----------------------------------------------------


@pytest.fixture(scope="module")
def pool(engine: Engine) -> Iterator[Engine]:
    """Every thread its own connection (the app's pool would queue them)."""
    wide = create_engine(engine.url, pool_size=20, max_overflow=0, pool_timeout=30)
    try:
        yield wide
    finally:
        wide.dispose()


def new_shop(engine: Engine) -> Shop:
    with Session(bind=engine, expire_on_commit=False) as session:
        factories.bind(session)
        return ShopFactory()


def seed(engine: Engine, shop_id: int, now: datetime, accounts: int, lots: int = 5) -> None:
    seed_due_lots(
        engine,
        shop_id,
        accounts=accounts,
        lots_per_account=lots,
        issued_at=now - timedelta(days=60),
        first_due=now - timedelta(days=2),
        spread=timedelta(hours=12),
        seed=shop_id,
    )


def run_threads(engine: Engine, work: list[Callable[[Session], Any]]) -> list[Any]:
    """Run each callable in its own thread and session, all released by one barrier; return
    what each returned or raised."""
    barrier = threading.Barrier(len(work))
    results: list[Any] = [None] * len(work)

    def main(index: int) -> None:
        with Session(bind=engine) as session:
            session.connection()
            barrier.wait(timeout=30)
            try:
                results[index] = work[index](session)
            except BaseException as error:  # noqa: BLE001 - asserted on by the test
                session.rollback()
                results[index] = error

    threads = [threading.Thread(target=main, args=(i,), daemon=True) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung (deadlock?)"
    return results


def shop_totals(check: Session, shop_id: int) -> dict[str, Any]:
    """Set-based checks over a whole shop (verify_account per account would be too slow)."""
    entries = check.execute(
        text(
            "SELECT count(*) FILTER (WHERE kind = 'expire'),"
            " count(DISTINCT lot_id) FILTER (WHERE kind = 'expire'), count(*) FROM ledger_entries"
            " WHERE shop_id = :shop"
        ),
        {"shop": shop_id},
    ).one()
    # Per account: the balance is the sum of its entries and of its live lots, the head is
    # the last entry, and the chain has no fork (distinct prev_hash per entry).
    off = check.scalar(
        text(
            "SELECT count(*) FROM credit_accounts a JOIN LATERAL ("
            "  SELECT coalesce(sum(amount), 0) AS total, count(*) AS n,"
            "    count(DISTINCT prev_hash) AS prevs, max(sequence) AS last"
            "  FROM ledger_entries e WHERE e.account_id = a.id) e ON true"
            " JOIN LATERAL (SELECT coalesce(sum(remaining), 0) AS live FROM credit_lots l"
            "  WHERE l.account_id = a.id AND l.status = 'active') l ON true"
            " WHERE a.shop_id = :shop AND NOT (a.balance = e.total AND a.balance = l.live"
            "  AND a.last_sequence = e.n AND e.n = e.prevs AND e.n = e.last"
            "  AND a.last_hash = (SELECT hash FROM ledger_entries x"
            "    WHERE x.account_id = a.id AND x.sequence = e.last))"
        ),
        {"shop": shop_id},
    )
    statuses = dict(
        check.execute(
            select(CreditLot.status, func.count())
            .where(CreditLot.shop_id == shop_id)
            .group_by(CreditLot.status)
        ).all()
    )
    audits = check.scalar(
        select(func.coalesce(func.sum(AuditLog.details["lots"].as_integer()), 0)).where(
            AuditLog.shop_id == shop_id, AuditLog.action == "expire"
        )
    )
    return {
        "expire_entries": entries[0],
        "lots_expired_by_entries": entries[1],
        "entries": entries[2],
        "accounts_off": off,
        "statuses": statuses,
        "lots_in_audits": audits,
    }


def verify_sample(check: Session, shop_id: int, n: int = 25) -> None:
    ids = check.scalars(
        select(CreditAccount.id)
        .where(CreditAccount.shop_id == shop_id)
        .order_by(func.random())
        .limit(n)
    ).all()
    for account_id in ids:
        assert verify_account(check, account_id) == []


# -- 2. spends racing the expiry job -------------------------------------------------------------


@pytest.mark.concurrency
def test_spends_racing_two_expiry_runs_never_deadlock_and_every_cent_goes_one_way(pool, now):
    """Spends timed just before the due time take the due lots first (soonest expiry), locking
    the account and then writing the lot: the order a batch that waited on accounts while
    holding lots would deadlock against."""
    shop_id = new_shop(pool).id
    due_at = now + timedelta(days=1)
    just_before = due_at - timedelta(microseconds=1)
    customers = list(range(9_300_000_001, 9_300_000_031))
    with Session(bind=pool) as session:
        for customer in customers:
            for amount, expiry in ((1000, due_at), (800, due_at), (50_000, None)):
                operations.issue(
                    session,
                    actor(shop_id, now),
                    customer=customer,
                    amount=usd(amount),
                    expires_at=expiry,
                )

    def spender(index: int) -> Callable[[Session], int]:
        def spend(session: Session) -> int:
            rng = random.Random(index)
            for _ in range(25):
                by = actor(shop_id, just_before, key=f"race-{index}-{uuid.uuid4().hex}")
                customer = rng.choice(customers)
                operations.redeem(session, by, customer=customer, amount=usd(rng.randint(1, 90)))
            return 25

        return spend

    def expirer(batch_size: int) -> Callable[[Session], ExpiryReport]:
        def run(session: Session) -> ExpiryReport:
            total = ExpiryReport()
            for _ in range(4):  # again and again while the spends go on
                report = expire_due(session, now=due_at, shop_id=shop_id, batch_size=batch_size)
                total.lots += report.lots
                time.sleep(0.01)
            return total

        return run

    results = run_threads(pool, [spender(i) for i in range(6)] + [expirer(4), expirer(7)])

    assert [r for r in results if isinstance(r, BaseException)] == []
    with Session(bind=pool) as check:
        final = expire_due(check, now=due_at, shop_id=shop_id)  # anything a spend held last
        lots = check.execute(
            select(CreditLot.id, CreditLot.amount, CreditLot.status, CreditLot.remaining).where(
                CreditLot.shop_id == shop_id, CreditLot.expires_at == due_at
            )
        ).all()
        moved = dict(
            check.execute(
                select(EntryAllocation.lot_id, func.sum(EntryAllocation.amount))
                .join(LedgerEntry, LedgerEntry.id == EntryAllocation.entry_id)
                .where(LedgerEntry.shop_id == shop_id, LedgerEntry.kind == "redeem")
                .group_by(EntryAllocation.lot_id)
            ).all()
        )
        expired = {
            lot_id: (n, total)
            for lot_id, n, total in check.execute(
                select(LedgerEntry.lot_id, func.count(), func.sum(LedgerEntry.amount))
                .where(LedgerEntry.shop_id == shop_id, LedgerEntry.kind == "expire")
                .group_by(LedgerEntry.lot_id)
            )
        }
        assert len(lots) == 2 * len(customers)
        for lot_id, amount, status, remaining in lots:
            spent = -moved.get(lot_id, 0)
            assert remaining == 0
            if status == "expired":  # expired once, for what the spends left
                assert expired[lot_id] == (1, -(amount - spent))
            else:  # spent to nothing before its time: nothing to expire
                assert (status, spent, lot_id in expired) == ("depleted", amount, False)
        runs = [r for r in results if isinstance(r, ExpiryReport)]
        assert sum(r.lots for r in runs) + final.lots == len(expired)
        assert shop_totals(check, shop_id)["accounts_off"] == 0
        for account_id in check.scalars(
            select(CreditAccount.id).where(CreditAccount.shop_id == shop_id)
        ):
            assert verify_account(check, account_id) == []


# -- 3. overlapping runs ----------------------------------------------------------------------


@pytest.mark.concurrency
def test_three_runs_at_once_share_the_lots_and_expire_each_exactly_once(pool, now):
    shop_id = new_shop(pool).id
    seed(pool, shop_id, now, accounts=600)  # 3,000 lots

    def run(session: Session) -> ExpiryReport:
        return expire_due(session, now=now, shop_id=shop_id, batch_size=50)

    reports = run_threads(pool, [run, run, run])

    assert [r for r in reports if isinstance(r, BaseException)] == []
    assert sum(r.lots for r in reports) == 3000
    # SKIP LOCKED: a run takes the next free lots instead of queueing behind another run.
    assert sum(1 for r in reports if r.lots > 0) >= 2, [r.lots for r in reports]
    with Session(bind=pool) as check:
        totals = shop_totals(check, shop_id)
        assert totals["expire_entries"] == totals["lots_expired_by_entries"] == 3000
        assert totals["statuses"] == {"expired": 3000}
        assert totals["accounts_off"] == 0
        assert totals["lots_in_audits"] == 3000
        assert (
            check.scalar(
                select(func.sum(CreditAccount.balance)).where(CreditAccount.shop_id == shop_id)
            )
            == 0
        )
        verify_sample(check, shop_id)


@pytest.mark.concurrency
def test_an_account_held_by_a_spend_is_waited_for_not_left_behind(pool, now):
    """Its lots are skipped while the rest expire; then the run waits for the account (the
    ledger's own lock order: the account first) and expires them too."""
    shop_id = new_shop(pool).id
    seed(pool, shop_id, now, accounts=40)
    with Session(bind=pool) as look:
        held_id = look.scalars(
            select(CreditAccount.id).where(CreditAccount.shop_id == shop_id).limit(1)
        ).one()
    holder = pool.connect()
    holder.begin()
    holder.execute(text("SELECT 1 FROM credit_accounts WHERE id = :id FOR UPDATE"), {"id": held_id})
    result: list[Any] = []

    def run() -> None:
        with Session(bind=pool) as session:
            result.append(expire_due(session, now=now, shop_id=shop_id, batch_size=9))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        with Session(bind=pool) as look:
            for _ in range(600):  # until the run is blocked on a lock, all else done
                look.rollback()
                active = dict(
                    look.execute(
                        select(CreditLot.account_id, func.count())
                        .where(CreditLot.shop_id == shop_id, CreditLot.status == "active")
                        .group_by(CreditLot.account_id)
                    ).all()
                )
                waiting = look.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE '%FROM credit_accounts%FOR UPDATE%'"
                    )
                )
                if active == {held_id: 5} and waiting:
                    break
                time.sleep(0.05)
            assert (active, waiting) == ({held_id: 5}, 1)
            assert thread.is_alive()
        # Waiting for the account, the run holds none of its lots: the holder can still write
        # them, as a spend does after locking the account (a lock wait here would deadlock).
        holder.execute(text("SET LOCAL lock_timeout = '5s'"))
        touched = holder.execute(
            text("UPDATE credit_lots SET remaining = remaining WHERE account_id = :id"),
            {"id": held_id},
        )
        assert touched.rowcount == 5
    finally:
        holder.rollback()
        holder.close()
    thread.join(timeout=60)

    assert not thread.is_alive()
    assert result[0].lots == 200
    with Session(bind=pool) as check:
        assert shop_totals(check, shop_id)["statuses"] == {"expired": 200}
        assert verify_account(check, held_id) == []


# -- 4. a worker killed in the middle of a run ----------------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "app:create_app", *args]


def _env(settings: Settings) -> dict[str, str]:
    env = os.environ | {"CREDITCRAFT_ENV": "test", "DATABASE_URL": settings.database_url}
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    return env


@pytest.mark.concurrency
def test_flask_credits_expire_killed_mid_run_then_rerun_expires_every_lot_once(pool, settings, now):
    lots = 50_000
    shop = new_shop(pool)
    seed(pool, shop.id, now, accounts=lots // 5)
    command = _cli("credits", "expire", "--shop", shop.domain, "--now", now.isoformat())
    count = text("SELECT count(*) FROM ledger_entries WHERE shop_id = :shop AND kind = 'expire'")

    worker = subprocess.Popen(  # noqa: S603 - our own CLI
        command, cwd=ROOT, env=_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    done_when_killed = 0
    try:
        with pool.connect() as conn:
            for _ in range(6000):  # until at least two batches are in (or the worker died)
                done_when_killed = conn.execute(count, {"shop": shop.id}).scalar_one()
                conn.rollback()
                if done_when_killed >= 2000 or worker.poll() is not None:
                    break
                time.sleep(0.01)
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.wait(timeout=30)
        out, err = worker.communicate()
    assert worker.returncode == -signal.SIGKILL, err.decode()
    with pool.connect() as conn:
        done_when_killed = conn.execute(count, {"shop": shop.id}).scalar_one()
    assert 0 < done_when_killed < lots  # killed mid-run, some batches committed

    rerun = subprocess.run(  # noqa: S603 - our own CLI
        command, cwd=ROOT, env=_env(settings), capture_output=True, text=True, timeout=300
    )

    assert rerun.returncode == 0, rerun.stderr
    found = re.match(r"expired (\d+) lots in (\d+) accounts", rerun.stdout)
    assert found, rerun.stdout
    assert done_when_killed + int(found.group(1)) == lots  # nothing doubled, nothing lost
    with Session(bind=pool) as check:
        totals = shop_totals(check, shop.id)
        assert totals["expire_entries"] == totals["lots_expired_by_entries"] == lots
        assert totals["entries"] == 2 * lots  # an issue and an expire per lot, nothing else
        assert totals["statuses"] == {"expired": lots}
        assert totals["accounts_off"] == 0
        assert totals["lots_in_audits"] == lots
        assert (
            check.scalar(
                select(func.sum(CreditAccount.balance)).where(CreditAccount.shop_id == shop.id)
            )
            == 0
        )
        verify_sample(check, shop.id)
