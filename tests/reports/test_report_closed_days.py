"""Every report remembers the shop's closed days (ledger/reports.py, "the shop's closed days,
remembered"): the first one in a process sums the whole history once, later ones read only the
entries since the remembered days (and the rest of the day of an instant that is not a local
midnight), and none shows a stale figure: an entry added to a remembered day makes it sum the
history again; new entries, an archive run and a new time zone are all handled.

Each figure is compared with the same report computed from nothing remembered and with the
report summed by the range scans SQLite uses (``scanned``), which remember nothing.

PostgreSQL only: SQLite sums what each figure needs at every request.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.orm import Session

from ledger import operations, reports
from ledger.archive import archive_ledger
from ledger.checkpoints import CheckpointKeys
from ledger.money import Money
from ledger.views import iso
from models import Shop
from tests.reports.history import NOW, History, at, build_history, by

NEWCOMER = 7_100_000_078
TZ = "America/New_York"
MICROSECOND = timedelta(microseconds=1)


@pytest.fixture
def history(session: Session, on_postgresql: bool) -> History:
    if not on_postgresql:
        pytest.skip("the closed days are remembered on PostgreSQL only")
    built = build_history(session)
    reports._CLOSED_DAYS._held.clear()
    return built


@dataclass
class Reads:
    """What the reports read of the ledger: where each read of the entries since the remembered
    days began, and the [instant, end of its day) ranges read raw."""

    since: list[datetime] = field(default_factory=list)
    rest_of_day: list[tuple[datetime, datetime]] = field(default_factory=list)


@contextmanager
def watching(session: Session) -> Iterator[Reads]:
    reads = Reads()

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if "width_bucket" in statement and "last_sequence" in statement:
            reads.since.append(parameters["bounds"][0])
        elif "ledger_entries" in statement and "created_at <" in statement:
            instants = sorted(v for v in parameters.values() if isinstance(v, datetime))
            reads.rest_of_day.append((instants[0], instants[-1]))

    engine = session.connection().engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield reads
    finally:
        event.remove(engine, "before_cursor_execute", record)


def report(session: Session, shop: int, as_of: datetime, start: datetime, end: datetime) -> Any:
    return reports.liability_report(session, shop, as_of=as_of, start=start, end=end)


def from_nothing(session: Session, shop: int, *args: datetime) -> Any:
    """The report with nothing remembered (what a new process computes)."""
    reports._CLOSED_DAYS._held.clear()
    return report(session, shop, *args)


def scanned(session: Session, shop: int, as_of: datetime, start: datetime, end: datetime) -> Any:
    """The report from SQLite's range scans: the history summed up to as_of (not the cached
    balances), the period's entries by local day for the movements and breakage."""
    scope = reports._scope(session, shop)
    daily = reports._daily_sums(session, scope, start, end)
    rows = reports._roll_forward(session, scope, start, end, daily.by_kind())
    return {
        "as_of": iso(as_of),
        "from": iso(start),
        "to": iso(end),
        "liability": reports._liability_json(
            reports._liability_at(session, scope, as_of, forward=True)
        ),
        "roll_forward": [row.to_json() for row in rows],
        "aging": reports._aging(session, scope, as_of),
        "breakage": reports._breakage(daily, scope, start, end),
    }


def local(day: str, zone: str = TZ) -> datetime:
    return reports.local_midnight(datetime.fromisoformat(day).date(), reports.zone_named(zone))


OCTOBER = (NOW, local("2026-10-01"), local("2026-11-01"))
SEPTEMBER_AS_OF_OCTOBER_2 = (
    local("2026-10-03") - MICROSECOND,
    local("2026-09-01"),
    local("2026-10-01"),
)
THE_YEAR = (NOW, local("2026-01-01"), local("2027-01-01"))
# Shop A's first entry is on Sep 1 (local); its last on Nov 20 (local; 2026-11-21 03:00Z).
FIRST_DAY, LAST_DAY = local("2026-09-01"), local("2026-11-20")


