"""The liability report and the dashboard's figures: what the shop owes its customers in credit.

**Liability at an instant** is, per currency, the sum of every entry's amount up to that
instant: the balance customers could have spent then (for each account, the balance after its
last entry up to that instant, since an account's entries follow each other in time). Every
figure here is summed from ``ledger_entries`` (or from the cached ``credit_accounts.balance``,
which invariant 1 ties to them), in integer minor units, and turned into decimal strings only
at the end.

**Periods are half-open, [start, end)**: an entry belongs to the period when
``start <= created_at < end``. The roll-forward's *opening* is the liability just before
``start`` (every entry with ``created_at < start``) and its *closing* the liability just before
``end``, so consecutive periods [a, b) and [b, c) chain without counting an entry twice, and
opening + movements of the period = closing. ``liability_as_of(at)`` counts entries *at* ``at``
too (``created_at <= at``): "as of 12:00" includes what happened at 12:00.

**Balances at an instant are the cached balances less what moved since.** A balance at ``t``
is the account's current balance minus what moved after ``t``. On PostgreSQL what moved after
any instant comes from the shop's remembered closed days (below) and the few entries read raw;
on SQLite it is a range scan of ``ix_ledger_entries_shop_created`` from ``t`` to now, or,
when ``t`` lies nearer the shop's first entry than its last, the sum of what moved up to
``t`` (a range scan from the start; which one is cheaper is guessed from where ``t`` falls
between the shop's first and last entry). All of them are exact.

**The roll-forward really checks.** Opening and closing come from those balances (the cached
balances less what moved since each bound); the movements come from summing the period's
entries by kind. Each column has a sign, and ``ties_out`` is true only when
opening + issued + refunded − redeemed + reversed − expired − revoked + adjusted + external
equals closing: a kind left out or a sign wrong makes it false, and so, on SQLite, where the
movements are a read of their own, does a period boundary counted on one side and not the
other.

Days and months (the dashboard's chart, breakage per month) are the shop's local ones
(``shops.timezone``, an IANA name); instants stay UTC. PostgreSQL buckets entries among the
UTC instants of local midnights computed here (``width_bucket``); SQLite (the embedded
default), which has no time zones, groups by UTC minute and the minutes are put into local
days here (every zone's offset is a whole number of minutes).

**Archived entries count too.** Retention (ledger/archive.py) moves accounts' oldest entries
to ``ledger_entries_archive``. Every figure whose range of times reaches the archived
entries' times (between the shop's oldest and newest archived entry) reads the UNION ALL of
both tables' few columns it needs; a range after the newest archived entry — today's entries,
recent periods — reads the hot table alone, as a shop with nothing archived always does. The
archive's two ends are two look-ups of ``ix_ledger_entries_archive_shop_created``, read with
the hot table's.

**Closed days are remembered (PostgreSQL).** Each process keeps, per shop, the running sums of
its closed local days by currency and kind, and at each request reads only the entries since
(and the rest of the day of an instant that is not a local midnight), after checking in the
same statement that no entry was added to a remembered day; the first request sums the
history once (see "the shop's closed days, remembered" below). Aging reads the active lots
every time, from ``ix_credit_lots_shop_active`` alone.

A report is several statements: read it in one snapshot (REPEATABLE READ), as the API does,
or an entry committed between two of them may be on one side of the roll-forward only.

Only the standard library and SQLAlchemy: ``ledger`` is the framework-free domain.
"""

from __future__ import annotations

import csv
import io
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import pairwise
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    DateTime,
    FromClause,
    Table,
    bindparam,
    case,
    func,
    literal,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from ledger.kinds import EntryKind, LotStatus
from ledger.money import format_amount
from ledger.views import iso
from models import (
    CreditAccount,
    CreditLot,
    LedgerEntry,
    LedgerEntryArchive,
    ReconciliationFinding,
    Shop,
    ShopifyOutbox,
)

__all__ = [
    "AGING_BUCKETS",
    "MOVEMENTS",
    "RollForward",
    "aging",
    "breakage",
    "breakage_rate",
    "dashboard",
    "default_period",
    "liability_as_of",
    "liability_csv",
    "liability_report",
    "local_midnight",
    "roll_forward",
    "roll_forward_figures",
    "shop_zone",
    "zone_named",
]

# The roll-forward's movement columns: which entry kind each sums, and the sign that turns the
# column (as shown: redeemed, expired and revoked are positive numbers) back into its effect
# on the liability. Every EntryKind has exactly one column.
MOVEMENTS: Mapping[str, tuple[EntryKind, int]] = {
    "issued": (EntryKind.ISSUE, 1),
    "refunded": (EntryKind.REFUND_CREDIT, 1),
    "redeemed": (EntryKind.REDEEM, -1),
    "reversed": (EntryKind.REDEEM_REVERSAL, 1),
    "expired": (EntryKind.EXPIRE, -1),
    "revoked": (EntryKind.REVOKE, -1),
    "adjusted": (EntryKind.ADJUST, 1),  # signed: up and down together
    "external": (EntryKind.EXTERNAL, 1),  # signed: native credits and debits made in Shopify
}
_COLUMN_OF_KIND = {kind.value: column for column, (kind, _) in MOVEMENTS.items()}

# Aging: (key, label, upper bound in days after as_of; None = no bound). A lot falls in the
# first bucket whose bound its expiry does not pass; "past_due" holds lots already at or past
# their expiry that the expiry job has not swept yet (nobody can spend them any more).
AGING_BUCKETS: tuple[tuple[str, str, int | None], ...] = (
    ("past_due", "Past expiry, not yet expired", 0),
    ("days_0_30", "0–30 days", 30),
    ("days_31_60", "31–60 days", 60),
    ("days_61_90", "61–90 days", 90),
    ("days_91_180", "91–180 days", 180),
    ("days_181_365", "181–365 days", 365),
    ("days_over_365", "Over 365 days", None),
)
NO_EXPIRY = ("no_expiry", "No expiry")

# The entries every figure sums: the hot table, and the archive retention moves accounts'
# oldest entries to (ledger/archive.py; same columns). _Scope.entries picks what a range needs.
_HOT = cast(Table, LedgerEntry.__table__)
_ARCHIVE = cast(Table, LedgerEntryArchive.__table__)
# What the figures read of an entry (ix_ledger_entries_shop_created holds them all).
_SUMMED = ("shop_id", "account_id", "created_at", "kind", "amount")

DASHBOARD_DAYS = 30
EXPIRING_SOON = timedelta(days=30)
RATE_PLACES = Decimal("0.0001")
# Breakage lists every month of the period; a period is at most this long.
MAX_PERIOD = timedelta(days=3661)

# The dashboard chart's series: the kind each sums and the sign that shows it positive.
_ACTIVITY = {
    "issued": (EntryKind.ISSUE, 1),
    "redeemed": (EntryKind.REDEEM, -1),
    "expired": (EntryKind.EXPIRE, -1),
}


# -- time: the shop's zone, local midnights, default period ----------------------------------


def shop_zone(session: Session, shop_id: int) -> ZoneInfo:
    """The shop's IANA time zone; UTC when the shop names none we know."""
    return zone_named(session.scalar(select(Shop.timezone).where(Shop.id == shop_id)))


