"""Reconciliation: the ledger re-checked against itself, then against Shopify's native credit.

Shops are installed by token exchange against the fake Shopify; credits are issued through the
JSON API and mirrored by the real sync job. Staff edits in Shopify admin are made in the fake
(``credit`` / ``debit``), as Shopify would record them. The shop's reconciliation lock is the
real Redis one (REDIS_URL from scripts/with-services.sh).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from redis import Redis
from sqlalchemy import func, select, text, update

from blueprints.settings import current_settings
from extensions import db
from jobs.reconcile import reconcile_shop
from jobs.sync import sync_to_shopify
from ledger import operations
from ledger.book import Actor
from ledger.money import Money
from ledger.verify import verify_account
from models import (
    CreditAccount,
    CreditLot,
    LedgerEntry,
    ReconciliationFinding,
    ReconciliationRun,
    Shop,
    ShopifyOutbox,
)
from shop_access import install_with_session_token
from tests.conftest import auth
from tests.factories import ShopFactory
from webhooks.handlers._orders import sync_order_from_shopify

CUSTOMER = 7_700_001
ORDER = 5_550_001


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def shop(connected, shop_domain) -> Shop:
    """An installed shop with native sync on, and its customer in the fake Shopify."""
    fake_shop = connected.add_shop(shop_domain, restore_rate=1000.0)
    fake_shop.add_customer(CUSTOMER, email="ada@example.com")
    token = connected.session_token(shop_domain)
    installed = install_with_session_token(
        db.session, current_settings(), shop_domain, token, datetime.now(UTC)
    )
    assert installed.native_sync
    return installed


def set_auto_repair(shop: Shop, on: bool) -> None:
    shop.auto_repair = on
    db.session.commit()


def issue_mirrored(client, shop: Shop, amount: str, **extra) -> dict:
    """Issue through the API, then let the sync job mirror it into Shopify."""
    answer = client.post(
        f"/api/customers/{CUSTOMER}/credits",
        json={"amount": amount, "currency": "USD", "reason": "goodwill", **extra},
        headers={**auth(shop.domain), "Idempotency-Key": str(uuid.uuid4())},
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    receipt = answer.get_json()
    assert sync_to_shopify(receipt["entry"]["id"]) == "done"
    return receipt


def account(shop_id: int) -> CreditAccount:
    db.session.expire_all()
    return db.session.execute(
        select(CreditAccount).where(CreditAccount.shop_id == shop_id)
    ).scalar_one()


def native_minor(connected, shop: Shop) -> int:
    return int(Decimal(connected.shop(shop.domain).balance(CUSTOMER, "USD")) * 100)


def kinds(shop_id: int) -> list[tuple[str, int]]:
    rows = db.session.execute(
        select(LedgerEntry.kind, LedgerEntry.amount)
        .where(LedgerEntry.shop_id == shop_id)
        .order_by(LedgerEntry.account_id, LedgerEntry.sequence)
    )
    return [(kind, amount) for kind, amount in rows]


def open_findings(shop_id: int) -> dict[str, ReconciliationFinding]:
    db.session.expire_all()
    found = db.session.scalars(
        select(ReconciliationFinding).where(
            ReconciliationFinding.shop_id == shop_id, ReconciliationFinding.resolved_at.is_(None)
        )
    )
    return {finding.finding_key: finding for finding in found}


def tamper(*statements: tuple[str, dict[str, object]]) -> None:
    """Change rows with the append-only trigger off, as a superuser could (rolled back later)."""
    db.session.execute(
        text("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only")
    )
    for sql, params in statements:
        db.session.execute(text(sql), params)
    db.session.execute(text("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only"))
    db.session.commit()


def local_history(shop_id: int, customers: range, now: datetime) -> None:
    """Per customer: 30.00 issued, 10.00 spent (ledger only: the shop has no native sync)."""
    for customer in customers:
        by = Actor(shop_id, now, "staff:1", "goodwill", idempotency_key=f"i-{customer}")
        operations.issue(db.session, by, customer=customer, amount=Money(3000, "USD"))
        by = Actor(shop_id, now, "staff:1", "order", idempotency_key=f"r-{customer}")
        operations.redeem(db.session, by, customer=customer, amount=Money(1000, "USD"))


# -- drift in Shopify -------------------------------------------------------------------------


def test_a_staff_adjustment_is_found_by_the_next_run_and_imported_with_auto_repair(
    client, connected, shop
):
    set_auto_repair(shop, True)
    issue_mirrored(client, shop, "50.00")
    first = reconcile_shop(shop.id)
    assert (first["result"], first["open_findings"], first["repairs"]) == ("finished", 0, 0)
    assert account(shop.id).native_checked_until is not None

    # Staff in Shopify admin: +15.00 expiring in 10 days, then -20.00.
    fake_shop = connected.shop(shop.domain)
    expires = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
    credit_gid = fake_shop.credit(CUSTOMER, "15.00", "USD", expires_at=expires)
    debit_gid = fake_shop.debit(CUSTOMER, "20.00", "USD")
    assert native_minor(connected, shop) == 4500 != account(shop.id).balance

    second = reconcile_shop(shop.id)

    assert second["repairs"] == 2
    assert second["open_findings"] == 0
    assert second["accounts_checked"] == 0  # nothing changed in the ledger since the first run
    assert kinds(shop.id) == [("issue", 5000), ("external", 1500), ("external", -2000)]
    assert account(shop.id).balance == native_minor(connected, shop) == 4500
    lot = db.session.execute(
        select(CreditLot).where(CreditLot.native_transaction_gid == credit_gid)
    ).scalar_one()
    assert (lot.source, lot.amount, lot.expires_at) == ("external", 1500, expires)
    keys = set(db.session.scalars(select(LedgerEntry.idempotency_key)))
    assert {f"native:{credit_gid}", f"native:{debit_gid}"} <= keys

    third = reconcile_shop(shop.id)  # the imports are in the ledger now: nothing twice

    assert (third["repairs"], third["open_findings"]) == (0, 0)
    assert third["accounts_checked"] == 1  # the imports moved the chain: verified once
    assert len(kinds(shop.id)) == 3
    assert verify_account(db.session, account(shop.id).id) == []
    nightly = reconcile_shop(shop.id, full=True)
    assert (nightly["entries_checked"], nightly["repairs"], nightly["open_findings"]) == (3, 0, 0)


def test_without_auto_repair_the_drift_stays_an_open_finding_until_repaired(
    client, connected, shop
):
    issue_mirrored(client, shop, "50.00")
    reconcile_shop(shop.id)
    credit_gid = connected.shop(shop.domain).credit(CUSTOMER, "7.50", "USD")

    for _ in range(2):
        result = reconcile_shop(shop.id)
        findings = open_findings(shop.id)
        assert set(findings) == {
            f"native:{credit_gid}",
            f"native:account:{account(shop.id).id}:balance",
        }
        assert result["repairs"] == 0
        assert kinds(shop.id) == [("issue", 5000)]  # nothing written
    missing = findings[f"native:{credit_gid}"]
    assert (missing.kind, missing.actual, missing.shopify_customer_id) == (
        "native_transaction_missing",
        750,
        CUSTOMER,
    )
    drift = findings[f"native:account:{account(shop.id).id}:balance"]
    assert (drift.kind, drift.expected, drift.actual) == ("native_balance_mismatch", 5000, 5750)
    assert drift.last_seen_at > drift.first_seen_at  # one row, seen by both runs

    set_auto_repair(shop, True)
    repaired = reconcile_shop(shop.id)

    assert repaired["repairs"] == 1
    assert repaired["findings_resolved"] == 2
    assert open_findings(shop.id) == {}
    assert account(shop.id).balance == native_minor(connected, shop) == 5750


def test_an_unmatched_native_spend_is_resolved_by_the_import_then_the_order_sync(
    client, connected, shop
):
    set_auto_repair(shop, True)
    issue_mirrored(client, shop, "50.00")
    reconcile_shop(shop.id)
    fake_shop = connected.shop(shop.domain)
    fake_shop.credit(CUSTOMER, "40.00", "USD")  # staff credit, unknown to the ledger
    fake_shop.place_order(ORDER, CUSTOMER, "USD", store_credit="80.00")
    # orders/paid: the spend is larger than the ledger holds, so it is owed, as a finding.
    outcome = sync_order_from_shopify(
        db.session, shop, ORDER, datetime.now(UTC), actor="webhook:orders/paid"
    )
    assert outcome["spend"]["result"] == "unmatched_native_spend"
    assert set(open_findings(shop.id)) == {f"order:{ORDER}:redeem"}

    result = reconcile_shop(shop.id)

    assert open_findings(shop.id) == {}
    assert result["findings_resolved"] >= 1
    assert kinds(shop.id) == [("issue", 5000), ("external", 4000), ("redeem", -8000)]
    assert account(shop.id).balance == native_minor(connected, shop) == 1000
    spend = db.session.execute(
        select(LedgerEntry).where(LedgerEntry.idempotency_key == f"order:{ORDER}:redeem")
    ).scalar_one()
    assert spend.shopify_order_id == ORDER
    assert reconcile_shop(shop.id)["repairs"] == 0


def test_an_order_whose_webhook_never_came_is_synced_by_reconciliation(client, connected, shop):
    set_auto_repair(shop, True)
    issue_mirrored(client, shop, "50.00")
    reconcile_shop(shop.id)
    connected.shop(shop.domain).place_order(ORDER, CUSTOMER, "USD", store_credit="12.00")

    result = reconcile_shop(shop.id)

    assert result["repairs"] == 1
    assert kinds(shop.id) == [("issue", 5000), ("redeem", -1200)]
    assert account(shop.id).balance == native_minor(connected, shop) == 3800
    assert open_findings(shop.id) == {}


def test_an_orders_spend_refund_and_cancellation_match_their_entries(client, connected, shop):
    """Native debits, refunds to store credit and returned payments of orders the webhooks
    recorded are matched to the order's entries: nothing imported, nothing found."""
    set_auto_repair(shop, True)
    issue_mirrored(client, shop, "50.00")
    fake_shop = connected.shop(shop.domain)
    fake_shop.place_order(ORDER, CUSTOMER, "USD", store_credit="30.00", other="20.00")
    fake_shop.refund(ORDER, 990_001, to_store_credit="5.00")
    fake_shop.cancel_order(ORDER)
    sync_order_from_shopify(db.session, shop, ORDER, datetime.now(UTC), actor="webhook:test")
    recorded = kinds(shop.id)
    assert recorded == [
        ("issue", 5000),
        ("redeem", -3000),
        ("redeem_reversal", 3000),
        ("refund_credit", 500),
    ]

    result = reconcile_shop(shop.id)

    assert result["native_checked"] == 4  # credit, debit, refund credit, debit revert
    assert (result["repairs"], result["open_findings"]) == (0, 0)
    assert kinds(shop.id) == recorded
    assert account(shop.id).balance == native_minor(connected, shop) == 5500


