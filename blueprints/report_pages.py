"""The report and admin pages under ``/app``: Liability report, Reconciliation, Settings (with
the issuance presets) and the Audit log.

Pages of the framework in blueprints/pages.py (``staff_page``, ``render_page``): every figure
is in the HTML, and the forms go to the JSON API through static/app.js. Each page reads as its
API does, with the API's own query parsing (blueprints/reports_api.py, blueprints/admin_api.py)
and the same domain calls, so the figures on a page are those of its JSON and CSV; a query
parameter the API would refuse shows the API's message on the page, with status 400.

Dates in the filters are days of the shop's time zone, as in the liability API. The exports
linked from a page are given the instants the page used (ISO 8601, UTC), so a download holds
exactly what the page shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from flask import Blueprint, g, request
from flask.typing import ResponseReturnValue

from blueprints import admin_api, inputs, reports_api
from blueprints.errors import APIError
from blueprints.pages import app_url, render_page, staff_page
from blueprints.session_token import StaffSession
from extensions import current_session
from ledger import audit, findings, presets, queries, reports, runs, shop_settings
from ledger.money import CURRENCY_EXPONENTS, format_amount, parse_amount
from ledger.views import iso
from models.preset import ISSUABLE_SOURCES, MAX_EXPIRY_DAYS

bp = Blueprint("report_pages", __name__)

RUNS_SHOWN = 10
FINDINGS_PER_PAGE = 50
AUDIT_PER_PAGE = 50
AUDIT_FILTERS = ("actor", "action", "outcome", "from", "to")
DETAILS_SHOWN = 160  # characters of an audit row's details summary; the rest behind "More"
# The findings tabs: open first (what needs a look), then resolved, then both.
FINDING_TABS = (("open", "Open"), ("resolved", "Resolved"), ("all", "All"))

# -- Liability report ------------------------------------------------------------------------


@dataclass(frozen=True)
class StatementLine:
    """A line of the roll-forward: the report's column, its label, and how it moves the
    liability (as the merchant reads it: "−" columns are shown positive and subtracted)."""

    key: str
    label: str
    sign: str


ROLL_FORWARD_LINES = (
    StatementLine("opening", "Opening balance", ""),
    StatementLine("issued", "Issued", "+"),
    StatementLine("refunded", "Refunded as store credit", "+"),
    StatementLine("redeemed", "Redeemed at checkout", "−"),
    StatementLine("reversed", "Redemptions reversed", "+"),
    StatementLine("expired", "Expired", "−"),
    StatementLine("revoked", "Revoked", "−"),
    StatementLine("adjusted", "Adjusted", "±"),
    StatementLine("external", "Changed in Shopify", "±"),
    StatementLine("closing", "Closing balance", "="),
)


@bp.get("/app/liability")
@staff_page
def liability() -> ResponseReturnValue:
    """Liability as of a day, and the roll-forward, aging and breakage of a period."""
    zone = _zone()
    asked = {name: request.args.get(name, "") for name in ("as_of", "from", "to")}
    try:
        shop_id, as_of, start, end = reports_api.report_parameters()
    except APIError as error:
        return render_page(
            "app/liability.html", title="Liability report", status=400, error=error, dates=asked
        )
    report = reports.liability_report(
        reports_api.snapshot(), shop_id, as_of=as_of, start=start, end=end
    )
    days = {
        "as_of": _local_day(as_of, zone),
        "from": _local_day(start, zone),
        "to": _local_day(end - timedelta(microseconds=1), zone),  # the period's last day
    }
    exported = {name: report[name] for name in ("as_of", "from", "to")}
    return render_page(
        "app/liability.html",
        title="Liability report",
        error=None,
        dates={name: day.isoformat() for name, day in days.items()},
        days=days,
        report=report,
        lines=ROLL_FORWARD_LINES,
        aging=[_with_shares(row) for row in report["aging"]],
        breakage=[_with_percents(row) for row in report["breakage"]],
        csv_url=f"/api/liability.csv?{urlencode(exported)}",
        csv_name=f"liability-{days['from']:%Y%m%d}-{days['to']:%Y%m%d}.csv",
    )


def _with_shares(row: dict[str, Any]) -> dict[str, Any]:
    """An aging row with each bucket's share of the currency's outstanding credit (percent,
    for its bar)."""
    currency = row["currency"]
    total = parse_amount(row["total"], currency, allow_zero=True)
    buckets = [
        bucket | {"share": _share(parse_amount(bucket["amount"], currency, allow_zero=True), total)}
        for bucket in row["buckets"]
    ]
    return row | {"buckets": buckets}


def _share(part: int, whole: int) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


def _with_percents(row: dict[str, Any]) -> dict[str, Any]:
    """A breakage row with its rates as percentages and its months named."""
    months = [
        month | {"label": _month_label(month["month"]), "percent": _percent(month["rate"])}
        for month in row["months"]
    ]
    return row | {"percent": _percent(row["rate"]), "months": months}


def _percent(rate: str | None) -> str:
    """A rate ("0.0525") as a percentage ("5.25%"); a dash for none (nothing credited)."""
    if rate is None:
        return "—"
    return f"{(Decimal(rate) * 100).quantize(Decimal('0.01'))}%"


def _month_label(month: str) -> str:
    """A month ("2026-10") by its name ("Oct 2026")."""
    year, number = month.split("-")
    return date(int(year), int(number), 1).strftime("%b %Y")


# -- Reconciliation --------------------------------------------------------------------------

# What each finding kind means, for the merchant.
FINDING_KINDS = {
    findings.CHAIN_BREAK: "Ledger chain broken",
    findings.INVARIANT_VIOLATION: "Ledger totals disagree",
    findings.NATIVE_BALANCE_MISMATCH: "Balance differs from Shopify",
    findings.NATIVE_TRANSACTION_MISSING: "Shopify transaction missing from the ledger",
    findings.NATIVE_ORDER_UNRECORDED: "Order's store credit not recorded",
    findings.NATIVE_EXPIRY_MISMATCH: "Expiry differs from Shopify",
    findings.OUTBOX_NOT_LANDED: "Change never reached Shopify",
    findings.UNMATCHED_NATIVE_SPEND: "Spend in Shopify beyond the ledger's credit",
}


@dataclass(frozen=True)
class RepairAction:
    button: str
    explains: str  # what the repair does, asked before it is done


REPAIR_ACTIONS = {
    findings.IMPORT_EXTERNAL: RepairAction(
        "Import into the ledger",
        "Record Shopify's transaction in the ledger as an external credit or debit?",
    ),
    findings.SYNC_ORDER: RepairAction(
        "Sync the order", "Read this order's store credit from Shopify again and record it?"
    ),
    findings.SEND_OUTBOX: RepairAction(
        "Send to Shopify again", "Send this change to Shopify's store credit again?"
    ),
}


@bp.get("/app/reconciliation")
@staff_page
def reconciliation() -> ResponseReturnValue:
    """Recent runs, the findings (open, resolved or all; of one kind or any) and the actions
    on them."""
    staff: StaffSession = g.staff
    session = current_session()
    asked = {name: request.args.get(name, "") for name in ("status", "kind")}
    recent, _ = runs.list_runs(session, staff.shop.id, limit=RUNS_SHOWN)
    shown: dict[str, Any] = {
        "runs": recent,
        "asked": asked,
        "tabs": FINDING_TABS,
        "kinds": FINDING_KINDS,
        "repairs": REPAIR_ACTIONS,
        "note_length": findings.NOTE_LENGTH,
    }
    try:
        status = admin_api.choice("status", tuple(tab for tab, _ in FINDING_TABS)) or "open"
        kind = admin_api.choice("kind", findings.KINDS)
        after = _after_id()
    except APIError as error:
        return render_page(
            "app/reconciliation.html", title="Reconciliation", status=400, error=error, **shown
        )
    found, last = findings.list_findings(
        session,
        staff.shop.id,
        status=None if status == "all" else status,
        kind=kind,
        after=after,
        limit=FINDINGS_PER_PAGE,
    )
    here = {"status": status, "kind": kind}
    return render_page(
        "app/reconciliation.html",
        title="Reconciliation",
        error=None,
        status_shown=status,
        findings=found,
        paged=after is not None,
        next_url=None if last is None else app_url("/app/reconciliation", **here, after=last),
        first_url=app_url("/app/reconciliation", **here),
        **shown,
    )


def _after_id() -> int | None:
    """The findings page cursor: the last finding id already shown."""
    raw = request.args.get("after", "")
    if not raw:
        return None
    if raw.isascii() and raw.isdigit() and 0 < int(raw) <= admin_api.MAX_ID:
        return int(raw)
    raise APIError(400, "invalid_cursor", "That page link is not one we made.", parameter="after")


# -- Settings --------------------------------------------------------------------------------


@bp.get("/app/settings")
@staff_page
def settings() -> ResponseReturnValue:
    """The shop's settings and its issuance presets, each form sent to the settings API."""
    staff: StaffSession = g.staff
    return render_page(
        "app/settings.html",
        title="Settings",
        settings=shop_settings.shop_settings(staff.shop),
        presets=presets.list_presets(current_session(), staff.shop.id),
        sources=[(source, source.capitalize()) for source in ISSUABLE_SOURCES],
        max_expiry_days=MAX_EXPIRY_DAYS,
        max_presets=presets.MAX_PRESETS,
        name_length=presets.NAME_LENGTH,
        reason_length=presets.REASON_LENGTH,
    )