def zone_named(name: str | None) -> ZoneInfo:
    """The IANA zone ``name``; UTC for none or a name this system does not know."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant at which ``day`` begins in ``zone``."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def default_period(end: datetime, zone: ZoneInfo) -> datetime:
    """Where a period ending at ``end`` starts by default: the local first of the month that
    ``end`` falls in (of the instant just before it, so a period ending at a month's first
    midnight is that whole previous month)."""
    return local_midnight(_last_day(end, zone).replace(day=1), zone)


@dataclass(frozen=True)
class _Scope:
    """What every figure of one shop needs, read once: its zone, its currencies with their
    current totals, the times of its first and last entry (to pick the cheaper side of an
    instant), and of its first and last archived entry (to know which ranges need the
    archive)."""

    shop_id: int
    zone: ZoneInfo
    currencies: list[str]
    balances: dict[str, int]  # Σ of the cached account balances, per currency
    holders: dict[str, int]  # accounts holding a nonzero balance, per currency
    first_entry: datetime | None
    last_entry: datetime | None
    first_archived: datetime | None = None
    last_archived: datetime | None = None

    def forward_is_cheaper(self, at: datetime) -> bool:
        """Whether fewer entries lie before ``at`` than after it, guessed from where ``at``
        falls between the first and the last entry."""
        if self.first_entry is None or self.last_entry is None:
            return True  # no history: both sides are empty
        return at - self.first_entry < self.last_entry - at

    def entries(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        balances: bool = False,
    ) -> FromClause:
        """The shop's entries for a query reading times from ``since`` to ``until`` (None:
        unbounded; either bound may be inclusive): the hot table, or, when that range reaches
        the archived entries' times, the UNION ALL of the hot and the archived entries'
        ``_SUMMED`` columns, and ``balance_after`` too when ``balances`` (each side of it
        filtered to this shop, and PostgreSQL pushes the query's time range into both)."""
        if not self.reaches_archive(since, until):
            return _HOT
        names = (*_SUMMED, "balance_after") if balances else _SUMMED
        hot, archived = (
            select(*(table.c[name] for name in names)).where(table.c.shop_id == self.shop_id)
            for table in (_HOT, _ARCHIVE)
        )
        return union_all(hot, archived).subquery("entries")

    def reaches_archive(self, since: datetime | None, until: datetime | None) -> bool:
        if self.first_archived is None or self.last_archived is None:
            return False
        return (since is None or since <= self.last_archived) and (
            until is None or self.first_archived <= until
        )


def _scope(session: Session, shop_id: int) -> _Scope:
    shop = session.execute(select(Shop.currency, Shop.timezone).where(Shop.id == shop_id)).one()
    held = (
        select(
            CreditAccount.currency,
            func.sum(CreditAccount.balance),
            func.sum(case((CreditAccount.balance != 0, 1), else_=0)),
        )
        .where(CreditAccount.shop_id == shop_id)
        .group_by(CreditAccount.currency)
    )
    balances: dict[str, int] = {}
    holders: dict[str, int] = {}
    for currency, total, nonzero in _rows(session, held):
        balances[currency], holders[currency] = int(total), int(nonzero)
    # Scalar subqueries, so each is one look-up at an end of its table's (shop_id, created_at)
    # index.
    [(first, last, first_archived, last_archived)] = _rows(
        session,
        select(
            *(
                select(end(table.c.created_at)).where(table.c.shop_id == shop_id).scalar_subquery()
                for table in (_HOT, _ARCHIVE)
                for end in (func.min, func.max)
            )
        ),
    )
    ends = [_utc(first), _utc(first_archived), _utc(last), _utc(last_archived)]
    return _Scope(
        shop_id=shop_id,
        zone=zone_named(shop.timezone),
        currencies=sorted({shop.currency, *balances}),
        balances=balances,
        holders=holders,
        first_entry=min((t for t in ends[:2] if t is not None), default=None),
        last_entry=max((t for t in ends[2:] if t is not None), default=None),
        first_archived=ends[1],
        last_archived=ends[3],
    )


def _utc(value: datetime | str | None) -> datetime | None:
    """An aware UTC datetime from what a bare scalar subquery gives back (SQLite: text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _postgresql(session: Session) -> bool:
    """Whether the session reads PostgreSQL (where the closed days are remembered)."""
    return session.get_bind().dialect.name == "postgresql"


def _require_aware(*instants: datetime) -> None:
    for instant in instants:
        if instant.tzinfo is None:
            raise ValueError("report instants must carry a time zone")


def _require_period(start: datetime, end: datetime) -> None:
    _require_aware(start, end)
    if start > end:
        raise ValueError("a period's start must not be after its end")
    if end - start > MAX_PERIOD:
        raise ValueError("a period is at most ten years long")


# -- liability at an instant -----------------------------------------------------------------


@dataclass
class _Liability:
    amount: int = 0
    accounts: int = 0  # accounts holding a nonzero balance


def liability_as_of(session: Session, shop_id: int, as_of: datetime) -> list[dict[str, Any]]:
    """Outstanding credit per currency at ``as_of``: every entry with created_at <= as_of.

    Each row: ``{"currency", "amount" (decimal string), "accounts"}`` where ``accounts``
    counts the accounts whose balance at that instant was not zero.
    """
    _require_aware(as_of)
    scope = _scope(session, shop_id)
    if _postgresql(session) and _before_last_entry(scope, as_of):
        tails = _tails(
            session, scope, [as_of + _MICROSECOND], reference=scope.last_entry, holders=True
        )
        return _liability_json(_liability_of(scope, tails.at(as_of + _MICROSECOND)))
    return _liability_json(_liability_at(session, scope, as_of))


def _before_last_entry(scope: _Scope, instant: datetime) -> bool:
    """Whether an entry of the shop was created after ``instant`` (else the cached balances
    are the liability at it)."""
    return scope.last_entry is not None and instant < scope.last_entry


def _liability_of(scope: _Scope, tail: _Sums) -> dict[str, _Liability]:
    """The liability just before the instant whose tail this is: the cached balances less
    what moved since, and the accounts holding a balance now less the change since."""
    totals = {currency: _Liability() for currency in scope.currencies}
    for currency in {*scope.currencies, *tail}:
        moved = tail.get(currency, [0] * _WIDTH)
        totals[currency] = _Liability(
            scope.balances.get(currency, 0) - sum(moved[:_HOLDERS]),
            scope.holders.get(currency, 0) - moved[_HOLDERS],
        )
    return totals


def _balances_before(scope: _Scope, tail: _Sums) -> dict[str, int]:
    return {currency: total.amount for currency, total in _liability_of(scope, tail).items()}


def _liability_json(totals: Mapping[str, _Liability]) -> list[dict[str, Any]]:
    return [
        {
            "currency": currency,
            "amount": format_amount(total.amount, currency),
            "accounts": total.accounts,
        }
        for currency, total in sorted(totals.items())
    ]


def _liability_at(
    session: Session, scope: _Scope, at: datetime, *, forward: bool | None = None
) -> dict[str, _Liability]:
    """Per currency: the sum of entries created at or before ``at``, and how many accounts
    held a nonzero balance then (so each account's own figure is summed first).

    ``forward`` picks the side (None: the cheaper one): True sums the history up to ``at``,
    False takes the cached balances minus what moved after ``at`` — nothing, when ``at`` is
    at or after the shop's last entry (the dashboard's "now"): the scope's totals are the
    answer, with no statement.
    """
    if forward is None:
        forward = scope.forward_is_cheaper(at)
    totals = {currency: _Liability() for currency in scope.currencies}
    if not forward and (scope.last_entry is None or scope.last_entry <= at):
        for currency, amount in scope.balances.items():
            totals[currency] = _Liability(amount, scope.holders[currency])
        return totals
    if forward:
        moved = _per_account(scope, None, at, lambda created_at: created_at <= at)
        balance: Any = moved.c.amount
        accounts = select(CreditAccount.currency).join(
            moved, moved.c.account_id == CreditAccount.id
        )
    else:
        moved = _per_account(scope, at, None, lambda created_at: created_at > at)
        balance = CreditAccount.balance - func.coalesce(moved.c.amount, 0)
        accounts = (
            select(CreditAccount.currency)
            .outerjoin(moved, moved.c.account_id == CreditAccount.id)
            .where(CreditAccount.shop_id == scope.shop_id)
        )
    stmt = accounts.add_columns(
        func.sum(balance), func.sum(case((balance != 0, 1), else_=0))
    ).group_by(CreditAccount.currency)
    for currency, amount, nonzero in _rows(session, stmt):
        totals[currency] = _Liability(int(amount or 0), int(nonzero or 0))
    return totals


def _rows(session: Session, stmt: Any) -> list[Any]:
    """The result rows of a statement over subquery columns (typed loosely by SQLAlchemy)."""
    return list(session.execute(stmt))


def _per_account(
    scope: _Scope, since: datetime | None, until: datetime | None, when: Callable[[Any], Any]
) -> Any:
    """Each account's signed sum of the shop's entries (read from ``since`` to ``until``)
    whose created_at matches ``when``."""
    entries = scope.entries(since, until).c
    return (
        select(entries.account_id, func.sum(entries.amount).label("amount"))
        .where(entries.shop_id == scope.shop_id, when(entries.created_at))
        .group_by(entries.account_id)
        .subquery()
    )


def _liabilities_before(
    session: Session, scope: _Scope, instants: list[datetime], *, forward: bool | None = None
) -> list[dict[str, int]]:
    """For each instant, per currency: the sum of entries created before it.

    Instants on the same side (``forward`` as in ``_liability_at``) share one range scan, each
    summing its part of it, so a period's opening and closing cost one read of the ledger.
    """
    figures = [dict.fromkeys(scope.currencies, 0) for _ in instants]
    sides: dict[bool, list[int]] = {True: [], False: []}
    for i, at in enumerate(instants):
        sides[scope.forward_is_cheaper(at) if forward is None else forward].append(i)
    if sides[True]:  # the history up to each instant
        wanted = sides[True]
        last = max(instants[i] for i in wanted)
        source = scope.entries(None, last)
        sums = [_sum_when(source, source.c.created_at < instants[i]) for i in wanted]
        reach = source.c.created_at < last
        for currency, *amounts in _sums_by_currency(session, scope, source, sums, reach):
            for i, amount in zip(wanted, amounts, strict=True):
                figures[i][currency] = figures[i].get(currency, 0) + int(amount)
    if sides[False]:  # the cached balances less what moved since each instant
        wanted = sides[False]
        for i in wanted:
            for currency, balance in scope.balances.items():
                figures[i][currency] += balance
        first = min(instants[i] for i in wanted)
        source = scope.entries(first, None)
        sums = [_sum_when(source, source.c.created_at >= instants[i]) for i in wanted]
        reach = source.c.created_at >= first
        for currency, *amounts in _sums_by_currency(session, scope, source, sums, reach):
            for i, amount in zip(wanted, amounts, strict=True):
                figures[i][currency] = figures[i].get(currency, 0) - int(amount)
    return figures


def _sum_when(source: FromClause, condition: Any) -> Any:
    return func.sum(case((condition, source.c.amount), else_=0))


def _sums_by_currency(
    session: Session, scope: _Scope, source: FromClause, sums: list[Any], reach: Any
) -> list[Any]:
    stmt = (
        select(CreditAccount.currency, *sums)
        .select_from(source)
        .join(CreditAccount, CreditAccount.id == source.c.account_id)
        .where(source.c.shop_id == scope.shop_id, reach)
        .group_by(CreditAccount.currency)
    )
    return _rows(session, stmt)


# -- roll-forward ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RollForward:
    """One currency's roll-forward in minor units; movements by column of ``MOVEMENTS`` (as
    shown: redeemed, expired and revoked positive)."""

    currency: str
    opening: int
    movements: Mapping[str, int]
    closing: int

    @property
    def ties_out(self) -> bool:
        moved = sum(sign * self.movements.get(column, 0) for column, (_, sign) in MOVEMENTS.items())
        return self.opening + moved == self.closing

    def to_json(self) -> dict[str, Any]:
        shown = {column: self.movements.get(column, 0) for column in MOVEMENTS}
        return {
            "currency": self.currency,
            "opening": format_amount(self.opening, self.currency),
            **{column: format_amount(v, self.currency) for column, v in shown.items()},
            "closing": format_amount(self.closing, self.currency),
            "ties_out": self.ties_out,
        }


def roll_forward(
    session: Session, shop_id: int, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Per currency: opening (liability just before ``start``), the period's movements by kind,
    closing (liability just before ``end``), and whether they tie out. The period is [start, end).

    Each row: ``{"currency", "opening", "issued", "refunded", "redeemed", "reversed",
    "expired", "revoked", "adjusted", "external", "closing", "ties_out"}``; amounts are decimal
    strings; redeemed, expired and revoked are shown positive, adjusted and external signed.
    """
    _require_period(start, end)
    figures = roll_forward_figures(session, shop_id, start, end)
    return [row.to_json() for row in figures]


