"""The merchant's JSON API for the ledger, behind Shopify session tokens.

Each view reads and checks its input, calls one ledger function, and shapes the answer.
``{customer_id}`` is always the Shopify numeric customer id; a customer of another shop is a
404 exactly like one that does not exist.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from blueprints import inputs
from blueprints.downloads import csv_download
from blueprints.errors import APIError
from blueprints.session_token import StaffSession, require_session_token
from blueprints.settings import current_settings
from extensions import current_session
from jobs import sync
from jobs.bulk import enqueue_bulk_issue
from ledger import bulk, operations, privacy, queries
from ledger.book import Actor, Mirror
from ledger.kinds import LotSource
from ledger.money import Money, normalize_currency
from ledger.outbox import MIRRORED_KINDS
from ledger.views import Receipt
from models import BulkImport, Customer

bp = Blueprint("api", __name__)

ISSUABLE_SOURCES = {
    s.value for s in (LotSource.MANUAL, LotSource.GOODWILL, LotSource.CASHBACK, LotSource.MIGRATION)
}
MAX_SHOPIFY_ID = 2**63 - 1
# A CSV upload may come as text/csv (or as a browser labels a .csv file).
CSV_TYPES = {"text/csv", "application/csv", "text/plain"}
UPLOAD_OVERHEAD = 64 * 1024  # multipart boundaries and headers around the file


@bp.get("/customers")
@require_session_token
def list_customers() -> Response:
    after = inputs.cursor_in()
    # bool is an int; and an id past BIGINT is none we gave out (and would overflow the query).
    if after is not None and (type(after) is not int or not 0 <= after <= MAX_SHOPIFY_ID):
        raise APIError(400, "invalid_cursor", "The cursor is not one this API gave out.")
    page, last = queries.search_customers(
        current_session(),
        _staff().shop.id,
        _search_text(),
        after=after,
        limit=inputs.page_size(),
    )
    return jsonify(customers=page, next_cursor=None if last is None else inputs.cursor_out(last))


@bp.get("/customers/<customer_id>")
@require_session_token
def show_customer(customer_id: str) -> Response:
    return jsonify(queries.customer_detail(current_session(), _customer(customer_id)))


@bp.get("/customers/<customer_id>/ledger")
@require_session_token
def customer_ledger(customer_id: str) -> Response:
    customer = _customer(customer_id)
    currency = request.args.get("currency")
    before = _ledger_cursor(inputs.cursor_in())
    entries, last = queries.ledger_page(
        current_session(),
        customer,
        currency=normalize_currency(currency) if currency else None,
        before=before,
        limit=inputs.page_size(),
    )
    return jsonify(entries=entries, next_cursor=None if last is None else inputs.cursor_out(last))


@bp.post("/customers/<customer_id>/credits")
@require_session_token
def issue_credit(customer_id: str) -> tuple[Response, int]:
    shopify_id = _shopify_id(customer_id)
    body = inputs.json_body({"amount", "currency", "reason"}, {"expires_at", "note", "source"})
    source = body.get("source", LotSource.MANUAL.value)
    if not isinstance(source, str) or source not in ISSUABLE_SOURCES:  # a list is unhashable
        raise APIError(
            422,
            "invalid_field",
            f"source must be one of {sorted(ISSUABLE_SOURCES)}.",
            field="source",
        )
    amount, by = inputs.money(body), _actor(body)
    receipt = operations.issue(
        current_session(),
        by,
        customer=shopify_id,
        amount=amount,
        expires_at=inputs.timestamp(body, "expires_at"),
        source=LotSource(source),
        note=inputs.text(body, "note", max_length=1000),
        expires_in_days=_default_expiry_days(body),
    )
    return _created(receipt)


@bp.post("/customers/<customer_id>/debits")
@require_session_token
def debit_credit(customer_id: str) -> tuple[Response, int]:
    customer = _customer(customer_id)
    body = inputs.json_body({"amount", "currency", "reason"}, {"note"})
    amount, by = inputs.money(body), _actor(body)
    receipt = operations.adjust(
        current_session(),
        by,
        customer=customer.shopify_customer_id,
        amount=Money(-amount.minor, amount.currency),
        note=inputs.text(body, "note", max_length=1000),
    )
    return _created(receipt)


@bp.post("/lots/<lot_id>/revoke")
@require_session_token
def revoke_lot(lot_id: str) -> tuple[Response, int]:
    try:
        lot = uuid.UUID(lot_id)
    except ValueError:
        raise APIError(404, "lot_not_found", "No such credit lot.") from None
    body = inputs.json_body({"reason"}, {"note"})
    receipt = operations.revoke(
        current_session(), _actor(body), lot_id=lot, note=inputs.text(body, "note", max_length=1000)
    )
    return _created(receipt)


@bp.get("/data-requests")
@require_session_token
def list_data_requests() -> Response:
    """Customers' data requests (customers/data_request), for the merchant to hand over."""
    return jsonify(data_requests=privacy.data_requests(current_session(), _staff().shop.id))


