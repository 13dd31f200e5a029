"""Bulk issue: a merchant's CSV, checked whole before anything happens, then issued exactly once.

The life of an import:

1. ``check_file`` (ledger/bulk_csv.py, re-exported here) reads the CSV and checks every row;
   nothing is written. Its report is the dry run.
2. ``create_import`` stores the import with its report and its rows. The file's SHA-256 names
   the import: the same bytes uploaded again to the same shop are the same import, so a double
   upload never issues twice. A file with any row error is stored ``invalid``, without rows,
   and cannot be started (uploading it again re-checks it: an unknown email may be known now).
   A file-level error (encoding, headers, too many rows) stores nothing at all.
3. ``start_import`` moves a ``validated`` import to ``issuing``; ``issue_pending`` then issues
   its rows batch by batch, each row an ``issue`` of source ``bulk`` under the idempotency key
   ``bulk:{file_hash}:{row_number}``, so a row takes effect once however often it is tried.

A batch: its pending rows are claimed with ``FOR UPDATE SKIP LOCKED`` on a second session
(``claims``), which holds those row locks while the ledger session works, then records each
row's entry or error and the import's counters in one commit. Two runs at once take different
batches; a run that dies (an exception, a killed worker) releases its claim with its
connection, and the rows it had issued but not recorded are replayed from their keys on the
rerun: nothing is issued twice or skipped. The run that records the last batch finishes it.

In the ledger, a batch's rows for distinct accounts are issued together, in one transaction:
the batch's customers and accounts opened ahead (one statement each), the accounts locked in
one statement in id order (as every writer of several accounts locks them), then per row the
very lot, entry, audit row, key row and outbox row ``operations.issue`` writes, through the
same ``transaction.commit``; one commit. Measured (bench/bulk.py), that is a quarter of the
round trips of one ``operations.issue`` per row. Rows that cannot go together go one by one
through ``operations.issue`` itself: a second row for the same account, an expiry passed
since the check (the ledger records the refusal), and a whole batch whose keys were used
before (a rerun): there a key's stored outcome answers.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, bindparam, exists, insert, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger import idempotency, operations
from ledger.accounts import ensure_account
from ledger.book import AccountRow, Actor, Book, Mirror
from ledger.bulk_csv import (
    EMAIL_LOOKUP_NOTE,
    HEADERS,
    MAX_FILE_BYTES,
    MAX_REASON,
    MAX_REPORTED_ERRORS,
    MAX_ROWS,
    CheckedFile,
    CheckedRow,
    FileError,
    Report,
    RowError,
    check_file,
    file_hash,
    parse_csv,
    report_lines,
)
from ledger.bulk_csv import chunks as _chunks
from ledger.errors import IdempotencyConflict, LedgerError
from ledger.kinds import EntryKind, LotSource
from ledger.money import Money, format_amount
from ledger.transaction import Request, commit
from ledger.views import iso
from models import GENESIS_HASH, AuditLog, BulkImport, BulkImportRow, CreditAccount, Customer, Shop

__all__ = [
    "BATCH_SIZE",
    "EMAIL_LOOKUP_NOTE",
    "HEADERS",
    "MAX_FILE_BYTES",
    "MAX_REASON",
    "MAX_REPORTED_ERRORS",
    "MAX_ROWS",
    "RESULT_COLUMNS",
    "CheckedFile",
    "CheckedRow",
    "Created",
    "FileError",
    "FileRejected",
    "ImportNotFound",
    "NotStartable",
    "Progress",
    "Report",
    "RowError",
    "check_file",
    "create_import",
    "file_hash",
    "find_import",
    "import_json",
    "issue_pending",
    "issuing_imports",
    "list_imports",
    "parse_csv",
    "read_progress",
    "record_failure",
    "report_lines",
    "result_csv",
    "row_key",
    "start_import",
]

BATCH_SIZE = 200
# Spreadsheets run cells starting with these as formulas: the result CSV defuses them.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

_rows_table: Table = BulkImportRow.__table__  # type: ignore[assignment]


# -- errors ---------------------------------------------------------------------------------


class FileRejected(Exception):  # noqa: N818 - reads as what happened to the file
    """Raised by ``create_import`` for a file-level error; the report says what is wrong."""

    def __init__(self, report: Report) -> None:
        assert report.file_error is not None
        super().__init__(report.file_error.message)
        self.report = report
        self.error = report.file_error


class ImportNotFound(Exception):  # noqa: N818
    pass


class NotStartable(Exception):  # noqa: N818
    """The import cannot be started: its file did not pass the check."""

    def __init__(self, import_id: int, state: str) -> None:
        super().__init__(f"Import {import_id} is {state}: only a validated file can be issued.")
        self.state = state


def row_key(file_hash: str, row_number: int) -> str:
    """The idempotency key of one row: the same row of the same file is issued once."""
    return f"bulk:{file_hash}:{row_number}"


# -- the import: created once per file ------------------------------------------------------


@dataclass(frozen=True)
class Created:
    bulk_import: BulkImport
    created: bool  # False: this very file was uploaded to this shop before


def create_import(
    session: Session,
    shop: Shop,
    data: bytes,
    *,
    filename: str | None,
    actor: str,
    now: datetime,
    max_rows: int = MAX_ROWS,
) -> Created:
    """The import of ``data``, stored (``validated`` with its rows, or ``invalid`` with its
    report) and committed; or the one stored before for the same file.

    Raises:
        FileRejected: a file-level error; nothing is written.
    """
    digest = file_hash(data)
    existing = _by_hash(session, shop.id, digest)
    if existing is not None and existing.state != "invalid":
        return Created(existing, created=False)
    checked = check_file(session, shop, data, now=now, max_rows=max_rows)
    if checked.report.file_error is not None:
        session.rollback()
        raise FileRejected(checked.report)
    if existing is not None:
        return Created(_check_again(session, existing, checked), created=False)
    bulk = BulkImport(
        shop_id=shop.id,
        file_hash=digest,
        filename=_display_name(filename),
        state="validated" if checked.report.ok else "invalid",
        total_rows=checked.report.total_rows,
        report=checked.report.to_json(),
        created_by=actor,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(bulk)
    except IntegrityError:  # the same file, uploaded at the same moment, was stored first
        session.rollback()
        twin = _by_hash(session, shop.id, digest)
        assert twin is not None
        return Created(twin, created=False)
    _store_rows(session, bulk, checked)
    _audit(session, bulk, actor, "bulk_import.create", now)
    session.commit()
    return Created(bulk, created=True)


def _display_name(filename: str | None) -> str | None:
    """The file's own name: browsers on Windows may send the whole path."""
    name = re.split(r"[/\\]", filename or "")[-1].strip()
    return name[:255] or None