def test_a_mirrored_credit_that_expired_in_shopify_is_no_drift(client, connected, shop):
    expires = datetime.now(UTC) + timedelta(days=3)
    issue_mirrored(client, shop, "20.00", expires_at=expires.isoformat())
    issue_mirrored(client, shop, "5.00")
    reconcile_shop(shop.id)
    connected.advance(timedelta(days=4))  # Shopify expires its credit; our job has not run

    result = reconcile_shop(shop.id, now_iso=(datetime.now(UTC) + timedelta(days=4)).isoformat())

    assert result["native_checked"] >= 1
    assert open_findings(shop.id) == {}
    assert native_minor(connected, shop) == 500
    assert account(shop.id).balance == 2500  # the expiry job will catch up


def test_an_outbox_row_that_never_landed_is_requeued_and_its_finding_resolved(
    client, connected, shop
):
    receipt = client.post(
        f"/api/customers/{CUSTOMER}/credits",
        json={"amount": "9.00", "currency": "USD", "reason": "goodwill"},
        headers={**auth(shop.domain), "Idempotency-Key": str(uuid.uuid4())},
    ).get_json()
    entry_id = uuid.UUID(receipt["entry"]["id"])
    # The sync job gave up on it (Shopify was down every time).
    db.session.execute(
        update(ShopifyOutbox)
        .where(ShopifyOutbox.entry_id == entry_id)
        .values(state="dead", attempts=8, last_error="AdminAPIUnavailable: 503")
    )
    db.session.commit()
    row_id = db.session.scalar(select(ShopifyOutbox.id).where(ShopifyOutbox.entry_id == entry_id))

    reconcile_shop(shop.id)
    assert set(open_findings(shop.id)) == {f"outbox:{row_id}"}  # native 0 = ledger - unsent

    set_auto_repair(shop, True)
    assert reconcile_shop(shop.id)["repairs"] == 1
    db.session.expire_all()
    row = db.session.get(ShopifyOutbox, row_id)
    assert (row.state, row.attempts) == ("pending", 0)
    assert sync_to_shopify(str(entry_id)) == "done"

    result = reconcile_shop(shop.id)
    assert result["findings_resolved"] == 1
    assert open_findings(shop.id) == {}
    assert account(shop.id).balance == native_minor(connected, shop) == 900


