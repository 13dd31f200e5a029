"""Bulk issue: the CSV checked whole, the dry run, the import, and the job issuing each row once.

Parsing is checked without a database; everything else runs on PostgreSQL. The job runs inline
in the test's rolled-back transaction (one lane), except where real concurrency is the point:
those tests commit for real on fresh shops, each in its own threads and connections, and a
real worker process runs the queued job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from extensions import db
from jobs.bulk import bulk_issue, enqueue_bulk_issue, job_id, sweep_bulk_imports
from jobs.maintenance import purge_idempotency_keys
from jobs.queues import shared_queue
from ledger import bulk, operations
from ledger.book import Actor
from ledger.idempotency import KEY_TTL
from ledger.money import Money
from ledger.verify import verify_account
from models import (
    AuditLog,
    BulkImport,
    BulkImportRow,
    CreditAccount,
    CreditLot,
    Customer,
    IdempotencyKey,
    LedgerEntry,
    Shop,
    ShopifyOutbox,
)
from tests import factories
from tests.factories import CustomerFactory, ShopFactory

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LATER = "2027-06-30"  # a date after NOW
ACTOR = "staff:8410000042"


def csv_bytes(*rows: str, header: str = "customer_id,amount,currency,expires_at,reason") -> bytes:
    return ("\r\n".join([header, *rows]) + "\r\n").encode()


def many(count: int, first: int = 9_300_000_000, amount: str = "1.25") -> bytes:
    """``count`` rows for ``count`` customers (new to CreditCraft), one credit each."""
    return csv_bytes(*(f"{first + n},{amount},USD,{LATER},spring promo" for n in range(count)))


def parse(data: bytes, **kw: Any) -> bulk.CheckedFile:
    return bulk.parse_csv(data, now=NOW, **kw)


def codes(checked: bulk.CheckedFile) -> list[tuple[int, str | None, str]]:
    return [(error.row, error.field, error.code) for error in checked.report.errors]


# -- reading the file (no database) -----------------------------------------------------------


@pytest.mark.smoke
def test_bom_crlf_quotes_and_header_aliases_are_read_as_a_spreadsheet_wrote_them():
    data = (
        "\ufeffCustomer ID,E-mail,Credit,Currency Code,Expiry Date,Reason,Notes\r\n"
        '7408348290,,"1,5",usd,2027-01-31,"Spring, ""VIP"" promo",ignored\r\n'
        '7408348291,,12.50,,,"two\r\nlines",\r\n'
        ",,,,,,\r\n"  # an empty row a spreadsheet left behind
        "gid://shopify/Customer/7408348292,,3,JPY,2027-01-31T18:00:00,why,\r\n"
    ).encode()

    checked = parse(data, timezone="Europe/Berlin", default_currency="EUR")

    assert codes(checked) == [(2, "amount", "invalid_amount")]  # "1,5": a decimal comma
    assert checked.report.columns == {
        "customer_id": "Customer ID",
        "email": "E-mail",
        "amount": "Credit",
        "currency": "Currency Code",
        "expires_at": "Expiry Date",
        "reason": "Reason",
    }
    assert checked.report.ignored_columns == ["Notes"]
    second, third = checked.rows
    assert (second.row_number, second.shopify_customer_id) == (3, 7408348291)
    assert (second.amount.minor, second.amount.currency) == (1250, "EUR")  # blank: shop's
    assert (second.reason, second.expires_at) == ("two\r\nlines", None)
    # Row 4 was blank (skipped, still numbered as the spreadsheet numbers it).
    assert (third.row_number, third.shopify_customer_id, third.amount.minor) == (5, 7408348292, 3)
    # A date-time without an offset is the shop's time (Berlin, winter: UTC+1).
    assert third.expires_at == datetime(2027, 1, 31, 17, 0, tzinfo=UTC)
    assert checked.report.total_rows == 3


@pytest.mark.smoke
def test_a_date_is_good_through_that_day_in_the_shops_time_zone():
    checked = parse(csv_bytes(f"1,5,USD,{LATER},r"), timezone="America/New_York")
    # 2027-06-30 in New York (EDT, UTC-4) ends at 2027-07-01 00:00 local = 04:00 UTC.
    assert checked.rows[0].expires_at == datetime(2027, 7, 1, 4, 0, tzinfo=UTC)
    checked = parse(csv_bytes("1,5,USD,2027-06-30T10:00:00Z,r"), timezone="America/New_York")
    assert checked.rows[0].expires_at == datetime(2027, 6, 30, 10, 0, tzinfo=UTC)


@pytest.mark.smoke
def test_a_semicolon_separated_file_is_read_too():
    checked = parse(b"customer_id;amount;reason\n1;2.50;thanks\n")
    assert [(r.shopify_customer_id, r.amount.minor, r.reason) for r in checked.rows] == [
        (1, 250, "thanks")
    ]


@pytest.mark.smoke
def test_totals_per_currency_are_exact_and_minor_units_follow_the_currency():
    rows = [f"{n},0.10,USD,,r" for n in range(1, 1001)] + ["5000,1000,JPY,,r", "5001,1.005,KWD,,r"]
    checked = parse(csv_bytes(*rows))

    totals = checked.report.to_json()["totals"]
    assert totals == [
        {"currency": "JPY", "amount": "1000", "rows": 1},
        {"currency": "KWD", "amount": "1.005", "rows": 1},
        {"currency": "USD", "amount": "100.00", "rows": 1000},  # 1000 x 0.10, not 99.99999
    ]
    assert checked.report.to_json()["ok"] is True


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("row", "field", "code"),
    [
        ("abc,5,USD,,r", "customer_id", "invalid_customer_id"),
        ("0,5,USD,,r", "customer_id", "invalid_customer_id"),
        ("9223372036854775808,5,USD,,r", "customer_id", "invalid_customer_id"),
        ("gid://shopify/Order/5,5,USD,,r", "customer_id", "invalid_customer_id"),
        (",5,USD,,r", "customer_id", "missing_value"),
        ("1,,USD,,r", "amount", "missing_value"),
        ("1,5.001,USD,,r", "amount", "invalid_amount"),
        ("1,1.5,JPY,,r", "amount", "invalid_amount"),
        ("1,-5,USD,,r", "amount", "invalid_amount"),
        ("1,0,USD,,r", "amount", "invalid_amount"),
        ("1,1e3,USD,,r", "amount", "invalid_amount"),
        ("1,$5,USD,,r", "amount", "invalid_amount"),
        ("1,5,DOLLARS,,r", "currency", "invalid_currency"),
        ("1,5,XXX,,r", "currency", "invalid_currency"),
        ("1,5,USD,31/01/2027,r", "expires_at", "invalid_expiry"),
        ("1,5,USD,2026-11-21,r", "expires_at", "expiry_in_past"),
        ("1,5,USD,2026-11-22T11:59:59Z,r", "expires_at", "expiry_in_past"),
        ("1,5,USD,,", "reason", "missing_value"),
        ("1,5,USD,,   ", "reason", "missing_value"),
        (f"1,5,USD,,{'x' * 256}", "reason", "too_long"),
        ("1,5,USD,,r,surplus", None, "too_many_fields"),
    ],
)
def test_each_bad_cell_is_a_row_error_naming_its_row_and_column(row, field, code):
    checked = parse(csv_bytes("7,1,USD,,fine", row))

    assert codes(checked) == [(3, field, code)]
    assert checked.report.errors[0].message
    assert [r.row_number for r in checked.rows] == [2]
    report = checked.report.to_json()
    assert (report["ok"], report["rows"], report["valid_rows"], report["invalid_rows"]) == (
        False,
        2,
        1,
        1,
    )


@pytest.mark.smoke
def test_every_error_of_a_row_is_reported_and_a_reason_of_255_characters_is_fine():
    checked = parse(csv_bytes("x,1.001,USD,yesterday,", f"1,5,USD,,{'y' * 255}"))
    assert codes(checked) == [
        (2, "customer_id", "invalid_customer_id"),
        (2, "amount", "invalid_amount"),
        (2, "expires_at", "invalid_expiry"),
        (2, "reason", "missing_value"),
    ]
    assert [r.row_number for r in checked.rows] == [3]


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"customer_id,amount,reason\r\n", "no_rows"),
        (b"customer_id,amount,reason\r\n,,\r\n\r\n", "no_rows"),
        ("customer_id,amount,reason\n1,5,caf\u00e9\n".encode("latin-1"), "not_utf8"),
        (b"email,amount\n", "missing_columns"),
        (b"amount,reason\n5,r\n", "missing_columns"),
        (b"customer_id,amount,Amount,reason\n", "duplicate_columns"),
        (b'customer_id,amount,reason\n1,5,"unterminated\n', "malformed_csv"),
        (b"customer_id,amount,reason\n1,5,a\x00b\n", "not_text"),
    ],
)
def test_a_file_that_cannot_be_read_is_one_file_error(data, code):
    checked = parse(data)

    assert checked.report.file_error is not None
    assert checked.report.file_error.code == code
    assert checked.rows == []
    report = checked.report.to_json()
    assert (report["ok"], report["file_error"]["code"], report["valid_rows"]) == (False, code, 0)


@pytest.mark.smoke
def test_too_many_rows_and_too_many_bytes_are_file_errors():
    assert parse(many(4), max_rows=3).report.file_error.code == "too_many_rows"  # type: ignore[union-attr]
    assert parse(many(3), max_rows=3).report.file_error is None
    huge = b"customer_id,amount,reason\n" + b"1,1,r\n" * (bulk.MAX_FILE_BYTES // 6 + 1)
    assert parse(huge).report.file_error.code == "file_too_large"  # type: ignore[union-attr]


def test_missing_columns_name_what_is_expected():
    error = parse(b"id,value\n1,2\n").report.file_error
    assert error is not None
    assert error.details["missing"] == ["customer_id or email", "amount", "reason"]
    assert error.details["found"] == ["id", "value"]
    assert "customer_id" in error.message


# -- customers by email, erased and deleted customers (reads the database) -------------------


@pytest.fixture
def shop(app_context: Flask) -> Shop:
    shop: Shop = ShopFactory(timezone="UTC")
    return shop


def test_emails_resolve_to_known_customers_case_insensitively_and_the_rest_are_errors(shop):
    ada = CustomerFactory(
        shop_id=shop.id, shopify_customer_id=7_500_000_001, email="Ada@Example.com"
    )
    CustomerFactory(shop_id=shop.id, shopify_customer_id=7_500_000_002, email="twin@example.com")
    CustomerFactory(shop_id=shop.id, shopify_customer_id=7_500_000_003, email="TWIN@example.com")
    other_shop = ShopFactory()
    CustomerFactory(shop_id=other_shop.id, email="stranger@example.com")
    data = csv_bytes(
        ",ada@example.com,5,r",
        ",twin@example.com,5,r",
        ",stranger@example.com,5,r",
        ",not-an-email,5,r",
        "7500000009,whoever@example.com,5,r",  # an id wins over an email
        header="customer_id,email,amount,reason",
    )

    checked = bulk.check_file(db.session, shop, data, now=NOW)

    assert codes(checked) == [
        (3, "email", "ambiguous_email"),
        (4, "email", "unknown_email"),
        (5, "email", "invalid_email"),
    ]
    assert "not done yet" in checked.report.errors[1].message
    assert [(r.row_number, r.shopify_customer_id) for r in checked.rows] == [
        (2, ada.shopify_customer_id),
        (6, 7_500_000_009),
    ]
    assert checked.report.to_json()["notes"] == [bulk.EMAIL_LOOKUP_NOTE]
    assert checked.report.to_json()["totals"] == [{"currency": "USD", "amount": "10.00", "rows": 2}]


def test_credit_never_goes_to_an_erased_or_deleted_customer(shop):
    CustomerFactory(shop_id=shop.id, shopify_customer_id=7_500_000_011, redacted_at=NOW, email=None)
    CustomerFactory(shop_id=shop.id, shopify_customer_id=7_500_000_012, deleted_at=NOW)
    data = csv_bytes(
        "7500000011,5,r", "7500000012,5,r", "7500000013,5,r", header="customer_id,amount,reason"
    )

    checked = bulk.check_file(db.session, shop, data, now=NOW)

    assert codes(checked) == [
        (2, "customer_id", "customer_redacted"),
        (3, "customer_id", "customer_deleted"),
    ]
    assert [r.shopify_customer_id for r in checked.rows] == [7_500_000_013]


def counts(shop_id: int) -> dict[str, int]:
    tables = (BulkImport, BulkImportRow, Customer, CreditAccount, LedgerEntry, AuditLog)
    db.session.expire_all()
    return {
        model.__tablename__: db.session.scalar(
            select(func.count()).select_from(model).where(model.shop_id == shop_id)
        )
        or 0
        for model in tables
    }


def test_the_dry_run_changes_nothing(app_context, shop):
    before = counts(shop.id)
    checked = bulk.check_file(db.session, shop, many(5), now=NOW)
    db.session.commit()
    assert checked.report.ok
    assert counts(shop.id) == before

    args = ["credits", "import", "-", "--shop", shop.domain, "--dry-run"]
    result = app_context.test_cli_runner().invoke(args=args, input=many(5))
    assert result.exit_code == 0, result.output
    assert "rows: 5 (5 valid, 0 invalid)" in result.output
    assert "total: 6.25 USD in 5 rows" in result.output
    assert counts(shop.id) == before


# -- the import: one per file ---------------------------------------------------------------


def create(shop: Shop, data: bytes, filename: str = "promo.csv") -> bulk.Created:
    return bulk.create_import(db.session, shop, data, filename=filename, actor=ACTOR, now=NOW)


def test_a_valid_file_is_stored_validated_with_its_rows_and_an_audit_row(shop):
    created = create(shop, many(3), filename="C:\\Users\\me\\promo.csv")

    found = created.bulk_import
    assert created.created
    assert (found.state, found.total_rows, found.valid_rows, found.filename) == (
        "validated",
        3,
        3,
        "promo.csv",
    )
    assert found.file_hash == bulk.file_hash(many(3))
    assert found.report["ok"] is True
    rows = db.session.scalars(
        select(BulkImportRow)
        .where(BulkImportRow.import_id == found.id)
        .order_by(BulkImportRow.row_number)
    ).all()
    assert [(r.row_number, r.amount, r.currency, r.state) for r in rows] == [
        (2, 125, "USD", "pending"),
        (3, 125, "USD", "pending"),
        (4, 125, "USD", "pending"),
    ]
    assert rows[0].expires_at == datetime(2027, 7, 1, tzinfo=UTC)
    audit = db.session.scalars(select(AuditLog).where(AuditLog.shop_id == shop.id)).one()
    assert (audit.action, audit.actor, audit.target_id) == (
        "bulk_import.create",
        ACTOR,
        str(found.id),
    )


def test_the_same_file_in_the_same_shop_is_the_same_import(shop):
    first = create(shop, many(3))
    again = create(shop, many(3), filename="renamed.csv")
    elsewhere = create(ShopFactory(), many(3))

    assert (again.created, again.bulk_import.id) == (False, first.bulk_import.id)
    assert elsewhere.created
    assert elsewhere.bulk_import.id != first.bulk_import.id
    assert counts(shop.id)["bulk_import_rows"] == 3


def test_a_file_with_row_errors_is_stored_invalid_without_rows_and_cannot_be_started(shop):
    data = csv_bytes("1,5,USD,,ok", "2,oops,USD,,bad")
    found = create(shop, data).bulk_import

    assert (found.state, found.total_rows, found.valid_rows) == ("invalid", 2, 0)
    assert found.report["errors"] == [
        {
            "row": 3,
            "field": "amount",
            "code": "invalid_amount",
            "message": found.report["errors"][0]["message"],
        }
    ]
    assert counts(shop.id)["bulk_import_rows"] == 0
    with pytest.raises(bulk.NotStartable):
        bulk.start_import(db.session, shop.id, found.id, actor=ACTOR, now=NOW)


def test_an_invalid_file_uploaded_again_is_checked_again(shop):
    data = csv_bytes(",ada@example.com,5,r", header="customer_id,email,amount,reason")
    first = create(shop, data).bulk_import
    assert first.state == "invalid"

    CustomerFactory(shop_id=shop.id, shopify_customer_id=7_500_000_021, email="ada@example.com")
    again = create(shop, data)

    assert (again.created, again.bulk_import.id, again.bulk_import.state) == (
        False,
        first.id,
        "validated",
    )
    rows = db.session.scalars(
        select(BulkImportRow).where(BulkImportRow.import_id == first.id)
    ).all()
    assert [(r.shopify_customer_id, r.email) for r in rows] == [(7_500_000_021, "ada@example.com")]


def test_a_file_level_error_stores_nothing(shop):
    before = counts(shop.id)
    with pytest.raises(bulk.FileRejected) as rejected:
        create(shop, b"no,useful,columns\n1,2,3\n")
    assert rejected.value.error.code == "missing_columns"
    assert counts(shop.id) == before


# -- issuing --------------------------------------------------------------------------------


def start(shop: Shop, found: BulkImport) -> BulkImport:
    return bulk.start_import(db.session, shop.id, found.id, actor=ACTOR, now=NOW)


def issue(import_id: int, **kw: Any) -> dict[str, Any]:
    return bulk_issue(import_id, (NOW + timedelta(minutes=1)).isoformat(), **kw)


def entries_of(found: BulkImport) -> list[LedgerEntry]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            select(LedgerEntry)
            .where(
                LedgerEntry.shop_id == found.shop_id,
                LedgerEntry.idempotency_key.like(f"bulk:{found.file_hash}:%"),
            )
            .order_by(LedgerEntry.idempotency_key)
        )
    )


def rows_of(found: BulkImport) -> list[BulkImportRow]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            select(BulkImportRow)
            .where(BulkImportRow.import_id == found.id)
            .order_by(BulkImportRow.row_number)
        )
    )


def fresh(found: BulkImport) -> BulkImport:
    db.session.expire_all()
    again = db.session.get(BulkImport, found.id)
    assert again is not None
    return again


def test_issuing_credits_each_row_once_as_a_bulk_lot_under_its_row_key(shop):
    known = CustomerFactory(
        shop_id=shop.id, shopify_customer_id=7_500_000_031, email="k@example.com"
    )
    data = csv_bytes(
        f"7500000031,,12.50,USD,{LATER},thanks",
        ",k@example.com,2.50,USD,,again",
        "7500000032,,1000,JPY,,welcome",
        header="customer_id,email,amount,currency,expires_at,reason",
    )
    found = create(shop, data).bulk_import
    started = start(shop, found)
    assert (started.state, started.started_at) == ("issuing", NOW)

    outcome = issue(found.id)

    assert outcome == {
        "import_id": found.id,
        "state": "finished",
        "issued_rows": 3,
        "failed_rows": 0,
        "pending_rows": 0,
    }
    entries = entries_of(found)
    assert [e.idempotency_key for e in entries] == [
        f"bulk:{found.file_hash}:{n}" for n in (2, 3, 4)
    ]
    assert [(e.kind, e.amount, e.actor, e.reason) for e in entries] == [
        ("issue", 1250, ACTOR, "thanks"),
        ("issue", 250, ACTOR, "again"),
        ("issue", 1000, ACTOR, "welcome"),
    ]
    lots = {
        lot.id: lot
        for lot in db.session.scalars(select(CreditLot).where(CreditLot.shop_id == shop.id))
    }
    assert {lots[e.lot_id].source for e in entries} == {"bulk"}
    assert lots[entries[0].lot_id].expires_at == datetime(2027, 7, 1, tzinfo=UTC)
    rows = rows_of(found)
    assert [(r.state, r.entry_id, r.error) for r in rows] == [
        ("issued", e.id, None) for e in entries
    ]
    assert rows[1].shopify_customer_id == known.shopify_customer_id
    done = fresh(found)
    assert (done.state, done.issued_rows, done.failed_rows, done.finished_at) == (
        "finished",
        3,
        0,
        NOW + timedelta(minutes=1),
    )
    for account in db.session.scalars(
        select(CreditAccount).where(CreditAccount.shop_id == shop.id)
    ):
        assert verify_account(db.session, account.id) == []
    assert bulk.import_json(done)["rows"] == {
        "total": 3,
        "valid": 3,
        "issued": 3,
        "failed": 0,
        "pending": 0,
    }
    assert bulk.import_json(done)["percent"] == 100


def test_credit_added_to_an_account_with_credit_extends_its_chain_and_keeps_its_lots(shop):
    holder = 7_500_000_041
    by = Actor(shop.id, NOW - timedelta(days=1), "staff:1", "earlier", idempotency_key="e-1")
    earlier = operations.issue(db.session, by, customer=holder, amount=Money(700, "USD"))
    found = create(shop, csv_bytes(f"{holder},3,USD,,more", f"{holder},2,EUR,,euros")).bulk_import
    start(shop, found)

    issue(found.id)

    accounts = {
        a.currency: a
        for a in db.session.scalars(select(CreditAccount).where(CreditAccount.shop_id == shop.id))
    }
    usd = accounts["USD"]
    assert (usd.balance, usd.last_sequence) == (1000, 2)
    assert (accounts["EUR"].balance, accounts["EUR"].last_sequence) == (200, 1)
    lots = db.session.scalars(
        select(CreditLot).where(CreditLot.account_id == usd.id).order_by(CreditLot.created_at)
    ).all()
    assert [(lot.source, lot.remaining) for lot in lots] == [("manual", 700), ("bulk", 300)]
    assert str(lots[0].id) == earlier.lot["id"]
    for account in accounts.values():
        assert verify_account(db.session, account.id) == []


def test_running_the_job_again_changes_nothing(shop):
    found = create(shop, many(5)).bulk_import
    start(shop, found)
    issue(found.id, batch_size=2)
    first = [(e.id, e.idempotency_key) for e in entries_of(found)]

    assert issue(found.id)["state"] == "finished"
    start(shop, found)  # a second start of a finished import: a no-op
    assert issue(found.id, batch_size=2)["issued_rows"] == 5

    assert [(e.id, e.idempotency_key) for e in entries_of(found)] == first
    done = fresh(found)
    assert (done.issued_rows, done.failed_rows) == (5, 0)


def test_an_import_not_started_is_not_issued(shop):
    found = create(shop, many(2)).bulk_import
    assert issue(found.id)["state"] == "validated"
    assert entries_of(found) == []


def test_the_job_for_an_import_that_no_longer_exists_ends_quietly(app_context):
    assert bulk_issue(2**62) == {"import_id": 2**62, "state": "not_found"}


def test_progress_is_stored_batch_by_batch_and_a_crash_between_batches_resumes(shop):
    """The job dies after its first batch (an exception between batches): the import keeps
    its progress and the error; started again, it issues the rest, none twice."""
    found = create(shop, many(5)).bulk_import
    start(shop, found)
    seen: list[tuple[int, int, int]] = []

    def crash_after_first_batch(progress: bulk.Progress) -> None:
        seen.append((progress.issued_rows, progress.pending_rows, progress.percent))
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        issue(found.id, batch_size=2, on_batch=crash_after_first_batch)

    assert seen == [(2, 3, 40)]
    stopped = fresh(found)
    # Inline there is no retry left: the import is failed, with its progress and the error.
    assert (stopped.state, stopped.issued_rows, stopped.error) == (
        "failed",
        2,
        "RuntimeError: worker lost",
    )
    assert bulk.import_json(stopped)["rows"]["pending"] == 3
    assert [r.state for r in rows_of(found)] == [
        "issued",
        "issued",
        "pending",
        "pending",
        "pending",
    ]

    assert start(shop, found).state == "issuing"  # starting again resumes
    progress: list[int] = []
    outcome = issue(found.id, batch_size=2, on_batch=lambda p: progress.append(p.done_rows))

    assert progress == [4, 5]
    assert (outcome["state"], outcome["issued_rows"]) == ("finished", 5)
    assert len(entries_of(found)) == 5
    assert fresh(found).error is None


def test_rows_issued_but_not_recorded_before_a_crash_are_replayed_not_issued_again(shop):
    """The worker died after the ledger committed rows and before it recorded them: the rows
    are still pending, and the rerun gets each row's first receipt back from its key."""
    found = create(shop, many(4)).bulk_import
    start(shop, found)
    issue(found.id)
    first = {e.idempotency_key: e.id for e in entries_of(found)}
    _as_a_dead_worker_left_it(found)

    assert issue(found.id)["issued_rows"] == 4

    assert {e.idempotency_key: e.id for e in entries_of(found)} == first
    assert {r.entry_id for r in rows_of(found)} == set(first.values())


