"""The merchant's JSON API behind the admin pages: reconciliation, settings, presets, the audit
log and the ledger's CSV export (mounted under ``/api``).

Each view reads and checks its input, calls the domain, and shapes the answer; every change
is audited in the name of the staff member behind the session token (``g.staff.actor``), and
refusals are audited as failures by the domain. Lists are keyset-paginated (``cursor`` and
``limit``, as the customer routes), newest first; another shop's record is a 404 exactly like
one that does not exist.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from blueprints import inputs
from blueprints.downloads import csv_download
from blueprints.errors import APIError
from blueprints.session_token import StaffSession, require_session_token
from blueprints.settings import current_settings
from extensions import current_session
from jobs import reconcile as reconcile_jobs
from ledger import audit, findings, presets, repairs, runs, shop_settings
from ledger.export import LedgerRange, ledger_csv_rows
from ledger.money import normalize_currency
from ledger.views import iso

bp = Blueprint("admin_api", __name__)

MAX_ID = 2**63 - 1
FINDING_STATUSES = ("open", "resolved")
# A job outcome that means the work will not happen unless asked again.
NOT_QUEUED = ("redis_unavailable",)


# -- reconciliation runs -----------------------------------------------------------------------


@bp.get("/reconciliation/runs")
@require_session_token
def list_runs() -> Response:
    page, last = runs.list_runs(
        current_session(),
        _staff().shop.id,
        before=time_cursor(inputs.cursor_in()),
        limit=inputs.page_size(),
    )
    return jsonify(runs=page, next_cursor=time_cursor_out(last))


@bp.get("/reconciliation/runs/<run_id>")
@require_session_token
def show_run(run_id: str) -> Response:
    found = runs.get_run(current_session(), _staff().shop.id, _id(run_id, "run_not_found"))
    return jsonify(run=runs.run_json(found))


@bp.post("/reconciliation/runs")
@require_session_token
def start_run() -> tuple[Response, int]:
    """Reconcile the shop now (``{"full": true}``: the ledger from genesis): 202 with what was
    queued; without Redis the run happens inline and its row is in the answer."""
    body = inputs.json_object() if request.content_length else {}
    unknown = sorted(set(body) - {"full"})
    if unknown:
        raise APIError(400, "unknown_field", f"Unknown field: {unknown[0]}.", fields=unknown)
    full = body.get("full", False)
    if type(full) is not bool:
        raise APIError(422, "invalid_field", "full must be true or false.", field="full")
    staff, session = _staff(), current_session()
    session.commit()  # an inline run works through sessions and commits of its own
    job = reconcile_jobs.enqueue_reconcile(current_settings(), staff.shop.id, full=full)
    details = {"full": full, "job": job}
    failure = _queue_failure(job)
    audit.record(
        session,
        staff.shop.id,
        staff.actor,
        "reconciliation.start",
        audit.Target("shop", str(staff.shop.id)),
        _now(),
        details,
        failure=failure,
    )
    session.commit()
    if failure is not None:
        raise APIError(503, failure.code, failure.message, job=job)
    latest, _ = runs.list_runs(session, staff.shop.id, limit=1)
    return jsonify(job=job, full=full, run=latest[0] if latest else None), 202


# -- reconciliation findings -------------------------------------------------------------------


@bp.get("/reconciliation/findings")
@require_session_token
def list_findings() -> Response:
    status = choice("status", FINDING_STATUSES)
    kind = choice("kind", findings.KINDS)
    after = inputs.cursor_in()
    if after is not None and (type(after) is not int or not 0 < after <= MAX_ID):
        raise _bad_cursor()
    page, last = findings.list_findings(
        current_session(),
        _staff().shop.id,
        status=status,
        kind=kind,
        after=after,
        limit=inputs.page_size(),
    )
    return jsonify(findings=page, next_cursor=None if last is None else inputs.cursor_out(last))


@bp.get("/reconciliation/findings/<finding_id>")
@require_session_token
def show_finding(finding_id: str) -> Response:
    found = findings.get_finding(current_session(), _staff().shop.id, _finding_id(finding_id))
    return jsonify(finding=findings.finding_json(found))


@bp.post("/reconciliation/findings/<finding_id>/repair")
@require_session_token
def repair_finding(finding_id: str) -> tuple[Response, int]:
    """Repair the finding as auto-repair would. 200 when it is resolved by the answer (an
    import, or a job run inline); 202 while a job finishes it (``job`` says what was queued);
    409 ``not_repairable`` for chain breaks and the other kinds nothing can repair."""
    staff, session = _staff(), current_session()
    wanted = _finding_id(finding_id)
    repair = repairs.start_repair(session, staff.shop.id, wanted, actor=staff.actor, now=_now())
    job = None
    if repair.pending:
        job = reconcile_jobs.enqueue_repair(current_settings(), staff.shop.id, wanted, staff.actor)
        if job in NOT_QUEUED and repair.method == findings.SYNC_ORDER:
            _refuse_unqueued(staff, wanted, job)  # nothing else would ever sync the order
    found = findings.get_finding(session, staff.shop.id, wanted)  # as the repair left it
    body = jsonify(finding=findings.finding_json(found), repair=repair.to_json(), job=job)
    return body, 200 if found.resolved_at is not None else 202


@bp.post("/reconciliation/findings/<finding_id>/resolve")
@require_session_token
def resolve_finding(finding_id: str) -> Response:
    """Mark the finding resolved with ``{"note": "..."}`` (required, ≤ 1000 characters)."""
    staff = _staff()
    wanted = _finding_id(finding_id)
    body = inputs.json_body({"note"})
    note = inputs.text(body, "note", max_length=findings.NOTE_LENGTH, required=True) or ""
    resolved = findings.resolve_finding(
        current_session(), staff.shop.id, wanted, note=note, actor=staff.actor, now=_now()
    )
    return jsonify(finding=findings.finding_json(resolved))


# -- settings ----------------------------------------------------------------------------------


@bp.get("/settings")
@require_session_token
def show_settings() -> Response:
    return jsonify(settings=shop_settings.shop_settings(_staff().shop))


@bp.put("/settings")
@require_session_token
def update_settings() -> Response:
    """Change any of the settings; an unknown one or a bad value is a 422 naming it, and
    nothing is changed."""
    staff = _staff()
    changed = shop_settings.update_settings(
        current_session(), staff.shop.id, inputs.json_object(), actor=staff.actor, now=_now()
    )
    return jsonify(settings=changed)


# -- issuance presets --------------------------------------------------------------------------


@bp.get("/presets")
@require_session_token
def list_presets() -> Response:
    return jsonify(presets=presets.list_presets(current_session(), _staff().shop.id))


@bp.post("/presets")
@require_session_token
def create_preset() -> tuple[Response, int]:
    staff = _staff()
    created = presets.create_preset(
        current_session(), staff.shop.id, inputs.json_object(), actor=staff.actor, now=_now()
    )
    return jsonify(preset=created), 201


@bp.put("/presets/<preset_id>")
@require_session_token
def update_preset(preset_id: str) -> Response:
    staff = _staff()
    wanted = _id(preset_id, "preset_not_found")
    body = inputs.json_object()
    updated = presets.update_preset(
        current_session(), staff.shop.id, wanted, body, actor=staff.actor, now=_now()
    )
    return jsonify(preset=updated)


@bp.delete("/presets/<preset_id>")
@require_session_token
def delete_preset(preset_id: str) -> Response:
    staff = _staff()
    wanted = _id(preset_id, "preset_not_found")
    presets.delete_preset(current_session(), staff.shop.id, wanted, actor=staff.actor, now=_now())
    return Response(status=204)


# -- the audit log and the ledger export ---------------------------------------------------------


@bp.get("/audit-log")
@require_session_token
def audit_log() -> Response:
    page, last = audit.audit_page(
        current_session(),
        _staff().shop.id,
        audit_filter(*_time_range()),
        before=time_cursor(inputs.cursor_in()),
        limit=inputs.page_size(),
    )
    return jsonify(audit_log=page, next_cursor=time_cursor_out(last))


@bp.get("/audit-log.csv")
@require_session_token
def audit_log_csv() -> Response:
    """The filtered audit log as CSV, newest first, streamed; the export is audited."""
    shop_id, where = _staff().shop.id, audit_filter(*_time_range())
    details = {
        "actor": where.actor,
        "action": where.action,
        "outcome": where.outcome,
        "from": iso(where.start),
        "to": iso(where.end),
    }
    _record_export("audit_log.export", "audit_log", details)
    return csv_download(
        "audit-log.csv", lambda session: audit.audit_csv_rows(session, shop_id, where)
    )


@bp.get("/ledger.csv")
@require_session_token
def ledger_csv() -> Response:
    """Every ledger entry created in ``[from, to)`` (in ``currency``, if given), oldest first,
    streamed as CSV; the export is audited with who asked for which range."""
    shop_id = _staff().shop.id
    start, end = _time_range()
    currency = request.args.get("currency")
    within = LedgerRange(start, end, normalize_currency(currency) if currency else None)
    _record_export("ledger.export", "ledger", within.to_json())
    return csv_download("ledger.csv", lambda session: ledger_csv_rows(session, shop_id, within))


# -- helpers -------------------------------------------------------------------------------------


def _staff() -> StaffSession:
    staff: StaffSession = g.staff
    return staff


def _now() -> datetime:
    return datetime.now(UTC)


def _id(raw: str, not_found: str) -> int:
    """A numeric path id; anything else names no record (404 with ``not_found`` as code)."""
    if raw.isascii() and raw.isdigit() and 0 < int(raw) <= MAX_ID:
        return int(raw)
    raise APIError(404, not_found, "No such record.")


def _finding_id(raw: str) -> int:
    return _id(raw, "finding_not_found")


def choice(name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.args.get(name) or None
    if value is not None and value not in allowed:
        raise APIError(
            400,
            "invalid_parameter",
            f"{name} must be one of {', '.join(allowed)}.",
            parameter=name,
        )
    return value


def _text_parameter(name: str, max_length: int = 255) -> str | None:
    value = request.args.get(name) or None
    if value is not None and (len(value) > max_length or not inputs.storable(value)):
        raise APIError(
            400,
            "invalid_parameter",
            f"{name} must be at most {max_length} characters, without NUL.",
            parameter=name,
        )
    return value


def _time_range() -> tuple[datetime | None, datetime | None]:
    """``from`` (inclusive) and ``to`` (exclusive), each an ISO-8601 time with a zone or a
    date (UTC); a date ``to`` includes its whole day."""
    start = _time_parameter("from", end_of_day=False)
    end = _time_parameter("to", end_of_day=True)
    if start is not None and end is not None and start >= end:
        raise APIError(400, "invalid_parameter", "from must be before to.", parameter="from")
    return start, end


def _time_parameter(name: str, *, end_of_day: bool) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        if len(raw) == len("YYYY-MM-DD"):
            day = date.fromisoformat(raw)
            at = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return at + timedelta(days=1) if end_of_day else at
    except (ValueError, OverflowError):  # not a date, or the day after 9999-12-31
        pass
    parsed = inputs.utc_time(raw)
    if parsed is None:
        raise APIError(
            400,
            "invalid_parameter",
            f"{name} must be a date (YYYY-MM-DD) or an ISO-8601 time with a zone.",
            parameter=name,
        )
    return parsed


def audit_filter(start: datetime | None, end: datetime | None) -> audit.AuditFilter:
    """The query's actor, action and outcome, within [start, end) (each None: any). The audit
    page (blueprints/report_pages.py) reads its filter with it too, its days the shop's."""
    return audit.AuditFilter(
        actor=_text_parameter("actor"),
        action=_text_parameter("action", max_length=64),
        outcome=choice("outcome", audit.OUTCOMES),
        start=start,
        end=end,
    )


