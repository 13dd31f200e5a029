"""The audit log: recording what staff did outside the ledger's own operations, and reading it.

Ledger operations write their audit rows themselves (ledger/transaction.py), in the same
statement as their entries. Everything else a merchant changes (settings, presets, findings,
exports, runs started) is recorded here with ``record``: success in the change's transaction,
failure (``refused``) after rolling the change back, so a refusal is on record even though
nothing changed.

Reading is for the merchant's audit-log page: newest first, filtered by actor, action,
outcome and time, in keyset pages (each an index scan; see models/records.py), and a CSV of
the same filters streamed from a server-side cursor.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, Select, insert, select, tuple_, type_coerce
from sqlalchemy.orm import Session

from ledger.errors import LedgerError
from ledger.export import STREAM_BATCH, drain, spreadsheet_safe, utc_iso
from ledger.views import iso
from models import AuditLog

OUTCOMES = ("success", "failure")
CSV_COLUMNS = (
    "created_at",
    "id",
    "actor",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "error_code",
    "details",
)


@dataclass(frozen=True)
class Target:
    """The record an audited action is about."""

    type: str
    id: str | None = None


@dataclass(frozen=True)
class Failure:
    """Why an audited action failed: the error code and message the caller was given."""

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, error: LedgerError) -> Failure:
        return cls(error.code, error.message, dict(error.details))


def storable(text: str) -> bool:
    """PostgreSQL text (and JSONB) holds neither NUL nor a lone surrogate, both of which JSON
    input can carry."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _stored(value: Any) -> Any:
    """``value`` with every string made storable (NUL and lone surrogates replaced): a refusal
    of unstorable input must still be recorded."""
    if isinstance(value, str):
        return value if storable(value) else _replaced(value)
    if isinstance(value, dict):
        return {_stored(str(key)): _stored(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_stored(item) for item in value]
    return value


def _replaced(text: str) -> str:
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def record(
    session: Session,
    shop_id: int,
    actor: str,
    action: str,
    target: Target,
    now: datetime,
    details: dict[str, Any] | None = None,
    *,
    failure: Failure | None = None,
) -> None:
    """Add an audit row to the session's transaction (the caller commits)."""
    if failure is not None:
        details = (details or {}) | {"message": failure.message, **failure.details}
    session.execute(
        insert(AuditLog).values(
            shop_id=shop_id,
            actor=actor,
            action=action,
            target_type=target.type,
            target_id=target.id,
            outcome="failure" if failure else "success",
            error_code=failure.code if failure else None,
            details=_stored(details or {}),
            created_at=now,
        )
    )


def refused(
    session: Session,
    shop_id: int,
    actor: str,
    action: str,
    target: Target,
    now: datetime,
    error: LedgerError,
    details: dict[str, Any] | None = None,
) -> LedgerError:
    """Roll back whatever the refused change did, commit its failure row; returns ``error``
    for the caller to raise (``raise refused(...)``)."""
    session.rollback()
    record(session, shop_id, actor, action, target, now, details, failure=Failure.of(error))
    session.commit()
    return error


# -- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """Which rows: each field None means any. ``start`` is inclusive, ``end`` exclusive."""

    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    start: datetime | None = None
    end: datetime | None = None


def audit_json(row: AuditLog) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": iso(row.created_at),
        "actor": row.actor,
        "action": row.action,
        "target_type": row.target_type,
        "target_id": row.target_id,
        "outcome": row.outcome,
        "error_code": row.error_code,
        "details": row.details,
    }


Cursor = tuple[datetime, int]


def audit_page(
    session: Session, shop_id: int, where: AuditFilter, *, before: Cursor | None, limit: int
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """A page of the shop's audit log, newest first; ``before`` is the (created_at, id) of the
    last row already seen. Returns the rows and the cursor of the next page (None: no more)."""
    stmt = _where(select(AuditLog), shop_id, where)
    stmt = stmt.order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
    if before is not None:
        stmt = stmt.where(tuple_(AuditLog.created_at, AuditLog.id) < before)
    rows = list(session.scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return [audit_json(row) for row in rows], (None if last is None else (last.created_at, last.id))


def audit_csv_rows(
    session: Session, shop_id: int, where: AuditFilter, *, batch: int = STREAM_BATCH
) -> Iterator[str]:
    """The filtered audit log as CSV text, newest first, ``batch`` rows at a time.

    One query on a server-side cursor, read through Core (see ledger/export.py): one
    consistent picture, memory flat however long.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    columns = (
        type_coerce(AuditLog.created_at, DateTime(timezone=True)),
        AuditLog.id,
        AuditLog.actor,
        AuditLog.action,
        AuditLog.target_type,
        AuditLog.target_id,
        AuditLog.outcome,
        AuditLog.error_code,
        AuditLog.details,
    )
    stmt = _where(select(*columns), shop_id, where)
    stmt = stmt.order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
    # Closed however the generator ends, a download cut short included (ledger/export.py).
    with session.connection().execute(stmt.execution_options(yield_per=batch)) as rows:
        for count, row in enumerate(rows, start=1):
            writer.writerow(_csv_cells(row))
            if count % batch == 0:
                yield drain(out)
    yield drain(out)


Selected = TypeVar("Selected", bound=Select[Any])


def _where(stmt: Selected, shop_id: int, where: AuditFilter) -> Selected:
    stmt = stmt.where(AuditLog.shop_id == shop_id)
    if where.actor is not None:
        stmt = stmt.where(AuditLog.actor == where.actor)
    if where.action is not None:
        stmt = stmt.where(AuditLog.action == where.action)
    if where.outcome is not None:
        stmt = stmt.where(AuditLog.outcome == where.outcome)
    if where.start is not None:
        stmt = stmt.where(AuditLog.created_at >= where.start)
    if where.end is not None:
        stmt = stmt.where(AuditLog.created_at < where.end)
    return stmt


def _csv_cells(row: Any) -> tuple[object, ...]:
    created_at, row_id, actor, action, target_type, target_id, outcome, error_code, details = row
    return (
        utc_iso(created_at),
        row_id,
        spreadsheet_safe(actor),
        spreadsheet_safe(action),
        target_type,
        spreadsheet_safe(target_id),
        outcome,
        error_code or "",
        spreadsheet_safe(json.dumps(details, sort_keys=True, separators=(",", ":"))),
    )
