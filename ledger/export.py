"""The ledger as CSV, for the merchant's accountant: one row per entry, oldest first.

The rows come from one query on a server-side cursor (``yield_per``), so a shop's whole
ledger (a million entries) streams with flat memory, in one consistent snapshot, from the
``(shop_id, created_at)`` index. Amounts are decimal strings, as everywhere on the wire; free
text a spreadsheet would run as a formula is defused.

Entries retention moved to ``ledger_entries_archive`` (ledger/archive.py) are the ledger too:
the query reads the UNION ALL of both tables, ordered by (created_at, id) as a whole, so
archived and hot entries interleave as they were written, in one snapshot (an archive run
committing meanwhile cannot show an entry twice or not at all). The shop and time filters
stand outside the UNION, so PostgreSQL treats the two tables as one (an append relation),
scans each by its (shop_id, created_at) index and merges the two ordered streams (Merge
Append): the first rows come at once, as from the hot table alone, and a shop with nothing
archived pays one empty index probe.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import DateTime, Select, Table, select, text, type_coerce, union_all
from sqlalchemy.orm import Session

from ledger.money import exponent
from ledger.views import iso
from models import CreditAccount, Customer, LedgerEntry, LedgerEntryArchive

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


_HOT = cast(Table, LedgerEntry.__table__)
_ARCHIVE = cast(Table, LedgerEntryArchive.__table__)


def ledger_csv_rows(
    session: Session, shop_id: int, within: LedgerRange, *, batch: int = STREAM_BATCH
) -> Iterator[str]:
    """The shop's entries in ``within`` as CSV text (header first), ``batch`` rows at a time,
    archived entries included.

    Rows are read through Core, not the ORM, with the timestamp's UTC decorator bypassed:
    at a million rows, per-row object and type overhead is most of the export's time.
    """
    if session.get_bind().dialect.name == "postgresql":
        # Compiling a plan over a million rows to machine code (JIT, on by default) takes
        # longer than the first rows do, and the rows are only copied out.
        session.execute(text("SET LOCAL jit = off"))
    stmt = _export_query(shop_id, within)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(LEDGER_COLUMNS)
    # Closed however the generator ends (a download cut short closes it: GeneratorExit), so
    # the server-side cursor does not outlive it.
    with session.connection().execute(stmt.execution_options(yield_per=batch)) as rows:
        for count, row in enumerate(rows, start=1):
            writer.writerow(_cells(row))
            if count % batch == 0:
                yield drain(out)
    yield drain(out)


# The entry columns the export reads, of either table.
_READ = (
    "shop_id",
    "account_id",
    "created_at",
    "id",
    "kind",
    "amount",
    "balance_after",
    "lot_id",
    "shopify_order_id",
    "shopify_refund_id",
    "actor",
    "reason",
    "note",
    "sequence",
    "hash",
)


def _export_query(shop_id: int, within: LedgerRange) -> Select[Any]:
    """The shop's entries of both tables in ``within``, with customer and currency, oldest
    first. No condition inside the UNION's branches: see the module docstring."""
    both = union_all(
        *(select(*(table.c[name] for name in _READ)) for table in (_HOT, _ARCHIVE))
    ).subquery("entries")
    entries = both.c
    stmt = (
        select(
            type_coerce(entries.created_at, DateTime(timezone=True)),
            entries.id,
            Customer.shopify_customer_id,
            CreditAccount.currency,
            entries.kind,
            entries.amount,
            entries.balance_after,
            entries.lot_id,
            entries.shopify_order_id,
            entries.shopify_refund_id,
            entries.actor,
            entries.reason,
            entries.note,
            entries.sequence,
            entries.hash,
        )
        .join(CreditAccount, CreditAccount.id == entries.account_id)
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(entries.shop_id == shop_id)
        .order_by(entries.created_at, entries.id)
    )
    if within.start is not None:
        stmt = stmt.where(entries.created_at >= within.start)
    if within.end is not None:
        stmt = stmt.where(entries.created_at < within.end)
    if within.currency is not None:
        stmt = stmt.where(CreditAccount.currency == within.currency)
    return stmt


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