def roll_forward_figures(
    session: Session, shop_id: int, start: datetime, end: datetime
) -> list[RollForward]:
    """``roll_forward`` in minor units, as ``RollForward`` rows."""
    _require_period(start, end)
    scope = _scope(session, shop_id)
    if _postgresql(session):
        return _remembered_roll_forward(
            scope, _tails(session, scope, [start, end], reference=scope.last_entry), start, end
        )
    return _roll_forward(session, scope, start, end, _movements(session, scope, start, end))


def _roll_forward(
    session: Session,
    scope: _Scope,
    start: datetime,
    end: datetime,
    movements: Mapping[tuple[str, str], int],
) -> list[RollForward]:
    """Opening and closing from balances at the period's bounds; ``movements`` (per currency
    and kind, raw signed sums of the period's entries) summed independently by the caller."""
    opening, closing = _liabilities_before(session, scope, [start, end])
    return _roll_forward_rows(opening, closing, movements)


def _remembered_roll_forward(
    scope: _Scope, tails: _Tails | _NoEntries, start: datetime, end: datetime
) -> list[RollForward]:
    """The roll-forward from the tails at the period's bounds: opening and closing are the
    cached balances less each tail, the movements the tails' difference."""
    at_start, at_end = tails.at(start), tails.at(end)
    movements = {
        (currency, kind): sums[column]
        for currency, sums in _subtracted(at_start, at_end).items()
        for kind, column in _INDEX_OF_KIND.items()
    }
    return _roll_forward_rows(
        _balances_before(scope, at_start), _balances_before(scope, at_end), movements
    )


def _roll_forward_rows(
    opening: Mapping[str, int],
    closing: Mapping[str, int],
    movements: Mapping[tuple[str, str], int],
) -> list[RollForward]:
    currencies = sorted({*opening, *closing, *(currency for currency, _ in movements)})
    rows = []
    for currency in currencies:
        shown = dict.fromkeys(MOVEMENTS, 0)
        for (moved_currency, kind), amount in movements.items():
            column = _COLUMN_OF_KIND.get(kind)
            if moved_currency == currency and column is not None:
                shown[column] += MOVEMENTS[column][1] * amount
        rows.append(
            RollForward(
                currency=currency,
                opening=opening.get(currency, 0),
                movements=shown,
                closing=closing.get(currency, 0),
            )
        )
    return rows