@bp.get("/data-requests/<request_id>")
@require_session_token
def download_data_request(request_id: str) -> Response:
    """One customer's data export as a JSON file; each download is audited."""
    staff = _staff()
    export = None
    if request_id.isascii() and request_id.isdigit() and int(request_id) <= MAX_SHOPIFY_ID:
        export = privacy.download_data_request(
            current_session(), staff.shop.id, int(request_id), staff.actor, datetime.now(UTC)
        )
    if export is None:
        raise APIError(404, "data_request_not_found", "No such data request.")
    response = jsonify(export)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="customer-{export["customer_id"]}-data.json"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


# -- bulk imports: a CSV of credits, checked whole, then issued by the bulk job ---------------


@bp.post("/bulk-imports")
@require_session_token
def create_bulk_import() -> tuple[Response, int]:
    """Upload a CSV (multipart field ``file``, or a text/csv body): answers the dry-run report
    with the import, stored ``validated`` or ``invalid`` (201); the same file again answers
    the import it already is (200). A file that cannot be read at all is a 422, storing nothing.
    """
    data, filename = _uploaded_csv()
    staff = _staff()
    try:
        created = bulk.create_import(
            current_session(),
            staff.shop,
            data,
            filename=filename,
            actor=staff.actor,
            now=datetime.now(UTC),
        )
    except bulk.FileRejected as rejected:
        error = rejected.error
        raise APIError(
            422, error.code, error.message, **error.details, report=rejected.report.to_json()
        ) from None
    body = jsonify(bulk_import=bulk.import_json(created.bulk_import))
    return body, 201 if created.created else 200


@bp.get("/bulk-imports")
@require_session_token
def list_bulk_imports() -> Response:
    """The shop's imports, newest first (without their reports)."""
    found = bulk.list_imports(
        current_session(), _staff().shop.id, limit=inputs.page_size(default=20, maximum=100)
    )
    return jsonify(bulk_imports=[bulk.import_json(each, with_report=False) for each in found])


@bp.get("/bulk-imports/<import_id>")
@require_session_token
def show_bulk_import(import_id: str) -> Response:
    """State and progress (rows issued, failed, pending; percent) with the report."""
    return jsonify(bulk_import=bulk.import_json(_bulk_import(import_id)))


@bp.post("/bulk-imports/<import_id>/start")
@require_session_token
def start_bulk_import(import_id: str) -> tuple[Response, int]:
    """Confirm a validated import: the bulk job issues its rows (inline without Redis), 202
    while it runs. Starting again resumes a failed import and changes nothing otherwise."""
    staff = _staff()
    found = _bulk_import(import_id)
    try:
        started = bulk.start_import(
            current_session(), staff.shop.id, found.id, actor=staff.actor, now=datetime.now(UTC)
        )
    except bulk.NotStartable as refused:
        raise APIError(409, "bulk_import_invalid", str(refused), state=refused.state) from None
    job = "none"
    if started.state != "finished":
        job = enqueue_bulk_issue(current_settings(), found.id)
    current_session().refresh(started)  # an inline run wrote through sessions of its own
    body = jsonify(bulk_import=bulk.import_json(started), job=job)
    return body, 200 if started.state == "finished" else 202