def test_a_row_replayed_after_its_key_was_purged_finds_its_entry(shop):
    found = create(shop, many(2)).bulk_import
    start(shop, found)
    issue(found.id)
    first = {e.idempotency_key: e.id for e in entries_of(found)}
    _as_a_dead_worker_left_it(found)
    purge_idempotency_keys((NOW + KEY_TTL + timedelta(days=1)).isoformat())
    assert (
        db.session.scalar(
            select(func.count())
            .select_from(IdempotencyKey)
            .where(IdempotencyKey.shop_id == shop.id)
        )
        == 0
    )

    issue(found.id)

    assert {e.idempotency_key: e.id for e in entries_of(found)} == first
    assert [(r.state, r.entry_id) for r in rows_of(found)] == [
        ("issued", first[f"bulk:{found.file_hash}:{n}"]) for n in (2, 3)
    ]


def _as_a_dead_worker_left_it(found: BulkImport) -> None:
    db.session.execute(
        update(BulkImportRow)
        .where(BulkImportRow.import_id == found.id)
        .values(state="pending", entry_id=None)
    )
    db.session.execute(
        update(BulkImport)
        .where(BulkImport.id == found.id)
        .values(state="issuing", issued_rows=0, failed_rows=0, finished_at=None)
    )
    db.session.commit()


