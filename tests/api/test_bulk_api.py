"""The bulk-import routes: upload (the dry-run report), start, progress, the per-row result.

Requests go through the test client in the test's rolled-back transaction; without Redis the
start runs the job inline, with Redis it is queued and a worker in this process runs it.
"""

from __future__ import annotations

import csv
import io
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from rq import Queue, SimpleWorker
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from extensions import db
from jobs.bulk import job_id
from jobs.queues import shared_queue
from ledger import bulk
from models import BulkImport, BulkImportRow, LedgerEntry
from tests.api.helpers import STAFF_ID, Api, assert_error, row_counts
from tests.conftest import auth, settings_changed

HEADER = "customer_id,amount,currency,expires_at,reason"
GOOD = f"{HEADER}\r\n7408348290,12.50,USD,2030-01-31,spring promo\r\n7408348291,5,USD,,thanks\r\n"


def upload(api: Api, data: bytes | str, filename: str = "promo.csv") -> TestResponse:
    raw = data.encode() if isinstance(data, str) else data
    return api.client.post(
        "/api/bulk-imports",
        data={"file": (io.BytesIO(raw), filename)},
        headers=api.headers(),
        content_type="multipart/form-data",
    )


def post_csv(api: Api, data: bytes | str, content_type: str = "text/csv") -> TestResponse:
    return api.client.post(
        "/api/bulk-imports?filename=body.csv",
        data=data,
        headers=api.headers(),
        content_type=content_type,
    )


def imported(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    found: dict[str, Any] = response.get_json()["bulk_import"]
    return found


def imports_of(shop_id: int) -> int:
    return (
        db.session.scalar(
            select(func.count()).select_from(BulkImport).where(BulkImport.shop_id == shop_id)
        )
        or 0
    )


@pytest.fixture
def inline(app_context: Flask) -> Iterator[None]:
    """No Redis: starting an import runs the job in the request."""
    with settings_changed(app_context, redis_url=None):
        yield


# -- upload ---------------------------------------------------------------------------------


@pytest.mark.smoke
def test_an_upload_answers_the_dry_run_report_and_stores_the_import_validated(api, shop):
    found = imported(upload(api, GOOD), 201)

    assert found["state"] == "validated"
    assert found["filename"] == "promo.csv"
    assert found["created_by"] == f"staff:{STAFF_ID}"
    assert found["rows"] == {"total": 2, "valid": 2, "issued": 0, "failed": 0, "pending": 2}
    assert found["percent"] == 0
    report = found["report"]
    assert (report["ok"], report["rows"], report["valid_rows"], report["errors"]) == (
        True,
        2,
        2,
        [],
    )
    assert report["totals"] == [{"currency": "USD", "amount": "17.50", "rows": 2}]
    assert row_counts(shop.id)["ledger_entries"] == 0  # nothing issued before the start


def test_the_same_file_uploaded_again_is_the_same_import(api):
    first = imported(upload(api, GOOD), 201)
    again = imported(post_csv(api, GOOD), 200)
    assert again["id"] == first["id"]
    assert again["filename"] == "promo.csv"


def test_a_file_with_row_errors_is_stored_invalid_with_each_error(api):
    data = f"{HEADER}\r\n7408348290,12.505,USD,,x\r\nnobody,5,USD,2001-01-01,\r\n"
    found = imported(upload(api, data), 201)

    assert found["state"] == "invalid"
    assert found["rows"]["valid"] == 0
    errors = [(e["row"], e["field"], e["code"]) for e in found["report"]["errors"]]
    assert errors == [
        (2, "amount", "invalid_amount"),
        (3, "customer_id", "invalid_customer_id"),
        (3, "expires_at", "expiry_in_past"),
        (3, "reason", "missing_value"),
    ]
    assert found["report"]["errors_total"] == 4


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"\xff\xfe\x00garbage", "not_utf8"),
        (b"name,value\r\nx,1\r\n", "missing_columns"),
        (f"{HEADER}\r\n".encode(), "no_rows"),
    ],
)
def test_a_file_that_cannot_be_read_is_a_422_naming_why_and_stores_nothing(api, shop, data, code):
    before = row_counts(shop.id)

    error = assert_error(upload(api, data), 422, code)

    assert error["details"]["report"]["file_error"]["code"] == code
    assert imports_of(shop.id) == 0
    assert row_counts(shop.id) == before