# -- the ledger's own checks ------------------------------------------------------------------


@pytest.fixture
def local_shop(app_context) -> Shop:
    """A shop with native sync off: reconciliation runs the ledger's own checks only."""
    return ShopFactory(domain=f"local-{uuid.uuid4().hex[:8]}.myshopify.com", auto_repair=True)


def test_the_incremental_run_reads_only_what_changed(local_shop, now):
    local_history(local_shop.id, range(1, 6), now)

    first = reconcile_shop(local_shop.id)
    assert (first["accounts_checked"], first["entries_checked"]) == (5, 10)
    assert (reconcile_shop(local_shop.id)["accounts_checked"]) == 0

    by = Actor(local_shop.id, now, "staff:1", "order", idempotency_key="late")
    operations.redeem(db.session, by, customer=3, amount=Money(500, "USD"))
    third = reconcile_shop(local_shop.id)

    assert (third["accounts_checked"], third["entries_checked"]) == (1, 1)
    run = db.session.get(ReconciliationRun, third["run_id"])
    assert (run.kind, run.state, run.accounts_checked, run.entries_checked) == (
        "incremental",
        "finished",
        1,
        1,
    )
    assert run.native_checked == 0
    checkpoints = db.session.execute(
        select(CreditAccount.last_sequence, CreditAccount.reconciled_sequence).where(
            CreditAccount.shop_id == local_shop.id
        )
    ).all()
    assert all(last == reconciled for last, reconciled in checkpoints)


