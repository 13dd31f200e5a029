"""Property: whatever happened, and whichever period is asked for, the report's figures are the
sums of the ledger's own entries, and the roll-forward ties out.

Hypothesis draws a sequence of operations (issue, refund, spend, return, debit, credit up,
revoke, a credit made in Shopify, an expiry run) on two customers in USD and JPY at times that
only move forward, in a shop of a zone with an odd offset; then periods whose bounds fall
before, between, exactly on and just after entries. Each figure is compared with a plain
Python sum over the shop's entries (the oracle knows nothing of ledger/reports.py): opening,
closing and each movement column, the liability as of each bound (whichever side the report
sums from), breakage's totals, and every day of the dashboard's chart in the shop's zone.

Each example works in a shop of its own inside the test's rolled-back transaction.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import operations, reports
from ledger.book import Actor
from ledger.errors import LedgerError
from ledger.expiry import expire_due
from ledger.external import ExternalMovement, import_external
from ledger.kinds import EntryKind
from ledger.money import Money, format_amount
from models import CreditAccount, Customer, LedgerEntry
from tests.factories import ShopFactory

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CUSTOMERS = (7_200_000_001, 7_200_000_002)
ZONES = ("UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham", "Australia/Lord_Howe")
KINDS = (
    "issue",
    "refund",
    "redeem",
    "reverse",
    "adjust_up",
    "adjust_down",
    "revoke",
    "external",
    "expire",
)
STEP = st.integers(0, 3 * 24 * 60).map(lambda minutes: timedelta(minutes=minutes))
OPERATION = st.tuples(
    st.sampled_from(KINDS),
    st.sampled_from(CUSTOMERS),
    st.sampled_from(("USD", "JPY")),
    st.integers(1, 4000),
    st.none() | st.integers(1, 12),  # expiry in days, for what opens a lot
    STEP,
)


@dataclass
class Book:
    """What the example did so far: ids to aim returns and revocations at, and the clock."""

    shop_id: int
    clock: datetime = START
    spends: list[uuid.UUID] = field(default_factory=list)
    lots: list[uuid.UUID] = field(default_factory=list)
    imports: int = 0


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    zone=st.sampled_from(ZONES),
    steps=st.lists(OPERATION, min_size=1, max_size=14),
    picks=st.lists(st.integers(0, 10_000), min_size=6, max_size=6),
)
def test_report_figures_are_the_entries_sums_and_tie_out(session, zone, steps, picks):
    book = Book(shop_id=int(ShopFactory(timezone=zone).id))
    for step in steps:
        _apply(session, book, *step)
    entries = _entries(session, book.shop_id)
    instants = _instants(entries, book.clock)
    bounds = sorted(instants[pick % len(instants)] for pick in picks)
    for start, end in zip(bounds[::2], bounds[1::2], strict=True):
        _check_period(session, book.shop_id, entries, start, end)
    _check_dashboard(session, book.shop_id, entries, reports.zone_named(zone), book.clock)


# -- doing things ------------------------------------------------------------------------------


def _apply(
    session: Session,
    book: Book,
    kind: str,
    customer: int,
    currency: str,
    amount: int,
    expiry_days: int | None,
    step: timedelta,
) -> None:
    book.clock += step
    by = Actor(shop_id=book.shop_id, now=book.clock, actor="staff:1", reason="property")
    money = Money(amount, currency)
    expires_at = book.clock + timedelta(days=expiry_days) if expiry_days else None
    try:
        if kind == "issue":
            receipt = operations.issue(
                session, by, customer=customer, amount=money, expires_at=expires_at
            )
            book.lots.append(uuid.UUID(receipt.lot["id"]))
        elif kind == "refund":
            operations.refund_credit(
                session, by, customer=customer, amount=money, expires_at=expires_at
            )
        elif kind == "redeem":
            spent = operations.redeem(session, by, customer=customer, amount=money)
            book.spends.append(uuid.UUID(spent.entry["id"]))
        elif kind == "reverse" and book.spends:
            spend = book.spends[amount % len(book.spends)]
            operations.redeem_reversal(session, by, entry_id=spend)
        elif kind in ("adjust_up", "adjust_down"):
            signed = amount if kind == "adjust_up" else -amount
            operations.adjust(session, by, customer=customer, amount=Money(signed, currency))
        elif kind == "revoke" and book.lots:
            operations.revoke(session, by, lot_id=book.lots[amount % len(book.lots)])
        elif kind == "external":
            _external(session, book, customer, currency, amount if amount % 2 else -amount)
        elif kind == "expire":
            expire_due(session, now=book.clock, shop_id=book.shop_id)
    except LedgerError:
        pass  # not enough credit, a closed lot, nothing left to return: nothing was written


def _external(session: Session, book: Book, customer: int, currency: str, signed: int) -> None:
    account = session.scalar(
        select(CreditAccount.id)
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(
            Customer.shop_id == book.shop_id,
            Customer.shopify_customer_id == customer,
            CreditAccount.currency == currency,
        )
    )
    if account is None:
        return
    book.imports += 1
    movement = ExternalMovement(
        native_gid=f"gid://shopify/StoreCreditAccountTransaction/{book.shop_id}-{book.imports}",
        amount=Money(signed, currency),
        occurred_at=book.clock,
        event="ADJUSTMENT",
    )
    import_external(session, book.shop_id, account, movement, now=book.clock)


# -- the oracle --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    created_at: datetime
    currency: str
    kind: str
    amount: int


def _entries(session: Session, shop_id: int) -> list[Entry]:
    rows = session.execute(
        select(LedgerEntry.created_at, CreditAccount.currency, LedgerEntry.kind, LedgerEntry.amount)
        .join(CreditAccount, CreditAccount.id == LedgerEntry.account_id)
        .where(LedgerEntry.shop_id == shop_id)
    )
    return [Entry(*row) for row in rows]


def _instants(entries: list[Entry], clock: datetime) -> list[datetime]:
    around = [START - timedelta(days=1), clock + timedelta(days=1)]
    for entry in entries:
        around += [entry.created_at, entry.created_at + timedelta(microseconds=1)]
    return around


def _sum(entries: list[Entry], currency: str, *, kinds: set[str] | None = None, **when) -> int:
    """Sum of entries in ``currency`` (of ``kinds``), with created_at before/upto/since ``when``."""
    total = 0
    for e in entries:
        if e.currency != currency or (kinds is not None and e.kind not in kinds):
            continue
        if "before" in when and not e.created_at < when["before"]:
            continue
        if "upto" in when and not e.created_at <= when["upto"]:
            continue
        if "since" in when and not e.created_at >= when["since"]:
            continue
        total += e.amount
    return total


def _check_period(
    session: Session, shop_id: int, entries: list[Entry], start: datetime, end: datetime
) -> None:
    figures = reports.roll_forward_figures(session, shop_id, start, end)
    for row in figures:
        c = row.currency
        assert row.ties_out, (start, end, row)
        assert row.opening == _sum(entries, c, before=start)
        assert row.closing == _sum(entries, c, before=end)
        for column, (kind, sign) in reports.MOVEMENTS.items():
            moved = _sum(entries, c, kinds={kind.value}, since=start, before=end)
            assert row.movements[column] == sign * moved, (column, start, end)
    for instant in (start, end):
        liability = {
            r["currency"]: r["amount"] for r in reports.liability_as_of(session, shop_id, instant)
        }
        for currency, amount in liability.items():
            assert amount == format_amount(_sum(entries, currency, upto=instant), currency)
    for row in reports.breakage(session, shop_id, start, end):
        c = row["currency"]
        expired = -_sum(entries, c, kinds={EntryKind.EXPIRE.value}, since=start, before=end)
        credited = _sum(entries, c, kinds={"issue", "refund_credit"}, since=start, before=end)
        assert (row["expired"], row["credited"]) == (
            format_amount(expired, c),
            format_amount(credited, c),
        )


def _check_dashboard(
    session: Session, shop_id: int, entries: list[Entry], zone, now: datetime
) -> None:
    figures = reports.dashboard(session, shop_id, now)
    first = date.fromisoformat(figures["activity"]["from"])
    window_start = reports.local_midnight(first, zone)
    expected: dict[tuple[str, str, str], int] = defaultdict(int)
    series = {"issue": ("issued", 1), "redeem": ("redeemed", -1), "expire": ("expired", -1)}
    for e in entries:
        if e.kind in series and window_start <= e.created_at <= now:
            name, sign = series[e.kind]
            expected[e.created_at.astimezone(zone).date().isoformat(), e.currency, name] += (
                sign * e.amount
            )
    for day in figures["activity"]["days"]:
        for name in ("issued", "redeemed", "expired"):
            key = (day["date"], day["currency"], name)
            assert day[name] == format_amount(expected.pop(key, 0), day["currency"]), key
    assert not {key: v for key, v in expected.items() if v}, "entries missing from the chart"
