"""The dashboard remembers the sums of closed days (ledger/reports.py, "the dashboard's closed
days"), reads only the entries since, and never shows a stale figure: an entry added to a
remembered day (backdated, or committed late) makes it sum the month again; a new day, an
archive run and a new time zone are all handled. Each figure is compared with the dashboard
computed from nothing remembered.

PostgreSQL only: SQLite (``make run``) sums the month at every request.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.orm import Session

from ledger import operations, reports
from ledger.archive import archive_ledger
from ledger.checkpoints import CheckpointKeys
from ledger.money import Money
from models import Shop
from tests.reports.history import NOW, History, at, build_history, by

NEWCOMER = 7_100_000_077


@pytest.fixture
def history(session: Session, on_postgresql: bool) -> History:
    if not on_postgresql:
        pytest.skip("the closed days are remembered on PostgreSQL only")
    return build_history(session)


@pytest.fixture
def chart_reads(session: Session) -> Iterator[list[datetime]]:
    """Where each chart read of the ledger began (its first day's midnight)."""
    starts: list[datetime] = []

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if "width_bucket" in statement and "last_sequence" in statement:
            starts.append(parameters["bounds"][0])

    engine = session.connection().engine
    event.listen(engine, "before_cursor_execute", record)
    yield starts
    event.remove(engine, "before_cursor_execute", record)


def from_nothing(session: Session, shop_id: int, now: datetime) -> dict[str, Any]:
    """The dashboard with nothing remembered (what a new process computes)."""
    reports._CLOSED_DAYS._held.clear()
    return reports.dashboard(session, shop_id, now)


def midnight(shop_id: int, session: Session, now: datetime) -> datetime:
    zone = reports.shop_zone(session, shop_id)
    return reports.local_midnight(now.astimezone(zone).date(), zone)


def test_the_second_dashboard_reads_only_todays_entries(session, history, chart_reads):
    shop = history.shop_a
    first = from_nothing(session, shop, NOW)

    again = reports.dashboard(session, shop, NOW)
    later = reports.dashboard(session, shop, NOW + timedelta(hours=5))

    assert again == first
    assert later == from_nothing(session, shop, NOW + timedelta(hours=5))
    month_start = reports.local_midnight(
        datetime.fromisoformat(first["activity"]["from"]).date(), reports.shop_zone(session, shop)
    )
    today = midnight(shop, session, NOW)
    assert chart_reads == [month_start, today, today, month_start]


def test_an_entry_added_to_a_remembered_day_is_counted(session, history, chart_reads):
    shop = history.shop_a
    before = reports.dashboard(session, shop, NOW)
    # Backdated to two days ago (as a transaction begun then and committed now would be).
    operations.issue(session, by(shop, "2026-11-20 15:00"), customer=NEWCOMER, amount=usd(4200))

    after = reports.dashboard(session, shop, NOW)

    assert after == from_nothing(session, shop, NOW)
    assert after != before
    [usd_day] = [
        d for d in after["activity"]["days"] if (d["date"], d["currency"]) == ("2026-11-20", "USD")
    ]
    assert usd_day["issued"] == "67.00"  # Carol's 25.00 and the newcomer's 42.00
    # The first read, the check that found the remembered days wrong, the month again.
    month_start = chart_reads[0]
    assert chart_reads[:3] == [month_start, midnight(shop, session, NOW), month_start]


def test_new_days_are_read_and_the_rest_remembered(session, history, chart_reads):
    shop = history.shop_a
    reports.dashboard(session, shop, NOW)
    operations.issue(
        session, by(shop, "2026-11-23 09:00"), customer=NEWCOMER, amount=usd(100)
    )  # tomorrow
    two_days_on = NOW + timedelta(days=2)

    figures = reports.dashboard(session, shop, two_days_on)

    assert chart_reads[1] == midnight(shop, session, NOW)  # from the end of what it held
    assert figures == from_nothing(session, shop, two_days_on)


def test_archiving_changes_no_remembered_day(session, history, chart_reads):
    shop = history.shop_a
    october = at("2026-10-20 12:00")  # its month holds Bob's expiry run, archived below
    before = reports.dashboard(session, shop, october)
    report = archive_ledger(
        session,
        before=at("2026-10-20 00:00"),
        keys=CheckpointKeys(["closed-days-test-key"]),
        now=NOW,
        shop_id=shop,
    )
    assert report.entries == 3

    after = reports.dashboard(session, shop, october)

    assert after == before
    assert chart_reads[1] == midnight(shop, session, october)  # remembered, not read again
    assert after == from_nothing(session, shop, october)


def test_a_new_time_zone_sums_the_month_again(session, history, chart_reads):
    shop = history.shop_a
    reports.dashboard(session, shop, NOW)
    session.execute(update(Shop).where(Shop.id == shop).values(timezone="Asia/Kolkata"))

    figures = reports.dashboard(session, shop, NOW)

    assert figures == from_nothing(session, shop, NOW)
    assert chart_reads[1] == chart_reads[2]  # the month from its start, twice
    assert chart_reads[1] != chart_reads[0]  # in the new zone's days


def usd(cents: int) -> Money:
    return Money(cents, "USD")
