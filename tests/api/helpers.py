"""Helpers for the API tests: a client signed in as a shop's staff, row counts, error checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from models import (
    AuditLog,
    CreditAccount,
    CreditLot,
    Customer,
    EntryAllocation,
    IdempotencyKey,
    LedgerEntry,
    Shop,
)
from tests.conftest import auth

STAFF_ID = "8410000042"
COUNTED = {
    "customers": Customer,
    "credit_accounts": CreditAccount,
    "credit_lots": CreditLot,
    "ledger_entries": LedgerEntry,
    "entry_allocations": EntryAllocation,
    "audit_log": AuditLog,
    "idempotency_keys": IdempotencyKey,
}


def row_counts(shop_id: int) -> dict[str, int]:
    """How many rows each shop-scoped table holds for ``shop_id``."""
    from extensions import db

    return {
        name: db.session.execute(
            select(func.count()).select_from(model).where(model.shop_id == shop_id)
        ).scalar_one()
        for name, model in COUNTED.items()
    }


def assert_error(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    """The response is CONTRACT.md's error envelope with ``status`` and ``code``."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], dict)
    return error


@dataclass
class Api:
    """The test client, signed in as staff member ``sub`` of ``shop``."""

    client: FlaskClient
    shop: Shop
    sub: str = STAFF_ID

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        headers = auth(self.shop.domain, sub=self.sub) | extra
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def get(self, path: str, **params: Any) -> TestResponse:
        return self.client.get(path, query_string=params, headers=self.headers())

    def post(self, path: str, body: Any = None, *, key: str | None = None) -> TestResponse:
        return self.client.post(path, json=body, headers=self.headers(key))

    def credit(
        self, customer: int | str, amount: str, currency: str = "USD", **fields: Any
    ) -> dict[str, Any]:
        """Issue credit and return the 201 body."""
        key = fields.pop("key", None)
        body = {"amount": amount, "currency": currency, "reason": "goodwill", **fields}
        response = self.post(f"/api/customers/{customer}/credits", body, key=key)
        assert response.status_code == 201, response.get_data(as_text=True)
        result: dict[str, Any] = response.get_json()
        return result

    def debit(self, customer: int | str, amount: str, currency: str = "USD") -> TestResponse:
        body = {"amount": amount, "currency": currency, "reason": "correction"}
        return self.post(f"/api/customers/{customer}/debits", body)
