"""The liability report's figures stay the same when retention archives old entries.

Every figure is taken before archiving and again after, and must not change: liability as of
instants before, at, across and after the archived entries' times (each side of an instant —
the history summed forward, the cached balances less what moved since — forced too),
roll-forwards of periods before, across and after the cut (tying out), breakage, the whole
report, and the dashboard at times whose 30 days reach into the archived entries or not.

On the known history of tests/reports/history.py, Bob's first JPY lot (issued, spent from,
expired) is the prefix that may move at a cut of 2026-10-20 (every other account holds an
active lot from its start, or has nothing older); a property test then archives random
histories at random cuts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import operations, reports
from ledger.archive import archive_ledger
from ledger.book import Actor
from ledger.checkpoints import CheckpointKeys
from ledger.money import Money
from models import CreditAccount, Customer, LedgerEntry, LedgerEntryArchive
from tests.factories import ShopFactory
from tests.reports.history import NOW, at, build_history
from tests.reports.test_roll_forward_property import OPERATION, ZONES, Book, _apply

KEYS = CheckpointKeys(["reports-archive-test-key"])


def archive(session: Session, shop_id: int, cut: Any, now: Any) -> int:
    report = archive_ledger(session, before=cut, keys=KEYS, now=now, shop_id=shop_id)
    assert report.refused == []
    return report.entries


def entry_times(session: Session, shop_id: int) -> list[Any]:
    hot = select(LedgerEntry.created_at).where(LedgerEntry.shop_id == shop_id)
    archived = select(LedgerEntryArchive.created_at).where(LedgerEntryArchive.shop_id == shop_id)
    return sorted([*session.scalars(hot), *session.scalars(archived)])


def figures(
    session: Session,
    shop_id: int,
    instants: list[Any],
    periods: list[tuple[Any, Any]],
    nows: list[Any],
) -> dict[str, Any]:
    """Every figure the reports give for these instants, periods and dashboard times, from
    nothing remembered (so that the figures after archiving are read from both tables, not
    from days remembered before)."""
    reports._CLOSED_DAYS._held.clear()
    scope = reports._scope(session, shop_id)
    sides = {
        forward: (
            reports._liabilities_before(session, scope, instants, forward=forward),
            [
                reports._liability_at(session, scope, instant, forward=forward)
                for instant in instants
            ],
        )
        for forward in (True, False)
    }
    roll_forwards = [reports.roll_forward_figures(session, shop_id, *p) for p in periods]
    for rows in roll_forwards:
        assert all(row.ties_out for row in rows), rows
    return {
        "liability": [reports.liability_as_of(session, shop_id, t) for t in instants],
        "sides": sides,
        "roll_forward": roll_forwards,
        "breakage": [reports.breakage(session, shop_id, *p) for p in periods],
        "report": [
            reports.liability_report(session, shop_id, as_of=end, start=start, end=end)
            for start, end in periods
        ],
        "dashboard": [reports.dashboard(session, shop_id, now) for now in nows],
    }


# -- the known history --------------------------------------------------------------------------

CUT = at("2026-10-20 00:00")
INSTANTS = [
    at("2026-08-01 00:00"),
    at("2026-09-03 12:00"),  # Bob's first issue, archived
    at("2026-09-08 11:59"),
    at("2026-09-10 12:00"),
    at("2026-10-16 00:00"),  # Bob's expiry run, archived
    at("2026-10-16 00:00") + timedelta(microseconds=1),
    CUT,
    at("2026-10-26 15:00"),
    NOW,
    NOW + timedelta(days=400),
]
PERIODS = [
    (at("2026-09-01 00:00"), at("2026-10-01 00:00")),  # before the cut
    (at("2026-09-08 12:00"), at("2026-10-16 00:00")),  # bounds on archived entries
    (at("2026-10-01 00:00"), at("2026-11-01 00:00")),  # across it
    (at("2026-10-21 00:00"), NOW),  # after it
    (at("2026-01-01 00:00"), at("2027-01-01 00:00")),  # all of it
]
DASHBOARDS = [NOW, at("2026-10-17 12:00"), at("2026-09-20 00:00")]


@pytest.mark.smoke  # on SQLite too: its UNION of both tables, its day buckets
def test_every_figure_is_the_same_after_archiving(session):
    history = build_history(session)
    shop = history.shop_a
    times = entry_times(session, shop)
    before = figures(session, shop, INSTANTS, PERIODS, DASHBOARDS)

    moved = archive(session, shop, CUT, NOW)

    assert moved == 3  # Bob's issue, spend and expiry
    assert entry_times(session, shop) == times
    assert reports._scope(session, shop).last_archived == at("2026-10-16 00:00")
    after = figures(session, shop, INSTANTS, PERIODS, DASHBOARDS)
    assert after == before
    # The archived entries are in the figures: JPY owed on Sep 10 is Bob's archived lot.
    jpy = reports.liability_as_of(session, shop, at("2026-09-10 12:00"))[0]
    assert (jpy["currency"], jpy["amount"]) == ("JPY", "3800")


def test_a_recent_period_reads_only_the_hot_table(session):
    """Past the newest archived entry, the reports read ledger_entries alone."""
    history = build_history(session)
    shop = history.shop_a
    archive(session, shop, CUT, NOW)
    scope = reports._scope(session, shop)

    assert scope.entries(at("2026-10-21 00:00"), NOW) is LedgerEntry.__table__
    assert scope.entries(None, at("2026-08-01 00:00")) is LedgerEntry.__table__
    assert scope.entries(at("2026-09-03 12:00"), None) is not LedgerEntry.__table__
    assert scope.entries(None, at("2026-09-03 12:00")) is not LedgerEntry.__table__
    nothing_archived = reports._scope(session, history.shop_b)
    assert nothing_archived.entries(None, None) is LedgerEntry.__table__


# -- random histories ------------------------------------------------------------------------


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    zone=st.sampled_from(ZONES),
    steps=st.lists(OPERATION, min_size=1, max_size=14),
    spend_all=st.booleans(),
    cut_pick=st.integers(0, 10_000),
    picks=st.lists(st.integers(0, 10_000), min_size=6, max_size=6),
)
def test_archiving_any_history_at_any_cut_changes_no_figure(
    session, zone, steps, spend_all, cut_pick, picks
):
    book = Book(shop_id=int(ShopFactory(timezone=zone).id))
    for step in steps:
        _apply(session, book, *step)
    # An expiry run closes every expiring lot; spending every balance closes the rest: more
    # prefixes may move.
    _apply(session, book, "expire", 0, "USD", 1, None, timedelta(days=13))
    if spend_all:
        _spend_every_balance(session, book)
    times = entry_times(session, book.shop_id)
    if not times:
        return
    around = sorted(
        [times[0] - timedelta(days=1), book.clock + timedelta(days=1)]
        + [t + delta for t in times for delta in (timedelta(0), timedelta(microseconds=1))]
    )
    bounds = sorted(around[pick % len(around)] for pick in picks)
    periods = list(zip(bounds[::2], bounds[1::2], strict=True))
    # A cut in the later half of the history: most examples archive something.
    cut = around[len(around) // 2 + cut_pick % (len(around) - len(around) // 2)]
    nows = [book.clock, cut, bounds[0]]
    before = figures(session, book.shop_id, bounds, periods, nows)

    moved = archive(session, book.shop_id, cut, book.clock + timedelta(days=1))
    event(f"archived: {bool(moved)}")  # --hypothesis-show-statistics: about half do

    assert figures(session, book.shop_id, bounds, periods, nows) == before
    assert entry_times(session, book.shop_id) == times


def _spend_every_balance(session: Session, book: Book) -> None:
    held = session.execute(
        select(Customer.shopify_customer_id, CreditAccount.currency, CreditAccount.balance)
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(CreditAccount.shop_id == book.shop_id, CreditAccount.balance > 0)
    ).all()
    book.clock += timedelta(hours=1)
    for customer, currency, balance in held:
        by = Actor(shop_id=book.shop_id, now=book.clock, actor="staff:1", reason="property")
        operations.redeem(session, by, customer=customer, amount=Money(balance, currency))