def test_the_first_report_sums_the_history_and_the_next_ones_read_what_came_since(session, history):
    shop = history.shop_a
    with watching(session) as reads:
        october = report(session, shop, *OCTOBER)
        september = report(session, shop, *SEPTEMBER_AS_OF_OCTOBER_2)
        year = report(session, shop, *THE_YEAR)

    assert reads.since == [FIRST_DAY, LAST_DAY, LAST_DAY]
    assert reads.rest_of_day == []  # every instant asked for is a local midnight, or after
    assert october == scanned(session, shop, *OCTOBER) == from_nothing(session, shop, *OCTOBER)
    assert september == scanned(session, shop, *SEPTEMBER_AS_OF_OCTOBER_2)
    assert year == scanned(session, shop, *THE_YEAR)
    # The liability as of Oct 2 (its holders too) came from the remembered days.
    usd = september["liability"][1]
    assert (usd["currency"], usd["amount"], usd["accounts"]) == ("USD", "70.00", 1)
    assert all(row["ties_out"] for row in year["roll_forward"])


def test_an_entry_added_to_a_remembered_day_sums_the_history_again(session, history):
    shop = history.shop_a
    before = report(session, shop, *OCTOBER)
    # Backdated into October (as a transaction begun then and committed now would be).
    operations.issue(session, by(shop, "2026-10-20 15:00"), customer=NEWCOMER, amount=usd(4200))

    with watching(session) as reads:
        after = report(session, shop, *OCTOBER)

    assert reads.since == [LAST_DAY, FIRST_DAY]  # the check failed: from the start again
    assert after == scanned(session, shop, *OCTOBER) != before
    usd_row = after["roll_forward"][1]
    assert (usd_row["currency"], usd_row["issued"]) == ("USD", "82.00")  # Carol's 40 + 42


def test_new_entries_are_read_and_whole_new_days_remembered(session, history):
    shop = history.shop_a
    report(session, shop, *OCTOBER)
    operations.issue(session, by(shop, "2026-11-22 12:00"), customer=NEWCOMER, amount=usd(100))
    operations.issue(session, by(shop, "2026-11-23 09:00"), customer=NEWCOMER, amount=usd(200))
    november = (at("2026-11-24 00:00"), local("2026-11-01"), local("2026-12-01"))

    with watching(session) as reads:
        first = report(session, shop, *november)
        second = report(session, shop, *november)

    # The first read adds Nov 20-22 to the memory (the last entry's day is still open).
    assert reads.since == [LAST_DAY, local("2026-11-23")]
    assert first == second == scanned(session, shop, *november)
    assert first == from_nothing(session, shop, *november)
    assert first["roll_forward"][1]["issued"] == "40.00"  # Carol's 12 and 25, then 1 and 2


def test_archiving_changes_no_remembered_day(session, history):
    shop = history.shop_a
    before = report(session, shop, *THE_YEAR)
    archived = archive_ledger(
        session,
        before=at("2026-10-20 00:00"),
        keys=CheckpointKeys(["report-closed-days-test-key"]),
        now=NOW,
        shop_id=shop,
    )
    assert archived.entries == 3

    with watching(session) as reads:
        after = report(session, shop, *THE_YEAR)

    assert reads.since == [LAST_DAY]  # remembered, not read again
    assert after == before == scanned(session, shop, *THE_YEAR)
    assert from_nothing(session, shop, *THE_YEAR) == before  # read from both tables


def test_a_new_time_zone_sums_the_history_again_in_its_days(session, history):
    shop = history.shop_a
    report(session, shop, *OCTOBER)
    session.execute(update(Shop).where(Shop.id == shop).values(timezone="Asia/Kolkata"))
    october = (NOW, local("2026-10-01", "Asia/Kolkata"), local("2026-11-01", "Asia/Kolkata"))

    with watching(session) as reads:
        figures = report(session, shop, *october)

    assert reads.since == [local("2026-09-01", "Asia/Kolkata")]
    assert figures == scanned(session, shop, *october)
    assert [month["month"] for month in figures["breakage"][0]["months"]] == ["2026-10"]