def test_a_row_the_ledger_refuses_fails_alone_with_its_reason_and_stays_failed(shop):
    """Validated in time, issued too late: its expiry has passed when the job gets to it."""
    data = csv_bytes("1,5,USD,2026-11-22T13:00:00Z,soon", f"2,5,USD,{LATER},later")
    found = create(shop, data).bulk_import
    start(shop, found)
    late = (NOW + timedelta(hours=2)).isoformat()

    outcome = bulk_issue(found.id, late)

    assert (outcome["state"], outcome["issued_rows"], outcome["failed_rows"]) == ("finished", 1, 1)
    failed, issued = rows_of(found)
    assert (failed.state, failed.entry_id) == ("failed", None)
    assert failed.error is not None
    assert failed.error.startswith("invalid_expiry: ")
    assert issued.state == "issued"
    _as_a_dead_worker_left_it(found)
    bulk_issue(found.id, late)
    assert [r.state for r in rows_of(found)] == ["failed", "issued"]  # the key's stored answer
    assert len(entries_of(found)) == 1


def test_the_result_csv_has_every_row_with_its_entry_or_error_and_defuses_formulas(shop):
    data = csv_bytes('1,5,USD,,=HYPERLINK("http://x")', "2,7.5,USD,2026-11-22T12:30:00Z,@sum")
    found = create(shop, data).bulk_import
    start(shop, found)
    bulk_issue(found.id, (NOW + timedelta(hours=1)).isoformat())

    text = "".join(bulk.result_csv(db.session, found.id, page=1))

    lines = text.split("\r\n")
    assert lines[0] == ",".join(bulk.RESULT_COLUMNS)
    entry = entries_of(found)[0]
    assert lines[1] == f'2,1,,5.00,USD,,"\'=HYPERLINK(""http://x"")",issued,{entry.id},'
    assert lines[2].startswith("3,2,,7.50,USD,2026-11-22T12:30:00Z,'@sum,failed,,invalid_expiry: ")
    assert lines[3:] == [""]


