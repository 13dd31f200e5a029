"""ledger_entries is append-only in the database, and tampering behind its back is caught.

The refusal tests run each forbidden statement in a savepoint so the failure does not poison
the test's transaction. The tamper tests act as the superuser the test database runs as:
they switch the append-only trigger off inside the test's transaction, change rows the way
an intruder with database access could, switch it back on, and expect ``verify_account`` to
name what broke. The fixture rolls all of it back (the ALTER TABLE included).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger import operations
from ledger.verify import Violation, verify_account
from tests.factories import ShopFactory
from tests.ledger.helpers import account_of, entries_of, keyed, lots_of, usd

CUSTOMER = 7408348291


@pytest.fixture
def shop_id(session: Session) -> int:
    return ShopFactory().id


@pytest.fixture
def account_id(session: Session, shop_id: int, now: datetime) -> int:
    """An account with two entries: issue 10.00 (lot expiring in 30 days), redeem 3.00."""
    operations.issue(
        session,
        keyed(shop_id, now),
        customer=CUSTOMER,
        amount=usd(1000),
        expires_at=now + timedelta(days=30),
    )
    operations.redeem(
        session, keyed(shop_id, now + timedelta(minutes=1)), customer=CUSTOMER, amount=usd(300)
    )
    account = account_of(session, shop_id, CUSTOMER)
    assert (account.balance, account.last_sequence) == (700, 2)
    assert verify_account(session, account.id) == []
    return account.id


def codes(violations: list[Violation]) -> set[tuple[int, str]]:
    return {(v.invariant, v.code) for v in violations}


def refused(session: Session, sql: str, **params: object) -> IntegrityError:
    """Run ``sql`` in a savepoint and return the database's refusal."""
    with pytest.raises(IntegrityError) as caught, session.begin_nested():
        session.execute(text(sql), params)
    assert "append-only" in str(caught.value.orig)
    return caught.value


def amounts(session: Session, account_id: int) -> list[tuple[int, int, int]]:
    session.expire_all()
    return [(e.sequence, e.amount, e.balance_after) for e in entries_of(session, account_id)]


# -- the database refuses changes ------------------------------------------------------------


@pytest.mark.smoke
def test_update_of_an_entry_is_refused_by_the_database(session, account_id):
    before = amounts(session, account_id)

    refused(
        session,
        "UPDATE ledger_entries SET amount = amount - 100, balance_after = balance_after - 100 "
        "WHERE account_id = :account AND sequence = 2",
        account=account_id,
    )
    refused(
        session,
        "UPDATE ledger_entries SET reason = 'edited' WHERE account_id = :account",
        account=account_id,
    )

    assert amounts(session, account_id) == before == [(1, 1000, 1000), (2, -300, 700)]
    assert verify_account(session, account_id) == []


def test_delete_of_an_entry_is_refused_by_the_database(session, account_id):
    # The row trigger fires before the allocations' foreign key is checked: the refusal names
    # the append-only rule (refused() checks the message), not the foreign key.
    refused(session, "DELETE FROM ledger_entries WHERE account_id = :account", account=account_id)
    refused(
        session,
        "DELETE FROM ledger_entries WHERE account_id = :account AND sequence = 2",
        account=account_id,
    )

    assert amounts(session, account_id) == [(1, 1000, 1000), (2, -300, 700)]
    assert verify_account(session, account_id) == []


def test_truncate_of_the_entries_is_refused_by_the_database(session, account_id):
    refused(session, "TRUNCATE ledger_entries CASCADE")

    assert len(amounts(session, account_id)) == 2


def test_the_refusal_is_a_restrict_violation_whoever_asks(session, account_id):
    # The test database user is a superuser: the trigger binds even the owner of the table.
    is_super = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    assert session.execute(text(is_super)).scalar_one() is True
    error = refused(
        session, "UPDATE ledger_entries SET note = 'x' WHERE account_id = :a", a=account_id
    )
    assert getattr(error.orig, "sqlstate", None) == "23001"  # restrict_violation


# -- tampering behind the application's back is caught ---------------------------------------


def tamper(session: Session, *statements: tuple[str, dict[str, object]]) -> None:
    """Run ``statements`` with the append-only trigger off, as a superuser could."""
    session.execute(text("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only"))
    for sql, params in statements:
        session.execute(text(sql), params)
    session.execute(text("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only"))
    session.expire_all()


def test_a_changed_amount_breaks_the_hash_the_balance_and_the_lot(session, account_id):
    # The spend of 3.00 rewritten as 2.00; balance_after moved with it so the row's own CHECK
    # constraints still pass. The account's cached balance is left as it was.
    tamper(
        session,
        (
            "UPDATE ledger_entries SET amount = -200, balance_after = 800 "
            "WHERE account_id = :account AND sequence = 2",
            {"account": account_id},
        ),
    )

    found = verify_account(session, account_id)

    assert codes(found) == {
        (1, "balance_mismatch"),
        (1, "totals_mismatch"),
        (3, "hash_mismatch"),
        (4, "allocations_mismatch"),
    }
    [mismatch] = [v for v in found if v.code == "hash_mismatch"]
    assert mismatch.details["sequence"] == 2
    [balance] = [v for v in found if v.code == "balance_mismatch"]
    assert balance.details == {"balance": 700, "sum_of_entries": 800, "sum_of_lots": 700}