def test_a_row_changed_after_the_checkpoint_stays_an_open_finding_and_the_cli_exits_1(
    app_context, local_shop, now
):
    local_history(local_shop.id, range(1, 2), now)
    reconcile_shop(local_shop.id)
    by = Actor(local_shop.id, now, "staff:1", "order", idempotency_key="third")
    operations.redeem(db.session, by, customer=1, amount=Money(500, "USD"))
    account_id = account(local_shop.id).id
    # Someone with database access turns the new 5.00 spend into 1.00.
    tamper(
        (
            "UPDATE ledger_entries SET amount = -100, balance_after = balance_before - 100 "
            "WHERE account_id = :account AND sequence = 3",
            {"account": account_id},
        )
    )

    for _ in range(2):  # auto-repair is on: still nothing is "repaired"
        result = reconcile_shop(local_shop.id)
        assert result["entries_checked"] == 1
        findings = open_findings(local_shop.id)
        assert f"ledger:{account_id}:hash_mismatch" in findings
        assert findings[f"ledger:{account_id}:hash_mismatch"].kind == "chain_break"
        assert findings[f"ledger:{account_id}:balance_mismatch"].kind == "invariant_violation"
    assert account(local_shop.id).reconciled_sequence == 2  # the checkpoint did not move
    reconcile_shop(local_shop.id, full=True)  # the full run also re-adds lifetime totals
    findings = open_findings(local_shop.id)
    assert set(findings) == {
        f"ledger:{account_id}:{code}"
        for code in ("hash_mismatch", "balance_mismatch", "allocations_mismatch", "totals_mismatch")
    }

    result = app_context.test_cli_runner().invoke(
        args=["credits", "reconcile", "--shop", local_shop.domain]
    )

    assert result.exit_code == 1, result.output
    assert f"open chain_break ledger:{account_id}:hash_mismatch" in result.output
    assert result.output.rstrip().endswith(f"{len(findings)} open findings")


