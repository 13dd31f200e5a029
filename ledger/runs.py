"""Reconciliation runs, read for the merchant: newest first, in keyset pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from ledger.errors import RunNotFound
from ledger.views import iso
from models import ReconciliationRun


def run_json(run: ReconciliationRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "kind": run.kind,
        "state": run.state,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "accounts_checked": run.accounts_checked,
        "entries_checked": run.entries_checked,
        "native_checked": run.native_checked,
        "findings_opened": run.findings_opened,
        "findings_resolved": run.findings_resolved,
        "repairs": run.repairs,
        "error": run.error,
    }


Cursor = tuple[datetime, int]


def list_runs(
    session: Session, shop_id: int, *, before: Cursor | None = None, limit: int = 50
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """A page of the shop's runs, newest first; ``before`` is the (started_at, id) of the last
    run already seen. Returns the page and the cursor of the next (None: no more)."""
    stmt = (
        select(ReconciliationRun)
        .where(ReconciliationRun.shop_id == shop_id)
        .order_by(ReconciliationRun.started_at.desc(), ReconciliationRun.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        stmt = stmt.where(tuple_(ReconciliationRun.started_at, ReconciliationRun.id) < before)
    runs = list(session.scalars(stmt))
    more = len(runs) > limit
    runs = runs[:limit]
    last = runs[-1] if more else None
    return [run_json(run) for run in runs], (None if last is None else (last.started_at, last.id))


def get_run(session: Session, shop_id: int, run_id: int) -> ReconciliationRun:
    """Raises RunNotFound for another shop's run as for one that does not exist."""
    run = session.execute(
        select(ReconciliationRun).where(
            ReconciliationRun.shop_id == shop_id, ReconciliationRun.id == run_id
        )
    ).scalar_one_or_none()
    if run is None:
        raise RunNotFound("No such reconciliation run.", run_id=run_id)
    return run
