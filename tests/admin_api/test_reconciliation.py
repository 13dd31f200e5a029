"""Reconciliation through the merchant's API: runs and findings listed, repairs that really
repair (against the fake Shopify), resolutions with a note, each audited in the staff
member's name, and never another shop's.

Findings are made the way tests/jobs/test_reconcile.py makes them: credits mirrored by the real
sync job, staff edits and orders made in the fake Shopify, then ``reconcile_shop``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from redis import Redis
from rq.job import Job
from sqlalchemy import select, text, update

from blueprints.settings import current_settings
from extensions import db
from jobs.reconcile import reconcile_shop, repair_finding, repair_job_id, run_job_id
from jobs.sync import sync_to_shopify
from ledger import operations
from ledger.book import Actor
from ledger.money import Money
from models import (
    CreditAccount,
    LedgerEntry,
    ReconciliationFinding,
    ReconciliationRun,
    Shop,
    ShopifyOutbox,
)
from shop_access import install_with_session_token
from tests.admin_api.helpers import STAFF, AdminApi, audit_rows
from tests.api.helpers import assert_error
from tests.conftest import settings_changed
from webhooks.handlers._orders import sync_order_from_shopify

CUSTOMER = 7_300_001
ORDER = 5_550_301


# -- set-up -----------------------------------------------------------------------------------


@pytest.fixture
def native_shop(connected, shop_domain) -> Shop:
    """An installed shop with native sync on (auto-repair off), its customer in the fake."""
    connected.add_shop(shop_domain, restore_rate=1000.0).add_customer(CUSTOMER)
    token = connected.session_token(shop_domain)
    return install_with_session_token(
        db.session, current_settings(), shop_domain, token, datetime.now(UTC)
    )


@pytest.fixture
def napi(client, native_shop) -> AdminApi:
    return AdminApi(client, native_shop, sub=STAFF)


@pytest.fixture
def redis(settings):
    connection = Redis.from_url(settings.redis_url)
    yield connection
    connection.close()


def issue_mirrored(napi: AdminApi, amount: str) -> dict:
    receipt = napi.credit(CUSTOMER, amount, key=str(uuid.uuid4()))
    assert sync_to_shopify(receipt["entry"]["id"]) == "done"
    return receipt


def open_findings(shop_id: int) -> dict[str, ReconciliationFinding]:
    db.session.expire_all()
    found = db.session.scalars(
        select(ReconciliationFinding).where(
            ReconciliationFinding.shop_id == shop_id, ReconciliationFinding.resolved_at.is_(None)
        )
    )
    return {finding.finding_key: finding for finding in found}


def entries(shop_id: int) -> list[tuple[str, int, str]]:
    rows = db.session.execute(
        select(LedgerEntry.kind, LedgerEntry.amount, LedgerEntry.actor)
        .where(LedgerEntry.shop_id == shop_id)
        .order_by(LedgerEntry.account_id, LedgerEntry.sequence)
    )
    return [tuple(row) for row in rows]


def balances(connected, shop: Shop) -> tuple[int, int]:
    """(ledger balance, native balance) of the customer's USD account, in cents."""
    db.session.expire_all()
    ledger = db.session.scalar(
        select(CreditAccount.balance).where(CreditAccount.shop_id == shop.id)
    )
    native = int(Decimal(connected.shop(shop.domain).balance(CUSTOMER, "USD")) * 100)
    return ledger, native