def test_a_row_changed_before_the_checkpoint_is_found_by_the_full_run(local_shop, now):
    local_history(local_shop.id, range(1, 4), now)
    reconcile_shop(local_shop.id)
    account_ids = db.session.scalars(
        select(CreditAccount.id).where(CreditAccount.shop_id == local_shop.id)
    ).all()
    tamper(
        (
            "UPDATE ledger_entries SET reason = 'approved by the owner' "
            "WHERE account_id = :account AND sequence = 1",
            {"account": account_ids[1]},
        )
    )

    incremental = reconcile_shop(local_shop.id)
    assert (incremental["entries_checked"], incremental["open_findings"]) == (0, 0)

    full = reconcile_shop(local_shop.id, full=True)

    assert (full["accounts_checked"], full["entries_checked"]) == (3, 6)
    assert set(open_findings(local_shop.id)) == {f"ledger:{account_ids[1]}:hash_mismatch"}
    finding = open_findings(local_shop.id)[f"ledger:{account_ids[1]}:hash_mismatch"]
    assert finding.details["violations"] == [
        {"sequence": 1, "entry_id": finding.details["violations"][0]["entry_id"]}
    ]


def test_a_clean_ledger_exits_0_from_the_cli(app_context, local_shop, now):
    local_history(local_shop.id, range(1, 3), now)

    result = app_context.test_cli_runner().invoke(
        args=["credits", "reconcile", "--shop", local_shop.domain, "--full"]
    )

    assert result.exit_code == 0, result.output
    assert f"{local_shop.domain}: full run" in result.output
    assert "2 accounts, 4 entries" in result.output
    assert result.output.rstrip().endswith("0 open findings")


def test_a_run_is_skipped_while_another_holds_the_shop(local_shop, settings):
    redis = Redis.from_url(settings.redis_url)
    lock = redis.lock(f"creditcraft:reconcile:{local_shop.id}", timeout=30)
    assert lock.acquire(blocking=False)
    try:
        assert reconcile_shop(local_shop.id)["result"] == "skipped"
    finally:
        lock.release()
        redis.close()
    assert reconcile_shop(local_shop.id)["result"] == "finished"
    runs = db.session.scalar(select(func.count()).where(ReconciliationRun.shop_id == local_shop.id))
    assert runs == 1


def test_a_run_left_running_by_a_dead_worker_is_marked_failed(local_shop, now):
    stale = ReconciliationRun(
        shop_id=local_shop.id, kind="incremental", state="running", started_at=now
    )
    db.session.add(stale)
    db.session.commit()

    reconcile_shop(local_shop.id)

    db.session.expire_all()
    assert db.session.get(ReconciliationRun, stale.id).state == "failed"
