"""The liability report and the dashboard's figures as JSON (and the report as CSV), under /api.

Times in the query string are ISO 8601 with a zone (``2026-10-31T18:00:00Z``) or a date
(``2026-10-31``), which names a whole day in the shop's time zone (``shops.timezone``):
``from`` starts at its first instant, ``to`` and ``as_of`` take in all of it (``to`` is the
next local midnight, the period being [from, to); ``as_of`` the day's last microsecond, the
liability counting what happened at it). Defaults: ``as_of`` and ``to`` now, ``from`` the
first day of the month ``to`` falls in (local). A malformed time, ``from`` after ``to`` or a
period over ten years is a 400 ``invalid_parameter`` naming the parameter.

Each report is read in one REPEATABLE READ snapshot (PostgreSQL), so an entry committed while
the queries run is on every side of the roll-forward or on none.

The liability and audit pages (blueprints/report_pages.py) read their dates with the same
helpers (``report_parameters``, ``instant_parameter``, ``snapshot``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from blueprints.errors import APIError
from blueprints.session_token import StaffSession, require_session_token
from extensions import current_session
from ledger import reports
from ledger.reconcile import begin_snapshot

bp = Blueprint("reports_api", __name__)

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Instants outside these years are refused: nothing in a ledger lies there, and a day or a
# year added to them (aging, local midnights) would leave what datetime can hold.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


@bp.get("/liability")
@require_session_token
def liability() -> Response:
    """``{"as_of", "from", "to", "liability", "roll_forward", "aging", "breakage"}``."""
    shop_id, as_of, start, end = report_parameters()
    return jsonify(reports.liability_report(snapshot(), shop_id, as_of=as_of, start=start, end=end))


@bp.get("/liability.csv")
@require_session_token
def liability_csv() -> Response:
    """The same report as a CSV download: roll-forward, aging and breakage blocks."""
    shop_id, as_of, start, end = report_parameters()
    lines = reports.liability_csv(snapshot(), shop_id, as_of=as_of, start=start, end=end)
    response = Response(lines, mimetype="text/csv")
    name = f"liability-{start:%Y%m%d}-{end:%Y%m%d}.csv"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"  # the shop's finances
    return response


@bp.get("/dashboard")
@require_session_token
def dashboard() -> Response:
    """Liability now, the last 30 days' activity, credit expiring soon, open findings and
    failed native syncs."""
    shop_id = _staff().shop.id
    return jsonify(reports.dashboard(snapshot(), shop_id, datetime.now(UTC)))


# -- helpers ---------------------------------------------------------------------------------


def _staff() -> StaffSession:
    staff: StaffSession = g.staff
    return staff


def report_parameters() -> tuple[int, datetime, datetime, datetime]:
    """The shop's id, then ``as_of``, ``from`` and ``to`` as UTC instants (checked)."""
    shop = _staff().shop
    shop_id, zone = shop.id, reports.zone_named(shop.timezone)
    now = datetime.now(UTC)
    as_of = instant_parameter("as_of", zone, _last_instant_of) or now
    end = instant_parameter("to", zone, end_of_day) or now
    start = instant_parameter("from", zone, start_of_day) or reports.default_period(end, zone)
    if start > end:
        raise APIError(400, "invalid_parameter", "from must not be after to.", parameter="from")
    if end - start > reports.MAX_PERIOD:
        raise APIError(
            400, "invalid_parameter", "The period is at most ten years long.", parameter="from"
        )
    return shop_id, as_of, start, end


def start_of_day(day: date, zone: ZoneInfo) -> datetime:
    return reports.local_midnight(day, zone)


def end_of_day(day: date, zone: ZoneInfo) -> datetime:
    """The next local midnight: a period ``to`` a day takes in all of it."""
    return reports.local_midnight(day + timedelta(days=1), zone)


def _last_instant_of(day: date, zone: ZoneInfo) -> datetime:
    """The day's last microsecond: the liability as of a day counts all that happened on it."""
    return end_of_day(day, zone) - timedelta(microseconds=1)


def instant_parameter(
    name: str, zone: ZoneInfo, day_means: Callable[[date, ZoneInfo], datetime]
) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        if _DATE.fullmatch(raw):
            at = day_means(date.fromisoformat(raw), zone)
        else:
            at = datetime.fromisoformat(raw)
            if at.tzinfo is None:
                raise ValueError("no zone")
            at = at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise APIError(
            400,
            "invalid_parameter",
            f"{name} must be a date (YYYY-MM-DD) or an ISO 8601 time with a zone.",
            parameter=name,
        ) from None
    if not _EARLIEST <= at < _LATEST:
        raise APIError(
            400, "invalid_parameter", f"{name} must lie between 1970 and 9000.", parameter=name
        )
    return at


def snapshot() -> Session:
    """The request's session, from here on reading one REPEATABLE READ snapshot (PostgreSQL).

    Only the session token's shop look-up ran in the request's transaction so far, so it is
    ended and a read-only snapshot begun. A session bound to a connection (tests) works in its
    owner's transaction, which is the snapshot.
    """
    session = current_session()
    bind = session.get_bind()
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        session.rollback()
        begin_snapshot(session)
    return session