def finding(api: AdminApi, finding_id: int) -> dict:
    response = api.get(f"/api/reconciliation/findings/{finding_id}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["finding"]


def repair(api: AdminApi, finding_id: int):
    return api.post(f"/api/reconciliation/findings/{finding_id}/repair")


def resolve(api: AdminApi, finding_id: int, note: object = "Checked with the owner."):
    return api.post(f"/api/reconciliation/findings/{finding_id}/resolve", {"note": note})


def drop_job(redis: Redis, job_id: str) -> None:
    """Remove a job the test enqueued, so no worker of a later test runs it."""
    Job.fetch(job_id, connection=redis).delete()


# -- repairs against the fake Shopify ----------------------------------------------------------


def test_a_native_credit_made_outside_is_imported_by_repair(connected, native_shop, napi):
    issue_mirrored(napi, "50.00")
    reconcile_shop(native_shop.id)
    credit_gid = connected.shop(native_shop.domain).credit(CUSTOMER, "7.50", "USD")
    reconcile_shop(native_shop.id)
    found = open_findings(native_shop.id)
    missing, drift = found[f"native:{credit_gid}"], found[next(k for k in found if "balance" in k)]

    listed = napi.get("/api/reconciliation/findings", status="open").get_json()["findings"]
    assert {(f["id"], f["kind"], f["repair"]) for f in listed} == {
        (missing.id, "native_transaction_missing", "import_external"),
        (drift.id, "native_balance_mismatch", None),
    }
    shown = finding(napi, missing.id)
    assert (shown["actual"], shown["currency"], shown["customer_id"]) == ("7.50", "USD", "7300001")

    response = repair(napi, missing.id)

    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["finding"]["status"] == "resolved"
    assert body["finding"]["resolved_by"] == napi.actor
    assert body["job"] is None
    assert body["repair"]["method"] == "import_external"
    assert (body["repair"]["entry"]["kind"], body["repair"]["entry"]["amount"]) == (
        "external",
        "7.50",
    )
    assert entries(native_shop.id) == [("issue", 5000, napi.actor), ("external", 750, napi.actor)]
    [request] = audit_rows(native_shop.id, "finding.repair")
    assert (request.actor, request.outcome, request.target_id) == (
        napi.actor,
        "success",
        str(missing.id),
    )
    assert audit_rows(native_shop.id, "import_external")[0].actor == napi.actor

    # The balance difference follows from it: not repairable, and the next run resolves it.
    assert_error(repair(napi, drift.id), 409, "not_repairable")
    assert audit_rows(native_shop.id, "finding.repair")[-1].outcome == "failure"
    reconcile_shop(native_shop.id)
    assert open_findings(native_shop.id) == {}
    assert balances(connected, native_shop) == (5750, 5750)
    assert_error(repair(napi, missing.id), 409, "finding_resolved")


def test_a_dead_outbox_row_is_sent_again_by_repair(app_context, connected, native_shop, napi):
    receipt = napi.credit(CUSTOMER, "9.00", key=str(uuid.uuid4()))  # enqueued, never run
    entry_id = uuid.UUID(receipt["entry"]["id"])
    db.session.execute(
        update(ShopifyOutbox)
        .where(ShopifyOutbox.entry_id == entry_id)
        .values(state="dead", attempts=8, last_error="AdminAPIUnavailable: 503")
    )
    db.session.commit()
    reconcile_shop(native_shop.id)
    [dead] = [f for f in open_findings(native_shop.id).values() if f.kind == "outbox_not_landed"]

    with settings_changed(app_context, redis_url=None):  # make run: the job runs inline
        response = repair(napi, dead.id)

    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["job"], body["repair"]["method"]) == ("ran_inline", "send_outbox")
    assert body["finding"]["resolution"] == "landed in Shopify"
    assert body["finding"]["resolved_by"] == napi.actor
    row = db.session.scalars(select(ShopifyOutbox).where(ShopifyOutbox.entry_id == entry_id)).one()
    assert row.state == "done"
    assert balances(connected, native_shop) == (900, 900)
    results = audit_rows(native_shop.id, "finding.repair_result")
    assert [(r.actor, r.outcome) for r in results] == [(napi.actor, "success")]


def test_a_repair_that_needs_shopify_is_queued_then_finished_by_the_job(
    connected, native_shop, napi, redis
):
    receipt = napi.credit(CUSTOMER, "4.00", key=str(uuid.uuid4()))
    entry_id = uuid.UUID(receipt["entry"]["id"])
    db.session.execute(
        update(ShopifyOutbox).where(ShopifyOutbox.entry_id == entry_id).values(state="dead")
    )
    db.session.commit()
    reconcile_shop(native_shop.id)
    [dead] = [f for f in open_findings(native_shop.id).values() if f.kind == "outbox_not_landed"]

    first, again = repair(napi, dead.id), repair(napi, dead.id)
    try:
        assert first.status_code == again.status_code == 202
        assert (first.get_json()["job"], again.get_json()["job"]) == ("enqueued", "already_queued")
        assert first.get_json()["finding"]["status"] == "open"
        row = db.session.scalars(select(ShopifyOutbox).where(ShopifyOutbox.entry_id == entry_id))
        assert row.one().state == "pending"

        done = repair_finding(native_shop.id, dead.id, napi.actor)  # what the worker runs
    finally:
        drop_job(redis, repair_job_id(dead.id))

    assert done["result"] == "resolved"
    assert finding(napi, dead.id)["status"] == "resolved"
    assert balances(connected, native_shop) == (400, 400)


