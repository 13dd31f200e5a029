"""One JSON error envelope for the whole app, and the map from domain errors to statuses.

``{"error": {"code": "<snake_case>", "message": "<sentence>", "details": {...}}}``
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from ledger import errors as ledger_errors

log = logging.getLogger(__name__)

STATUS_OF: dict[type[ledger_errors.LedgerError], int] = {
    ledger_errors.InvalidAmount: 422,
    ledger_errors.UnknownCurrency: 422,
    ledger_errors.CurrencyMismatch: 422,
    ledger_errors.InvalidExpiry: 422,
    ledger_errors.InsufficientFunds: 422,
    ledger_errors.AccountNotFound: 404,
    ledger_errors.LotNotFound: 404,
    ledger_errors.EntryNotFound: 404,
    ledger_errors.LotNotActive: 409,
    ledger_errors.NothingToReverse: 409,
    ledger_errors.IdempotencyConflict: 409,
    ledger_errors.PresetNotFound: 404,
    ledger_errors.FindingNotFound: 404,
    ledger_errors.RunNotFound: 404,
    ledger_errors.PresetNameTaken: 409,
    ledger_errors.PresetLimitReached: 409,
    ledger_errors.FindingResolved: 409,
    ledger_errors.NotRepairable: 409,
}


class APIError(Exception):
    """An error the edge raises itself (bad input, missing auth, unknown record)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.details = details


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(APIError)
    def api_error(error: APIError) -> Response:
        response = error_response(error.status, error.code, error.message, error.details)
        response.headers.update(error.headers)
        return response

    @app.errorhandler(ledger_errors.LedgerError)
    def ledger_error(error: ledger_errors.LedgerError) -> Response:
        status = STATUS_OF.get(type(error), 422)
        return error_response(status, error.code, error.message, error.details)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = (error.name or "error").lower().replace(" ", "_")
        response = error_response(status, code, error.description or error.name)
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "Something went wrong on our side.")