def _by_hash(session: Session, shop_id: int, digest: str) -> BulkImport | None:
    stmt = select(BulkImport).where(BulkImport.shop_id == shop_id, BulkImport.file_hash == digest)
    return session.execute(stmt).scalar_one_or_none()


def _check_again(session: Session, bulk: BulkImport, checked: CheckedFile) -> BulkImport:
    """An invalid import has no rows and did nothing: checking its file again is safe, and
    may pass now (an email's customer has become known, an erased one was a mistake)."""
    session.refresh(bulk, with_for_update=True)  # one re-check at a time
    if bulk.state == "invalid":
        bulk.report = checked.report.to_json()
        bulk.total_rows = checked.report.total_rows
        if checked.report.ok:
            bulk.state = "validated"
            _store_rows(session, bulk, checked)
    session.commit()
    return bulk


def _store_rows(session: Session, bulk: BulkImport, checked: CheckedFile) -> None:
    if not checked.report.ok:
        return  # an invalid file is issued not at all, not in part
    session.flush()
    values = [row.values(bulk.shop_id, bulk.id) for row in checked.rows]
    postgresql = session.get_bind().dialect.name == "postgresql"
    for chunk in _chunks(values, 10_000):
        if postgresql:  # one statement per chunk, not a message per row
            session.execute(_STORE_ROWS, {"rows": json.dumps(chunk, default=_json_value)})
        else:
            session.execute(insert(_rows_table), chunk)
    bulk.valid_rows = len(values)


