"""Native sync: the merchant's credits mirrored into Shopify exactly once, whatever fails.

The shop is installed by token exchange against the fake Shopify; credits are issued through
the JSON API (an outbox row commits with each entry) and ``sync_to_shopify`` sends them.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from blueprints.settings import current_settings
from extensions import db
from jobs.sync import sweep_outbox, sync_to_shopify
from models import CreditAccount, CreditLot, Shop, ShopifyOutbox
from shop_access import install_with_session_token
from shopify_client.errors import AmbiguousMutation
from tests.conftest import auth, settings_changed

CUSTOMER = 7_600_001


@pytest.fixture
def shop(connected, shop_domain) -> Shop:
    fake_shop = connected.add_shop(shop_domain, restore_rate=1000.0)
    fake_shop.add_customer(CUSTOMER, email="ada@example.com")
    token = connected.session_token(shop_domain)
    installed = install_with_session_token(
        db.session, current_settings(), shop_domain, token, datetime.now(UTC)
    )
    assert installed.native_sync
    return installed


@pytest.fixture(autouse=True)
def inline_jobs(app_context):
    """No Redis: the API's enqueue runs nothing we did not ask for (tests call the job)."""
    with settings_changed(app_context, redis_url="redis://127.0.0.1:1/0"):
        yield


