"""The liability report's figures on a known history (tests/reports/history.py): liability as of
an instant, roll-forward, aging, breakage and the dashboard, exact to the cent, for shop A only.

The figure tests are also smoke tests: on SQLite (``make run``) the report buckets days in
Python instead of SQL, and must give the same figures.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from ledger import reports
from ledger.findings import Finding, record_finding
from models import LedgerEntry, ReconciliationFinding, ShopifyOutbox
from tests.reports.history import NOW, History, at, build_history

USD_JPY = ("JPY", "USD")


@pytest.fixture
def history(session: Session) -> History:
    return build_history(session)


def by_currency(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    assert [row["currency"] for row in rows] == sorted(row["currency"] for row in rows)
    return {row["currency"]: row for row in rows}


def local(day: str) -> datetime:
    """Midnight starting ``day`` in shop A's zone, as UTC."""
    return reports.local_midnight(datetime.fromisoformat(day).date(), reports.zone_named(TZ))


TZ = "America/New_York"


# -- liability as of an instant ----------------------------------------------------------------


# (instant, USD amount, USD accounts with a balance, JPY amount, JPY accounts)
AS_OF = [
    ("2026-09-01 11:59", "0.00", 0, "0", 0),
    ("2026-09-01 12:00", "100.00", 1, "0", 0),  # an entry at as_of counts
    ("2026-09-10 12:00", "120.00", 1, "3800", 1),
    ("2026-10-02 00:00", "70.00", 1, "3800", 1),
    ("2026-10-16 00:00", "72.00", 1, "0", 0),  # Bob's account emptied by expiry
    ("2026-11-21 02:59", "114.00", 2, "1000", 1),
    ("2026-11-22 12:00", "139.00", 2, "1000", 1),
    ("2030-01-01 00:00", "139.00", 2, "1000", 1),
]


@pytest.mark.smoke
def test_liability_as_of_an_instant(session, history):
    for instant, usd, usd_accounts, jpy, jpy_accounts in AS_OF:
        assert reports.liability_as_of(session, history.shop_a, at(instant)) == [
            {"currency": "JPY", "amount": jpy, "accounts": jpy_accounts},
            {"currency": "USD", "amount": usd, "accounts": usd_accounts},
        ], instant


@pytest.mark.smoke
def test_both_sides_of_an_instant_give_the_same_liability(session, history):
    """Summing the history up to an instant and taking cached balances minus what moved after
    it are the same figure, at every instant an entry was written and between them; so are
    the figures of several instants read in one scan."""
    scope = reports._scope(session, history.shop_a)
    instants = [at("2026-08-01 00:00"), NOW + timedelta(days=1)]
    for (created_at,) in session.query(LedgerEntry.created_at).filter_by(shop_id=history.shop_a):
        instants += [created_at, created_at + timedelta(microseconds=1)]
    instants.sort()
    together = {
        forward: reports._liabilities_before(session, scope, instants, forward=forward)
        for forward in (True, False)
    }
    assert together[True] == together[False]
    assert together[True] == reports._liabilities_before(session, scope, instants)
    for instant, before in zip(instants, together[True], strict=True):
        at_or_before = {
            forward: reports._liability_at(session, scope, instant, forward=forward)
            for forward in (True, False)
        }
        assert at_or_before[True] == at_or_before[False], instant
        just_before = reports._liability_at(session, scope, instant - timedelta(microseconds=1))
        assert before == {currency: figure.amount for currency, figure in just_before.items()}


# -- roll-forward ------------------------------------------------------------------------------

