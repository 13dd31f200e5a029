"""Each ledger operation on the migrated schema: what it writes and what it refuses."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger import operations
from ledger.book import Actor
from ledger.errors import (
    InsufficientFunds,
    InvalidAmount,
    InvalidExpiry,
    LotNotActive,
    LotNotFound,
    NothingToReverse,
)
from ledger.expiry import expire_due
from ledger.kinds import LotSource
from ledger.money import Money
from ledger.verify import verify_account
from models import AuditLog, EntryAllocation
from tests.factories import ShopFactory
from tests.ledger.helpers import account_of, actor, entries_of, keyed, lot, usd

CUSTOMER = 7408348290


@pytest.fixture
def shop_id(session: Session) -> int:
    return ShopFactory().id


def issue(
    session: Session,
    shop_id: int,
    now: datetime,
    cents: int,
    *,
    expires_in: int | None,
    at: datetime | None = None,
) -> str:
    when = at or now
    receipt = operations.issue(
        session,
        keyed(shop_id, when),
        customer=CUSTOMER,
        amount=usd(cents),
        expires_at=None if expires_in is None else when + timedelta(days=expires_in),
    )
    return str(receipt.lot["id"])  # type: ignore[index]


@pytest.mark.smoke
def test_issue_writes_lot_entry_audit_and_chains_from_genesis(session, shop_id, now):
    receipt = operations.issue(
        session,
        keyed(shop_id, now),
        customer=CUSTOMER,
        amount=usd(1250),
        expires_at=now + timedelta(days=30),
        note="sorry for the wait",
    )

    account = account_of(session, shop_id, CUSTOMER)
    assert (account.balance, account.last_sequence) == (1250, 1)
    assert receipt.entry["amount"] == "12.50"
    assert receipt.entry["kind"] == "issue"
    assert receipt.account["balance"] == "12.50"
    assert receipt.lot is not None
    assert receipt.lot["remaining"] == "12.50"
    [entry] = entries_of(session, account.id)
    assert entry.prev_hash == "0" * 64
    assert entry.hash == account.last_hash
    audit = session.scalars(select(AuditLog).where(AuditLog.shop_id == shop_id)).all()
    assert [(a.action, a.outcome, a.actor) for a in audit] == [("issue", "success", "staff:1")]
    assert verify_account(session, account.id) == []


@pytest.mark.smoke
def test_redeem_takes_soonest_expiry_first_then_oldest_and_never_expiring_last(
    session, shop_id, now
):
    never = issue(session, shop_id, now, 1000, expires_in=None)
    late = issue(session, shop_id, now, 1000, expires_in=60)
    soon_old = issue(session, shop_id, now, 1000, expires_in=10)
    soon_new = issue(
        session,
        shop_id,
        now + timedelta(seconds=1),
        1000,
        expires_in=10,
        at=now - timedelta(seconds=1),
    )

    operations.redeem(
        session, keyed(shop_id, now + timedelta(minutes=1)), customer=CUSTOMER, amount=usd(2500)
    )

    remaining = {key: lot(session, key).remaining for key in (never, late, soon_old, soon_new)}
    # soon_new was created a second earlier than soon_old but expires a second earlier too.
    assert remaining[soon_new] == 0
    assert remaining[soon_old] == 0
    assert remaining[late] == 500
    assert remaining[never] == 1000
    assert lot(session, soon_new).status == "depleted"


def test_redeem_more_than_the_balance_is_refused_and_recorded(session, shop_id, now):
    issue(session, shop_id, now, 1000, expires_in=None)
    by = keyed(shop_id, now)

    with pytest.raises(InsufficientFunds) as refused:
        operations.redeem(session, by, customer=CUSTOMER, amount=usd(1001))

    assert refused.value.details == {"requested": 1001, "available": 1000}
    account = account_of(session, shop_id, CUSTOMER)
    assert account.balance == 1000
    assert account.last_sequence == 1
    failure = session.scalars(
        select(AuditLog).where(AuditLog.shop_id == shop_id, AuditLog.outcome == "failure")
    ).one()
    assert (failure.action, failure.error_code) == ("redeem", "insufficient_funds")


def test_expired_but_not_yet_swept_lots_cannot_be_spent(session, shop_id, now):
    issue(session, shop_id, now, 1000, expires_in=1)
    later = now + timedelta(days=1)  # exactly at expires_at: already dead

    with pytest.raises(InsufficientFunds):
        operations.redeem(session, keyed(shop_id, later), customer=CUSTOMER, amount=usd(1))


def test_redeem_on_a_customer_without_credit_is_insufficient_funds(session, shop_id, now):
    with pytest.raises(InsufficientFunds):
        operations.redeem(session, keyed(shop_id, now), customer=999, amount=usd(1))


@pytest.mark.parametrize("cents", [0, -5])
def test_issue_refuses_zero_and_negative_amounts(session, shop_id, now, cents):
    with pytest.raises(InvalidAmount):
        operations.issue(session, keyed(shop_id, now), customer=CUSTOMER, amount=usd(cents))
    assert (
        session.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.shop_id == shop_id)
        )
        == 0
    )


def test_issue_refuses_an_expiry_in_the_past(session, shop_id, now):
    with pytest.raises(InvalidExpiry):
        operations.issue(
            session,
            keyed(shop_id, now),
            customer=CUSTOMER,
            amount=usd(100),
            expires_at=now - timedelta(seconds=1),
        )


def test_adjust_up_opens_a_lot_and_down_spends_like_a_redeem(session, shop_id, now):
    operations.adjust(session, keyed(shop_id, now), customer=CUSTOMER, amount=usd(700))
    operations.adjust(session, keyed(shop_id, now), customer=CUSTOMER, amount=usd(-200))

    account = account_of(session, shop_id, CUSTOMER)
    assert account.balance == 500
    assert [e.kind for e in entries_of(session, account.id)] == ["adjust", "adjust"]
    with pytest.raises(InsufficientFunds):
        operations.adjust(session, keyed(shop_id, now), customer=CUSTOMER, amount=usd(-501))
    assert verify_account(session, account.id) == []


def test_revoke_takes_the_rest_of_one_lot_and_only_once(session, shop_id, now):
    target = issue(session, shop_id, now, 1000, expires_in=10)  # spent first
    other = issue(session, shop_id, now, 300, expires_in=None)
    operations.redeem(session, keyed(shop_id, now), customer=CUSTOMER, amount=usd(400))

    receipt = operations.revoke(session, keyed(shop_id, now), lot_id=lot(session, target).id)

    assert receipt.entry["amount"] == "-6.00"
    assert receipt.lot["status"] == "revoked"
    assert lot(session, other).remaining == 300
    with pytest.raises(LotNotActive):
        operations.revoke(session, keyed(shop_id, now), lot_id=lot(session, target).id)
    assert verify_account(session, account_of(session, shop_id, CUSTOMER).id) == []


def test_revoke_of_another_shops_lot_is_not_found(session, shop_id, now):
    target = issue(session, shop_id, now, 1000, expires_in=None)
    stranger = ShopFactory().id
    with pytest.raises(LotNotFound):
        operations.revoke(session, keyed(stranger, now), lot_id=lot(session, target).id)


def test_refund_credit_opens_a_refund_lot(session, shop_id, now):
    receipt = operations.refund_credit(
        session,
        keyed(shop_id, now),
        customer=CUSTOMER,
        amount=usd(450),
        shopify_refund_id=99,
        shopify_order_id=7,
    )
    assert receipt.lot["source"] == LotSource.REFUND
    assert receipt.entry["kind"] == "refund_credit"
    assert receipt.entry["shopify_refund_id"] == "99"


def test_reversal_refills_the_lots_the_spend_came_from_last_spent_first(session, shop_id, now):
    first = issue(session, shop_id, now, 1000, expires_in=10)
    second = issue(session, shop_id, now, 1000, expires_in=20)
    spend = operations.redeem(session, keyed(shop_id, now), customer=CUSTOMER, amount=usd(1500))
    spend_id = spend.entry["id"]

    operations.redeem_reversal(
        session, keyed(shop_id, now), entry_id=_uuid(spend_id), amount=usd(400)
    )
    assert (lot(session, first).remaining, lot(session, second).remaining) == (0, 900)

    operations.redeem_reversal(session, keyed(shop_id, now), entry_id=_uuid(spend_id))
    assert (lot(session, first).remaining, lot(session, second).remaining) == (1000, 1000)
    assert lot(session, first).status == "active"
    with pytest.raises(NothingToReverse):
        operations.redeem_reversal(session, keyed(shop_id, now), entry_id=_uuid(spend_id))
    assert verify_account(session, account_of(session, shop_id, CUSTOMER).id) == []


def test_reversal_onto_an_expired_lot_expires_again_at_once(session, shop_id, now):
    short = issue(session, shop_id, now, 1000, expires_in=1)
    spend = operations.redeem(session, keyed(shop_id, now), customer=CUSTOMER, amount=usd(600))
    later = now + timedelta(days=2)
    expire_due(session, now=later, shop_id=shop_id)
    assert lot(session, short).status == "expired"

    receipt = operations.redeem_reversal(
        session, keyed(shop_id, later), entry_id=_uuid(spend.entry["id"])
    )

    assert [e["kind"] for e in receipt.entries] == ["redeem_reversal", "expire"]
    assert receipt.entries[1]["actor"] == "system:expiry"
    refreshed = lot(session, short)
    assert (refreshed.status, refreshed.remaining) == ("expired", 0)
    account = account_of(session, shop_id, CUSTOMER)
    assert account.balance == 0
    assert verify_account(session, account.id) == []


def test_expiry_expires_each_due_lot_once_and_not_before_its_time(session, shop_id, now):
    due = issue(session, shop_id, now, 1000, expires_in=1)
    not_yet = issue(session, shop_id, now, 500, expires_in=3)
    operations.redeem(session, keyed(shop_id, now), customer=CUSTOMER, amount=usd(250))

    just_before = now + timedelta(days=1) - timedelta(microseconds=1)
    assert expire_due(session, now=just_before, shop_id=shop_id).lots == 0
    report = expire_due(session, now=now + timedelta(days=1), shop_id=shop_id)
    again = expire_due(session, now=now + timedelta(days=2), shop_id=shop_id)

    assert (report.lots, dict(report.amounts)) == (1, {"USD": 750})
    assert again.lots == 0
    assert (lot(session, due).status, lot(session, not_yet).status) == ("expired", "active")
    account = account_of(session, shop_id, CUSTOMER)
    assert account.balance == 500
    expire_entry = entries_of(session, account.id)[-1]
    assert (expire_entry.kind, expire_entry.amount, expire_entry.actor) == (
        "expire",
        -750,
        "system:expiry",
    )
    allocations = session.scalars(
        select(EntryAllocation).where(EntryAllocation.entry_id == expire_entry.id)
    ).all()
    assert [(a.lot_id, a.amount) for a in allocations] == [(lot(session, due).id, -750)]


def test_expiry_runs_in_batches_and_can_be_limited_to_one_shop(session, shop_id, now):
    for customer in range(1, 6):
        operations.issue(
            session,
            actor(shop_id, now),
            customer=customer,
            amount=usd(100),
            expires_at=now + timedelta(days=1),
        )
    other_shop = ShopFactory().id
    operations.issue(
        session,
        actor(other_shop, now),
        customer=CUSTOMER,
        amount=usd(100),
        expires_at=now + timedelta(days=1),
    )

    report = expire_due(session, now=now + timedelta(days=1), shop_id=shop_id, batch_size=2)

    assert (report.lots, report.batches) == (5, 3)
    other = account_of(session, other_shop, CUSTOMER)
    assert other.balance == 100


def _uuid(value: object):  # noqa: ANN202 - tiny local helper
    import uuid

    return uuid.UUID(str(value))


def test_a_replay_returns_the_first_receipt_field_for_field_in_order(session, shop_id, now):
    import json

    by = keyed(shop_id, now)
    first = operations.issue(session, by, customer=CUSTOMER, amount=usd(500), note="n")
    replay = operations.issue(session, by, customer=CUSTOMER, amount=usd(500), note="n")

    assert replay.replayed
    assert not first.replayed
    assert json.dumps(replay.to_json()) == json.dumps(first.to_json())
    assert account_of(session, shop_id, CUSTOMER).last_sequence == 1


def test_a_replay_that_would_now_be_refused_returns_the_first_success(session, shop_id, now):
    """The key's outcome wins: the replay's own rejection is discarded, unaudited."""
    issue(session, shop_id, now, 1000, expires_in=None)
    by = keyed(shop_id, now)
    first = operations.redeem(session, by, customer=CUSTOMER, amount=usd(800))

    again = operations.redeem(session, by, customer=CUSTOMER, amount=usd(800))

    assert again.replayed
    assert again.entry == first.entry
    assert account_of(session, shop_id, CUSTOMER).balance == 200
    failures = (
        select(func.count())
        .select_from(AuditLog)
        .where(AuditLog.shop_id == shop_id, AuditLog.outcome == "failure")
    )
    assert session.scalar(failures) == 0


def test_a_retry_after_the_requested_expiry_passed_replays_the_first_receipt(session, now):
    shop = ShopFactory()
    expires = now + timedelta(hours=1)
    first = operations.issue(
        session,
        Actor(shop.id, now, "staff:1", "goodwill", "key-expiring-1"),
        customer=8101,
        amount=Money(500, "USD"),
        expires_at=expires,
    )
    later = now + timedelta(hours=2)
    retry = operations.issue(
        session,
        Actor(shop.id, later, "staff:1", "goodwill", "key-expiring-1"),
        customer=8101,
        amount=Money(500, "USD"),
        expires_at=expires,
    )
    assert retry.replayed
    assert retry.entry == first.entry
    with pytest.raises(InvalidExpiry):  # without the key, the past expiry is refused
        operations.issue(
            session,
            Actor(shop.id, later, "staff:1", "goodwill"),
            customer=8101,
            amount=Money(500, "USD"),
            expires_at=expires,
        )