def test_upload_mistakes_are_4xx_and_change_nothing(api, shop):
    before = row_counts(shop.id)
    no_file = api.client.post(
        "/api/bulk-imports",
        data={"other": (io.BytesIO(GOOD.encode()), "promo.csv")},
        headers=api.headers(),
        content_type="multipart/form-data",
    )
    assert_error(no_file, 400, "missing_file")
    assert_error(post_csv(api, GOOD, "application/json"), 415, "unsupported_media_type")
    too_big = b"x" * (bulk.MAX_FILE_BYTES + 128 * 1024)
    assert_error(post_csv(api, too_big), 413, "request_entity_too_large")
    unsigned = api.client.post("/api/bulk-imports", data=GOOD, content_type="text/csv")
    assert unsigned.status_code == 401
    assert imports_of(shop.id) == 0
    assert row_counts(shop.id) == before


# -- start, progress, result -----------------------------------------------------------------


@pytest.mark.smoke
def test_start_issues_every_row_inline_and_the_import_reports_its_progress(api, shop, inline):
    found = imported(upload(api, GOOD), 201)

    response = api.post(f"/api/bulk-imports/{found['id']}/start")

    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["job"] == "ran_inline"
    done = body["bulk_import"]
    assert (done["state"], done["percent"], done["error"]) == ("finished", 100, None)
    assert done["rows"] == {"total": 2, "valid": 2, "issued": 2, "failed": 0, "pending": 0}
    assert done["started_at"] is not None
    assert done["finished_at"] is not None
    entries = db.session.scalars(select(LedgerEntry).where(LedgerEntry.shop_id == shop.id)).all()
    assert {(e.kind, e.actor) for e in entries} == {("issue", f"staff:{STAFF_ID}")}
    assert sorted(e.amount for e in entries) == [500, 1250]

    shown = imported(api.get(f"/api/bulk-imports/{found['id']}"), 200)
    assert shown == done | {"report": found["report"]}

    again = api.post(f"/api/bulk-imports/{found['id']}/start")
    assert (again.status_code, again.get_json()["job"]) == (200, "none")
    assert row_counts(shop.id)["ledger_entries"] == 2


def test_the_result_is_a_csv_of_every_row_with_its_entry(api, shop, inline):
    data = (
        f"{HEADER}\r\n7408348290,12.50,USD,,\"=cmd|' /C calc'!A0\"\r\n7408348291,5,USD,,thanks\r\n"
    )
    found = imported(upload(api, data), 201)
    api.post(f"/api/bulk-imports/{found['id']}/start")

    response = api.get(f"/api/bulk-imports/{found['id']}/result")

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="bulk-import-{found["id"]}-result.csv"'
    )
    assert response.headers["Cache-Control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    entries = {
        row.shopify_customer_id: str(row.entry_id)
        for row in db.session.scalars(select(BulkImportRow))
        if row.shop_id == shop.id
    }
    assert [(r["row"], r["customer_id"], r["amount"], r["state"]) for r in rows] == [
        ("2", "7408348290", "12.50", "issued"),
        ("3", "7408348291", "5.00", "issued"),
    ]
    assert [r["entry_id"] for r in rows] == [entries[7408348290], entries[7408348291]]
    assert rows[0]["reason"] == "'=cmd|' /C calc'!A0"  # a spreadsheet will not run it