def test_a_changed_reason_alone_is_caught_by_the_hash_chain(session, account_id):
    tamper(
        session,
        (
            "UPDATE ledger_entries SET reason = 'approved by the owner' "
            "WHERE account_id = :account AND sequence = 1",
            {"account": account_id},
        ),
    )

    found = verify_account(session, account_id)

    # Only the hash can tell: every amount, balance and lot still adds up.
    assert [(v.invariant, v.code, v.details["sequence"]) for v in found] == [
        (3, "hash_mismatch", 1)
    ]


def test_a_deleted_last_entry_is_betrayed_by_sequence_and_chain_head(session, account_id):
    # Remove the spend and repair every cached number so that all sums agree again:
    # the account's balance and totals, and the lot it took from.
    [spend] = [e for e in entries_of(session, account_id) if e.sequence == 2]
    [credit_lot] = lots_of(session, account_id)
    tamper(
        session,
        ("DELETE FROM entry_allocations WHERE entry_id = :entry", {"entry": spend.id}),
        ("DELETE FROM ledger_entries WHERE id = :entry", {"entry": spend.id}),
        (
            "UPDATE credit_accounts SET balance = 1000, lifetime_debited = 0 WHERE id = :account",
            {"account": account_id},
        ),
        ("UPDATE credit_lots SET remaining = 1000 WHERE id = :lot", {"lot": credit_lot.id}),
    )

    found = verify_account(session, account_id)

    assert codes(found) == {(2, "last_sequence_wrong"), (3, "head_mismatch")}
    [sequence] = [v for v in found if v.code == "last_sequence_wrong"]
    assert sequence.details == {"last_sequence": 2, "entries": 1}


def test_a_deleted_middle_entry_leaves_a_gap_in_sequence_and_chain(
    session, shop_id, account_id, now
):
    operations.redeem(
        session, keyed(shop_id, now + timedelta(minutes=2)), customer=CUSTOMER, amount=usd(100)
    )
    [spend] = [e for e in entries_of(session, account_id) if e.sequence == 2]
    tamper(
        session,
        ("DELETE FROM entry_allocations WHERE entry_id = :entry", {"entry": spend.id}),
        ("DELETE FROM ledger_entries WHERE id = :entry", {"entry": spend.id}),
    )

    found = verify_account(session, account_id)

    assert codes(found) == {
        (1, "balance_mismatch"),  # the entries now add up to 9.00, the lot holds 6.00
        (1, "totals_mismatch"),
        (2, "sequence_gap"),  # 1, 3
        (2, "balance_chain_broken"),  # entry 3 starts from 7.00, entry 1 ended at 10.00
        (2, "last_sequence_wrong"),
        (3, "chain_broken"),  # entry 3 links to the deleted entry's hash
        (3, "hash_mismatch"),
        (4, "lot_remaining_mismatch"),  # the lot's 3.00 spend has no allocation any more
    }
    [gap] = [v for v in found if v.code == "sequence_gap"]
    assert gap.details["sequence"] == 3


def test_a_changed_lot_remaining_is_caught(session, account_id):
    # No entry changes here: the lot is not append-only, but it must agree with its
    # allocations. remaining stays above 0 so the lot's status CHECK still passes.
    [credit_lot] = lots_of(session, account_id)
    assert (credit_lot.amount, credit_lot.remaining) == (1000, 700)
    tamper(
        session,
        ("UPDATE credit_lots SET remaining = 900 WHERE id = :lot", {"lot": credit_lot.id}),
    )

    found = verify_account(session, account_id)

    assert codes(found) == {(1, "balance_mismatch"), (4, "lot_remaining_mismatch")}
    [lot_violation] = [v for v in found if v.code == "lot_remaining_mismatch"]
    assert lot_violation.details == {
        "lot_id": str(credit_lot.id),
        "amount": 1000,
        "remaining": 900,
        "allocated": -300,
    }


def test_a_forged_hash_is_caught_by_the_next_link(session, account_id):
    # An intruder who overwrites an entry's hash breaks the recomputation of that entry, the
    # next entry's prev_hash link, and the next hash (it was computed from the true one).
    entries = entries_of(session, account_id)
    tamper(
        session,
        (
            "UPDATE ledger_entries SET hash = :forged WHERE id = :entry",
            {"forged": "f" * 64, "entry": entries[0].id},
        ),
    )

    found = verify_account(session, account_id)

    assert [(v.invariant, v.code, v.details["sequence"]) for v in found] == [
        (3, "hash_mismatch", 1),
        (3, "chain_broken", 2),
        (3, "hash_mismatch", 2),
    ]