_STORE_ROWS = text(
    """
INSERT INTO bulk_import_rows (shop_id, import_id, row_number, shopify_customer_id, email, amount,
    currency, expires_at, reason, state)
SELECT shop_id, import_id, row_number, shopify_customer_id, email, amount, currency, expires_at,
    reason, state
FROM json_to_recordset(CAST(:rows AS json)) AS r (shop_id bigint, import_id bigint,
    row_number integer, shopify_customer_id bigint, email text, amount bigint, currency text,
    expires_at timestamptz, reason text, state text)
"""
)


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# -- starting and issuing -------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    import_id: int
    state: str
    valid_rows: int
    issued_rows: int
    failed_rows: int

    @property
    def done_rows(self) -> int:
        return self.issued_rows + self.failed_rows

    @property
    def pending_rows(self) -> int:
        return self.valid_rows - self.done_rows

    @property
    def percent(self) -> int:
        """Whole percent of rows done (floored: 100 only once every row is done)."""
        if self.valid_rows == 0:
            return 100 if self.state == "finished" else 0
        return self.done_rows * 100 // self.valid_rows


def find_import(session: Session, shop_id: int, import_id: int) -> BulkImport:
    bulk = session.execute(
        select(BulkImport).where(BulkImport.id == import_id, BulkImport.shop_id == shop_id)
    ).scalar_one_or_none()
    if bulk is None:
        raise ImportNotFound(import_id)
    return bulk


def start_import(
    session: Session, shop_id: int, import_id: int, *, actor: str, now: datetime
) -> BulkImport:
    """Move a validated (or failed) import to ``issuing`` and commit; issuing or finished
    ones are left as they are (starting twice is harmless).

    Raises:
        ImportNotFound: no such import in this shop.
        NotStartable: the file did not pass the check.
    """
    bulk = session.execute(
        select(BulkImport)
        .where(BulkImport.id == import_id, BulkImport.shop_id == shop_id)
        .with_for_update()
    ).scalar_one_or_none()
    if bulk is None:
        session.rollback()
        raise ImportNotFound(import_id)
    if bulk.state == "invalid":
        session.rollback()
        raise NotStartable(import_id, bulk.state)
    if bulk.state in ("validated", "failed"):
        bulk.state = "issuing"
        bulk.started_at = bulk.started_at or now
        bulk.error = None
        _audit(session, bulk, actor, "bulk_import.start", now)
    session.commit()
    return bulk


def _audit(session: Session, bulk: BulkImport, actor: str, action: str, now: datetime) -> None:
    session.flush()
    session.execute(
        insert(AuditLog).values(
            shop_id=bulk.shop_id,
            actor=actor,
            action=action,
            target_type="bulk_import",
            target_id=str(bulk.id),
            outcome="success",
            details={
                "state": bulk.state,
                "filename": bulk.filename,
                "file_hash": bulk.file_hash,
                "rows": bulk.total_rows,
                "valid_rows": bulk.valid_rows,
            },
            created_at=now,
        )
    )


@dataclass(frozen=True)
class _Head:
    shop_id: int
    file_hash: str
    actor: str
    state: str
    # The shop's native sync: each issued row gets its outbox row in the entry's transaction;
    # the outbox sweeper sends them at Shopify's pace (see jobs/sync.py).
    mirror: Mirror | None