def test_an_order_whose_webhook_never_came_is_synced_by_repair(
    app_context, connected, native_shop, napi
):
    issue_mirrored(napi, "50.00")
    reconcile_shop(native_shop.id)
    connected.shop(native_shop.domain).place_order(ORDER, CUSTOMER, "USD", store_credit="12.00")
    reconcile_shop(native_shop.id)
    found = open_findings(native_shop.id).values()
    [missed] = [f for f in found if f.kind == "native_order_unrecorded"]
    assert finding(napi, missed.id)["repair"] == "sync_order"

    with settings_changed(app_context, redis_url=None):
        response = repair(napi, missed.id)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["repair"]["order_id"] == str(ORDER)
    assert response.get_json()["finding"]["resolved_by"] == napi.actor
    assert entries(native_shop.id) == [("issue", 5000, napi.actor), ("redeem", -1200, napi.actor)]
    assert open_findings(native_shop.id) == {}
    assert balances(connected, native_shop) == (3800, 3800)


def test_a_spend_the_ledger_cannot_cover_stays_open_until_the_credit_it_needs_is_imported(
    app_context, connected, native_shop, napi
):
    issue_mirrored(napi, "50.00")
    reconcile_shop(native_shop.id)
    fake_shop = connected.shop(native_shop.domain)
    fake_shop.credit(CUSTOMER, "40.00", "USD")  # staff credit in Shopify admin
    fake_shop.place_order(ORDER, CUSTOMER, "USD", store_credit="80.00")
    sync_order_from_shopify(db.session, native_shop, ORDER, datetime.now(UTC), actor="webhook:t")
    reconcile_shop(native_shop.id)
    found = open_findings(native_shop.id)
    spend = found[f"order:{ORDER}:redeem"]
    [credit] = [f for f in found.values() if f.kind == "native_transaction_missing"]

    with settings_changed(app_context, redis_url=None):
        early = repair(napi, spend.id)
        assert early.status_code == 202  # the order was synced again, but 80.00 > 50.00
        assert repair(napi, credit.id).status_code == 200
        late = repair(napi, spend.id)

    assert late.status_code == 200, late.get_data(as_text=True)
    assert [kind for kind, _, _ in entries(native_shop.id)] == ["issue", "external", "redeem"]
    results = audit_rows(native_shop.id, "finding.repair_result")
    assert [(r.outcome, r.error_code) for r in results] == [
        ("failure", "repair_incomplete"),
        ("success", None),
    ]


# -- what cannot be repaired, and resolving by hand ----------------------------------------------


def local_history(shop_id: int, now: datetime) -> int:
    """30.00 issued and 10.00 spent (the shop has no native sync); returns the account id."""
    by = Actor(shop_id, now, "staff:1", "goodwill", idempotency_key="i")
    operations.issue(db.session, by, customer=CUSTOMER, amount=Money(3000, "USD"))
    spend(shop_id, now, "r")
    return db.session.scalar(select(CreditAccount.id).where(CreditAccount.shop_id == shop_id))


def spend(shop_id: int, now: datetime, key: str) -> None:
    by = Actor(shop_id, now, "staff:1", "order", idempotency_key=key)
    operations.redeem(db.session, by, customer=CUSTOMER, amount=Money(100, "USD"))


def tamper_reason(account_id: int, sequence: int) -> None:
    """Change an entry with the append-only trigger off, as a superuser could."""
    db.session.execute(
        text("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only")
    )
    db.session.execute(
        text(
            "UPDATE ledger_entries SET reason = 'approved' "
            "WHERE account_id = :account AND sequence = :sequence"
        ),
        {"account": account_id, "sequence": sequence},
    )
    db.session.execute(text("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only"))
    db.session.commit()


@pytest.fixture
def broken_chain(api, now) -> ReconciliationFinding:
    """A chain_break finding in ``api``'s shop: an entry changed after the checkpoint."""
    account_id = local_history(api.shop.id, now)
    reconcile_shop(api.shop.id)
    spend(api.shop.id, now, "third")
    tamper_reason(account_id, 3)
    reconcile_shop(api.shop.id)
    [broken] = open_findings(api.shop.id).values()
    assert broken.kind == "chain_break"
    return broken


