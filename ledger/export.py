"""The ledger as CSV, for the merchant's accountant: one row per entry, oldest first.

The rows come from one query on a server-side cursor (``yield_per``), so a shop's whole
ledger (a million entries) streams with flat memory, in one consistent snapshot, from the
``(shop_id, created_at)`` index. Amounts are decimal strings, as everywhere on the wire; free
text a spreadsheet would run as a formula is defused.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, select, type_coerce
from sqlalchemy.orm import Session

from ledger.money import exponent
from ledger.views import iso
from models import CreditAccount, Customer, LedgerEntry

# Rows fetched from the cursor, and written to the response, at a time.
STREAM_BATCH = 2000
# Spreadsheets run cells starting with these as formulas (OWASP's CSV injection advice).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

LEDGER_COLUMNS = (
    "created_at",
    "entry_id",
    "customer_id",
    "currency",
    "kind",
    "amount",
    "balance_after",
    "lot_id",
    "order_id",
    "refund_id",
    "actor",
    "reason",
    "note",
    "sequence",
    "hash",
)


@dataclass(frozen=True)
class LedgerRange:
    """Which entries: created in ``[start, end)`` (None: unbounded), in ``currency`` or all."""

    start: datetime | None = None
    end: datetime | None = None
    currency: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"from": iso(self.start), "to": iso(self.end), "currency": self.currency}


def spreadsheet_safe(text: str | None) -> str:
    """Text a spreadsheet would run as a formula gets a leading apostrophe."""
    if text is None:
        return ""
    return "'" + text if text.startswith(_FORMULA_START) else text


def ledger_csv_rows(session: Session, shop_id: int, within: LedgerRange) -> Iterator[str]:
    """The shop's entries in ``within`` as CSV text (header first), a batch of rows at a time.

    Rows are read through Core, not the ORM, with the timestamp's UTC decorator bypassed:
    at a million rows, per-row object and type overhead is most of the export's time.
    """
    stmt = (
        select(
            type_coerce(LedgerEntry.created_at, DateTime(timezone=True)),
            LedgerEntry.id,
            Customer.shopify_customer_id,
            CreditAccount.currency,
            LedgerEntry.kind,
            LedgerEntry.amount,
            LedgerEntry.balance_after,
            LedgerEntry.lot_id,
            LedgerEntry.shopify_order_id,
            LedgerEntry.shopify_refund_id,
            LedgerEntry.actor,
            LedgerEntry.reason,
            LedgerEntry.note,
            LedgerEntry.sequence,
            LedgerEntry.hash,
        )
        .join(CreditAccount, CreditAccount.id == LedgerEntry.account_id)
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(LedgerEntry.shop_id == shop_id)
        .order_by(LedgerEntry.created_at, LedgerEntry.id)
    )
    if within.start is not None:
        stmt = stmt.where(LedgerEntry.created_at >= within.start)
    if within.end is not None:
        stmt = stmt.where(LedgerEntry.created_at < within.end)
    if within.currency is not None:
        stmt = stmt.where(CreditAccount.currency == within.currency)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(LEDGER_COLUMNS)
    rows = session.connection().execute(stmt.execution_options(yield_per=STREAM_BATCH))
    for count, row in enumerate(rows, start=1):
        writer.writerow(_cells(row))
        if count % STREAM_BATCH == 0:
            yield drain(out)
    yield drain(out)


def _cells(row: Any) -> tuple[object, ...]:
    (created_at, entry_id, customer, currency, kind, amount, balance_after, lot_id, order_id,
     refund_id, actor, reason, note, sequence, chain_hash) = row  # fmt: skip
    exp = _exponent(currency)
    return (
        utc_iso(created_at),
        entry_id,
        customer,
        currency,
        kind,
        _decimal(amount, exp),
        _decimal(balance_after, exp),
        lot_id or "",
        order_id or "",
        refund_id or "",
        spreadsheet_safe(actor),
        spreadsheet_safe(reason),
        spreadsheet_safe(note),
        sequence,
        chain_hash,
    )


def utc_iso(value: datetime) -> str:
    """``views.iso`` of a timestamp read without the UTC decorator (SQLite's come naive)."""
    at = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return at.isoformat().replace("+00:00", "Z")


@functools.cache
def _exponent(currency: str) -> int:
    return exponent(currency)


def _decimal(minor: int, exp: int) -> str:
    """``format_amount``'s arithmetic, with the currency checked once per export, not per
    cell (tests/admin_api compare the two)."""
    sign = "-" if minor < 0 else ""
    if exp == 0:
        return f"{sign}{abs(minor)}"
    whole, frac = divmod(abs(minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}"


def drain(out: io.StringIO) -> str:
    """What was written to ``out`` since the last drain."""
    text = out.getvalue()
    out.seek(0)
    out.truncate()
    return text