_imports_table: Table = BulkImport.__table__  # type: ignore[assignment]
_r = _rows_table.c
_i = _imports_table.c
_CLAIM = (
    select(_r.id, _r.row_number, _r.shopify_customer_id, _r.amount, _r.currency)
    .add_columns(_r.expires_at, _r.reason)
    .where(_r.import_id == bindparam("import_id"), _r.state == "pending")
    .order_by(_r.row_number)
    .limit(bindparam("size"))
    .with_for_update(skip_locked=True)
)
_RECORD = (
    update(_rows_table)
    .where(_r.id == bindparam("row_id"))
    .values(state=bindparam("new_state"), entry_id=bindparam("new_entry"), error=bindparam("why"))
)
# PostgreSQL: a batch's outcomes in one statement, as one JSON array.
_RECORD_ALL = text(
    """
UPDATE bulk_import_rows AS r SET state = v.state, entry_id = v.entry_id, error = v.error
FROM json_to_recordset(CAST(:rows AS json)) AS v (id bigint, state text, entry_id uuid, error text)
WHERE r.id = v.id
"""
)
_COUNT = (
    update(_imports_table)
    .where(_i.id == bindparam("import_id"))
    .values(
        issued_rows=_i.issued_rows + bindparam("issued"),
        failed_rows=_i.failed_rows + bindparam("failed"),
    )
    .returning(_i.id, _i.state, _i.valid_rows, _i.issued_rows, _i.failed_rows)
)


def issue_pending(
    claims: Session,
    ledger: Session,
    import_id: int,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    batch_size: int = BATCH_SIZE,
    on_batch: Callable[[Progress], None] | None = None,
) -> Progress:
    """Issue every pending row of an ``issuing`` import, batch by batch; finish it when none
    is left. Safe to run twice, at once, or again after a crash (see the module's notes).

    ``claims`` and ``ledger`` must be two sessions on two connections: one holds the batch's
    row locks while the other commits to the ledger. ``on_batch`` hears the progress after
    each batch is recorded; ``clock`` stamps each batch's entries.
    """
    head = _head(claims, import_id)
    if head is None or head.state != "issuing":
        claims.rollback()
        return read_progress(claims, import_id)
    # SQLite has no row locks (and runs one process, in development): holding its read
    # transaction open would only make the ledger's commits wait on it.
    hold_claims = claims.get_bind().dialect.name == "postgresql"
    while True:
        batch = claims.execute(_CLAIM, {"import_id": import_id, "size": batch_size}).all()
        if not batch:
            claims.rollback()
            break
        if not hold_claims:
            claims.commit()
        at = clock()
        _open_accounts(ledger, head.shop_id, batch, at)
        outcomes = _issue_batch(ledger, head, batch, at)
        progress = _record(claims, import_id, outcomes)
        if on_batch is not None:
            on_batch(progress)
    _finish_if_done(claims, import_id, clock())
    return read_progress(claims, import_id)


def _head(session: Session, import_id: int) -> _Head | None:
    row = session.execute(
        select(_i.shop_id, _i.file_hash, _i.created_by, _i.state, Shop.native_sync)
        .add_columns(Shop.notify_customer)
        .join(Shop, Shop.id == _i.shop_id)
        .where(_i.id == import_id)
    ).one_or_none()
    if row is None:
        return None
    mirror = Mirror(notify=row.notify_customer) if row.native_sync else None
    return _Head(row.shop_id, row.file_hash, row.created_by, row.state, mirror)


def _open_accounts(session: Session, shop_id: int, batch: Sequence[Any], now: datetime) -> None:
    """Open the batch's missing customers and accounts ahead, a statement for each, and commit.

    ``operations.issue`` would open each one itself (find, then insert the customer and the
    account under savepoints: about ten round trips for a new customer); opened here, the
    batch's accounts are locked together and each row is one write. An account opened for a
    row the ledger then refuses stays empty, as harmless as a new one.
    """
    customers = sorted({row.shopify_customer_id for row in batch})
    accounts = sorted({(row.shopify_customer_id, row.currency) for row in batch})
    if session.get_bind().dialect.name == "postgresql":
        params = {"shop_id": shop_id, "now": now, "genesis": GENESIS_HASH}
        session.execute(_OPEN_CUSTOMERS, params | {"customers": customers})
        wanted = json.dumps([{"customer": c, "currency": code} for c, code in accounts])
        session.execute(_OPEN_ACCOUNTS, params | {"accounts": wanted})
    else:
        for customer, currency in accounts:  # SQLite, in development: the ledger's own way
            ensure_account(session, shop_id, customer, currency, now)
    session.commit()