def test_a_chain_break_is_not_repairable(api, broken_chain):
    before = entries(api.shop.id)

    error = assert_error(repair(api, broken_chain.id), 409, "not_repairable")

    assert error["details"]["kind"] == "chain_break"
    assert entries(api.shop.id) == before
    assert finding(api, broken_chain.id)["status"] == "open"
    [row] = audit_rows(api.shop.id, "finding.repair")
    assert (row.actor, row.outcome, row.error_code) == (api.actor, "failure", "not_repairable")


def test_resolving_records_who_when_and_why_and_twice_is_a_409(api, broken_chain):
    response = resolve(api, broken_chain.id, "  Restored from backup; reviewed with the DBA.  ")

    assert response.status_code == 200, response.get_data(as_text=True)
    shown = response.get_json()["finding"]
    assert shown["status"] == "resolved"
    assert shown["repair"] is None
    assert (shown["resolved_by"], shown["resolution_note"], shown["resolution"]) == (
        api.actor,
        "Restored from backup; reviewed with the DBA.",
        "marked resolved",
    )
    assert shown["resolved_at"] is not None
    assert finding(api, broken_chain.id) == shown

    again = resolve(api, broken_chain.id, "again")

    assert_error(again, 409, "finding_resolved")
    assert finding(api, broken_chain.id) == shown
    rows = audit_rows(api.shop.id, "finding.resolve")
    assert [(r.actor, r.outcome, r.error_code) for r in rows] == [
        (api.actor, "success", None),
        (api.actor, "failure", "finding_resolved"),
    ]
    assert rows[0].details["note"] == "Restored from backup; reviewed with the DBA."


def test_a_resolution_stands_until_the_difference_changes(api, broken_chain, now):
    resolve(api, broken_chain.id)

    reconcile_shop(api.shop.id)  # sees the same broken entry again
    assert finding(api, broken_chain.id)["resolved_by"] == api.actor

    spend(api.shop.id, now, "fourth")
    tamper_reason(broken_chain.account_id, 4)  # a second broken entry: a new difference
    reconcile_shop(api.shop.id)

    reopened = finding(api, broken_chain.id)
    assert (reopened["status"], reopened["resolved_by"], reopened["resolution_note"]) == (
        "open",
        None,
        None,
    )
    assert reopened["details"]["count"] == 2


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "missing_field"),
        ({"note": ""}, 422, "invalid_field"),
        ({"note": "   "}, 422, "invalid_field"),
        ({"note": 42}, 422, "invalid_field"),
        ({"note": "n" * 1001}, 422, "invalid_field"),
        ({"note": "ok", "status": "resolved"}, 400, "unknown_field"),
    ],
)
def test_a_resolution_without_a_proper_note_changes_nothing(api, broken_chain, body, status, code):
    response = api.post(f"/api/reconciliation/findings/{broken_chain.id}/resolve", body)

    assert_error(response, status, code)
    assert finding(api, broken_chain.id)["status"] == "open"


def test_another_shops_staff_gets_404_for_a_finding(api, other_api, broken_chain):
    path = f"/api/reconciliation/findings/{broken_chain.id}"

    assert_error(other_api.get(path), 404, "finding_not_found")
    assert_error(other_api.post(f"{path}/repair"), 404, "finding_not_found")
    assert_error(resolve(other_api, broken_chain.id), 404, "finding_not_found")
    assert other_api.get("/api/reconciliation/findings").get_json()["findings"] == []

    assert finding(api, broken_chain.id)["status"] == "open"
    assert audit_rows(other_api.shop.id) == []
    assert audit_rows(api.shop.id, "finding.resolve") == []


# -- lists ---------------------------------------------------------------------------------------


def add_findings(shop_id: int, now: datetime) -> list[int]:
    """Three findings, the middle one resolved; ids oldest first."""
    rows = [
        ReconciliationFinding(
            shop_id=shop_id,
            kind=kind,
            finding_key=f"test:{n}",
            details={},
            first_seen_at=now,
            last_seen_at=now,
            resolved_at=now if n == 1 else None,
        )
        for n, kind in enumerate(("chain_break", "outbox_not_landed", "chain_break"))
    ]
    db.session.add_all(rows)
    db.session.commit()
    return [row.id for row in rows]