def issue(client, shop: Shop, amount: str, **extra) -> dict:
    answer = client.post(
        f"/api/customers/{CUSTOMER}/credits",
        json={"amount": amount, "currency": "USD", "reason": "goodwill", **extra},
        headers={**auth(shop.domain), "Idempotency-Key": str(uuid.uuid4())},
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.get_json()


def outbox(entry_id: str) -> ShopifyOutbox:
    db.session.expire_all()
    return db.session.execute(
        select(ShopifyOutbox).where(ShopifyOutbox.entry_id == uuid.UUID(entry_id))
    ).scalar_one()


def native_credits(connected, shop: Shop) -> list[dict]:
    return [
        tx
        for tx in connected.shop(shop.domain).transactions(CUSTOMER, "USD")
        if tx["type"] == "credit"
    ]


def test_an_issue_commits_its_outbox_row_and_the_job_mirrors_it(client, connected, shop):
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    receipt = issue(client, shop, "25.00", expires_at=expires.isoformat())
    row = outbox(receipt["entry"]["id"])
    assert (row.state, row.operation, row.amount, row.expires_at) == (
        "pending",
        "credit",
        2500,
        expires,
    )
    assert row.notify is shop.notify_customer
    assert sync_to_shopify(receipt["entry"]["id"]) == "done"
    row = outbox(receipt["entry"]["id"])
    assert row.state == "done"
    assert row.native_transaction_gid.startswith(
        "gid://shopify/StoreCreditAccountCreditTransaction/"
    )
    (credit,) = native_credits(connected, shop)
    assert credit["amount"] == "25.00"
    assert credit["expires_at"] == expires
    lot = db.session.get(CreditLot, uuid.UUID(receipt["lot"]["id"]))
    assert lot.native_transaction_gid == row.native_transaction_gid
    account = db.session.get(CreditAccount, int(receipt["account"]["id"]))
    assert account.native_account_gid.startswith("gid://shopify/StoreCreditAccount/")
    assert sync_to_shopify(receipt["entry"]["id"]) == "not_due"  # done is done


def test_debits_and_revokes_are_mirrored_as_native_debits(client, connected, shop):
    receipt = issue(client, shop, "40.00")
    sync_to_shopify(receipt["entry"]["id"])
    debit = client.post(
        f"/api/customers/{CUSTOMER}/debits",
        json={"amount": "15.00", "currency": "USD", "reason": "correction"},
        headers={**auth(shop.domain), "Idempotency-Key": str(uuid.uuid4())},
    ).get_json()
    assert sync_to_shopify(debit["entry"]["id"]) == "done"
    revoked = client.post(
        f"/api/lots/{receipt['lot']['id']}/revoke",
        json={"reason": "issued by mistake"},
        headers={**auth(shop.domain), "Idempotency-Key": str(uuid.uuid4())},
    ).get_json()
    assert outbox(revoked["entry"]["id"]).amount == 2500
    assert sync_to_shopify(revoked["entry"]["id"]) == "done"
    assert connected.shop(shop.domain).balance(CUSTOMER, "USD") == "0.00"


def test_a_lost_response_is_matched_not_sent_again(client, connected, shop):
    receipt = issue(client, shop, "10.00")
    connected.faults.add("lost_response", operation="storeCreditAccountCredit")
    with pytest.raises(AmbiguousMutation):
        sync_to_shopify(receipt["entry"]["id"])
    row = outbox(receipt["entry"]["id"])
    assert (row.state, row.ambiguous) == ("pending", True)
    assert sync_to_shopify(receipt["entry"]["id"]) == "done"
    assert len(native_credits(connected, shop)) == 1  # applied once, recorded once
    assert (
        outbox(receipt["entry"]["id"]).native_transaction_gid
        == native_credits(connected, shop)[0]["id"]
    )


def test_a_5xx_that_applied_nothing_is_sent_again_once(client, connected, shop):
    receipt = issue(client, shop, "10.00")
    connected.faults.add("server_error", operation="storeCreditAccountCredit")
    with pytest.raises(AmbiguousMutation):
        sync_to_shopify(receipt["entry"]["id"])
    assert native_credits(connected, shop) == []
    assert sync_to_shopify(receipt["entry"]["id"]) == "done"
    assert len(native_credits(connected, shop)) == 1


def test_two_identical_credits_each_land_once_after_ambiguity(client, connected, shop):
    first, second = issue(client, shop, "5.00"), issue(client, shop, "5.00")
    connected.faults.add("lost_response", operation="storeCreditAccountCredit", times=2)
    for receipt in (first, second):
        with pytest.raises(AmbiguousMutation):
            sync_to_shopify(receipt["entry"]["id"])
    for receipt in (first, second):
        assert sync_to_shopify(receipt["entry"]["id"]) == "done"
    credits = native_credits(connected, shop)
    assert len(credits) == 2
    assert {outbox(r["entry"]["id"]).native_transaction_gid for r in (first, second)} == {
        c["id"] for c in credits
    }


def test_a_credit_that_expired_before_it_was_sent_is_skipped(client, connected, shop):
    expires = datetime.now(UTC) + timedelta(seconds=30)
    receipt = issue(client, shop, "10.00", expires_at=expires.isoformat())
    later = (expires + timedelta(seconds=1)).isoformat()
    assert sync_to_shopify(receipt["entry"]["id"], later) == "skipped"
    row = outbox(receipt["entry"]["id"])
    assert (row.state, row.skipped_reason) == (
        "done",
        "the credit expired before it could be mirrored",
    )
    assert native_credits(connected, shop) == []


def test_a_customer_shopify_does_not_know_leaves_the_row_dead_with_the_error(
    client, connected, shop
):
    answer = client.post(
        "/api/customers/999000111/credits",
        json={"amount": "3.00", "currency": "USD", "reason": "goodwill"},
        headers={**auth(shop.domain), "Idempotency-Key": str(uuid.uuid4())},
    ).get_json()
    assert sync_to_shopify(answer["entry"]["id"]) == "dead"
    row = outbox(answer["entry"]["id"])
    assert row.state == "dead"
    assert "OWNER_NOT_FOUND" in row.last_error


def test_a_shop_without_native_sync_queues_nothing(client, connected, shop):
    shop.native_sync = False
    db.session.commit()
    issue(client, shop, "10.00")
    assert db.session.scalar(select(func.count()).where(ShopifyOutbox.shop_id == shop.id)) == 0


def test_the_sweeper_runs_rows_whose_enqueue_was_lost(client, connected, shop):
    receipts = [issue(client, shop, "1.00") for _ in range(3)]
    with settings_changed(client.application, redis_url=None):  # inline: the sweep sends them
        assert sweep_outbox() == 3
    assert {outbox(r["entry"]["id"]).state for r in receipts} == {"done"}
    assert len(native_credits(connected, shop)) == 3


def test_one_in_five_calls_failing_still_mirrors_every_credit_exactly_once(client, connected, shop):
    """Shopify failing ~20% of calls (5xx, lost responses, slow answers past the timeout)."""
    rng = random.Random(20261122)
    receipts = [issue(client, shop, f"{rng.randint(1, 99)}.00") for _ in range(20)]
    for _ in range(6):  # faults for a good share of the sends
        kind = rng.choice(["server_error", "lost_response", "throttled"])
        connected.faults.add(kind, operation="storeCreditAccountCredit")
    pending = [r["entry"]["id"] for r in receipts]
    for _ in range(10):
        still = []
        for entry_id in pending:
            try:
                if sync_to_shopify(
                    entry_id, (datetime.now(UTC) + timedelta(hours=2)).isoformat()
                ) in ("done",):
                    continue
            except AmbiguousMutation:
                pass
            still.append(entry_id)
        pending = still
        if not pending:
            break
    assert pending == []
    credits = native_credits(connected, shop)
    assert sorted(c["amount"] for c in credits) == sorted(r["entry"]["amount"] for r in receipts)
    total = sum(int(r["entry"]["amount"].replace(".", "")) for r in receipts)
    assert (
        connected.shop(shop.domain).balance(CUSTOMER, "USD") == f"{total // 100}.{total % 100:02d}"
    )


def test_a_row_that_stays_ambiguous_ends_dead_for_reconciliation(client, connected, shop):
    from jobs.sync import MAX_ATTEMPTS

    receipt = issue(client, shop, "2.00")
    connected.faults.add("server_error", operation="storeCreditAccountCredit", times=MAX_ATTEMPTS)
    outcomes = []
    for _ in range(MAX_ATTEMPTS):
        try:
            outcomes.append(
                sync_to_shopify(
                    receipt["entry"]["id"], (datetime.now(UTC) + timedelta(days=1)).isoformat()
                )
            )
        except AmbiguousMutation:
            outcomes.append("ambiguous")
    assert outcomes[-1] == "dead"
    row = outbox(receipt["entry"]["id"])
    assert (row.state, row.ambiguous) == ("dead", True)
    assert "still ambiguous" in row.last_error