# -- Audit log -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    label: str
    url: str
    filename: str
    testid: str


@bp.get("/app/audit")
@staff_page
def audit_log() -> ResponseReturnValue:
    """Who did what and when, filtered and paged (newest first), with the CSV exports."""
    staff: StaffSession = g.staff
    session = current_session()
    asked = {name: request.args.get(name, "") for name in AUDIT_FILTERS}
    shown: dict[str, Any] = {"asked": asked, "outcomes": audit.OUTCOMES}
    try:
        where = _audit_filter(_zone())
        before = admin_api.time_cursor(inputs.cursor_in("after"))
    except APIError as error:
        return render_page("app/audit.html", title="Audit log", status=400, error=error, **shown)
    rows, last = audit.audit_page(
        session, staff.shop.id, where, before=before, limit=AUDIT_PER_PAGE
    )
    kept = {name: value for name, value in asked.items() if value}
    after = None if last is None else inputs.cursor_out([iso(last[0]), last[1]])
    return render_page(
        "app/audit.html",
        title="Audit log",
        error=None,
        rows=[_audit_row(row) for row in rows],
        paged=before is not None,
        next_url=None if after is None else app_url("/app/audit", **kept, after=after),
        first_url=app_url("/app/audit", **kept),
        downloads=_downloads(staff, where),
        **shown,
    )


