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
from blueprints.errors import APIError
from blueprints.session_token import StaffSession, require_session_token
from blueprints.settings import current_settings
from extensions import current_session
from jobs import sync
from ledger import operations, privacy, queries
from ledger.book import Actor, Mirror
from ledger.kinds import LotSource
from ledger.money import Money, normalize_currency
from ledger.outbox import MIRRORED_KINDS
from ledger.views import Receipt
from models import Customer

bp = Blueprint("api", __name__)

ISSUABLE_SOURCES = {
    s.value for s in (LotSource.MANUAL, LotSource.GOODWILL, LotSource.CASHBACK, LotSource.MIGRATION)
}
MAX_SHOPIFY_ID = 2**63 - 1


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
        request.args.get("query", ""),
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
    if source not in ISSUABLE_SOURCES:
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


def _ledger_cursor(value: Any) -> tuple[str, str] | None:
    """A ledger cursor is [created_at with a zone, entry UUID]; anything else is a 400."""
    if value is None:
        return None
    try:
        at, entry_id = value
        if datetime.fromisoformat(at.replace("Z", "+00:00")).tzinfo is None:
            raise ValueError(at)
        uuid.UUID(entry_id)
    except (TypeError, ValueError, AttributeError):
        raise APIError(400, "invalid_cursor", "The cursor is not one this API gave out.") from None
    return at, entry_id


def _shopify_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_SHOPIFY_ID:
        raise APIError(404, "customer_not_found", "No such customer.")
    return int(raw)


def _customer(raw: str) -> Customer:
    customer = queries.find_customer_row(current_session(), _staff().shop.id, _shopify_id(raw))
    if customer is None:
        raise APIError(404, "customer_not_found", "No such customer.")
    return customer


def _created(receipt: Receipt) -> tuple[Response, int]:
    if _staff().shop.native_sync and receipt.entry["kind"] in MIRRORED_KINDS:
        sync.enqueue(current_settings(), receipt.entry["id"])  # after the commit; never raises
    response = jsonify(entry=receipt.entry, lot=receipt.lot, account=receipt.account)
    if receipt.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response, 201
