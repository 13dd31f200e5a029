"""The bulk-issue job: issue a started import's rows, in parallel lanes, resumably.

``bulk_issue(import_id)`` runs on the ``bulk`` queue (the lowest priority: a worker takes any
webhook or sync first) under the job id ``bulk-import-<id>``, so a second enqueue while one is
waiting is a no-op. It is safe to run twice or at once: each lane claims its own batches of
rows (``FOR UPDATE SKIP LOCKED``), and every row is issued under its own idempotency key (see
ledger/bulk.py). A failure leaves the rows not yet recorded ``pending``: RQ's Retry runs the
job again, and it resumes where it stopped.

Lanes are threads, each with two connections of its own (one holds the batch's row locks, the
other commits rows through the ledger). A row costs four round trips to PostgreSQL, so one
lane mostly waits; a few lanes keep the database busy instead.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rq import Retry, get_current_job
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import tenancy
from blueprints.settings import current_settings
from config import Settings
from extensions import current_session
from jobs.queues import REDIS_DOWN, enqueue_unique, shared_queue
from ledger import bulk
from models import BulkImport

log = logging.getLogger(__name__)

QUEUE = "bulk"
RETRY = Retry(max=3, interval=[10, 60, 300])
# RQ's default (180 s) would kill a large import mid-way; a killed run resumes, but should not
# have to. The largest file (ledger.bulk.MAX_ROWS) takes about a minute or two.
JOB_TIMEOUT = 3600
LANES = 4

OnBatch = Callable[[bulk.Progress], None]


def job_id(import_id: int) -> str:
    return f"bulk-import-{import_id}"


def enqueue_bulk_issue(settings: Settings, import_id: int) -> str:
    """Have ``bulk_issue(import_id)`` run: ``enqueued``, ``already_queued`` (waiting or
    running), ``redis_unavailable`` (``sweep_bulk_imports`` enqueues it later), or, without
    REDIS_URL (``make run``), ``ran_inline`` / ``failed_inline`` in the caller's app context."""
    if settings.redis_url is None:
        try:
            bulk_issue(import_id)
        except Exception:
            log.exception("bulk import %d failed inline; start it again to resume", import_id)
            return "failed_inline"
        return "ran_inline"
    try:
        return enqueue_unique(
            shared_queue(settings.redis_url, QUEUE),
            bulk_issue,
            (import_id,),
            job_id=job_id(import_id),
            retry=RETRY,
            timeout=JOB_TIMEOUT,
            description=f"bulk import {import_id}",
        )
    except REDIS_DOWN as error:
        log.warning("bulk import %d not enqueued (Redis: %s); the sweeper will", import_id, error)
        return "redis_unavailable"


def sweep_bulk_imports() -> int:
    """Enqueue every import left ``issuing`` without a job (its enqueue was lost, or a run
    ended without finishing it); a job still waiting or running is left alone. Failed imports
    wait for the merchant to start them again. Returns how many were enqueued (or run)."""
    session = current_session()
    with tenancy.all_shops():
        ids = bulk.issuing_imports(session)
    settings = current_settings()
    outcomes = [enqueue_bulk_issue(settings, import_id) for import_id in ids]
    return sum(outcome in ("enqueued", "ran_inline") for outcome in outcomes)


def bulk_issue(
    import_id: int,
    now_iso: str | None = None,
    *,
    lanes: int = LANES,
    batch_size: int = bulk.BATCH_SIZE,
    on_batch: OnBatch | None = None,
) -> dict[str, Any]:
    """Issue every pending row of import ``import_id`` (started with ``start_import``).

    Each row is stamped with the time it is issued (``now_iso`` fixes it, for tests). Returns
    the progress at the end. On an error the import keeps the error's text (and turns
    ``failed`` after the last attempt) and the error is raised again for RQ's Retry. For the
    import's shop only (row-level security), in every lane.
    """
    fixed = datetime.fromisoformat(now_iso) if now_iso else None
    run = _Run(import_id, lambda: fixed or datetime.now(UTC), batch_size, on_batch)
    session = current_session()
    session.rollback()  # nothing of ours may be open while the lanes' sessions work
    owner = select(BulkImport.shop_id).where(BulkImport.id == import_id)
    with tenancy.shop(tenancy.shop_owning(session, owner)):
        return _issue(session, run, lanes)


def _issue(session: Session, run: _Run, lanes: int) -> dict[str, Any]:
    import_id = run.import_id
    try:
        bulk.read_progress(session, import_id)
    except bulk.ImportNotFound:  # erased with its shop meanwhile: nothing left to do
        log.warning("bulk import %d no longer exists", import_id)
        return {"import_id": import_id, "state": "not_found"}
    bind = session.get_bind()
    try:
        _run_lanes(bind, run, _lanes_for(bind, lanes))
    except Exception as error:
        bulk.record_failure(
            session, import_id, f"{type(error).__name__}: {error}", final=_last_attempt()
        )
        raise
    progress = bulk.read_progress(session, import_id)
    log.info(
        "bulk import %d %s: %d issued, %d failed, %d pending",
        import_id,
        progress.state,
        progress.issued_rows,
        progress.failed_rows,
        progress.pending_rows,
    )
    return {
        "import_id": import_id,
        "state": progress.state,
        "issued_rows": progress.issued_rows,
        "failed_rows": progress.failed_rows,
        "pending_rows": progress.pending_rows,
    }


def _lanes_for(bind: Any, wanted: int) -> int:
    """Parallel lanes need a pool to draw connections from and row locks to share work by:
    a PostgreSQL engine. Bound to one connection (a test's transaction), or on SQLite, one."""
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        return max(1, wanted)
    return 1


@dataclass(frozen=True)
class _Run:
    import_id: int
    clock: Callable[[], datetime]
    batch_size: int
    on_batch: OnBatch | None


def _run_lanes(bind: Any, run: _Run, lanes: int) -> None:
    if lanes == 1:
        _lane(bind, run)
        return
    errors: list[BaseException] = []

    def lane() -> None:
        try:
            _lane(bind, run)
        except BaseException as error:  # noqa: BLE001 - raised again once every lane is done
            errors.append(error)

    # Each lane in a copy of this context: a thread starts with an empty one, and the lanes'
    # sessions must see the shop (tenancy) the job runs for.
    threads = [
        threading.Thread(
            target=contextvars.copy_context().run, args=(lane,), name=f"bulk-{run.import_id}-{n}"
        )
        for n in range(lanes)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _lane(bind: Any, run: _Run) -> None:
    # create_savepoint: bound to a connection already in a transaction (tests), each session
    # commits its own savepoint; bound to an engine, it changes nothing.
    with (
        Session(bind=bind, join_transaction_mode="create_savepoint") as claims,
        Session(bind=bind, join_transaction_mode="create_savepoint") as ledger,
    ):
        bulk.issue_pending(
            claims,
            ledger,
            run.import_id,
            clock=run.clock,
            batch_size=run.batch_size,
            on_batch=run.on_batch,
        )


def _last_attempt() -> bool:
    """True outside RQ, or when RQ has no retry left after this attempt."""
    job = get_current_job()
    return job is None or not job.retries_left