SEPTEMBER = {
    "USD": {
        "opening": "0.00",
        "issued": "150.00",
        "refunded": "20.00",
        "redeemed": "30.00",
        "reversed": "10.00",
        "expired": "0.00",
        "revoked": "0.00",
        "adjusted": "-5.00",
        "external": "0.00",
        "closing": "145.00",
    },
    "JPY": {
        "opening": "0",
        "issued": "5000",
        "refunded": "0",
        "redeemed": "1200",
        "reversed": "0",
        "expired": "0",
        "revoked": "0",
        "adjusted": "0",
        "external": "0",
        "closing": "3800",
    },
}
OCTOBER = {
    "USD": {
        "opening": "145.00",
        "issued": "40.00",
        "refunded": "0.00",
        "redeemed": "0.00",
        "reversed": "0.00",
        "expired": "75.00",
        "revoked": "20.00",
        "adjusted": "15.00",
        "external": "7.00",
        "closing": "112.00",
    },
    "JPY": {
        "opening": "3800",
        "issued": "1100",
        "refunded": "0",
        "redeemed": "0",
        "reversed": "0",
        "expired": "3800",
        "revoked": "0",
        "adjusted": "0",
        "external": "0",
        "closing": "1100",
    },
}
NOVEMBER_SO_FAR = {
    "USD": {
        "opening": "112.00",
        "issued": "37.00",
        "refunded": "0.00",
        "redeemed": "10.00",
        "reversed": "0.00",
        "expired": "0.00",
        "revoked": "0.00",
        "adjusted": "0.00",
        "external": "0.00",
        "closing": "139.00",
    },
    "JPY": {
        "opening": "1100",
        "issued": "200",
        "refunded": "0",
        "redeemed": "0",
        "reversed": "0",
        "expired": "300",
        "revoked": "0",
        "adjusted": "0",
        "external": "0",
        "closing": "1000",
    },
}


@pytest.mark.smoke
def test_roll_forward_of_each_month(session, history):
    months = [
        ("2026-09-01", "2026-10-01", SEPTEMBER),
        ("2026-10-01", "2026-11-01", OCTOBER),
        ("2026-11-01", None, NOVEMBER_SO_FAR),
    ]
    for start, end, expected in months:
        rows = reports.roll_forward(
            session, history.shop_a, local(start), local(end) if end else NOW
        )
        got = by_currency(rows)
        assert set(got) == set(USD_JPY)
        for currency, figures in expected.items():
            assert got[currency] == {"currency": currency, **figures, "ties_out": True}


def test_the_report_reads_the_period_once_and_agrees_with_each_function(session, history):
    start, end = local("2026-10-01"), local("2026-11-01")
    report = reports.liability_report(
        session, history.shop_a, as_of=end - timedelta(microseconds=1), start=start, end=end
    )
    assert report["roll_forward"] == reports.roll_forward(session, history.shop_a, start, end)
    assert report["breakage"] == reports.breakage(session, history.shop_a, start, end)
    assert report["aging"] == reports.aging(session, history.shop_a, report_instant(report))
    assert report["liability"] == reports.liability_as_of(
        session, history.shop_a, report_instant(report)
    )
    assert (report["from"], report["to"]) == ("2026-10-01T04:00:00Z", "2026-11-01T04:00:00Z")
    # The liability as of the period's last instant is its closing.
    closing = {row["currency"]: row["closing"] for row in report["roll_forward"]}
    assert {row["currency"]: row["amount"] for row in report["liability"]} == closing