def _movements(
    session: Session, scope: _Scope, start: datetime, end: datetime
) -> dict[tuple[str, str], int]:
    """Signed sum of the period's entries per (currency, kind)."""
    source = scope.entries(start, end)
    entries = source.c
    stmt = (
        select(CreditAccount.currency, entries.kind, func.sum(entries.amount))
        .select_from(source)
        .join(CreditAccount, CreditAccount.id == entries.account_id)
        .where(
            entries.shop_id == scope.shop_id,
            entries.created_at >= start,
            entries.created_at < end,
        )
        .group_by(CreditAccount.currency, entries.kind)
    )
    return {(currency, kind): int(amount) for currency, kind, amount in _rows(session, stmt)}


# -- daily sums (the chart, breakage per month) ----------------------------------------------


@dataclass
class _DailySums:
    """Signed sums of entries per (local day, currency, kind) over a period."""

    sums: dict[tuple[date, str, str], int] = field(default_factory=lambda: defaultdict(int))

    def by_kind(self) -> dict[tuple[str, str], int]:
        total: dict[tuple[str, str], int] = defaultdict(int)
        for (_, currency, kind), amount in self.sums.items():
            total[currency, kind] += amount
        return dict(total)

    def currencies(self) -> set[str]:
        return {currency for _, currency, _ in self.sums}

    def get(self, day: date, currency: str, kind: EntryKind) -> int:
        return self.sums.get((day, currency, kind.value), 0)


def _daily_sums(
    session: Session,
    scope: _Scope,
    start: datetime,
    end: datetime,
    kinds: Iterable[EntryKind] | None = None,
) -> _DailySums:
    """The period's entries summed per local day, currency and kind (one range scan).

    PostgreSQL: ``width_bucket`` of each entry's time among the UTC instants of the period's
    local midnights, a binary search over a constant array (converting every entry's time to
    the zone instead costs twice the whole query). SQLite: per UTC minute, put into local
    days here.
    """
    if start >= end:
        return _DailySums()
    days = _days(start.astimezone(scope.zone).date(), _last_day(end, scope.zone))
    postgres = session.get_bind().dialect.name == "postgresql"
    source = scope.entries(start, end)
    entries = source.c
    if postgres:
        midnights = [local_midnight(day, scope.zone) for day in [*days, days[-1] + timedelta(1)]]
        bounds = bindparam("midnights", midnights, type_=ARRAY(DateTime(timezone=True)))
        bucket: Any = func.width_bucket(entries.created_at, bounds)
    else:  # SQLite stores naive UTC text
        bucket = func.strftime("%Y-%m-%d %H:%M", entries.created_at)
    inner = (
        select(
            bucket.label("bucket"),
            CreditAccount.currency.label("currency"),
            entries.kind.label("kind"),
            entries.amount.label("amount"),
        )
        .select_from(source)
        .join(CreditAccount, CreditAccount.id == entries.account_id)
        .where(
            entries.shop_id == scope.shop_id,
            entries.created_at >= start,
            entries.created_at < end,
        )
    )
    if kinds is not None:
        inner = inner.where(entries.kind.in_([kind.value for kind in kinds]))
    rows = inner.subquery()
    stmt = select(rows.c.bucket, rows.c.currency, rows.c.kind, func.sum(rows.c.amount)).group_by(
        rows.c.bucket, rows.c.currency, rows.c.kind
    )
    daily = _DailySums()
    for key, currency, kind, amount in _rows(session, stmt):
        # Bucket n (1-based) is [midnight n-1, midnight n): the n-th day.
        day = days[key - 1] if postgres else _local_day_of_utc_minute(key, scope.zone)
        daily.sums[day, currency, kind] += int(amount)
    return daily


def _last_day(end: datetime, zone: ZoneInfo) -> date:
    """The local day of the period's last instant (the period excludes ``end`` itself)."""
    return (end - timedelta(microseconds=1)).astimezone(zone).date()


def _local_day_of_utc_minute(minute: str, zone: ZoneInfo) -> date:
    return datetime.strptime(minute, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).astimezone(zone).date()


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# -- aging -----------------------------------------------------------------------------------


def aging(session: Session, shop_id: int, as_of: datetime) -> list[dict[str, Any]]:
    """Outstanding credit per currency by how long until it expires, counted from ``as_of``.

    Based on the active lots' remaining amounts as they are *now*: ``as_of`` only moves the
    point the days are counted from (a lot expiring 40 days after ``as_of`` is in 31–60). A lot
    at or past its expiry that the expiry job has not swept yet is "past_due"; lots without an
    expiry are "no_expiry". Each row: ``{"currency", "total", "lots", "buckets": [{"key",
    "label", "amount", "lots"}, ...]}`` with every bucket present, soonest first.
    """
    _require_aware(as_of)
    return _aging(session, _scope(session, shop_id), as_of)


def _aging(session: Session, scope: _Scope, as_of: datetime) -> list[dict[str, Any]]:
    bucket = case(
        (CreditLot.expires_at.is_(None), NO_EXPIRY[0]),
        *(
            (CreditLot.expires_at <= as_of + timedelta(days=days), key)
            for key, _, days in AGING_BUCKETS
            if days is not None
        ),
        else_=AGING_BUCKETS[-1][0],
    )
    lots = (
        select(
            CreditAccount.currency.label("currency"),
            bucket.label("bucket"),
            CreditLot.remaining.label("remaining"),
        )
        .join(CreditAccount, CreditAccount.id == CreditLot.account_id)
        .where(CreditLot.shop_id == scope.shop_id, CreditLot.status == LotStatus.ACTIVE.value)
        .subquery()
    )
    stmt = select(lots.c.currency, lots.c.bucket, func.sum(lots.c.remaining), func.count())
    found: dict[tuple[str, str], tuple[int, int]] = {
        (currency, key): (int(amount), int(count))
        for currency, key, amount, count in _rows(
            session, stmt.group_by(lots.c.currency, lots.c.bucket)
        )
    }
    buckets = [(key, label) for key, label, _ in AGING_BUCKETS] + [NO_EXPIRY]
    rows = []
    for currency in sorted({*scope.currencies, *(currency for currency, _ in found)}):
        figures = [(key, label, *found.get((currency, key), (0, 0))) for key, label in buckets]
        rows.append(
            {
                "currency": currency,
                "total": format_amount(sum(f[2] for f in figures), currency),
                "lots": sum(f[3] for f in figures),
                "buckets": [
                    {
                        "key": key,
                        "label": label,
                        "amount": format_amount(amount, currency),
                        "lots": count,
                    }
                    for key, label, amount, count in figures
                ],
            }
        )
    return rows


# -- breakage --------------------------------------------------------------------------------


