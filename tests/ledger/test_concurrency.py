"""The ledger under real concurrency: threads, each with its own connection, really committing.

These tests do not use the rolled-back ``session`` fixture: every thread opens its own
Session on a pool wide enough that all of them hold a connection at once, and a Barrier
starts them together. Committed data is never cleaned up; each test makes a fresh shop and
looks only at that shop's rows.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import count
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session

from ledger import operations
from ledger.errors import InsufficientFunds, LedgerError
from ledger.expiry import ExpiryReport, expire_due
from ledger.verify import verify_account
from ledger.views import Receipt
from models import (
    AuditLog,
    CreditAccount,
    CreditLot,
    Customer,
    EntryAllocation,
    IdempotencyKey,
    LedgerEntry,
)
from tests import factories
from tests.factories import ShopFactory
from tests.ledger.helpers import actor, keyed, usd

pytestmark = pytest.mark.concurrency

MAX_THREADS = 64
WRITES = ("issue", "redeem", "adjust", "revoke", "reverse", "refund")
CUSTOMER = 9_100_000_001


# -- harness ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool(engine: Engine) -> Iterator[Engine]:
    """The test database's engine, with a pool that lets every thread hold its own connection.

    The app's pool (10 + 10 overflow) would make most of 64 threads queue for a connection
    instead of for the account's lock.
    """
    wide = create_engine(engine.url, pool_size=MAX_THREADS + 2, max_overflow=0, pool_timeout=30)
    try:
        yield wide
        assert wide.pool.checkedout() == 0, "a session kept its connection"  # type: ignore[attr-defined]
    finally:
        wide.dispose()


@dataclass
class Outcome:
    value: Any  # what the work returned, or the exception it raised
    started: float
    ended: float

    @property
    def failed(self) -> bool:
        return isinstance(self.value, BaseException)


def run_together(
    engine: Engine, threads: int, work: Callable[[int, Session], Any]
) -> list[Outcome]:
    """Run ``work(i, session)`` in ``threads`` threads that start at one Barrier.

    Each thread has its own Session and checks out its own connection before the barrier.
    Exceptions are collected, not raised: the caller asserts on them.
    """
    assert threads <= MAX_THREADS
    barrier = threading.Barrier(threads)
    outcomes: list[Outcome | None] = [None] * threads

    def main(index: int) -> None:
        with Session(bind=engine) as session:
            session.connection()  # this thread's own connection, before the start line
            barrier.wait(timeout=30)
            started = time.perf_counter()
            try:
                value = work(index, session)
            except BaseException as error:  # noqa: BLE001 - every failure is asserted on
                session.rollback()
                value = error
            outcomes[index] = Outcome(value, started, time.perf_counter())

    workers = [threading.Thread(target=main, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers), "a thread hung (deadlock?)"
    assert all(outcome is not None for outcome in outcomes), "a thread died before finishing"
    return [outcome for outcome in outcomes if outcome is not None]


def peak_overlap(outcomes: list[Outcome]) -> int:
    """The most calls that were in flight at one moment (proves the threads really overlapped)."""
    events = sorted(
        [(o.started, 1) for o in outcomes] + [(o.ended, -1) for o in outcomes],
        key=lambda event: (event[0], event[1]),
    )
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def unexpected(outcomes: list[Outcome], *allowed: type[BaseException]) -> list[BaseException]:
    """The exceptions raised that are none of ``allowed`` (with none allowed: all of them)."""
    return [o.value for o in outcomes if o.failed and not isinstance(o.value, allowed)]


def new_shop(engine: Engine) -> int:
    with Session(bind=engine) as session:
        factories.bind(session)
        return int(ShopFactory().id)


def account_id_of(session: Session, shop_id: int, customer: int = CUSTOMER) -> int:
    return session.execute(
        select(CreditAccount.id)
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(Customer.shop_id == shop_id, Customer.shopify_customer_id == customer)
    ).scalar_one()


def give(
    engine: Engine,
    shop_id: int,
    now: datetime,
    cents: int,
    *,
    expires_at: datetime | None = None,
    customer: int = CUSTOMER,
) -> uuid.UUID:
    with Session(bind=engine) as session:
        receipt = operations.issue(
            session,
            keyed(shop_id, now),
            customer=customer,
            amount=usd(cents),
            expires_at=expires_at,
        )
    assert receipt.lot is not None
    return uuid.UUID(receipt.lot["id"])


def linear_chain(session: Session, account_id: int) -> tuple[int, int, int, int]:
    """(entries, distinct prev_hash, distinct sequence, max sequence): all equal if no fork."""
    row = session.execute(
        select(
            func.count(),
            func.count(func.distinct(LedgerEntry.prev_hash)),
            func.count(func.distinct(LedgerEntry.sequence)),
            func.coalesce(func.max(LedgerEntry.sequence), 0),
        ).where(LedgerEntry.account_id == account_id)
    ).one()
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


# -- 1. many spends, one account ---------------------------------------------------------------


def test_64_concurrent_redeems_never_overdraw_and_succeed_exactly_as_often_as_funds_allow(
    pool, now
):
    shop_id = new_shop(pool)
    soon = give(pool, shop_id, now, 400, expires_at=now + timedelta(days=10))
    later = give(pool, shop_id, now, 300, expires_at=now + timedelta(days=30))
    never = give(pool, shop_id, now, 300)
    spend_at = now + timedelta(hours=1)

    outcomes = run_together(
        pool,
        64,
        lambda i, session: operations.redeem(
            session, keyed(shop_id, spend_at), customer=CUSTOMER, amount=usd(37)
        ),
    )

    assert unexpected(outcomes, InsufficientFunds) == []
    receipts = [o.value for o in outcomes if isinstance(o.value, Receipt)]
    refusals = [o.value for o in outcomes if isinstance(o.value, InsufficientFunds)]
    assert (len(receipts), len(refusals)) == (1000 // 37, 64 - 1000 // 37) == (27, 37)
    assert all(not r.replayed for r in receipts)
    assert all(r.details["available"] < 37 for r in refusals)
    assert peak_overlap(outcomes) >= 8  # the calls really were in flight together

    with Session(bind=pool) as check:
        account_id = account_id_of(check, shop_id)
        account = check.get(CreditAccount, account_id)
        assert account is not None
        assert account.balance == 1000 - 37 * 27 == 1 >= 0
        assert account.last_sequence == 3 + 27
        redeemed = check.execute(
            select(func.count(), func.sum(LedgerEntry.amount)).where(
                LedgerEntry.account_id == account_id, LedgerEntry.kind == "redeem"
            )
        ).one()
        assert tuple(redeemed) == (27, -37 * 27)
        # Each success saw a different balance: no two spends read the same state.
        assert sorted(r.entry["sequence"] for r in receipts) == list(range(4, 31))
        assert len({r.account["balance"] for r in receipts}) == 27
        # Lots drained soonest expiry first: 400 + 300 + 299 of the never-expiring 300.
        lots = {
            lot.id: lot
            for lot in check.scalars(select(CreditLot).where(CreditLot.account_id == account_id))
        }
        assert [(lots[i].remaining, lots[i].status) for i in (soon, later, never)] == [
            (0, "depleted"),
            (0, "depleted"),
            (1, "active"),
        ]
        allocated = check.execute(
            select(func.sum(EntryAllocation.amount)).where(EntryAllocation.lot_id.in_(list(lots)))
        ).scalar_one()
        assert allocated == -999
        failures = check.scalar(
            select(func.count()).where(
                AuditLog.shop_id == shop_id,
                AuditLog.outcome == "failure",
                AuditLog.error_code == "insufficient_funds",
            )
        )
        assert failures == 37
        assert verify_account(check, account_id) == []
        assert linear_chain(check, account_id) == (30, 30, 30, 30)


def test_naive_read_modify_write_loses_updates_so_the_test_above_can_fail(pool, now):
    """Control: the same race against a read-then-write balance update overdraws.

    Without the account's row lock, the oracle of the test above (exactly 27 successes)
    would fail; this shows the harness really races.
    """
    shop_id = new_shop(pool)
    give(pool, shop_id, now, 1000)
    with Session(bind=pool) as session:
        account_id = account_id_of(session, shop_id)

    def naive_spend(_: int, session: Session) -> bool:
        balance = session.execute(
            text("SELECT balance FROM credit_accounts WHERE id = :id"), {"id": account_id}
        ).scalar_one()
        if balance < 37:
            session.rollback()
            return False
        time.sleep(0.005)  # the application thinking
        session.execute(
            text(
                "UPDATE credit_accounts SET balance = :b, "
                "lifetime_debited = lifetime_credited - :b WHERE id = :id"
            ),
            {"b": balance - 37, "id": account_id},
        )
        session.commit()
        return True

    outcomes = run_together(pool, 64, naive_spend)

    assert unexpected(outcomes) == []
    successes = sum(1 for o in outcomes if o.value is True)
    assert successes > 27  # lost updates: more spends "succeeded" than the money allows


# -- 2. one idempotency key, sent by many at once ---------------------------------------------


def test_the_same_key_sent_concurrently_issues_once(pool, now):
    shop_id = new_shop(pool)
    # One request, 16 senders; the customer is new, so they also race to create it.
    by = actor(shop_id, now, key=f"issue-{uuid.uuid4().hex}")

    outcomes = run_together(
        pool,
        16,
        lambda i, session: operations.issue(
            session, by, customer=CUSTOMER, amount=usd(500), expires_at=now + timedelta(days=7)
        ),
    )

    assert unexpected(outcomes) == []
    receipts: list[Receipt] = [o.value for o in outcomes]
    assert len({r.entry["id"] for r in receipts}) == 1
    assert len({r.lot["id"] for r in receipts if r.lot}) == 1
    assert sorted(r.replayed for r in receipts) == [False] + [True] * 15
    first = next(r for r in receipts if not r.replayed)
    assert all(r.to_json() == first.to_json() for r in receipts)  # the first answer, verbatim
    with Session(bind=pool) as check:
        account_id = account_id_of(check, shop_id)
        counts = [
            check.scalar(select(func.count()).select_from(table).where(table.shop_id == shop_id))
            for table in (Customer, CreditAccount, CreditLot, LedgerEntry, IdempotencyKey)
        ]
        assert counts == [1, 1, 1, 1, 1]
        audit = check.execute(
            select(AuditLog.action, AuditLog.outcome).where(AuditLog.shop_id == shop_id)
        ).all()
        assert [tuple(row) for row in audit] == [("issue", "success")]
        assert check.get(CreditAccount, account_id).balance == 500  # type: ignore[union-attr]
        assert verify_account(check, account_id) == []


def test_the_same_key_sent_concurrently_redeems_once(pool, now):
    shop_id = new_shop(pool)
    give(pool, shop_id, now, 1000)
    by = actor(shop_id, now + timedelta(minutes=1), key=f"spend-{uuid.uuid4().hex}")

    outcomes = run_together(
        pool,
        16,
        lambda i, session: operations.redeem(session, by, customer=CUSTOMER, amount=usd(300)),
    )

    assert unexpected(outcomes) == []
    receipts: list[Receipt] = [o.value for o in outcomes]
    assert len({r.entry["id"] for r in receipts}) == 1
    assert sum(not r.replayed for r in receipts) == 1
    with Session(bind=pool) as check:
        account_id = account_id_of(check, shop_id)
        kinds = check.scalars(
            select(LedgerEntry.kind)
            .where(LedgerEntry.account_id == account_id)
            .order_by(LedgerEntry.sequence)
        ).all()
        assert kinds == ["issue", "redeem"]
        assert check.get(CreditAccount, account_id).balance == 700  # type: ignore[union-attr]
        assert verify_account(check, account_id) == []


def test_the_same_key_sent_concurrently_for_a_refused_spend_is_refused_once_for_all(pool, now):
    shop_id = new_shop(pool)
    give(pool, shop_id, now, 100)
    key = f"too-much-{uuid.uuid4().hex}"
    by = actor(shop_id, now + timedelta(minutes=1), key=key)

    outcomes = run_together(
        pool,
        16,
        lambda i, session: operations.redeem(session, by, customer=CUSTOMER, amount=usd(500)),
    )

    # Every sender hears the same refusal: the ones that lost the race get it replayed.
    assert unexpected(outcomes, InsufficientFunds) == []
    assert all(isinstance(o.value, InsufficientFunds) for o in outcomes)
    assert {tuple(sorted(o.value.details.items())) for o in outcomes} == {
        (("available", 100), ("requested", 500))
    }
    with Session(bind=pool) as check:
        keys = check.execute(
            select(IdempotencyKey.outcome, IdempotencyKey.result["code"].as_string()).where(
                IdempotencyKey.shop_id == shop_id, IdempotencyKey.key == key
            )
        ).all()
        assert [tuple(row) for row in keys] == [("rejected", "insufficient_funds")]
        failures = check.execute(
            select(AuditLog.action, AuditLog.error_code).where(
                AuditLog.shop_id == shop_id, AuditLog.outcome == "failure"
            )
        ).all()
        assert [tuple(row) for row in failures] == [("redeem", "insufficient_funds")]
        account_id = account_id_of(check, shop_id)
        assert check.get(CreditAccount, account_id).balance == 100  # type: ignore[union-attr]
        assert verify_account(check, account_id) == []


# -- 3. expiry racing spends on the same lot ---------------------------------------------------


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_expire_and_redeem_never_both_take_the_same_cents(pool, now, round_):
    shop_id = new_shop(pool)
    due_at = now + timedelta(days=1)
    due = give(pool, shop_id, now, 1000, expires_at=due_at)
    backup = give(pool, shop_id, now, 1000)  # never expires: spends after expiry land here
    spenders, expirers, spend = 6, 2, 130  # 6 x 1.30 < 10.00: the due lot always has some left
    just_before = due_at - timedelta(microseconds=1)

    def work(index: int, session: Session) -> Receipt | ExpiryReport:
        if index % 4 == 3:  # threads 3 and 7 run the expiry job, interleaved with the spends
            return expire_due(session, now=due_at, shop_id=shop_id)
        return operations.redeem(
            session, keyed(shop_id, just_before), customer=CUSTOMER, amount=usd(spend)
        )

    outcomes = run_together(pool, spenders + expirers, work)

    assert unexpected(outcomes) == []
    reports = [o.value for o in outcomes if isinstance(o.value, ExpiryReport)]
    assert sum(r.lots for r in reports) == 1  # one of the runs expired it, the other found it done
    with Session(bind=pool) as check:
        account_id = account_id_of(check, shop_id)
        lots = {
            lot.id: lot
            for lot in check.scalars(select(CreditLot).where(CreditLot.shop_id == shop_id))
        }
        assert (lots[due].remaining, lots[due].status) == (0, "expired")
        moved = dict(
            check.execute(
                select(LedgerEntry.kind, func.sum(EntryAllocation.amount))
                .join(EntryAllocation, EntryAllocation.entry_id == LedgerEntry.id)
                .where(EntryAllocation.lot_id == due)
                .group_by(LedgerEntry.kind)
            ).all()
        )
        expire_entries = (
            check.execute(
                select(LedgerEntry.amount).where(
                    LedgerEntry.lot_id == due, LedgerEntry.kind == "expire"
                )
            )
            .scalars()
            .all()
        )
        assert len(expire_entries) == 1
        redeemed_from_due = -moved.get("redeem", 0)
        expired = -moved["expire"]
        assert expire_entries == [-expired]
        assert redeemed_from_due + expired == 1000  # every cent of the lot went exactly one way
        assert redeemed_from_due % spend == 0  # a spend before expiry fits in the lot whole
        assert redeemed_from_due <= spenders * spend
        assert lots[backup].remaining == 1000 - (spenders * spend - redeemed_from_due)
        balance = check.get(CreditAccount, account_id).balance  # type: ignore[union-attr]
        assert balance == 2000 - spenders * spend - expired
        assert verify_account(check, account_id) == []


# -- 4. two expiry runs over many accounts -----------------------------------------------------


def test_two_expiry_runs_at_once_expire_every_lot_exactly_once(pool, now):
    shop_id = new_shop(pool)
    accounts = 200
    customers = [CUSTOMER + n for n in range(accounts)]

    # Set up with 8 threads (each lot its own committed issue); due times are spread so the
    # expiry batches (ordered by expires_at) take accounts from both ends at once.
    def set_up(index: int, session: Session) -> None:
        for n in range(index, accounts, 8):
            for offset in (n, 2 * accounts - n):
                operations.issue(
                    session,
                    keyed(shop_id, now),
                    customer=customers[n],
                    amount=usd(100 + n),
                    expires_at=now + timedelta(hours=1, seconds=offset),
                )

    assert unexpected(run_together(pool, 8, set_up)) == []
    later = now + timedelta(days=1)

    outcomes = run_together(
        pool, 2, lambda i, session: expire_due(session, now=later, shop_id=shop_id, batch_size=64)
    )

    assert unexpected(outcomes) == []
    first, second = (o.value for o in outcomes)
    assert first.lots + second.lots == 2 * accounts
    assert first.amounts["USD"] + second.amounts["USD"] == 2 * sum(100 + n for n in range(accounts))
    with Session(bind=pool) as check:
        per_lot = check.execute(
            select(func.count(), func.count(func.distinct(LedgerEntry.lot_id))).where(
                LedgerEntry.shop_id == shop_id, LedgerEntry.kind == "expire"
            )
        ).one()
        assert tuple(per_lot) == (2 * accounts, 2 * accounts)
        statuses = check.execute(
            select(CreditLot.status, func.count())
            .where(CreditLot.shop_id == shop_id)
            .group_by(CreditLot.status)
        ).all()
        assert [tuple(row) for row in statuses] == [("expired", 2 * accounts)]
        ids = check.scalars(select(CreditAccount.id).where(CreditAccount.shop_id == shop_id)).all()
        assert len(ids) == accounts
        assert (
            check.scalar(
                select(func.sum(CreditAccount.balance)).where(CreditAccount.shop_id == shop_id)
            )
            == 0
        )
        for account_id in ids:
            assert verify_account(check, account_id) == []
            assert linear_chain(check, account_id) == (4, 4, 4, 4)


# -- 5. a mixed workload ------------------------------------------------------------------------


def test_mixed_workload_keeps_every_account_verified_and_its_chain_linear(pool, now):
    shop_id = new_shop(pool)
    customers = [CUSTOMER + n for n in range(5)]
    for customer in customers:
        give(pool, shop_id, now, 5000, customer=customer)
    clock = count(1)  # time moves forward one second per operation, shared by all threads
    spends: list[uuid.UUID] = []
    done: dict[str, int] = {}
    lock = threading.Lock()

    def tick() -> datetime:
        return now + timedelta(seconds=next(clock))

    def lot_ids(session: Session, customer: int) -> list[uuid.UUID]:
        ids = session.scalars(
            select(CreditLot.id)
            .join(CreditAccount, CreditAccount.id == CreditLot.account_id)
            .join(Customer, Customer.id == CreditAccount.customer_id)
            .where(Customer.shop_id == shop_id, Customer.shopify_customer_id == customer)
        ).all()
        session.rollback()
        return list(ids)

    def one(rng: random.Random, session: Session) -> str:
        customer = rng.choice(customers)
        op = rng.choices(
            ["issue", "redeem", "adjust", "revoke", "reverse", "refund", "expire"],
            weights=[20, 35, 12, 8, 12, 8, 5],
        )[0]
        at = tick()
        by = keyed(shop_id, at)
        amount = usd(rng.randint(1, 1500))
        expiry = None if rng.random() < 0.4 else at + timedelta(seconds=rng.randint(5, 200))
        if op == "issue":
            operations.issue(session, by, customer=customer, amount=amount, expires_at=expiry)
        elif op == "refund":
            operations.refund_credit(session, by, customer=customer, amount=amount)
        elif op == "redeem":
            receipt = operations.redeem(session, by, customer=customer, amount=amount)
            with lock:
                spends.append(uuid.UUID(receipt.entry["id"]))
        elif op == "adjust":
            sign = rng.choice((1, -1))
            operations.adjust(
                session,
                by,
                customer=customer,
                amount=usd(sign * rng.randint(1, 800)),
                expires_at=expiry if sign > 0 else None,
            )
        elif op == "revoke":
            choices = lot_ids(session, customer)
            operations.revoke(session, by, lot_id=rng.choice(choices))
        elif op == "reverse":
            with lock:
                if not spends:
                    return "skipped"
                entry_id = rng.choice(spends)
            part = None if rng.random() < 0.5 else usd(rng.randint(1, 200))
            operations.redeem_reversal(session, by, entry_id=entry_id, amount=part)
        else:
            expire_due(session, now=at, shop_id=shop_id)
        return op

    def worker(index: int, session: Session) -> dict[str, int]:
        rng = random.Random(1000 + index)
        tally: dict[str, int] = {}
        for _ in range(38):  # 8 x 38 = 304 operations
            try:
                name = one(rng, session)
            except LedgerError as refusal:  # insufficient funds, lot not active, ...
                session.rollback()
                name = f"refused:{refusal.code}"
            tally[name] = tally.get(name, 0) + 1
        return tally

    outcomes = run_together(pool, 8, worker)

    assert unexpected(outcomes) == []
    for outcome in outcomes:
        for name, n in outcome.value.items():
            done[name] = done.get(name, 0) + n
    assert sum(done.values()) == 304
    for name in (*WRITES, "expire"):
        assert done.get(name, 0) > 0, done  # every kind of operation really happened
    with Session(bind=pool) as check:
        ids = check.scalars(select(CreditAccount.id).where(CreditAccount.shop_id == shop_id)).all()
        assert len(ids) == 5
        total_entries = 0
        for account_id in ids:
            assert verify_account(check, account_id) == []
            entries, prev_hashes, sequences, last = linear_chain(check, account_id)
            assert entries == prev_hashes == sequences == last  # no fork, no gap
            total_entries += entries
        # Every committed operation wrote at least one entry (the 5 set-up issues included).
        writes = sum(done.get(name, 0) for name in WRITES)
        assert total_entries >= 5 + writes