def report_instant(report: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(report["as_of"])


def period_instants() -> list[datetime]:
    """Instants across the history: before it, exactly at entries, between them, after it."""
    return [
        at("2026-08-31 00:00"),
        at("2026-09-01 12:00"),  # the first entry
        at("2026-09-07 00:00"),
        at("2026-09-12 12:00"),  # a reversal
        at("2026-10-02 00:00"),  # an expiry run
        at("2026-10-02 00:00") + timedelta(microseconds=1),
        at("2026-10-12 12:00"),  # the external credit
        local("2026-11-01"),
        at("2026-11-11 00:00"),
        at("2026-11-18 09:30"),
        NOW,
    ]


def test_the_roll_forward_ties_out_for_periods_cutting_through_the_history(session, history):
    instants = period_instants()
    for i, start in enumerate(instants):
        for end in instants[i:]:
            figures = reports.roll_forward_figures(session, history.shop_a, start, end)
            assert {row.currency for row in figures} == set(USD_JPY)
            assert all(row.ties_out for row in figures), (start, end, figures)
            if start == end:
                assert all(row.opening == row.closing for row in figures)
                assert all(not any(row.movements.values()) for row in figures)


def test_consecutive_periods_chain_and_each_bound_is_a_liability(session, history):
    instants = period_instants()
    for start, middle, end in zip(instants, instants[1:], instants[2:], strict=False):
        first = reports.roll_forward_figures(session, history.shop_a, start, middle)
        second = reports.roll_forward_figures(session, history.shop_a, middle, end)
        assert [row.closing for row in first] == [row.opening for row in second]
        before = reports.liability_as_of(
            session, history.shop_a, middle - timedelta(microseconds=1)
        )
        assert [row.opening for row in second] == [
            int(row["amount"].replace(".", "")) for row in before
        ]


def test_the_tie_out_fails_when_a_movement_is_miscounted(session, history):
    """The check can fail: movements of a period whose start moved past the October expiry,
    or a period's figures with one column lost, do not tie out."""
    start, end = local("2026-10-01"), local("2026-11-01")
    right = {
        row.currency: row
        for row in reports.roll_forward_figures(session, history.shop_a, start, end)
    }
    assert all(row.ties_out for row in right.values())

    shifted_start = at("2026-10-02 00:00") + timedelta(microseconds=1)
    shifted = {
        row.currency: row
        for row in reports.roll_forward_figures(session, history.shop_a, shifted_start, end)
    }
    usd = reports.RollForward(
        "USD", right["USD"].opening, shifted["USD"].movements, right["USD"].closing
    )
    assert shifted["USD"].movements["expired"] == 0
    assert not usd.ties_out

    for column in reports.MOVEMENTS:
        if right["USD"].movements.get(column):
            lost = {k: v for k, v in right["USD"].movements.items() if k != column}
            assert not reports.RollForward(
                "USD", right["USD"].opening, lost, right["USD"].closing
            ).ties_out
            sign_flipped = dict(right["USD"].movements) | {column: -right["USD"].movements[column]}
            assert not reports.RollForward(
                "USD", right["USD"].opening, sign_flipped, right["USD"].closing
            ).ties_out


def test_every_entry_kind_has_a_roll_forward_column():
    from ledger.kinds import EntryKind

    assert sorted(kind for kind, _ in reports.MOVEMENTS.values()) == sorted(EntryKind)


# -- tenants -----------------------------------------------------------------------------------


def test_shop_b_never_shows_in_shop_a_and_has_its_own_figures(session, history):
    october = (local("2026-10-01"), local("2026-11-01"))
    b_rows = by_currency(reports.roll_forward(session, history.shop_b, *october))
    assert b_rows["USD"]["opening"] == "999.00"
    assert b_rows["USD"]["redeemed"] == "100.00"
    assert b_rows["USD"]["expired"] == "899.00"
    assert b_rows["USD"]["ties_out"] is True
    assert reports.liability_as_of(session, history.shop_b, NOW) == [
        {"currency": "JPY", "amount": "70000", "accounts": 1},
        {"currency": "USD", "amount": "333.00", "accounts": 1},
    ]
    # Shop A's figures are exactly its own (the other tests pin them); B's amounts are nowhere.
    a_report = reports.liability_report(
        session, history.shop_a, as_of=NOW, start=october[0], end=NOW
    )
    a_dashboard = reports.dashboard(session, history.shop_a, NOW)
    text = repr(a_report) + repr(a_dashboard)
    for b_amount in ("999.00", "899.00", "333.00", "70000", "100.00"):
        assert b_amount not in text


# -- aging -------------------------------------------------------------------------------------


@pytest.mark.smoke
def test_aging_buckets_the_live_lots_by_days_to_expiry(session, history):
    rows = by_currency(reports.aging(session, history.shop_a, NOW))

    def buckets(currency: str) -> dict[str, tuple[str, int]]:
        return {b["key"]: (b["amount"], b["lots"]) for b in rows[currency]["buckets"]}

    assert [b["key"] for b in rows["USD"]["buckets"]] == [
        "past_due",
        "days_0_30",
        "days_31_60",
        "days_61_90",
        "days_91_180",
        "days_181_365",
        "days_over_365",
        "no_expiry",
    ]
    assert buckets("USD") == {
        "past_due": ("12.00", 1),  # expired Nov 21, no expiry run since
        "days_0_30": ("40.00", 1),  # Dec 10: 18 days
        "days_31_60": ("0.00", 0),
        "days_61_90": ("25.00", 1),  # Feb 1: 71 days
        "days_91_180": ("0.00", 0),
        "days_181_365": ("0.00", 0),
        "days_over_365": ("0.00", 0),
        "no_expiry": ("62.00", 3),  # lot B's rest, the adjustment up, the external credit
    }
    assert (rows["USD"]["total"], rows["USD"]["lots"]) == ("139.00", 6)
    assert buckets("JPY")["days_181_365"] == ("800", 1)  # 2027-06-01: 191 days
    assert buckets("JPY")["days_over_365"] == ("200", 1)  # 2028-01-01: 405 days
    assert (rows["JPY"]["total"], rows["JPY"]["lots"]) == ("1000", 2)


def test_aging_counts_days_from_as_of(session, history):
    """A later as_of moves the same lots into nearer buckets; the amounts are today's."""
    later = by_currency(reports.aging(session, history.shop_a, at("2026-12-15 12:00")))
    usd = {b["key"]: b["amount"] for b in later["USD"]["buckets"]}
    assert usd["past_due"] == "52.00"  # Nov 21 and Dec 10 both passed
    assert usd["days_31_60"] == "25.00"  # Feb 1: 48 days
    assert later["USD"]["total"] == "139.00"


# -- breakage ----------------------------------------------------------------------------------


@pytest.mark.smoke
def test_breakage_per_month_and_rate(session, history):
    rows = by_currency(
        reports.breakage(session, history.shop_a, local("2026-09-01"), local("2026-11-01"))
    )
    assert rows["USD"] == {
        "currency": "USD",
        "expired": "75.00",
        "credited": "210.00",  # issued 190.00 + refunded 20.00
        "rate": "0.3571",
        "months": [
            {"month": "2026-09", "expired": "0.00", "credited": "170.00", "rate": "0.0000"},
            {"month": "2026-10", "expired": "75.00", "credited": "40.00", "rate": "1.8750"},
        ],
    }
    assert rows["JPY"]["months"][1] == {
        "month": "2026-10",
        "expired": "3800",
        "credited": "1100",
        "rate": "3.4545",  # 3.454545… rounded half-even
    }
    assert (rows["JPY"]["expired"], rows["JPY"]["credited"], rows["JPY"]["rate"]) == (
        "3800",
        "6100",
        "0.6230",
    )


def test_breakage_months_follow_the_shop_zone_and_rates_need_credit(session, history):
    # The JPY expiry run of Nov 11 00:00Z was still Nov 10 in New York; November so far.
    rows = by_currency(reports.breakage(session, history.shop_a, local("2026-11-01"), NOW))
    assert rows["JPY"]["months"] == [
        {"month": "2026-11", "expired": "300", "credited": "200", "rate": "1.5000"}
    ]
    # A month with nothing credited has no rate.
    empty = by_currency(
        reports.breakage(session, history.shop_a, local("2026-08-01"), local("2026-09-01"))
    )
    assert empty["USD"]["months"] == [
        {"month": "2026-08", "expired": "0.00", "credited": "0.00", "rate": None}
    ]
    assert reports.breakage_rate(1, 3) == "0.3333"
    assert reports.breakage_rate(1, 8) == "0.1250"
    assert reports.breakage_rate(5, 0) is None


# -- dashboard ---------------------------------------------------------------------------------


@pytest.mark.smoke
def test_dashboard_activity_is_thirty_local_days_zero_filled(session, history):
    figures = reports.dashboard(session, history.shop_a, NOW)
    activity = figures["activity"]
    assert (activity["from"], activity["to"]) == ("2026-10-24", "2026-11-22")
    days = activity["days"]
    assert len(days) == 30 * 2
    assert [(d["date"], d["currency"]) for d in days[:4]] == [
        ("2026-10-24", "JPY"),
        ("2026-10-24", "USD"),
        ("2026-10-25", "JPY"),
        ("2026-10-25", "USD"),
    ]
    moved = {
        (d["date"], d["currency"]): (d["issued"], d["redeemed"], d["expired"])
        for d in days
        if (d["issued"], d["redeemed"], d["expired"])
        not in {("0.00", "0.00", "0.00"), ("0", "0", "0")}
    }
    assert moved == {
        ("2026-10-24", "USD"): ("40.00", "0.00", "0.00"),  # Oct 25 02:00Z is Oct 24 in New York
        ("2026-10-26", "JPY"): ("300", "0", "0"),
        ("2026-11-01", "USD"): ("12.00", "0.00", "0.00"),  # 00:30 EDT, the day DST ends
        ("2026-11-05", "JPY"): ("200", "0", "0"),
        ("2026-11-10", "JPY"): ("0", "0", "300"),  # the run at Nov 11 00:00Z
        ("2026-11-15", "USD"): ("0.00", "10.00", "0.00"),
        ("2026-11-20", "USD"): ("25.00", "0.00", "0.00"),  # Nov 21 03:00Z
    }


def test_dashboard_liability_expiring_findings_and_failed_syncs(session, history):
    _findings_and_outbox(session, history)
    figures = reports.dashboard(session, history.shop_a, NOW)
    assert figures["liability"] == reports.liability_as_of(session, history.shop_a, NOW)
    # The lot past due (Nov 21) is not "expiring"; Dec 10 is within 30 days, Feb 1 is not.
    assert figures["expiring_soon"] == [
        {"currency": "JPY", "amount": "0", "lots": 0},
        {"currency": "USD", "amount": "40.00", "lots": 1},
    ]
    assert figures["open_findings"] == 1
    assert figures["failed_syncs"] == 1
    assert set(figures) == {
        "liability",
        "activity",
        "expiring_soon",
        "open_findings",
        "failed_syncs",
    }


def _findings_and_outbox(session: Session, history: History) -> None:
    """Shop A: one open and one resolved finding, one dead and one pending outbox row; shop B:
    one open finding and one dead row (neither counts for A)."""
    for shop_id, key in ((history.shop_a, "open"), (history.shop_a, "done"), (history.shop_b, "b")):
        record_finding(session, shop_id, Finding(kind="balance_mismatch", key=key), NOW)
    session.execute(
        update(ReconciliationFinding)
        .where(ReconciliationFinding.finding_key == "done")
        .values(resolved_at=NOW, resolution="looked at")
    )
    for shop_id, state in (
        (history.shop_a, "dead"),
        (history.shop_a, "pending"),
        (history.shop_b, "dead"),
    ):
        entry = (
            session.query(LedgerEntry)
            .filter_by(shop_id=shop_id, kind="issue")
            .filter(~LedgerEntry.id.in_(session.query(ShopifyOutbox.entry_id)))
            .first()
        )
        assert entry is not None
        session.add(
            ShopifyOutbox(
                shop_id=shop_id,
                account_id=entry.account_id,
                entry_id=entry.id,
                operation="credit",
                amount=entry.amount,
                currency="USD",
                state=state,
                attempts=8,
                next_attempt_at=NOW,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        session.flush()
    session.commit()


# -- time helpers ------------------------------------------------------------------------------


def test_default_period_is_the_local_month_of_the_period_end():
    zone = reports.zone_named(TZ)
    assert reports.default_period(NOW, zone) == at("2026-11-01 04:00")  # EDT midnight
    # A period ending at a month's first midnight is the whole previous month.
    assert reports.default_period(at("2026-11-01 04:00"), zone) == at("2026-10-01 04:00")
    assert reports.local_midnight(NOW.date(), zone) == at("2026-11-22 05:00")  # EST
    assert reports.zone_named("Not/AZone") == reports.zone_named("UTC")
    assert reports.zone_named(None).key == "UTC"


def test_periods_must_be_ordered_aware_and_bounded(session, history):
    with pytest.raises(ValueError, match="start"):
        reports.roll_forward(session, history.shop_a, NOW, NOW - timedelta(seconds=1))
    with pytest.raises(ValueError, match="zone"):
        reports.liability_as_of(session, history.shop_a, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="ten years"):
        reports.breakage(session, history.shop_a, NOW - timedelta(days=3700), NOW)
    assert reports.breakage(session, history.shop_a, NOW, NOW)[0]["months"] == []


def test_a_shop_without_credit_reports_zeros_in_its_currency(session):
    from tests.factories import ShopFactory

    shop_id = int(ShopFactory(currency="EUR", timezone="Europe/Paris").id)
    assert reports.liability_as_of(session, shop_id, NOW) == [
        {"currency": "EUR", "amount": "0.00", "accounts": 0}
    ]
    start = NOW - timedelta(days=10)
    assert reports.roll_forward(session, shop_id, start, NOW)[0]["ties_out"] is True
    figures = reports.dashboard(session, shop_id, NOW)
    assert len(figures["activity"]["days"]) == 30
    assert figures["expiring_soon"] == [{"currency": "EUR", "amount": "0.00", "lots": 0}]
    report = reports.liability_report(session, shop_id, as_of=NOW, start=start, end=NOW)
    assert report["aging"][0]["total"] == "0.00"