@bp.get("/bulk-imports/<import_id>/result")
@require_session_token
def bulk_import_result(import_id: str) -> Response:
    """Each row of the file and what became of it (entry id, or why it failed), as CSV."""
    found = _bulk_import(import_id)
    if found.state == "invalid":
        raise APIError(
            409,
            "bulk_import_invalid",
            "This file did not pass the check, so no row was issued: see the report's errors.",
            state=found.state,
        )
    found_id = found.id  # read now: the stream runs after the request ends
    return csv_download(  # never cached: emails are personal data
        f"bulk-import-{found_id}-result.csv",
        lambda session: bulk.result_csv(session, found_id),
    )


# -- helpers --------------------------------------------------------------------------------


def _staff() -> StaffSession:
    staff: StaffSession = g.staff
    return staff


def _actor(body: dict[str, Any]) -> Actor:
    """Who is acting (the staff member of the session token), now, why, under which key."""
    staff = _staff()
    return Actor(
        shop_id=staff.shop.id,
        now=datetime.now(UTC),
        actor=staff.actor,
        reason=inputs.text(body, "reason", max_length=255, required=True) or "",
        idempotency_key=inputs.idempotency_key(),
        # The merchant's changes are mirrored into Shopify's native store credit (an outbox
        # row in the entry's transaction) unless the shop keeps its credit in CreditCraft only.
        mirror=Mirror(notify=staff.shop.notify_customer) if staff.shop.native_sync else None,
    )


def _default_expiry_days(body: dict[str, Any]) -> int | None:
    """The shop's default expiry applies when the body says nothing of ``expires_at``; an
    explicit ``"expires_at": null`` issues credit that never expires."""
    return None if "expires_at" in body else _staff().shop.default_expiry_days


def _ledger_cursor(value: Any) -> tuple[str, str] | None:
    """A ledger cursor is [created_at with a zone, entry UUID]; anything else is a 400."""
    if value is None:
        return None
    try:
        at, entry_id = value
        parsed = inputs.utc_time(at.replace("Z", "+00:00"))
        if parsed is None:
            raise ValueError(at)
        uuid.UUID(entry_id)
    except (TypeError, ValueError, AttributeError):
        raise APIError(400, "invalid_cursor", "The cursor is not one this API gave out.") from None
    return parsed.isoformat(), entry_id


def _shopify_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_SHOPIFY_ID:
        raise APIError(404, "customer_not_found", "No such customer.")
    return int(raw)


def _customer(raw: str) -> Customer:
    customer = queries.find_customer_row(current_session(), _staff().shop.id, _shopify_id(raw))
    if customer is None:
        raise APIError(404, "customer_not_found", "No such customer.")
    return customer


def _uploaded_csv() -> tuple[bytes, str | None]:
    """The uploaded file's bytes and name; refused before it is read when too large (413)."""
    request.max_content_length = bulk.MAX_FILE_BYTES + UPLOAD_OVERHEAD
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise APIError(400, "missing_file", 'Send the CSV as the multipart field "file".')
        return upload.read(), _file_name(upload.filename)
    if request.mimetype in CSV_TYPES:
        return request.get_data(cache=False), _file_name(request.args.get("filename"))
    raise APIError(
        415,
        "unsupported_media_type",
        'Send the CSV as multipart/form-data (field "file") or as a text/csv body.',
    )


def _file_name(raw: str | None) -> str | None:
    """The upload's name, only ever shown: NUL, which PostgreSQL text cannot hold, is dropped."""
    return raw.replace("\x00", "") if raw else None


def _search_text() -> str:
    query = request.args.get("query", "")
    if not inputs.storable(query):  # it could match nothing, and PostgreSQL refuses it
        raise APIError(400, "invalid_query", "query must not contain NUL characters.")
    return query


def _bulk_import(raw: str) -> BulkImport:
    if raw.isascii() and raw.isdigit() and int(raw) <= MAX_SHOPIFY_ID:
        try:
            return bulk.find_import(current_session(), _staff().shop.id, int(raw))
        except bulk.ImportNotFound:
            pass
    raise APIError(404, "bulk_import_not_found", "No such bulk import.")


def _created(receipt: Receipt) -> tuple[Response, int]:
    if _staff().shop.native_sync and receipt.entry["kind"] in MIRRORED_KINDS:
        sync.enqueue(current_settings(), receipt.entry["id"])  # after the commit; never raises
    response = jsonify(entry=receipt.entry, lot=receipt.lot, account=receipt.account)
    if receipt.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response, 201