def test_an_invalid_import_cannot_be_started_and_has_no_result(api, shop, inline):
    found = imported(upload(api, f"{HEADER}\r\nx,1,USD,,r\r\n"), 201)
    before = row_counts(shop.id)

    refused = assert_error(
        api.post(f"/api/bulk-imports/{found['id']}/start"), 409, "bulk_import_invalid"
    )
    assert refused["details"]["state"] == "invalid"
    assert_error(api.get(f"/api/bulk-imports/{found['id']}/result"), 409, "bulk_import_invalid")
    assert row_counts(shop.id) == before


@pytest.mark.parametrize("import_id", ["0", "999999999", "abc", "1.5", "99999999999999999999"])
def test_an_unknown_import_is_a_404(api, import_id):
    for response in (
        api.get(f"/api/bulk-imports/{import_id}"),
        api.post(f"/api/bulk-imports/{import_id}/start"),
        api.get(f"/api/bulk-imports/{import_id}/result"),
    ):
        assert_error(response, 404, "bulk_import_not_found")


def test_another_shops_import_is_a_404_like_one_that_does_not_exist(api, other_api, inline):
    found = imported(upload(api, GOOD), 201)
    for response in (
        other_api.get(f"/api/bulk-imports/{found['id']}"),
        other_api.post(f"/api/bulk-imports/{found['id']}/start"),
        other_api.get(f"/api/bulk-imports/{found['id']}/result"),
    ):
        assert_error(response, 404, "bulk_import_not_found")
    assert imported(api.get(f"/api/bulk-imports/{found['id']}"), 200)["state"] == "validated"
    assert other_api.get("/api/bulk-imports").get_json() == {"bulk_imports": []}


def test_the_list_shows_the_shops_imports_newest_first_without_reports(api):
    first = imported(upload(api, GOOD), 201)
    second = imported(upload(api, f"{HEADER}\r\n1,1,USD,,r\r\n", "other.csv"), 201)

    listed = api.get("/api/bulk-imports").get_json()["bulk_imports"]

    assert [(item["id"], item["filename"]) for item in listed] == [
        (second["id"], "other.csv"),
        (first["id"], "promo.csv"),
    ]
    assert all("report" not in item for item in listed)
    assert_error(api.get("/api/bulk-imports", limit="0"), 400, "invalid_limit")


# -- with Redis: queued, then run by a worker --------------------------------------------------


@pytest.fixture
def bulk_queue(settings: Any) -> Iterator[Queue]:
    if settings.redis_url is None:
        pytest.skip("needs REDIS_URL (make test provides it)")
    queue = shared_queue(settings.redis_url, "bulk")
    queue.empty()
    yield queue
    queue.empty()


def test_with_redis_start_queues_the_job_once_and_a_worker_finishes_the_import(
    api, shop, bulk_queue
):
    found = imported(upload(api, GOOD), 201)

    first = api.post(f"/api/bulk-imports/{found['id']}/start")
    second = api.post(f"/api/bulk-imports/{found['id']}/start")

    assert first.status_code == 202
    assert first.get_json()["job"] == "enqueued"
    assert first.get_json()["bulk_import"]["state"] == "issuing"
    assert (second.status_code, second.get_json()["job"]) == (202, "already_queued")
    assert bulk_queue.job_ids == [job_id(found["id"])]

    _work(bulk_queue)

    done = imported(api.get(f"/api/bulk-imports/{found['id']}"), 200)
    assert (done["state"], done["rows"]["issued"], done["percent"]) == ("finished", 2, 100)
    assert row_counts(shop.id)["ledger_entries"] == 2


def _work(queue: Queue) -> None:
    """A worker in this process, in the test's app context, until the queue is empty."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        SimpleWorker([queue], connection=queue.connection).work(burst=True)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_the_session_token_is_required(client):
    assert client.get("/api/bulk-imports").status_code == 401
    assert (
        client.get("/api/bulk-imports/1", headers=auth("nobody.myshopify.com")).status_code == 401
    )
