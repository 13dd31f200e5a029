"""Reading a bulk-issue CSV and checking every row of it, before anything is written.

``check_file`` is the dry run: it parses the whole file, checks each row, resolves customers
addressed by email and refuses erased or deleted ones, and answers a ``Report`` (rows, totals
per currency, each error with its row and column, or the one file-level error). It only reads.
``parse_csv`` is the same without a database.

The CSV: UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8"); CRLF or LF; fields
quoted the usual way (the csv module: a quoted comma or line break stays in its cell); comma-
separated, or semicolon-separated when the header has no comma. A header row, then one credit
per row. Header names are matched case-insensitively, with spaces or hyphens read as
underscores; columns with other names are ignored (and listed in the report):

=============  ==========================================  =====================================
column         also accepted as                            value
=============  ==========================================  =====================================
customer_id    shopify_customer_id, customer               Shopify customer id (``7408348290``
                                                           or ``gid://shopify/Customer/...``)
email          customer_email, e_mail                      used when customer_id is blank:
                                                           a customer CreditCraft already knows
amount         credit, credit_amount                       decimal string, ``12.50`` (as many
                                                           decimals as the currency has, at most)
currency       currency_code                               ISO 4217 code; blank = shop currency
expires_at     expiry, expiry_date, expires, expires_on    ``2027-01-31`` (good through that
                                                           day in the shop's time zone) or an
                                                           ISO date-time (no offset: the shop's
                                                           zone); blank = never expires
reason         (none)                                      required, at most 255 characters
=============  ==========================================  =====================================

Either customer_id or email must be a column. Emails are matched only among customers
CreditCraft already knows (the local ``customers`` table, case-insensitively); looking a
customer up in Shopify by email is not done yet, and such a row is an error that says so.

Row numbers are the spreadsheet's: the header is row 1. Blank rows are skipped (and keep their
number). A file-level error (not UTF-8, binary, not CSV, missing or duplicate columns, no rows,
more than MAX_ROWS rows or MAX_FILE_BYTES bytes) is reported alone.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import String, func, select
from sqlalchemy.orm import Session

from ledger.errors import LedgerError
from ledger.money import Money, format_amount, normalize_currency, parse_amount
from models import Customer, Shop

MAX_ROWS = 100_000
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_REASON = 255
# The report keeps this many row errors (their total is always counted): enough to fix a file
# by, small enough to store and to send to a browser.
MAX_REPORTED_ERRORS = 1000
# Emails are looked up in IN-lists of this many, well under the databases' parameter limits.
LOOKUP_CHUNK = 5000

EMAIL_LOOKUP_NOTE = (
    "Emails are matched among customers CreditCraft already knows; looking customers up in "
    "Shopify by email is not done yet: use the Shopify customer id for anyone else."
)

# Canonical column -> the header spellings accepted for it (after _normalize_header).
HEADERS: dict[str, tuple[str, ...]] = {
    "customer_id": ("customer_id", "shopify_customer_id", "customer"),
    "email": ("email", "customer_email", "e_mail"),
    "amount": ("amount", "credit", "credit_amount"),
    "currency": ("currency", "currency_code"),
    "expires_at": ("expires_at", "expiry", "expiry_date", "expires", "expires_on"),
    "reason": ("reason",),
}
_HEADER_OF = {spelling: column for column, names in HEADERS.items() for spelling in names}

_GID = re.compile(r"gid://shopify/Customer/([0-9]{1,19})")
_DIGITS = re.compile(r"[0-9]{1,19}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MAX_ID = 2**63 - 1
_MAX_EMAIL = 320

_T = TypeVar("_T")


# -- the report -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowError:
    row: int  # the spreadsheet row: the header is row 1, the first credit row 2
    field: str | None  # the canonical column, or None for the row as a whole
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class FileError:
    """Why the file as a whole cannot be read: nothing is created for it."""

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


@dataclass(frozen=True, slots=True)
class CheckedRow:
    row_number: int
    shopify_customer_id: int | None  # None until an email is resolved
    email: str | None
    amount: Money
    expires_at: datetime | None
    reason: str
    by_email: bool = False  # addressed by email alone (the customer_id cell was blank)

    @property
    def customer(self) -> int:
        assert self.shopify_customer_id is not None, "emails are resolved first"
        return self.shopify_customer_id

    def values(self, shop_id: int, import_id: int) -> dict[str, Any]:
        return {
            "shop_id": shop_id,
            "import_id": import_id,
            "row_number": self.row_number,
            "shopify_customer_id": self.shopify_customer_id,
            "email": self.email,
            "amount": self.amount.minor,
            "currency": self.amount.currency,
            "expires_at": self.expires_at,
            "reason": self.reason,
            "state": "pending",
        }


@dataclass
class Report:
    """The dry run: what the file holds and everything wrong with it."""

    total_rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    file_error: FileError | None = None
    columns: dict[str, str] = field(default_factory=dict)  # canonical -> header as written
    ignored_columns: list[str] = field(default_factory=list)
    totals: dict[str, list[int]] = field(default_factory=dict)  # currency -> [minor, rows]

    @property
    def invalid_rows(self) -> int:
        return len({error.row for error in self.errors})

    @property
    def valid_rows(self) -> int:
        return 0 if self.file_error else self.total_rows - self.invalid_rows

    @property
    def ok(self) -> bool:
        return self.file_error is None and not self.errors and self.total_rows > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.total_rows,
            "valid_rows": self.valid_rows,
            "invalid_rows": self.invalid_rows,
            "totals": [
                {"currency": code, "amount": format_amount(minor, code), "rows": rows}
                for code, (minor, rows) in sorted(self.totals.items())
            ],
            "file_error": self.file_error.to_json() if self.file_error else None,
            "errors": [error.to_json() for error in self.errors[:MAX_REPORTED_ERRORS]],
            "errors_total": len(self.errors),
            "columns": self.columns,
            "ignored_columns": self.ignored_columns,
            "notes": [EMAIL_LOOKUP_NOTE] if "email" in self.columns else [],
        }


@dataclass
class CheckedFile:
    file_hash: str
    report: Report
    rows: list[CheckedRow]  # the valid rows, in file order


def file_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- checking a file (reads only) -----------------------------------------------------------


def check_file(
    session: Session, shop: Shop, data: bytes, *, now: datetime, max_rows: int = MAX_ROWS
) -> CheckedFile:
    """The dry run: parse and check ``data`` whole, resolve emails; writes nothing."""
    checked = parse_csv(
        data, now=now, timezone=shop.timezone, default_currency=shop.currency, max_rows=max_rows
    )
    if checked.report.file_error is None:
        _check_customers(session, shop.id, checked)
    return checked


def parse_csv(
    data: bytes,
    *,
    now: datetime,
    timezone: str = "UTC",
    default_currency: str = "USD",
    max_rows: int = MAX_ROWS,
) -> CheckedFile:
    """Parse and check every row without a database (emails stay unresolved)."""
    checked = CheckedFile(file_hash(data), Report(), [])
    try:
        _parse_into(checked, data, _RowChecker(now, _zone(timezone), default_currency), max_rows)
    except _FileProblem as problem:
        checked.report.file_error = problem.error
        checked.rows = []
    return checked


class _FileProblem(Exception):  # noqa: N818
    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.error = FileError(code, message, details)


def _parse_into(checked: CheckedFile, data: bytes, checker: _RowChecker, max_rows: int) -> None:
    report = checked.report
    records = _records(_decode(data))
    header = next(records, None)
    if header is None:
        raise _FileProblem("empty_file", "The file is empty: it needs a header row.")
    positions = _map_header(header[1], report)
    for number, cells in records:
        if not any(cell.strip() for cell in cells):
            continue  # a blank line, or a row of empty cells a spreadsheet left behind
        report.total_rows += 1
        if report.total_rows > max_rows:
            raise _FileProblem(
                "too_many_rows",
                f"The file has more than {max_rows} rows; split it into smaller files.",
                max_rows=max_rows,
            )
        row = checker.check(number, _cells_by_column(number, cells, positions, len(header[1])))
        if isinstance(row, CheckedRow):
            checked.rows.append(row)
        else:
            report.errors.extend(row)
    if report.total_rows == 0:
        raise _FileProblem("no_rows", "The file has a header but no rows to issue.")
    _total(checked)


def _decode(data: bytes) -> str:
    if len(data) > MAX_FILE_BYTES:
        raise _FileProblem(
            "file_too_large",
            f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB.",
            max_bytes=MAX_FILE_BYTES,
        )
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is dropped
    except UnicodeDecodeError as error:
        raise _FileProblem(
            "not_utf8",
            'The file is not UTF-8 text; save it as "CSV UTF-8".',
            byte_offset=error.start,
        ) from None
    if "\x00" in text:  # a spreadsheet's own format, not CSV (and no database stores NUL)
        raise _FileProblem(
            "not_text",
            'The file holds binary data, not text; save it as "CSV UTF-8".',
            char=text.index("\x00"),
        )
    return text


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(spreadsheet row number, cells) per record; a quoted line break stays in its cell."""
    first_line = text.split("\n", 1)[0]
    # Spreadsheets in comma-decimal locales save with ";": take it when the header has no ",".
    delimiter = next((d for d in ",;\t" if d in first_line), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    number = 0
    try:
        for number, cells in enumerate(reader, start=1):  # noqa: B007 - read in except below
            yield number, cells
    except csv.Error as error:
        raise _FileProblem(
            "malformed_csv",
            f"The file is not valid CSV near line {reader.line_num}: {error}.",
            line=reader.line_num,
            row=number + 1,
        ) from None


def _normalize_header(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _map_header(header: list[str], report: Report) -> dict[str, int]:
    positions: dict[str, int] = {}
    for index, raw in enumerate(header):
        column = _HEADER_OF.get(_normalize_header(raw))
        if column is None:
            if raw.strip():
                report.ignored_columns.append(raw.strip())
            continue
        if column in positions:
            raise _FileProblem(
                "duplicate_columns",
                f"Two columns mean {column}: {header[positions[column]]!r} and {raw!r}.",
                column=column,
            )
        positions[column] = index
        report.columns[column] = raw.strip()
    missing = [name for name in ("amount", "reason") if name not in positions]
    if "customer_id" not in positions and "email" not in positions:
        missing.insert(0, "customer_id or email")
    if missing:
        raise _FileProblem(
            "missing_columns",
            f"The header lacks {', '.join(missing)}. Expected columns: "
            f"{', '.join(HEADERS)} (customer_id or email; currency and expires_at optional).",
            missing=missing,
            found=[cell.strip() for cell in header],
        )
    return positions


def _cells_by_column(
    number: int, cells: list[str], positions: dict[str, int], width: int
) -> dict[str, str] | list[RowError]:
    extra = [cell for cell in cells[width:] if cell.strip()]
    if extra:
        return [
            RowError(
                number,
                None,
                "too_many_fields",
                f"The row has {len(cells)} fields; the header has {width}.",
            )
        ]
    # A short row (a spreadsheet dropping trailing empty cells) reads as blanks.
    return {
        column: cells[index].strip() if index < len(cells) else ""
        for column, index in positions.items()
    }


def _total(checked: CheckedFile) -> None:
    totals: dict[str, list[int]] = {}
    for row in checked.rows:
        minor_and_rows = totals.setdefault(row.amount.currency, [0, 0])
        minor_and_rows[0] += row.amount.minor
        minor_and_rows[1] += 1
    checked.report.totals = totals


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class _RowChecker:
    now: datetime
    zone: ZoneInfo
    default_currency: str
    currencies: dict[str, str] = field(default_factory=dict)

    def check(
        self, number: int, cells: dict[str, str] | list[RowError]
    ) -> CheckedRow | list[RowError]:
        if isinstance(cells, list):
            return cells
        errors: list[RowError] = []

        def problem(column: str | None, code: str, message: str) -> None:
            errors.append(RowError(number, column, code, message))

        customer_id, email = self._customer(cells, problem)
        amount = self._amount(cells, problem)
        expires_at = self._expiry(cells.get("expires_at", ""), problem)
        reason = cells.get("reason", "")
        if not reason:
            problem("reason", "missing_value", "A reason is required.")
        elif len(reason) > MAX_REASON:
            problem("reason", "too_long", f"The reason is longer than {MAX_REASON} characters.")
        if errors or amount is None:
            return errors
        by_email = customer_id is None
        return CheckedRow(number, customer_id, email, amount, expires_at, reason, by_email)

    def _customer(
        self, cells: dict[str, str], problem: Callable[[str | None, str, str], None]
    ) -> tuple[int | None, str | None]:
        raw_id, email = cells.get("customer_id", ""), cells.get("email", "")
        if raw_id:
            customer_id = parse_customer_id(raw_id)
            if customer_id is None:
                problem(
                    "customer_id",
                    "invalid_customer_id",
                    "Not a Shopify customer id (digits, or gid://shopify/Customer/...).",
                )
            return customer_id, email or None
        if not email:
            problem("customer_id", "missing_value", "Give the customer's id or email.")
            return None, None
        if len(email) > _MAX_EMAIL or _EMAIL.fullmatch(email) is None:
            problem("email", "invalid_email", "Not an email address.")
        return None, email

    def _amount(
        self, cells: dict[str, str], problem: Callable[[str | None, str, str], None]
    ) -> Money | None:
        try:
            currency = self._currency(cells.get("currency", "") or self.default_currency)
        except LedgerError as error:
            problem("currency", error.code, error.message)
            return None
        raw = cells.get("amount", "")
        if not raw:
            problem("amount", "missing_value", "An amount is required.")
            return None
        try:
            return Money(parse_amount(raw, currency), currency)
        except LedgerError as error:
            problem("amount", error.code, error.message)
            return None

    def _currency(self, raw: str) -> str:
        """A file names a few currencies a hundred thousand times: each is checked once."""
        code = self.currencies.get(raw)
        if code is None:
            code = self.currencies[raw] = normalize_currency(raw)
        return code

    def _expiry(self, raw: str, problem: Callable[[str | None, str, str], None]) -> datetime | None:
        if not raw:
            return None
        try:
            expires_at = parse_expiry(raw, self.zone)
        except (ValueError, OverflowError):
            problem(
                "expires_at",
                "invalid_expiry",
                "Not a date (2027-01-31) or an ISO date-time (2027-01-31T18:00:00Z).",
            )
            return None
        if expires_at <= self.now:
            problem("expires_at", "expiry_in_past", "The expiry must be in the future.")
        return expires_at


def parse_customer_id(raw: str) -> int | None:
    """A Shopify customer id from digits or a customer GID; None if it is neither."""
    gid = _GID.fullmatch(raw)
    digits = gid.group(1) if gid else raw
    if _DIGITS.fullmatch(digits) is None or not 0 < int(digits) <= _MAX_ID:
        return None
    return int(digits)


def parse_expiry(raw: str, zone: ZoneInfo) -> datetime:
    """A date means "good through that day" in the shop's zone: it expires at the next midnight.
    A date-time without an offset is read in the shop's zone too. Answered in UTC."""
    if _DATE.fullmatch(raw):
        day = date.fromisoformat(raw)
        return datetime.combine(day + timedelta(days=1), time(), tzinfo=zone).astimezone(UTC)
    parsed = datetime.fromisoformat(raw)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


# -- customers: emails resolved, erased or deleted customers refused --------------------------


def _check_customers(session: Session, shop_id: int, checked: CheckedFile) -> None:
    report = checked.report
    emails = {row.email.lower() for row in checked.rows if row.by_email and row.email}
    known = _customers_by_email(session, shop_id, emails)
    resolved = [_resolve(row, known, report) if row.by_email else row for row in checked.rows]
    addressed = [row for row in resolved if row is not None]
    gone = _gone_customers(session, shop_id, {row.customer for row in addressed})
    for row in addressed:
        if row.customer in gone:
            column = "email" if row.by_email else "customer_id"
            report.errors.append(RowError(row.row_number, column, *gone[row.customer]))
    checked.rows = [row for row in addressed if row.customer not in gone]
    report.errors.sort(key=lambda error: error.row)
    _total(checked)


def _resolve(row: CheckedRow, known: dict[str, list[int]], report: Report) -> CheckedRow | None:
    assert row.email is not None
    found = known.get(row.email.lower(), [])
    if len(found) == 1:
        return replace(row, shopify_customer_id=found[0])
    if found:
        report.errors.append(
            RowError(
                row.row_number,
                "email",
                "ambiguous_email",
                f"{len(found)} customers have this email; use the Shopify customer id.",
            )
        )
    else:
        report.errors.append(
            RowError(
                row.row_number,
                "email",
                "unknown_email",
                "No customer CreditCraft knows has this email; use the Shopify customer id "
                "(looking emails up in Shopify is not done yet).",
            )
        )
    return None


def _customers_by_email(session: Session, shop_id: int, emails: set[str]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for chunk in chunks(sorted(emails)):
        stmt = select(func.lower(Customer.email, type_=String), Customer.shopify_customer_id).where(
            Customer.shop_id == shop_id,
            Customer.redacted_at.is_(None),
            func.lower(Customer.email).in_(chunk),
        )
        for email, customer_id in session.execute(stmt):
            found.setdefault(email, []).append(customer_id)
    return found


def _gone_customers(session: Session, shop_id: int, ids: set[int]) -> dict[int, tuple[str, str]]:
    """Customers credit must not go to: erased on request, or deleted in Shopify.

    The shop's few such customers in one query, rather than the file's many in IN-lists."""
    stmt = select(Customer.shopify_customer_id, Customer.redacted_at).where(
        Customer.shop_id == shop_id,
        (Customer.redacted_at.is_not(None)) | (Customer.deleted_at.is_not(None)),
    )
    gone: dict[int, tuple[str, str]] = {}
    for customer_id, redacted_at in session.execute(stmt):
        if customer_id in ids:
            gone[customer_id] = (
                ("customer_redacted", "This customer's data was erased on their request.")
                if redacted_at is not None
                else ("customer_deleted", "This customer was deleted in Shopify.")
            )
    return gone


def chunks(items: list[_T], size: int = LOOKUP_CHUNK) -> Iterator[list[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def report_lines(report: dict[str, Any], max_errors: int = 20) -> list[str]:
    """The dry-run report (``Report.to_json()``) as plain lines, for the CLI."""
    counts = f"{report['valid_rows']} valid, {report['invalid_rows']} invalid"
    lines = [f"rows: {report['rows']} ({counts})"]
    for total in report["totals"]:
        lines.append(f"total: {total['amount']} {total['currency']} in {total['rows']} rows")
    if report["file_error"]:
        lines.append(f"file error: {report['file_error']['message']}")
    for error in report["errors"][:max_errors]:
        where = f"row {error['row']}" + (f", {error['field']}" if error["field"] else "")
        lines.append(f"{where}: {error['message']}")
    hidden = report["errors_total"] - min(max_errors, len(report["errors"]))
    if hidden > 0:
        lines.append(f"… and {hidden} more errors")
    if report["ignored_columns"]:
        lines.append(f"ignored columns: {', '.join(report['ignored_columns'])}")
    lines.extend(f"note: {note}" for note in report["notes"])
    return lines