def _audit_filter(zone: ZoneInfo) -> audit.AuditFilter:
    """The page's filter: who, what and outcome read as the audit API reads them; ``from``
    and ``to`` as days of the shop (``to`` taking in all of its day), as the liability API
    reads them."""
    start = reports_api.instant_parameter("from", zone, reports_api.start_of_day)
    end = reports_api.instant_parameter("to", zone, reports_api.end_of_day)
    if start is not None and end is not None and start >= end:
        raise APIError(400, "invalid_parameter", "from must be before to.", parameter="from")
    return admin_api.audit_filter(start, end)


def _downloads(staff: StaffSession, where: audit.AuditFilter) -> list[Download]:
    """The audit log with this filter; the ledger of this period, whole and per currency
    customers hold credit in."""
    period = {"from": iso(where.start), "to": iso(where.end)}
    filtered = {"actor": where.actor, "action": where.action, "outcome": where.outcome} | period
    held = [
        row["currency"] for row in queries.outstanding_by_currency(current_session(), staff.shop.id)
    ]
    currencies = [staff.shop.currency, *sorted(set(held) - {staff.shop.currency})]
    ledger = [
        Download(
            f"Export ledger CSV ({currency})",
            _api_url("/api/ledger.csv", **period, currency=currency),
            f"ledger-{currency}.csv",
            f"export-ledger-{currency}",
        )
        for currency in currencies
    ]
    return [
        Download(
            "Export CSV",
            _api_url("/api/audit-log.csv", **filtered),
            "audit-log.csv",
            "export-audit",
        ),
        Download(
            "Export ledger CSV",
            _api_url("/api/ledger.csv", **period),
            "ledger.csv",
            "export-ledger",
        ),
        *ledger,
    ]


def _api_url(path: str, **params: str | None) -> str:
    given = {name: value for name, value in params.items() if value}
    return f"{path}?{urlencode(given)}" if given else path


def _audit_row(row: dict[str, Any]) -> dict[str, Any]:
    """An audit row with its details summarised on one line (the whole of them kept for a
    "More" when the line is cut)."""
    summary = _summary(row["details"] or {})
    whole = None
    if len(summary) > DETAILS_SHOWN:
        summary = summary[: DETAILS_SHOWN - 1] + "…"
        whole = json.dumps(row["details"], indent=2, sort_keys=True, ensure_ascii=False)
    return row | {"summary": summary, "whole_details": whole}


def _summary(details: dict[str, Any]) -> str:
    return " · ".join(f"{name}: {_compact(value)}" for name, value in _readable(details).items())


def _readable(details: dict[str, Any]) -> dict[str, Any]:
    """Ledger rows record ``amount`` in minor units beside its ``currency``: show it as money
    ("12.50"), as every other figure on the pages is."""
    amount, currency = details.get("amount"), details.get("currency")
    if type(amount) is int and isinstance(currency, str) and currency in CURRENCY_EXPONENTS:
        return details | {"amount": format_amount(amount, currency)}
    return details


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


# -- helpers ---------------------------------------------------------------------------------


def _zone() -> ZoneInfo:
    staff: StaffSession = g.staff
    return reports.zone_named(staff.shop.timezone)


def _local_day(at: datetime, zone: ZoneInfo) -> date:
    return at.astimezone(zone).date()