def time_cursor(value: Any) -> tuple[datetime, int] | None:
    """A [time with a zone, id] cursor this API gave out; anything else is a 400."""
    if value is None:
        return None
    try:
        at, row_id = value
        parsed = inputs.utc_time(at)
        if parsed is None or type(row_id) is not int or not 0 < row_id <= MAX_ID:
            raise ValueError(value)
    except (TypeError, ValueError, AttributeError):
        raise _bad_cursor() from None
    return parsed, row_id


def time_cursor_out(last: tuple[datetime, int] | None) -> str | None:
    return None if last is None else inputs.cursor_out([iso(last[0]), last[1]])


def _bad_cursor() -> APIError:
    return APIError(400, "invalid_cursor", "The cursor is not one this API gave out.")


def _queue_failure(job: str) -> audit.Failure | None:
    if job not in NOT_QUEUED:
        return None
    return audit.Failure("queue_unavailable", "The job queue is unavailable; try again shortly.")


def _refuse_unqueued(staff: StaffSession, finding_id: int, job: str) -> None:
    failure = _queue_failure(job)
    assert failure is not None
    session = current_session()
    target = audit.Target("finding", str(finding_id))
    details = {"job": job}
    actor = staff.actor
    audit.record(
        session, staff.shop.id, actor, repairs.REQUEST, target, _now(), details, failure=failure
    )
    session.commit()
    raise APIError(503, failure.code, failure.message, job=job)


def _record_export(action: str, target_type: str, details: dict[str, Any]) -> None:
    """Audit an export before its first byte: a download cut short was still asked for."""
    staff, session = _staff(), current_session()
    audit.record(
        session, staff.shop.id, staff.actor, action, audit.Target(target_type), _now(), details
    )
    session.commit()