# Fixed statements, fed arrays: compiled once, prepared by the driver, whatever the batch.
# Rows go in key order, so two lanes opening the same customer never wait on each other in a
# circle (a deadlock).
_OPEN_CUSTOMERS = text(
    """
INSERT INTO customers (shop_id, shopify_customer_id, created_at, updated_at)
SELECT :shop_id, c, :now, :now FROM unnest(CAST(:customers AS bigint[])) AS c ORDER BY c
ON CONFLICT (shop_id, shopify_customer_id) DO NOTHING
"""
)
_OPEN_ACCOUNTS = text(
    """
INSERT INTO credit_accounts (shop_id, customer_id, currency, balance, lifetime_credited,
    lifetime_debited, last_sequence, last_hash, created_at, updated_at)
SELECT c.shop_id, c.id, v.currency, 0, 0, 0, 0, :genesis, :now, :now
FROM json_to_recordset(CAST(:accounts AS json)) AS v (customer bigint, currency text)
JOIN customers AS c ON c.shop_id = :shop_id AND c.shopify_customer_id = v.customer
ORDER BY c.id, v.currency
ON CONFLICT (customer_id, currency) DO NOTHING
"""
)


def _issue_batch(
    ledger: Session, head: _Head, batch: Sequence[Any], at: datetime
) -> list[dict[str, Any]]:
    """Issue a batch: its rows for distinct accounts together, in one transaction; the rest
    (a second row for an account, an expiry already past) one by one, as does the whole batch
    again when it cannot go together (a row's key was used before: a rerun after a crash)."""
    together, alone = _split(batch, at)
    outcomes = _issue_together(ledger, head, together, at) if together else []
    if outcomes is None:
        outcomes, alone = [], list(batch)
    return outcomes + [_issue_row(ledger, head, row, at) for row in alone]


def _split(batch: Sequence[Any], at: datetime) -> tuple[list[Any], list[Any]]:
    together: list[Any] = []
    alone: list[Any] = []
    seen: set[tuple[int, str]] = set()
    for row in batch:
        account = (row.shopify_customer_id, row.currency)
        if account in seen or (row.expires_at is not None and row.expires_at <= at):
            alone.append(row)  # the ledger records the refusal of an expiry past by now
        else:
            seen.add(account)
            together.append(row)
    return together, alone


_LOCK_ACCOUNTS = (
    select(
        Customer.shopify_customer_id,
        CreditAccount.id,
        CreditAccount.shop_id,
        CreditAccount.customer_id,
        CreditAccount.currency,
        CreditAccount.balance,
    )
    .add_columns(
        CreditAccount.lifetime_credited,
        CreditAccount.lifetime_debited,
        CreditAccount.last_sequence,
        CreditAccount.last_hash,
    )
    .join(Customer, Customer.id == CreditAccount.customer_id)
    .where(
        Customer.shop_id == bindparam("shop_id"),
        CreditAccount.shop_id == bindparam("shop_id"),
        tuple_(Customer.shopify_customer_id, CreditAccount.currency).in_(
            bindparam("accounts", expanding=True)
        ),
    )
    .order_by(CreditAccount.id)  # every writer of several accounts locks them in id order
    .with_for_update(of=CreditAccount)
)


def _issue_together(
    ledger: Session, head: _Head, rows: list[Any], at: datetime
) -> list[dict[str, Any]] | None:
    """One issue per row, as ``operations.issue`` makes it (lot, entry, audit row, key row,
    outbox row), for rows of distinct accounts, in one transaction: the accounts locked in one
    statement, one write per account, one commit. None if a row's key was used before."""
    wanted = [(row.shopify_customer_id, row.currency) for row in rows]
    locked = ledger.execute(_LOCK_ACCOUNTS, {"shop_id": head.shop_id, "accounts": wanted})
    accounts = {(r[0], r.currency): AccountRow(*r[1:]) for r in locked}
    outcomes = []
    try:
        for row in rows:
            by = _actor(head, row, at)
            book = Book(account=accounts[(row.shopify_customer_id, row.currency)], lots={})
            # An issue needs no other lot of the account: it adds one and extends the chain.
            lot = book.open_lot(
                by, row.amount, source=LotSource.BULK, expires_at=row.expires_at, note=None
            )
            entry = book.post(by, EntryKind.ISSUE, row.amount, lot_id=lot.id, note=None)
            request = Request(ledger, by, "issue", _fingerprint(row))
            receipt = commit(request, book, entry, lot)
            outcomes.append(_outcome(row, "issued", entry_id=receipt.entry["id"]))
        ledger.commit()
    except IntegrityError:
        ledger.rollback()
        return None
    except BaseException:
        ledger.rollback()
        raise
    return outcomes


