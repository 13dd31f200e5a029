"""Helpers for the admin API tests: a signed-in client with every method, audit-row reads."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from werkzeug.test import TestResponse

from extensions import db
from models import AuditLog
from tests.api.helpers import Api

STAFF = "8410000042"
OTHER_STAFF = "8410000099"


@dataclass
class AdminApi(Api):
    """tests.api's client, with PUT, DELETE and raw bodies too."""

    def put(self, path: str, body: Any = None) -> TestResponse:
        return self.client.put(path, json=body, headers=self.headers())

    def delete(self, path: str) -> TestResponse:
        return self.client.delete(path, headers=self.headers())

    def send(self, method: str, path: str, data: bytes, content_type: str) -> TestResponse:
        return self.client.open(
            path, method=method, data=data, content_type=content_type, headers=self.headers()
        )

    @property
    def actor(self) -> str:
        return f"staff:{self.sub}"


def audit_rows(shop_id: int, action: str | None = None) -> list[AuditLog]:
    """The shop's audit rows (of ``action``), oldest first."""
    db.session.expire_all()
    stmt = select(AuditLog).where(AuditLog.shop_id == shop_id)
    if action is not None:
        stmt = stmt.where(AuditLog.action == action)
    return list(db.session.scalars(stmt.order_by(AuditLog.id)))


def csv_rows(response: TestResponse) -> list[dict[str, str]]:
    """A CSV download parsed by the csv module, one dict per row."""
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