def breakage(
    session: Session, shop_id: int, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Expired credit per local month of [start, end), per currency, with the breakage rate.

    ``credited`` is the credit granted to customers in the same months (``issue`` and
    ``refund_credit`` entries; adjustments and credits made in Shopify are corrections, not
    counted). ``rate`` = expired / credited of the same months as a decimal fraction rounded
    half-even to 4 places ("0.0525" is 5.25%), or null when nothing was credited. It is a
    same-period ratio, not a cohort's: credit expiring this month was mostly granted earlier.
    Each row: ``{"currency", "expired", "credited", "rate", "months": [{"month": "YYYY-MM",
    "expired", "credited", "rate"}, ...]}`` with every month of the period present.
    """
    _require_period(start, end)
    scope = _scope(session, shop_id)
    if _postgresql(session):
        wanted = [start, end, *_month_starts(start, end, scope.zone)]
        tails = _tails(session, scope, wanted, reference=scope.last_entry)
        return _remembered_breakage(tails, scope, start, end)
    daily = _daily_sums(session, scope, start, end, kinds=_BREAKAGE_KINDS)
    return _breakage(daily, scope, start, end)


_BREAKAGE_KINDS = (EntryKind.EXPIRE, EntryKind.ISSUE, EntryKind.REFUND_CREDIT)


def _breakage(
    daily: _DailySums, scope: _Scope, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    expired: dict[tuple[str, str], int] = defaultdict(int)
    credited: dict[tuple[str, str], int] = defaultdict(int)
    for (day, currency, kind), amount in daily.sums.items():
        month = f"{day.year:04d}-{day.month:02d}"
        if kind == EntryKind.EXPIRE:
            expired[currency, month] -= amount
        elif kind in (EntryKind.ISSUE, EntryKind.REFUND_CREDIT):
            credited[currency, month] += amount
    currencies = {*scope.currencies, *daily.currencies()}
    return _breakage_rows(currencies, _months(start, end, scope.zone), expired, credited)


def _remembered_breakage(
    tails: _Tails | _NoEntries, scope: _Scope, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Breakage from the tails at the period's bounds and the local months' starts in it."""
    bounds = [start, *_month_starts(start, end, scope.zone), end] if start < end else []
    expired: dict[tuple[str, str], int] = defaultdict(int)
    credited: dict[tuple[str, str], int] = defaultdict(int)
    currencies = set(scope.currencies)
    for month_start, month_end in pairwise(bounds):
        local = month_start.astimezone(scope.zone)
        month = f"{local.year:04d}-{local.month:02d}"
        for currency, sums in tails.between(month_start, month_end).items():
            currencies.add(currency)
            expired[currency, month] -= sums[_INDEX_OF_KIND[EntryKind.EXPIRE.value]]
            for kind in (EntryKind.ISSUE, EntryKind.REFUND_CREDIT):
                credited[currency, month] += sums[_INDEX_OF_KIND[kind.value]]
    return _breakage_rows(currencies, _months(start, end, scope.zone), expired, credited)


def _month_starts(start: datetime, end: datetime, zone: ZoneInfo) -> list[datetime]:
    """The local midnights beginning a month strictly inside (start, end)."""
    starts: list[datetime] = []
    month = start.astimezone(zone).date().replace(day=1)
    while True:
        month = (month + timedelta(days=32)).replace(day=1)
        midnight = local_midnight(month, zone)
        if midnight >= end:
            return starts
        starts.append(midnight)


def _breakage_rows(
    currencies: Iterable[str],
    months: list[str],
    expired: Mapping[tuple[str, str], int],
    credited: Mapping[tuple[str, str], int],
) -> list[dict[str, Any]]:
    rows = []
    for currency in sorted(currencies):
        per_month = [
            _breakage_figures(
                currency, expired.get((currency, m), 0), credited.get((currency, m), 0)
            )
            | {"month": m}
            for m in months
        ]
        total_expired = sum(expired.get((currency, m), 0) for m in months)
        total_credited = sum(credited.get((currency, m), 0) for m in months)
        rows.append(
            {"currency": currency}
            | _breakage_figures(currency, total_expired, total_credited)
            | {"months": per_month}
        )
    return rows


def _breakage_figures(currency: str, expired: int, credited: int) -> dict[str, Any]:
    return {
        "expired": format_amount(expired, currency),
        "credited": format_amount(credited, currency),
        "rate": breakage_rate(expired, credited),
    }


def breakage_rate(expired: int, credited: int) -> str | None:
    """expired / credited as a decimal string with 4 places (half-even), None when credited is 0."""
    if credited == 0:
        return None
    return str((Decimal(expired) / Decimal(credited)).quantize(RATE_PLACES, ROUND_HALF_EVEN))


def _months(start: datetime, end: datetime, zone: ZoneInfo) -> list[str]:
    """Every local month [start, end) touches, as "YYYY-MM" (none for an empty period)."""
    if start >= end:
        return []
    first, last = start.astimezone(zone).date(), _last_day(end, zone)
    months = []
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


# -- the whole report, as JSON and as CSV ----------------------------------------------------


def liability_report(
    session: Session, shop_id: int, *, as_of: datetime, start: datetime, end: datetime
) -> dict[str, Any]:
    """Liability at ``as_of``, and roll-forward, aging (from ``as_of``) and breakage for
    [start, end). The entries are read once for all of them: on PostgreSQL those since the
    remembered days; on SQLite the period's, by local day, for both the roll-forward's
    movements and breakage's months.

    ``{"as_of", "from", "to", "liability": [...], "roll_forward": [...], "aging": [...],
    "breakage": [...]}``, instants as ISO 8601 UTC.
    """
    _require_aware(as_of)
    _require_period(start, end)
    return _report(session, shop_id, as_of, start, end)


def _report(
    session: Session, shop_id: int, as_of: datetime, start: datetime, end: datetime
) -> dict[str, Any]:
    scope = _scope(session, shop_id)
    if _postgresql(session):
        return _remembered_report(session, scope, as_of, start, end)
    daily = _daily_sums(session, scope, start, end)
    figures = _roll_forward(session, scope, start, end, daily.by_kind())
    return {
        "as_of": iso(as_of),
        "from": iso(start),
        "to": iso(end),
        "liability": _liability_json(_liability_at(session, scope, as_of)),
        "roll_forward": [row.to_json() for row in figures],
        "aging": _aging(session, scope, as_of),
        "breakage": _breakage(daily, scope, start, end),
    }


def _remembered_report(
    session: Session, scope: _Scope, as_of: datetime, start: datetime, end: datetime
) -> dict[str, Any]:
    """The report from one read of the entries since the remembered days (PostgreSQL)."""
    past = _before_last_entry(scope, as_of)
    wanted = [start, end, *_month_starts(start, end, scope.zone)]
    if past:
        wanted.append(as_of + _MICROSECOND)
    tails = _tails(session, scope, wanted, reference=scope.last_entry, holders=past)
    liability = (
        _liability_of(scope, tails.at(as_of + _MICROSECOND))
        if past
        else _liability_at(session, scope, as_of)  # the cached balances: no statement
    )
    return {
        "as_of": iso(as_of),
        "from": iso(start),
        "to": iso(end),
        "liability": _liability_json(liability),
        "roll_forward": [
            row.to_json() for row in _remembered_roll_forward(scope, tails, start, end)
        ],
        "aging": _aging(session, scope, as_of),
        "breakage": _remembered_breakage(tails, scope, start, end),
    }


def liability_csv(
    session: Session, shop_id: int, *, as_of: datetime, start: datetime, end: datetime
) -> Iterator[str]:
    """The report as CSV lines: a roll-forward block, an aging block, a breakage block.

    Every figure is computed before the first line is given out, so a failure is an error
    response rather than a file cut short. Amounts are decimal strings in their currency.
    """
    report = liability_report(session, shop_id, as_of=as_of, start=start, end=end)
    return iter(list(_csv_lines(report)))


def _csv_lines(report: dict[str, Any]) -> Iterator[str]:
    columns = ["opening", *MOVEMENTS, "closing"]
    yield _csv_row(["Roll-forward", "from", report["from"], "to", report["to"]])
    yield _csv_row(["currency", *columns, "ties_out"])
    for row in report["roll_forward"]:
        yield _csv_row([row["currency"], *(row[c] for c in columns), str(row["ties_out"]).lower()])
    yield "\r\n"
    bucket_keys = [key for key, _, _ in AGING_BUCKETS] + [NO_EXPIRY[0]]
    yield _csv_row(["Aging", "as_of", report["as_of"]])
    yield _csv_row(["currency", *bucket_keys, "total"])
    for row in report["aging"]:
        amounts = {bucket["key"]: bucket["amount"] for bucket in row["buckets"]}
        yield _csv_row([row["currency"], *(amounts[k] for k in bucket_keys), row["total"]])
    yield "\r\n"
    yield _csv_row(["Breakage", "from", report["from"], "to", report["to"]])
    yield _csv_row(["currency", "month", "expired", "credited", "rate"])
    for row in report["breakage"]:
        for month in row["months"]:
            figures = [month["expired"], month["credited"], month["rate"] or ""]
            yield _csv_row([row["currency"], month["month"], *figures])
        yield _csv_row(
            [row["currency"], "total", row["expired"], row["credited"], row["rate"] or ""]
        )


def _csv_row(cells: list[Any]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(cells)  # \r\n line ends, as RFC 4180 has them
    return out.getvalue()


# -- dashboard -------------------------------------------------------------------------------


def dashboard(session: Session, shop_id: int, now: datetime) -> dict[str, Any]:
    """The dashboard's figures at ``now``.

    ``{"liability": [...liability_as_of(now)...],
    "activity": {"from": "YYYY-MM-DD", "to": "YYYY-MM-DD", "days": [{"date", "currency",
    "issued", "redeemed", "expired"}, ...]},
    "expiring_soon": [{"currency", "amount", "lots"}], "open_findings": int,
    "failed_syncs": int}``.

    Activity covers the last 30 local days (today up to ``now``), every (day, currency)
    present and zero-filled: ``issued`` sums ``issue`` entries, ``redeemed`` and ``expired``
    the (positive) amounts of ``redeem`` and ``expire`` entries. ``expiring_soon`` is what
    active lots hold that expires within 30 days after ``now``. ``failed_syncs`` counts
    native-sync outbox rows that gave up (``dead``), for reconciliation or a person to settle.
    """
    _require_aware(now)
    scope = _scope(session, shop_id)
    liability, activity = _liability_and_activity(session, scope, now)
    return {
        "liability": _liability_json(liability),
        "activity": activity,
        "expiring_soon": _expiring_soon(session, scope, now),
        "open_findings": _count(
            session,
            select(func.count()).where(
                ReconciliationFinding.shop_id == shop_id,
                ReconciliationFinding.resolved_at.is_(None),
            ),
        ),
        "failed_syncs": _count(
            session,
            select(func.count()).where(
                ShopifyOutbox.shop_id == shop_id, ShopifyOutbox.state == "dead"
            ),
        ),
    }


def _liability_and_activity(
    session: Session, scope: _Scope, now: datetime
) -> tuple[dict[str, _Liability], dict[str, Any]]:
    """The liability at ``now`` and the chart of the 30 local days up to it (both including
    ``now``): on PostgreSQL from the remembered days and one read of the entries since."""
    today = now.astimezone(scope.zone).date()
    first = today - timedelta(days=DASHBOARD_DAYS - 1)
    past = _before_last_entry(scope, now)
    if not _postgresql(session):
        kinds = [kind for kind, _ in _ACTIVITY.values()]
        start = local_midnight(first, scope.zone)
        # Up to and including now, as the liability beside it.
        daily = _daily_sums(session, scope, start, now + _MICROSECOND, kinds=kinds)
        return _liability_at(session, scope, now), _activity(scope, first, today, daily)
    bounds = [local_midnight(day, scope.zone) for day in _days(first, today)]
    bounds.append(now + _MICROSECOND)
    tails = _tails(session, scope, bounds, reference=now, holders=past, first=first)
    daily = _DailySums()
    charted = [kind.value for kind, _ in _ACTIVITY.values()]
    for day, (start, end) in zip(_days(first, today), pairwise(bounds), strict=True):
        for currency, sums in tails.between(start, end).items():
            for kind in charted:
                daily.sums[day, currency, kind] += sums[_INDEX_OF_KIND[kind]]
    liability = (
        _liability_of(scope, tails.at(now + _MICROSECOND))
        if past
        else _liability_at(session, scope, now)  # the cached balances: no statement
    )
    return liability, _activity(scope, first, today, daily)


def _activity(scope: _Scope, first: date, today: date, daily: _DailySums) -> dict[str, Any]:
    days = [
        {"date": day.isoformat(), "currency": currency}
        | {
            name: format_amount(sign * daily.get(day, currency, kind), currency)
            for name, (kind, sign) in _ACTIVITY.items()
        }
        for day in _days(first, today)
        for currency in sorted({*scope.currencies, *daily.currencies()})
    ]
    return {"from": first.isoformat(), "to": today.isoformat(), "days": days}


# -- the shop's closed days, remembered (PostgreSQL) -----------------------------------------
#
# Summing a year of entries for a report, or a month for the dashboard's chart, reads hundreds
# of thousands of index entries (on the bench's shop, a year is 850,000: a third of a second),
# yet from one request to the next only today's entries are new. So each process remembers,
# per shop, the running sums of its closed local days (per currency: one column per entry
# kind, and the change in how many accounts hold a balance), and a figure for any instant is
# the remembered days plus the entries read raw: those since the remembered end, and, for an
# instant that is not a local midnight, the rest of its day. Every figure is a *tail*: per
# currency, the sums of the entries created at or after an instant. Movements of [a, b) are
# tail(a) − tail(b); a balance just before t is the cached balances − tail(t) (see "balances
# at an instant" above); the accounts holding a balance then are those holding one now less
# the change since.
#
# The memory knows whether the days it holds are still right without reading them again:
#
#   ``written``: Σ credit_accounts.last_sequence of the shop = how many entries it ever wrote
#   (hot or archived: archiving moves entries, erasure deletes the accounts with them);
#   ``since``: how many of the shop's entries (of any kind, hot or archived) are created at
#   or after the remembered days' end.
#
# Both are read with the remembered sums, and again with each later read, each time in the
# same statement (one snapshot). Entries are never deleted but with their accounts, so if
# ``written`` grew by exactly as much as ``since`` did, every entry written (or erased) in
# between was created at or after the end: none was added to a remembered day (a transaction
# committed late, or a backdated entry). Otherwise the remembered days are dropped and summed
# again. Archiving changes neither count, nor any day's sums; a new shop time zone makes other
# days, so the memory is dropped too.
#
# A day is closed once it ended _SETTLING before the latest instant known (the dashboard's
# now; a report's latest entry), which keeps a transaction still committing around midnight
# from invalidating the memory. The first read in a process sums once what nothing remembered
# covers: the dashboard its month; a report the shop's whole history (on the bench's shop, a
# sequential read of its million entries, 0.6 s when the machine is quiet), after which every
# report and dashboard of that shop reads the entries since its last closed day only.

_KIND_COLUMNS = tuple(kind.value for kind in EntryKind)
_INDEX_OF_KIND = {kind: index for index, kind in enumerate(_KIND_COLUMNS)}
# After the kinds' columns: how many more accounts hold a nonzero balance (per currency).
_HOLDERS = len(_KIND_COLUMNS)
_WIDTH = _HOLDERS + 1
_SETTLING = timedelta(minutes=10)
_MICROSECOND = timedelta(microseconds=1)

_Sums = dict[str, list[int]]  # per currency, _WIDTH sums


@dataclass(frozen=True)
class _History:
    """One shop's closed local days, from the local midnight ``midnights[0]`` to ``end``.

    ``running[currency]`` holds, for each midnight ``i`` of ``midnights``, the running sums of
    the entries created from ``midnights[0]`` until it (row ``i``: ``_WIDTH`` numbers), so the
    sums of days ``[i, j)`` are row ``j`` − row ``i``. ``from_start``: no entry of the shop was
    created before ``midnights[0]``. ``holders``: the holders' column is summed (it reads each
    entry's balance from the table, not from the index alone)."""

    zone: str
    midnights: tuple[datetime, ...]
    running: Mapping[str, array[int]]
    from_start: bool
    holders: bool
    written: int
    since: int

    @property
    def end(self) -> datetime:
        return self.midnights[-1]

    @property
    def cells(self) -> int:
        return sum(len(sums) for sums in self.running.values())

    def between(self, first: int, last: int) -> _Sums:
        """The sums of the days from midnight ``first`` to midnight ``last``."""
        lo, hi = first * _WIDTH, last * _WIDTH
        return {
            currency: [
                b - a for a, b in zip(sums[lo : lo + _WIDTH], sums[hi : hi + _WIDTH], strict=True)
            ]
            for currency, sums in self.running.items()
        }

    def starts_a_day(self, instant: datetime) -> bool:
        index = bisect_right(self.midnights, instant) - 1
        return index >= 0 and self.midnights[index] == instant

    def usable(self, zone: ZoneInfo, lowest: datetime, holders: bool) -> bool:
        """Whether tails at instants from ``lowest`` on can be taken from these days."""
        return (
            self.zone == zone.key
            and (self.from_start or self.midnights[0] <= lowest)
            and (self.holders or not holders)
        )


class _ClosedDays:
    """The remembered histories per (database, shop): the most recently used, up to a number
    of sums in all (8 bytes each)."""

    def __init__(self, cells: int) -> None:
        self._cells = cells
        self._held: OrderedDict[tuple[str, int], _History] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> _History | None:
        with self._lock:
            found = self._held.get(key)
            if found is not None:
                self._held.move_to_end(key)
            return found

    def put(self, key: tuple[str, int], history: _History) -> None:
        with self._lock:
            self._held[key] = history
            self._held.move_to_end(key)
            total = sum(held.cells for held in self._held.values())
            while total > self._cells and len(self._held) > 1:
                _, dropped = self._held.popitem(last=False)
                total -= dropped.cells


# Two years of a shop's days in three currencies are about 20,000 sums (160 kB): some 200 such
# shops, or many more smaller ones, per process.
_CLOSED_DAYS = _ClosedDays(cells=4_000_000)


@dataclass
class _Live:
    """One read of the shop's entries created since ``bounds[0]``: per bucket ``b`` (from
    ``bounds[b]`` to ``bounds[b + 1]``, the last one open) the sums per currency and how many
    entries there were; and the shop's ``written`` count, read in the same statement."""

    bounds: list[datetime]
    sums: list[_Sums]
    created: list[int]
    written: int
    _tails: list[_Sums] = field(default_factory=list)

    def tail(self, bound: int) -> _Sums:
        """The sums of the buckets from ``bounds[bound]`` on."""
        if not self._tails:
            running: _Sums = {}
            tails = []
            for sums in reversed(self.sums):
                running = _added(running, sums)
                tails.append(running)
            self._tails = tails[::-1]
        return self._tails[bound] if bound < len(self._tails) else {}

    def tail_at(self, instant: datetime) -> _Sums:
        return self.tail(bisect_left(self.bounds, instant))

    def created_from(self, bound: int) -> int:
        return sum(self.created[bound:])


@dataclass(frozen=True)
class _Tails:
    """Tails at the instants a figure asked for: the remembered days before the live read, the
    live read, and the rest of the day of each instant inside the remembered days that is not
    a midnight."""

    held: _History
    live: _Live
    partial: Mapping[datetime, _Sums]

    def at(self, instant: datetime) -> _Sums:
        """Per currency, the sums of the entries created at or after ``instant``."""
        live = self.live
        if instant >= live.bounds[0]:
            return live.tail_at(instant)
        held, after = self.held, live.tail(0)
        index = bisect_right(held.midnights, instant) - 1
        if index < 0:  # before the first day held: nothing is (from_start)
            return _added(held.between(0, len(held.midnights) - 1), after)
        last = len(held.midnights) - 1
        if held.midnights[index] == instant:
            return _added(held.between(index, last), after)
        rest_of_day = self.partial[instant]
        return _added(_added(held.between(index + 1, last), rest_of_day), after)

    def between(self, start: datetime, end: datetime) -> _Sums:
        """Per currency, the sums of the entries created in [start, end)."""
        return _subtracted(self.at(start), self.at(end))


def _added(a: _Sums, b: _Sums) -> _Sums:
    out = {currency: list(sums) for currency, sums in a.items()}
    for currency, sums in b.items():
        into = out.setdefault(currency, [0] * _WIDTH)
        for column, amount in enumerate(sums):
            into[column] += amount
    return out


def _subtracted(a: _Sums, b: _Sums) -> _Sums:
    return _added(a, {currency: [-amount for amount in sums] for currency, sums in b.items()})


class _NoEntries:
    """The tails of a shop without entries: nothing at any instant."""

    def at(self, instant: datetime) -> _Sums:
        return {}

    def between(self, start: datetime, end: datetime) -> _Sums:
        return {}


def _tails(
    session: Session,
    scope: _Scope,
    wanted: Iterable[datetime],
    *,
    reference: datetime | None,
    holders: bool = False,
    first: date | None = None,
) -> _Tails | _NoEntries:
    """Tails at every instant of ``wanted``, from the remembered days and one read of the
    entries since (PostgreSQL).

    ``reference``: the latest instant known (days ending ``_SETTLING`` before it may be
    remembered). ``holders``: the holders' column is wanted. ``first``: when nothing usable is
    remembered, the first local day to sum from (the dashboard's month); None sums the whole
    history.
    """
    if scope.first_entry is None or reference is None:
        return _NoEntries()
    wanted = sorted(set(wanted))
    zone = scope.zone
    close_to = local_midnight((reference - _SETTLING).astimezone(zone).date(), zone)
    bind = session.get_bind()
    key = (bind.engine.url.render_as_string(hide_password=True), scope.shop_id)
    held = _CLOSED_DAYS.get(key)
    live: _Live | None = None
    if held is not None and held.usable(zone, wanted[0], holders):
        bounds, midnights = _live_bounds(held.end, close_to, wanted, zone)
        live = _read_since(
            session, scope, bounds, holders=held.holders and (holders or bool(midnights))
        )
        if live.written - held.written != live.created_from(0) - held.since:
            live = None  # an entry was added to a remembered day: sum them again
    if held is None or live is None:
        month = None if holders else first  # the holders' column is summed from the start
        begin, from_start = _first_read_from(scope.first_entry, wanted[0], close_to, zone, month)
        held = _History(zone.key, (begin,), {}, from_start, from_start, written=0, since=0)
        bounds, midnights = _live_bounds(held.end, close_to, wanted, zone)
        live = _read_since(session, scope, bounds, holders=held.holders)
    partial = {
        instant: _rest_of_day(session, scope, held, instant, holders=holders)
        for instant in wanted
        if held.midnights[0] < instant < held.end and not held.starts_a_day(instant)
    }
    _CLOSED_DAYS.put(key, _extended(held, live, midnights))
    return _Tails(held, live, partial)


def _first_read_from(
    first_entry: datetime,
    lowest: datetime,
    close_to: datetime,
    zone: ZoneInfo,
    first: date | None,
) -> tuple[datetime, bool]:
    """Where a read with nothing remembered begins, and whether that is the shop's start:
    ``first``'s midnight when given and no instant asked for lies before it, else the local
    midnight of the shop's first entry (or of ``close_to``, if earlier). A read from the start
    sums the holders' column too (the dashboard's month needs none)."""
    if first is not None and lowest >= local_midnight(first, zone):
        return min(local_midnight(first, zone), close_to), False
    return local_midnight(min(first_entry, close_to).astimezone(zone).date(), zone), True


def _live_bounds(
    since: datetime, close_to: datetime, wanted: list[datetime], zone: ZoneInfo
) -> tuple[list[datetime], list[datetime]]:
    """The bounds of a read from ``since`` (a local midnight): the local midnights up to
    ``close_to`` (the days it may add to the memory, also returned) and the instants asked
    for after ``since``."""
    midnights = []
    day = since.astimezone(zone).date() + timedelta(days=1)
    while (midnight := local_midnight(day, zone)) <= close_to:
        midnights.append(midnight)
        day += timedelta(days=1)
    bounds = sorted({since, *midnights, *(instant for instant in wanted if instant > since)})
    return bounds, midnights


def _holders_change(entries: Any) -> Any:
    """+1 for an entry that gave its account a balance, −1 for one that emptied it: summed up
    to an instant, how many accounts held a nonzero balance then (an account's entries follow
    each other in time, so its last one up to the instant holds its balance)."""
    gave = case((entries.balance_after != 0, 1), else_=0)
    had = case((entries.balance_after - entries.amount != 0, 1), else_=0)
    return gave - had


def _summed_columns(entries: Any, holders: bool) -> list[Any]:
    columns = [func.sum(entries.amount).label("amount")]
    if holders:
        columns.append(func.sum(_holders_change(entries)).label("holders"))
    return columns


def _read_since(session: Session, scope: _Scope, bounds: list[datetime], *, holders: bool) -> _Live:
    """One statement (one snapshot): the shop's ``written`` count, and its entries created
    since ``bounds[0]`` summed per bucket among ``bounds`` (``width_bucket``: a binary search
    over a constant array), currency and kind, and counted."""
    source = scope.entries(bounds[0], None, balances=holders)
    entries = source.c
    bucket = func.width_bucket(
        entries.created_at, bindparam("bounds", bounds, type_=ARRAY(DateTime(timezone=True)))
    )
    groups = (
        select(
            bucket.label("bucket"),
            CreditAccount.currency.label("currency"),
            entries.kind.label("kind"),
            func.count().label("created"),
            *_summed_columns(entries, holders),
        )
        .select_from(source)
        .join(CreditAccount, CreditAccount.id == entries.account_id)
        .where(entries.shop_id == scope.shop_id, entries.created_at >= bounds[0])
        .group_by(bucket, CreditAccount.currency, entries.kind)
        .subquery()
    )
    written = (
        select(func.coalesce(func.sum(CreditAccount.last_sequence), 0))
        .where(CreditAccount.shop_id == scope.shop_id)
        .scalar_subquery()
    )
    one = select(literal(1).label("one")).subquery()
    summed = [groups.c.amount, *([groups.c.holders] if holders else [])]
    stmt = select(
        written, groups.c.bucket, groups.c.currency, groups.c.kind, groups.c.created, *summed
    ).select_from(one.outerjoin(groups, true()))
    live = _Live(bounds, [{} for _ in bounds], [0] * len(bounds), written=0)
    for total, number, currency, kind, created, *amounts in _rows(session, stmt):
        live.written = int(total)
        if number is None:
            continue  # no entry since bounds[0]
        index = number - 1  # width_bucket counts from 1
        live.created[index] += int(created)
        _add_sums(live.sums[index], currency, kind, amounts)
    return live


def _rest_of_day(
    session: Session, scope: _Scope, held: _History, instant: datetime, *, holders: bool
) -> _Sums:
    """The sums of the entries from ``instant`` to the end of its local day (inside the
    remembered days)."""
    day_end = held.midnights[bisect_right(held.midnights, instant)]
    source = scope.entries(instant, day_end, balances=holders)
    entries = source.c
    stmt = (
        select(CreditAccount.currency, entries.kind, *_summed_columns(entries, holders))
        .select_from(source)
        .join(CreditAccount, CreditAccount.id == entries.account_id)
        .where(
            entries.shop_id == scope.shop_id,
            entries.created_at >= instant,
            entries.created_at < day_end,
        )
        .group_by(CreditAccount.currency, entries.kind)
    )
    sums: _Sums = {}
    for currency, kind, *amounts in _rows(session, stmt):
        _add_sums(sums, currency, kind, amounts)
    return sums


def _add_sums(into: _Sums, currency: str, kind: str, amounts: list[Any]) -> None:
    row = into.setdefault(currency, [0] * _WIDTH)
    row[_INDEX_OF_KIND[kind]] += int(amounts[0])
    if len(amounts) > 1:
        row[_HOLDERS] += int(amounts[1])


def _extended(held: _History, live: _Live, midnights: list[datetime]) -> _History:
    """``held`` with the days the live read covered whole up to the last of ``midnights``
    added, and the counts of that read."""
    days = [held.end, *midnights]
    index = [live.bounds.index(midnight) for midnight in days]
    running: dict[str, array[int]] = {}
    currencies = {*held.running, *(c for sums in live.sums[: index[-1]] for c in sums)}
    for currency in currencies:
        rows = array(
            "q", held.running.get(currency, array("q", [0] * len(held.midnights) * _WIDTH))
        )
        last = list(rows[-_WIDTH:])
        for lo, hi in pairwise(index):
            for sums in live.sums[lo:hi]:
                last = [a + b for a, b in zip(last, sums.get(currency, [0] * _WIDTH), strict=True)]
            rows.extend(last)
        running[currency] = rows
    return _History(
        zone=held.zone,
        midnights=(*held.midnights, *midnights),
        running=running,
        from_start=held.from_start,
        holders=held.holders,
        written=live.written,
        since=live.created_from(index[-1]),
    )


def _expiring_soon(session: Session, scope: _Scope, now: datetime) -> list[dict[str, Any]]:
    stmt = (
        select(CreditAccount.currency, func.sum(CreditLot.remaining), func.count())
        .join(CreditAccount, CreditAccount.id == CreditLot.account_id)
        .where(
            CreditLot.shop_id == scope.shop_id,
            CreditLot.status == LotStatus.ACTIVE.value,
            CreditLot.expires_at > now,
            CreditLot.expires_at <= now + EXPIRING_SOON,
        )
        .group_by(CreditAccount.currency)
    )
    found = {currency: (int(amount), int(lots)) for currency, amount, lots in session.execute(stmt)}
    return [
        {
            "currency": currency,
            "amount": format_amount(found.get(currency, (0, 0))[0], currency),
            "lots": found.get(currency, (0, 0))[1],
        }
        for currency in sorted({*scope.currencies, *found})
    ]


def _count(session: Session, stmt: Any) -> int:
    return int(session.scalar(stmt) or 0)