def _fingerprint(row: Any) -> str:
    """The request fingerprint ``operations.issue`` stores with the key, so that a row issued
    here and tried again through ``operations.issue`` (a rerun) is the same request."""
    params = {
        "customer": row.shopify_customer_id,
        "amount": [row.amount, row.currency],
        "expires_at": row.expires_at,
        "source": LotSource.BULK,
        "note": None,
        "order": None,
        "reason": row.reason,
    }
    return idempotency.request_fingerprint("issue", params)


def _actor(head: _Head, row: Any, at: datetime) -> Actor:
    return Actor(
        shop_id=head.shop_id,
        now=at,
        actor=head.actor,
        reason=row.reason,
        idempotency_key=row_key(head.file_hash, row.row_number),
        mirror=head.mirror,
    )


def _issue_row(ledger: Session, head: _Head, row: Any, at: datetime) -> dict[str, Any]:
    assert row.shopify_customer_id is not None  # emails were resolved when the file was checked
    by = _actor(head, row, at)
    try:
        receipt = operations.issue(
            ledger,
            by,
            customer=row.shopify_customer_id,
            amount=Money(row.amount, row.currency),
            expires_at=row.expires_at,
            source=LotSource.BULK,
        )
    except IdempotencyConflict as conflict:
        # The key's stored outcome was purged (days later) but its entry stands: issued.
        spent = conflict.details.get("entry_id")
        if spent is None:
            return _outcome(row, "failed", error=conflict)
        return _outcome(row, "issued", entry_id=spent)
    except LedgerError as rejection:  # stored with the key: a rerun gets the same answer
        return _outcome(row, "failed", error=rejection)
    return _outcome(row, "issued", entry_id=receipt.entry["id"])


def _outcome(
    row: Any, state: str, *, entry_id: str | None = None, error: LedgerError | None = None
) -> dict[str, Any]:
    return {
        "id": row.id,
        "state": state,
        "entry_id": entry_id,
        "error": None if error is None else f"{error.code}: {error.message}",
    }


def _record(claims: Session, import_id: int, outcomes: list[dict[str, Any]]) -> Progress:
    """Each row's outcome and the import's counters, in one commit (ending the claim)."""
    if claims.get_bind().dialect.name == "postgresql":
        claims.execute(_RECORD_ALL, {"rows": json.dumps(outcomes, default=str)})
    else:
        claims.execute(_RECORD, [_record_params(outcome) for outcome in outcomes])
    issued = sum(outcome["state"] == "issued" for outcome in outcomes)
    counted = claims.execute(
        _COUNT, {"import_id": import_id, "issued": issued, "failed": len(outcomes) - issued}
    ).one()
    claims.commit()
    return _progress(counted)


def _record_params(outcome: dict[str, Any]) -> dict[str, Any]:
    entry_id = outcome["entry_id"]
    return {
        "row_id": outcome["id"],
        "new_state": outcome["state"],
        "new_entry": None if entry_id is None else uuid.UUID(str(entry_id)),
        "why": outcome["error"],
    }


def _finish_if_done(session: Session, import_id: int, now: datetime) -> None:
    """Finished once no row is pending. Every run checks after its last commit, so the run
    that records the last batch sees all of them done."""
    pending = exists().where(_r.import_id == import_id, _r.state == "pending")
    session.execute(
        update(_imports_table)
        .where(_i.id == import_id, _i.state == "issuing", ~pending)
        .values(state="finished", finished_at=now, error=None)
    )
    session.commit()