@pytest.mark.parametrize(
    ("params", "picked"),
    [
        ({}, [2, 1, 0]),
        ({"status": "open"}, [2, 0]),
        ({"status": "resolved"}, [1]),
        ({"kind": "chain_break"}, [2, 0]),
        ({"kind": "outbox_not_landed", "status": "open"}, []),
    ],
)
def test_findings_are_listed_newest_first_and_filtered(api, now, params, picked):
    ids = add_findings(api.shop.id, now)

    listed = api.get("/api/reconciliation/findings", **params).get_json()["findings"]

    assert [f["id"] for f in listed] == [ids[n] for n in picked]


def test_findings_pages_follow_the_cursor(api, now):
    ids = add_findings(api.shop.id, now)

    first = api.get("/api/reconciliation/findings", limit=2).get_json()
    second = api.get(
        "/api/reconciliation/findings", limit=2, cursor=first["next_cursor"]
    ).get_json()

    assert [f["id"] for f in first["findings"]] == [ids[2], ids[1]]
    assert [f["id"] for f in second["findings"]] == [ids[0]]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [{"status": "closed"}, {"kind": "nonsense"}, {"cursor": "abc"}, {"cursor": "Ii0xIg"}],
)
def test_bad_list_parameters_are_a_400(api, params):
    response = api.get("/api/reconciliation/findings", **params)

    assert response.status_code == 400
    assert_error(response, 400, response.get_json()["error"]["code"])


@pytest.mark.parametrize("finding_id", ["0", "x", str(2**63), "999999999"])
def test_an_unknown_finding_is_a_404(api, finding_id):
    path = f"/api/reconciliation/findings/{finding_id}"

    assert_error(api.get(path), 404, "finding_not_found")
    assert_error(api.post(f"{path}/repair"), 404, "finding_not_found")
    assert_error(resolve(api, finding_id), 404, "finding_not_found")


# -- runs ----------------------------------------------------------------------------------------


def test_a_run_is_started_inline_without_redis_and_listed(app_context, api, other_api, now):
    local_history(api.shop.id, now)

    with settings_changed(app_context, redis_url=None):
        response = api.post("/api/reconciliation/runs", {"full": True})

    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["job"], body["full"]) == ("ran_inline", True)
    run = body["run"]
    assert (run["kind"], run["state"], run["accounts_checked"], run["entries_checked"]) == (
        "full",
        "finished",
        1,
        2,
    )
    assert api.get(f"/api/reconciliation/runs/{run['id']}").get_json() == {"run": run}
    assert api.get("/api/reconciliation/runs").get_json() == {"runs": [run], "next_cursor": None}
    assert_error(other_api.get(f"/api/reconciliation/runs/{run['id']}"), 404, "run_not_found")
    assert other_api.get("/api/reconciliation/runs").get_json()["runs"] == []
    [row] = audit_rows(api.shop.id, "reconciliation.start")
    assert (row.actor, row.outcome, row.details) == (
        api.actor,
        "success",
        {"full": True, "job": "ran_inline"},
    )


def test_a_run_is_queued_with_redis(api, redis):
    try:
        first = api.post("/api/reconciliation/runs")
        again = api.post("/api/reconciliation/runs", {"full": False})
    finally:
        drop_job(redis, run_job_id(api.shop.id, False))

    assert first.status_code == again.status_code == 202
    assert (first.get_json()["job"], again.get_json()["job"]) == ("enqueued", "already_queued")
    assert first.get_json()["run"] is None  # no run has started yet


def test_runs_are_paged_newest_first(api, now):
    runs = [
        ReconciliationRun(shop_id=api.shop.id, kind="incremental", state="finished", started_at=now)
        for _ in range(3)
    ]
    db.session.add_all(runs)
    db.session.commit()

    first = api.get("/api/reconciliation/runs", limit=2).get_json()
    second = api.get("/api/reconciliation/runs", limit=2, cursor=first["next_cursor"]).get_json()

    ids = [run.id for run in reversed(runs)]
    assert [r["id"] for r in first["runs"] + second["runs"]] == ids
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [({"full": "yes"}, 422, "invalid_field"), ({"fast": True}, 400, "unknown_field")],
)
def test_a_bad_run_request_starts_nothing(api, body, status, code):
    assert_error(api.post("/api/reconciliation/runs", body), status, code)
    assert api.get("/api/reconciliation/runs").get_json()["runs"] == []
    assert audit_rows(api.shop.id, "reconciliation.start") == []