def test_the_cli_imports_with_a_progress_bar_prints_counts_and_writes_the_result(
    app_context, shop, tmp_path
):
    path = tmp_path / "promo.csv"
    path.write_bytes(many(3))
    result_path = tmp_path / "result.csv"
    runner = app_context.test_cli_runner()
    args = ["credits", "import", str(path), "--shop", shop.domain, "--result", str(result_path)]

    first = runner.invoke(args=args)

    assert first.exit_code == 0, first.output
    found = db.session.scalars(select(BulkImport).where(BulkImport.shop_id == shop.id)).one()
    assert f"import {found.id}: validated" in first.output
    assert "issuing" in first.output
    assert f"import {found.id} finished: 3 issued, 0 failed, 0 pending" in first.output
    assert result_path.read_text().count("issued") == 3

    again = runner.invoke(args=args)
    assert again.exit_code == 0, again.output
    assert f"import {found.id} (this file, uploaded before): finished" in again.output
    assert len(entries_of(found)) == 3


def test_the_cli_refuses_a_file_with_errors_and_issues_nothing(app_context, shop, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(csv_bytes("1,5,USD,,r", "x,5,USD,,r"))
    runner = app_context.test_cli_runner()
    result = runner.invoke(args=["credits", "import", str(path), "--shop", shop.domain])
    assert result.exit_code == 1
    assert "row 3, customer_id: Not a Shopify customer id" in result.output
    assert counts(shop.id)["ledger_entries"] == 0


# -- the queue, concurrency, a real worker (commit for real) ---------------------------------


def committed_import(
    engine: Engine, rows: int, *, native_sync: bool = False, data: bytes | None = None
) -> tuple[int, int]:
    """A fresh shop with a started import of ``rows`` rows, committed; (shop id, import id)."""
    with Session(engine, expire_on_commit=False) as setup:
        factories.bind(setup)
        shop = ShopFactory(native_sync=native_sync)
        data = data or many(rows)
        created = bulk.create_import(setup, shop, data, filename=None, actor=ACTOR, now=NOW)
        bulk.start_import(setup, shop.id, created.bulk_import.id, actor=ACTOR, now=NOW)
        return shop.id, created.bulk_import.id


def issued_once(engine: Engine, shop_id: int, import_id: int, rows: int) -> None:
    """Every row issued exactly once: one entry per row key, the rows pointing at them."""
    with Session(engine) as check:
        found = check.get(BulkImport, import_id)
        assert found is not None
        assert (found.state, found.issued_rows, found.failed_rows) == ("finished", rows, 0)
        keys = check.scalars(
            select(LedgerEntry.idempotency_key).where(LedgerEntry.shop_id == shop_id)
        ).all()
        assert sorted(keys) == sorted(f"bulk:{found.file_hash}:{n}" for n in range(2, rows + 2))
        linked = check.scalars(
            select(BulkImportRow.entry_id).where(BulkImportRow.import_id == import_id)
        ).all()
        assert len(set(linked)) == rows
        assert None not in linked
        for account_id in check.scalars(
            select(CreditAccount.id).where(CreditAccount.shop_id == shop_id)
        ):
            assert verify_account(check, account_id) == []


@pytest.mark.concurrency
def test_jobs_running_at_once_and_lanes_in_one_job_issue_each_row_once(
    app: Flask, engine: Engine, on_postgresql
):
    if not on_postgresql:
        pytest.skip("PostgreSQL only")
    rows = 60
    shop_id, import_id = committed_import(engine, rows)
    barrier = threading.Barrier(3)
    outcomes: list[Any] = [None] * 3
    batches: list[int] = []

    def run(index: int) -> None:
        with app.app_context():
            try:
                barrier.wait(timeout=30)
                outcomes[index] = bulk_issue(
                    import_id,
                    lanes=1 + index,
                    batch_size=4,
                    on_batch=lambda p: batches.append(p.done_rows),
                )
            except BaseException as error:  # noqa: BLE001 - asserted below
                outcomes[index] = error
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    assert len(batches) == rows // 4  # every batch recorded once, by whichever run took it
    assert sorted(batches) == list(range(4, rows + 1, 4))
    issued_once(engine, shop_id, import_id, rows)


@pytest.mark.concurrency
def test_lanes_crediting_the_same_customers_at_once_keep_every_chain_whole(
    app: Flask, engine: Engine, on_postgresql: bool
):
    """Batches side by side name the same three customers in opposite orders: lanes open the
    same customers and lock the same accounts at once. No deadlock (both go in key order),
    each row once, each account's chain linear."""
    if not on_postgresql:
        pytest.skip("PostgreSQL only")
    lines = []
    for group in range(8):
        trio = [9_500_000_000 + 3 * group + n for n in range(3)]
        lines += [f"{c},1,USD,,first" for c in trio] + [f"{c},2,USD,,second" for c in trio[::-1]]
    shop_id, import_id = committed_import(engine, 48, data=csv_bytes(*lines))
    with app.app_context():
        outcome = bulk_issue(import_id, lanes=4, batch_size=3)
        db.session.remove()

    assert outcome["issued_rows"] == 48
    issued_once(engine, shop_id, import_id, 48)
    with Session(engine) as check:
        accounts = check.scalars(select(CreditAccount).where(CreditAccount.shop_id == shop_id))
        assert sorted((a.balance, a.last_sequence) for a in accounts) == [(300, 2)] * 24


@pytest.fixture
def bulk_queue(settings: Any) -> Iterator[Any]:
    if settings.redis_url is None:
        pytest.skip("needs REDIS_URL (make test provides it)")
    queue = shared_queue(settings.redis_url, "bulk")
    queue.empty()
    yield queue
    queue.empty()


@pytest.mark.concurrency
def test_the_queued_job_runs_once_in_a_real_worker_and_a_second_enqueue_is_a_no_op(
    app: Flask, engine: Engine, settings: Any, bulk_queue: Any, on_postgresql: bool
):
    if not on_postgresql:
        pytest.skip("PostgreSQL only")
    rows = 30
    shop_id, import_id = committed_import(engine, rows)
    with app.app_context():
        assert enqueue_bulk_issue(settings, import_id) == "enqueued"
        assert enqueue_bulk_issue(settings, import_id) == "already_queued"
        assert sweep_bulk_imports() == 0  # its job is waiting
    assert bulk_queue.job_ids == [job_id(import_id)]
    env = os.environ | {
        "CREDITCRAFT_ENV": "test",
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app:create_app", "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    issued_once(engine, shop_id, import_id, rows)
    with app.app_context():
        # Finished, its job ended: starting it again enqueues a run that finds nothing to do.
        assert enqueue_bulk_issue(settings, import_id) == "enqueued"


@pytest.mark.concurrency
def test_the_sweeper_enqueues_an_import_left_issuing_without_a_job(
    app: Flask, engine: Engine, settings: Any, bulk_queue: Any, on_postgresql: bool
):
    if not on_postgresql:
        pytest.skip("PostgreSQL only")
    _, import_id = committed_import(engine, 2)
    try:
        with app.app_context():
            assert sweep_bulk_imports() >= 1
        assert job_id(import_id) in bulk_queue.job_ids
    finally:
        _delete(engine, BulkImport, BulkImport.id == import_id)  # no other sweep should see it


@pytest.mark.concurrency
def test_with_native_sync_each_issued_row_gets_its_outbox_row(
    app: Flask, engine: Engine, on_postgresql: bool
):
    if not on_postgresql:
        pytest.skip("PostgreSQL only")
    shop_id, import_id = committed_import(engine, 3, native_sync=True)
    try:
        with app.app_context():
            bulk_issue(import_id, lanes=1)
        with Session(engine) as check:
            outbox = check.scalars(
                select(ShopifyOutbox).where(ShopifyOutbox.shop_id == shop_id)
            ).all()
            entries = check.scalars(select(LedgerEntry.id).where(LedgerEntry.shop_id == shop_id))
            assert sorted(row.entry_id for row in outbox) == sorted(entries.all())
            assert {(row.operation, row.amount, row.state) for row in outbox} == {
                ("credit", 125, "pending")
            }
    finally:
        # Pending rows of a committed shop would be sent by other tests' outbox sweeps.
        _delete(engine, ShopifyOutbox, ShopifyOutbox.shop_id == shop_id)


def _delete(engine: Engine, model: Any, where: Any) -> None:
    with Session(engine) as cleanup:
        cleanup.execute(delete(model).where(where))
        cleanup.commit()