def record_failure(session: Session, import_id: int, error: str, *, final: bool) -> None:
    """Note why a run stopped; after the last attempt the import is ``failed`` (starting it
    again resumes where it stopped)."""
    session.rollback()
    values: dict[str, Any] = {"error": error[:2000]}
    if final:
        values["state"] = "failed"
    session.execute(
        update(_imports_table).where(_i.id == import_id, _i.state == "issuing").values(**values)
    )
    session.commit()


def issuing_imports(session: Session) -> list[int]:
    """Every import being issued, in every shop, oldest first (for the sweeper)."""
    stmt = select(_i.id).where(_i.state == "issuing").order_by(_i.id)
    ids: list[int] = list(session.scalars(stmt))
    session.rollback()
    return ids


def read_progress(session: Session, import_id: int) -> Progress:
    row = session.execute(
        select(_i.id, _i.state, _i.valid_rows, _i.issued_rows, _i.failed_rows).where(
            _i.id == import_id
        )
    ).one_or_none()
    session.rollback()
    if row is None:
        raise ImportNotFound(import_id)
    return _progress(row)


def _progress(row: Any) -> Progress:
    return Progress(row.id, row.state, row.valid_rows, row.issued_rows, row.failed_rows)


# -- what the UI and the CLI show -----------------------------------------------------------


def import_json(bulk: BulkImport, *, with_report: bool = True) -> dict[str, Any]:
    progress = Progress(bulk.id, bulk.state, bulk.valid_rows, bulk.issued_rows, bulk.failed_rows)
    return {
        "id": bulk.id,
        "state": bulk.state,
        "filename": bulk.filename,
        "file_hash": bulk.file_hash,
        "created_by": bulk.created_by,
        "created_at": iso(bulk.created_at),
        "started_at": iso(bulk.started_at),
        "finished_at": iso(bulk.finished_at),
        "rows": {
            "total": bulk.total_rows,
            "valid": bulk.valid_rows,
            "issued": bulk.issued_rows,
            "failed": bulk.failed_rows,
            "pending": progress.pending_rows,
        },
        "percent": progress.percent,
        "error": bulk.error,
    } | ({"report": bulk.report} if with_report else {})


def list_imports(session: Session, shop_id: int, limit: int = 50) -> list[BulkImport]:
    """The shop's imports, newest first."""
    stmt = (
        select(BulkImport)
        .where(BulkImport.shop_id == shop_id)
        .order_by(BulkImport.created_at.desc(), BulkImport.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


RESULT_COLUMNS = (
    "row",
    "customer_id",
    "email",
    "amount",
    "currency",
    "expires_at",
    "reason",
    "state",
    "entry_id",
    "error",
)


def result_csv(session: Session, import_id: int, page: int = 2000) -> Iterator[str]:
    """The per-row result as CSV text, a page of rows at a time (memory stays flat)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(RESULT_COLUMNS)
    after = 0
    while True:
        rows = session.execute(
            select(BulkImportRow)
            .where(BulkImportRow.import_id == import_id, BulkImportRow.row_number > after)
            .order_by(BulkImportRow.row_number)
            .limit(page)
        ).scalars()
        count = 0
        for row in rows:
            writer.writerow(_result_cells(row))
            after, count = row.row_number, count + 1
        yield out.getvalue()
        out.seek(0)
        out.truncate()
        if count < page:
            return


def _result_cells(row: BulkImportRow) -> Iterable[object]:
    return (
        row.row_number,
        row.shopify_customer_id,
        _defused(row.email),
        format_amount(row.amount, row.currency),
        row.currency,
        iso(row.expires_at) or "",
        _defused(row.reason),
        row.state,
        row.entry_id or "",
        _defused(row.error),
    )


def _defused(text: str | None) -> str:
    """Text a spreadsheet would run as a formula gets a leading apostrophe (OWASP's advice)."""
    if text is None:
        return ""
    return "'" + text if text.startswith(_FORMULA_START) else text