@pytest.mark.parametrize(
    ("as_of", "start", "end"),
    [
        # Bounds inside remembered days, each on an entry or just after one.
        (at("2026-10-02 00:00"), at("2026-09-10 12:00"), at("2026-10-12 12:00") + MICROSECOND),
        # As of the middle of a day when Bob's account emptied; a period from a local noon.
        (at("2026-10-16 12:00"), at("2026-09-03 16:00"), local("2026-11-01")),
        # Inside the last, still open day, and after every entry.
        (at("2026-11-21 02:59"), at("2026-11-21 02:00"), at("2026-11-21 03:00") + MICROSECOND),
    ],
)
def test_instants_that_are_not_midnights_read_the_rest_of_their_day(
    session, history, as_of, start, end
):
    shop = history.shop_a
    report(session, shop, *OCTOBER)  # remembers Sep 1 to Nov 20

    with watching(session) as reads:
        figures = report(session, shop, as_of, start, end)

    assert reads.since == [LAST_DAY]
    zone = reports.zone_named(TZ)
    inside = [
        t
        for t in (start, end, as_of + MICROSECOND)
        if FIRST_DAY < t < LAST_DAY and t != reports.local_midnight(t.astimezone(zone).date(), zone)
    ]
    assert sorted(reads.rest_of_day) == sorted(
        (t, reports.local_midnight(t.astimezone(zone).date() + timedelta(days=1), zone))
        for t in inside
    )
    assert figures == scanned(session, shop, as_of, start, end)
    assert figures == from_nothing(session, shop, as_of, start, end)


def test_the_dashboards_month_serves_reports_inside_it_and_the_history_is_read_once_for_more(
    session, history
):
    shop = history.shop_a
    month_start = local("2026-10-24")  # the dashboard's 30 days up to Nov 22
    with watching(session) as reads:
        reports.dashboard(session, shop, NOW)
        november = report(session, shop, NOW, local("2026-11-01"), local("2026-11-22"))
        as_of_november_2 = (local("2026-11-03") - MICROSECOND, *november_period())
        past = report(session, shop, *as_of_november_2)
        september = report(session, shop, *SEPTEMBER_AS_OF_OCTOBER_2)

    today = local("2026-11-22")
    # The month; what came since it; a past as_of needs the holders: the whole history; then
    # what came since.
    assert reads.since == [month_start, today, FIRST_DAY, LAST_DAY]
    assert november == scanned(session, shop, NOW, *november_period())
    assert past == scanned(session, shop, *as_of_november_2)
    assert september == scanned(session, shop, *SEPTEMBER_AS_OF_OCTOBER_2)


def november_period() -> tuple[datetime, datetime]:
    return local("2026-11-01"), local("2026-11-22")


def test_the_memory_keeps_the_latest_shops_within_its_size():
    memory = reports._ClosedDays(cells=2 * 2 * reports._WIDTH)  # two one-day histories

    def days(n: int) -> reports._History:
        rows = array("q", [0] * (n + 1) * reports._WIDTH)
        midnights = tuple(NOW + timedelta(days=i) for i in range(n + 1))
        return reports._History("UTC", midnights, {"USD": rows}, True, True, 0, 0)

    memory.put(("db", 1), days(1))  # 2 rows
    memory.put(("db", 2), days(1))
    assert memory.get(("db", 1)) is not None  # now the most recently used
    memory.put(("db", 3), days(1))
    assert [memory.get(("db", shop)) is not None for shop in (1, 2, 3)] == [True, False, True]
    memory.put(("db", 4), days(9))  # larger than the whole budget: kept alone
    assert [memory.get(("db", shop)) is not None for shop in (1, 3, 4)] == [False, False, True]


def usd(cents: int) -> Money:
    return Money(cents, "USD")
