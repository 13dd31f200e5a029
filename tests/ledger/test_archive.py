"""Retention: archiving a prefix of each chain behind a signed checkpoint (ledger/archive.py).

Each test builds a history with backdated actors in the test's rolled-back transaction, then
archives with a cut between old and recent entries. Tampering acts as the superuser the test
database runs as (triggers switched off inside the transaction, rolled back with it).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config import ConfigError, load_settings
from extensions import db
from jobs.maintenance import archive_old_entries
from jobs.reconcile import reconcile_shop
from ledger import idempotency, operations
from ledger.archive import (
    ACTIVE_LOT,
    LOT_USED_LATER,
    NATIVE_NOT_MATCHED,
    OUTBOX_NOT_LANDED,
    ArchiveReport,
    archive_ledger,
)
from ledger.book import Actor, Mirror
from ledger.checkpoints import CheckpointKeys, NoSigningKey, latest_checkpoints, resign_checkpoints
from ledger.errors import IdempotencyConflict
from ledger.integrity import check_books
from ledger.kinds import LotStatus
from ledger.privacy import erase_shop
from ledger.verify import Violation, verify_account
from models import (
    AuditLog,
    CreditAccount,
    EntryAllocationArchive,
    LedgerCheckpoint,
    LedgerEntry,
    LedgerEntryArchive,
    ReconciliationFinding,
    Shop,
    ShopifyOutbox,
    ShopifyOutboxArchive,
)
from tests.conftest import settings_changed
from tests.factories import ShopFactory
from tests.ledger.helpers import account_of, lots_of, usd

CUSTOMER = 7408348291
KEYS = CheckpointKeys(["archive-test-key"])


@pytest.fixture
def shop_id(session: Session) -> int:
    return ShopFactory().id


def by(shop_id: int, at: datetime, key: str | None = None, **extra: object) -> Actor:
    return Actor(shop_id, at, "staff:1", "goodwill", key or f"k-{uuid.uuid4().hex}", **extra)  # type: ignore[arg-type]


def history(session: Session, shop_id: int, now: datetime) -> int:
    """Eight entries: five old ones whose lots are closed, then an old lot still active (and
    a spend from it), then a recent credit. Returns the account id."""
    t0 = now - timedelta(days=100)
    first = operations.issue(
        session,
        by(shop_id, t0, "first-issue"),
        customer=CUSTOMER,
        amount=usd(1000),
        expires_at=t0 + timedelta(days=30),
    )
    operations.redeem(
        session, by(shop_id, t0 + timedelta(days=1)), customer=CUSTOMER, amount=usd(400)
    )
    operations.revoke(
        session, by(shop_id, t0 + timedelta(days=2)), lot_id=uuid.UUID(first.lot["id"])
    )
    operations.issue(
        session,
        by(shop_id, t0 + timedelta(days=3)),
        customer=CUSTOMER,
        amount=usd(500),
        expires_at=t0 + timedelta(days=40),
    )
    operations.redeem(
        session, by(shop_id, t0 + timedelta(days=4)), customer=CUSTOMER, amount=usd(500)
    )
    operations.issue(
        session, by(shop_id, t0 + timedelta(days=5)), customer=CUSTOMER, amount=usd(2000)
    )
    operations.redeem(
        session, by(shop_id, t0 + timedelta(days=6)), customer=CUSTOMER, amount=usd(300)
    )
    operations.issue(
        session, by(shop_id, now - timedelta(days=1)), customer=CUSTOMER, amount=usd(100)
    )
    account = account_of(session, shop_id, CUSTOMER)
    assert (account.last_sequence, account.balance) == (8, 1800)
    return account.id


def archive(session: Session, now: datetime, shop_id: int, **kwargs: object) -> ArchiveReport:
    """Archive the shop's entries older than 30 days (other tests' shops are left alone)."""
    options: dict[str, object] = {
        "before": now - timedelta(days=30),
        "keys": KEYS,
        "now": now,
        "shop_id": shop_id,
    }
    return archive_ledger(session, **(options | kwargs))  # type: ignore[arg-type]


def sequences(
    session: Session, model: type[LedgerEntry] | type[LedgerEntryArchive], account_id: int
) -> list[int]:
    stmt = select(model.sequence).where(model.account_id == account_id).order_by(model.sequence)
    return list(session.scalars(stmt))


def codes(violations: list[Violation]) -> set[str]:
    return {violation.code for violation in violations}


def as_superuser(session: Session, table: str, trigger: str, sql: str, **params: object) -> None:
    """Run ``sql`` with ``table``'s trigger off, as an intruder with database access could."""
    session.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}"))
    session.execute(text(sql), params)
    session.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}"))


def refused(session: Session, sql: str, **params: object) -> str:
    with pytest.raises(IntegrityError) as caught, session.begin_nested():
        session.execute(text(sql), params)
    return str(caught.value.orig)


# -- what moves, and what verification says afterwards -----------------------------------------


@pytest.mark.smoke  # also on SQLite: its triggers, its archive copy
def test_an_old_prefix_moves_behind_a_signed_checkpoint_and_active_lots_keep_working(
    session, shop_id, now
):
    account_id = history(session, shop_id, now)
    lots_before = {(lot.id, lot.status, lot.remaining) for lot in lots_of(session, account_id)}

    report = archive(session, now, shop_id)

    # Entries 6 and 7 are older than the cut too, but 6 opened the 20.00 lot still active.
    assert (report.accounts_archived, report.entries, report.allocations) == (1, 5, 3)
    assert report.held_back == {ACTIVE_LOT: 1}
    assert sequences(session, LedgerEntryArchive, account_id) == [1, 2, 3, 4, 5]
    assert sequences(session, LedgerEntry, account_id) == [6, 7, 8]
    moved = session.scalar(
        select(func.count()).select_from(EntryAllocationArchive).join(LedgerEntryArchive)
        .where(LedgerEntryArchive.account_id == account_id)
    )  # fmt: skip
    assert moved == 3
    checkpoint = latest_checkpoints(session, [account_id])[account_id]
    assert (checkpoint.sequence, checkpoint.balance) == (5, 0)
    assert (checkpoint.lifetime_credited, checkpoint.lifetime_debited) == (1500, 1500)
    assert KEYS.problem(checkpoint) is None
    assert {
        (lot.id, lot.status, lot.remaining) for lot in lots_of(session, account_id)
    } == lots_before
    assert verify_account(session, account_id, keys=KEYS) == []
    assert verify_account(session, account_id, keys=KEYS, archived=True) == []
    audit = session.scalars(
        select(AuditLog).where(AuditLog.shop_id == shop_id, AuditLog.action == "ledger.archive")
    ).one()
    assert (audit.target_id, audit.details["through_sequence"]) == (str(account_id), 5)

    # The account goes on: spend everything (the active lot and the recent one), then credit.
    operations.redeem(session, by(shop_id, now), customer=CUSTOMER, amount=usd(1800))
    operations.issue(session, by(shop_id, now), customer=CUSTOMER, amount=usd(700))
    assert account_of(session, shop_id, CUSTOMER).balance == 700
    assert verify_account(session, account_id, keys=KEYS, archived=True) == []


def test_archiving_twice_changes_nothing_and_a_dry_run_moves_nothing(session, shop_id, now):
    account_id = history(session, shop_id, now)

    dry = archive(session, now, shop_id, dry_run=True)

    assert (dry.accounts_archived, dry.entries) == (1, 5)
    assert sequences(session, LedgerEntry, account_id) == list(range(1, 9))
    assert session.scalar(select(func.count()).where(LedgerCheckpoint.shop_id == shop_id)) == 0

    archive(session, now, shop_id)
    again = archive(session, now, shop_id)

    assert (again.accounts_archived, again.entries) == (0, 0)
    assert sequences(session, LedgerEntryArchive, account_id) == [1, 2, 3, 4, 5]
    assert sequences(session, LedgerEntry, account_id) == [6, 7, 8]
    assert session.scalar(select(func.count()).where(LedgerCheckpoint.shop_id == shop_id)) == 1


def test_a_later_cut_moves_on_from_the_checkpoint_even_the_whole_chain(session, shop_id, now):
    account_id = history(session, shop_id, now)
    archive(session, now, shop_id)
    for lot in lots_of(session, account_id):
        if lot.status == LotStatus.ACTIVE:  # the 20.00 lot (6, 7) and the recent 1.00 (8)
            operations.revoke(session, by(shop_id, now - timedelta(hours=1)), lot_id=lot.id)

    report = archive(session, now, shop_id, before=now)

    assert (report.entries, report.held_back) == (5, {})
    assert sequences(session, LedgerEntry, account_id) == []
    assert sequences(session, LedgerEntryArchive, account_id) == list(range(1, 11))
    checkpoint = latest_checkpoints(session, [account_id])[account_id]
    assert (checkpoint.sequence, checkpoint.balance, checkpoint.lifetime_credited) == (10, 0, 3600)
    assert verify_account(session, account_id, keys=KEYS, archived=True) == []

    operations.issue(session, by(shop_id, now), customer=CUSTOMER, amount=usd(250))  # entry 11
    assert sequences(session, LedgerEntry, account_id) == [11]
    assert verify_account(session, account_id, keys=KEYS, archived=True) == []


def test_a_spend_reversed_after_the_cut_stays_hot_with_its_lot(session, shop_id, now):
    t0 = now - timedelta(days=100)
    small = operations.issue(
        session,
        by(shop_id, t0),
        customer=CUSTOMER,
        amount=usd(50),
        expires_at=t0 + timedelta(days=1),
    )
    operations.revoke(
        session, by(shop_id, t0 + timedelta(hours=1)), lot_id=uuid.UUID(small.lot["id"])
    )
    operations.issue(
        session,
        by(shop_id, t0 + timedelta(hours=2)),
        customer=CUSTOMER,
        amount=usd(1000),
        expires_at=t0 + timedelta(days=10),
    )
    spend = operations.redeem(
        session, by(shop_id, t0 + timedelta(days=1)), customer=CUSTOMER, amount=usd(1000)
    )
    # Given back now, into a lot long past its expiry: expired again at once (5 and 6).
    operations.redeem_reversal(session, by(shop_id, now), entry_id=uuid.UUID(spend.entry["id"]))
    account_id = account_of(session, shop_id, CUSTOMER).id
    assert sequences(session, LedgerEntry, account_id) == [1, 2, 3, 4, 5, 6]

    report = archive(session, now, shop_id)

    # The 0.50 lot (1, 2) moves; the spend (4) is reversed after the cut, into the lot 3
    # opened: 3 to 6 stay together.
    assert (report.entries, report.held_back) == (2, {LOT_USED_LATER: 1})
    assert sequences(session, LedgerEntry, account_id) == [3, 4, 5, 6]
    assert verify_account(session, account_id, keys=KEYS, archived=True) == []


# -- signatures, keys and tampering ----------------------------------------------------------------


def test_a_tampered_checkpoint_or_archive_fails_verification(session, shop_id, now):
    account_id = history(session, shop_id, now)
    archive(session, now, shop_id)
    assert codes(verify_account(session, account_id)) == {"checkpoint_unverified"}
    assert codes(verify_account(session, account_id, keys=CheckpointKeys(["other"]))) == {
        "checkpoint_key_unknown"
    }

    # Someone raises the balance the chain continues from (and the account's, to match).
    as_superuser(
        session,
        "ledger_checkpoints",
        "ledger_checkpoints_append_only",
        "UPDATE ledger_checkpoints SET balance = balance + 500 WHERE account_id = :a",
        a=account_id,
    )

    assert "checkpoint_signature_invalid" in codes(verify_account(session, account_id, keys=KEYS))


def test_an_archived_entry_changed_behind_the_checkpoint_is_found_by_the_full_check(
    session, shop_id, now
):
    account_id = history(session, shop_id, now)
    archive(session, now, shop_id)
    as_superuser(
        session,
        "ledger_entries_archive",
        "ledger_entries_archive_append_only",
        "UPDATE ledger_entries_archive SET reason = 'approved' "
        "WHERE account_id = :a AND sequence = 2",
        a=account_id,
    )

    assert verify_account(session, account_id, keys=KEYS) == []  # the hot chain is intact
    found = codes(verify_account(session, account_id, keys=KEYS, archived=True))
    assert "archived_hash_mismatch" in found


def test_a_key_rotation_re_signs_checkpoints_after_checking_them(session, shop_id, now):
    account_id = history(session, shop_id, now)
    archive(session, now, shop_id)
    rotated = CheckpointKeys(["new-key", "archive-test-key"])
    only_new = CheckpointKeys(["new-key"])
    assert codes(verify_account(session, account_id, keys=only_new)) == {"checkpoint_key_unknown"}

    outcome = resign_checkpoints(session, rotated, now)

    assert (outcome.resigned, outcome.refused) == (1, [])
    assert verify_account(session, account_id, keys=only_new) == []
    assert resign_checkpoints(session, rotated, now).already == 1


def test_archiving_needs_a_key_and_production_needs_one_once_retention_is_on(session, shop_id, now):
    history(session, shop_id, now)
    with pytest.raises(NoSigningKey):
        archive(session, now, shop_id, keys=CheckpointKeys([]))
    production = {
        "CREDITCRAFT_ENV": "production",
        "SECRET_KEY": "s",
        "SHOPIFY_API_KEY": "k",
        "SHOPIFY_API_SECRET": "x",
        "TOKEN_ENCRYPTION_KEYS": "a",
    }
    assert load_settings(production).archive_signing_keys == ()
    with pytest.raises(ConfigError, match="ARCHIVE_SIGNING_KEYS"):
        load_settings(production | {"LEDGER_RETENTION_DAYS": "730"})
    settings = load_settings(
        production | {"LEDGER_RETENTION_DAYS": "730", "ARCHIVE_SIGNING_KEYS": "n, o"}
    )
    assert (settings.ledger_retention_days, settings.archive_signing_keys) == (730, ("n", "o"))


# -- the database's rules ------------------------------------------------------------------------


def test_the_trigger_refuses_to_delete_an_entry_not_archived_as_it_is(session, shop_id, now):
    account_id = history(session, shop_id, now)
    archive(session, now, shop_id)
    delete_six = "DELETE FROM ledger_entries WHERE account_id = :a AND sequence = 6"

    assert "append-only" in refused(session, delete_six, a=account_id)
    # A copy in the archive is not enough without a checkpoint covering it ...
    session.execute(
        text(
            "INSERT INTO ledger_entries_archive SELECT *, now() FROM ledger_entries "
            "WHERE account_id = :a AND sequence = 6"
        ),
        {"a": account_id},
    )
    assert "append-only" in refused(session, delete_six, a=account_id)
    # ... nor a checkpoint covering a copy that differs from the hot row.
    as_superuser(
        session,
        "ledger_entries_archive",
        "ledger_entries_archive_append_only",
        "UPDATE ledger_entries_archive SET note = 'x' WHERE account_id = :a AND sequence = 6",
        a=account_id,
    )
    checkpoint = latest_checkpoints(session, [account_id])[account_id]
    session.execute(
        LedgerCheckpoint.__table__.insert().values(
            shop_id=shop_id,
            account_id=account_id,
            sequence=6,
            hash="f" * 64,
            balance=0,
            lifetime_credited=0,
            lifetime_debited=0,
            last_entry_at=now,
            cut_at=now,
            created_at=now,
            key_id=checkpoint.key_id,
            signature="0" * 64,
        )
    )
    assert "append-only" in refused(session, delete_six, a=account_id)
    assert sequences(session, LedgerEntry, account_id) == [6, 7, 8]


def test_the_archive_and_checkpoints_refuse_changes(session, shop_id, now):
    account_id = history(session, shop_id, now)
    archive(session, now, shop_id)

    for sql in (
        "UPDATE ledger_entries_archive SET note = 'x' WHERE account_id = :a",
        "DELETE FROM ledger_entries_archive WHERE account_id = :a",
        "DELETE FROM entry_allocations_archive WHERE entry_id IN "
        "(SELECT id FROM ledger_entries_archive WHERE account_id = :a)",
        "UPDATE ledger_checkpoints SET balance = 0 WHERE account_id = :a",
        "DELETE FROM ledger_checkpoints WHERE account_id = :a",
    ):
        assert "append-only" in refused(session, sql, a=account_id)
    assert "append-only" in refused(session, "TRUNCATE ledger_checkpoints CASCADE")


def test_an_archived_entrys_idempotency_key_stays_spent(session, shop_id, now):
    account_id = history(session, shop_id, now)
    archive(session, now, shop_id)
    idempotency.purge_expired(session, now)  # the stored outcome is long gone by then
    session.commit()

    first_entry = session.scalar(
        select(LedgerEntryArchive.id).where(
            LedgerEntryArchive.shop_id == shop_id,
            LedgerEntryArchive.idempotency_key == "first-issue",
        )
    )

    # The database refuses the entry (a trigger); the request is answered as for any key
    # whose outcome is no longer kept.
    with pytest.raises(IdempotencyConflict) as conflict:
        operations.issue(
            session, by(shop_id, now, "first-issue"), customer=CUSTOMER, amount=usd(1000)
        )
    assert conflict.value.details["entry_id"] == str(first_entry)
    with pytest.raises(IntegrityError, match="archived entry"), session.begin_nested():
        session.execute(
            text(
                "INSERT INTO ledger_entries SELECT id, shop_id, account_id, 99, kind, amount, "
                "balance_before, balance_after, lot_id, NULL, shopify_order_id, "
                "shopify_refund_id, idempotency_key, actor, reason, note, metadata, prev_hash, "
                "hash, created_at FROM ledger_entries_archive "
                "WHERE shop_id = :shop AND idempotency_key = 'first-issue'"
            ),
            {"shop": shop_id},
        )

    assert account_of(session, shop_id, CUSTOMER).balance == 1800
    assert verify_account(session, account_id, keys=KEYS) == []


def test_erasing_a_due_shop_erases_its_archive_too(session, shop_id, now):
    account_id = history(session, shop_id, now)
    kept_shop = ShopFactory().id
    kept_account = history(session, kept_shop, now)
    archive(session, now, shop_id)
    archive(session, now, kept_shop)
    shop = session.get(Shop, shop_id)
    assert shop is not None

    counts = erase_shop(session, shop, None, now, actor="job:erase_due_shops")

    assert counts["ledger_entries_archive"] == 5
    assert counts["ledger_checkpoints"] == 1
    for model in (
        LedgerEntry,
        LedgerEntryArchive,
        LedgerCheckpoint,
        EntryAllocationArchive,
        CreditAccount,
    ):
        left = session.scalar(
            select(func.count()).select_from(model).where(model.shop_id == shop_id)
        )
        assert left == 0, model.__tablename__
    assert account_id not in {a for (a,) in session.execute(select(CreditAccount.id))}
    # The other shop's archive is untouched, and its hot rows still refuse a DELETE.
    assert sequences(session, LedgerEntryArchive, kept_account) == [1, 2, 3, 4, 5]
    assert "append-only" in refused(
        session, "DELETE FROM ledger_entries WHERE account_id = :a", a=kept_account
    )
    assert verify_account(session, kept_account, keys=KEYS, archived=True) == []


# -- native sync ------------------------------------------------------------------------------


def test_a_mirrored_account_archives_only_what_reconciliation_matched_long_ago(session, now):
    shop_id = ShopFactory(native_sync=True).id
    t0 = now - timedelta(days=100)
    mirrored = Mirror()

    def issue(at: datetime, cents: int) -> uuid.UUID:
        receipt = operations.issue(
            session,
            by(shop_id, at, mirror=mirrored),
            customer=CUSTOMER,
            amount=usd(cents),
            expires_at=at + timedelta(days=50),
        )
        return uuid.UUID(receipt.lot["id"])

    first = issue(t0, 500)  # 1
    operations.revoke(session, by(shop_id, t0 + timedelta(days=1), mirror=mirrored), lot_id=first)
    second = issue(t0 + timedelta(days=10), 700)  # 3
    operations.revoke(session, by(shop_id, t0 + timedelta(days=11), mirror=mirrored), lot_id=second)
    account = account_of(session, shop_id, CUSTOMER)

    # Mirrored, and reconciliation never matched the native side yet: nothing moves.
    assert archive(session, now, shop_id).held_back == {NATIVE_NOT_MATCHED: 1}

    # Matched up to 60 days ago; every row landed a minute after its entry but the second
    # credit's, which landed only 50 days ago (after the account's cut).
    session.execute(
        update(CreditAccount)
        .where(CreditAccount.id == account.id)
        .values(native_checked_until=now - timedelta(days=60))
    )
    rows = session.execute(
        select(ShopifyOutbox.id, ShopifyOutbox.created_at)
        .where(ShopifyOutbox.shop_id == shop_id)
        .order_by(ShopifyOutbox.id)
    ).all()
    assert len(rows) == 4
    for index, (row_id, created) in enumerate(rows):
        session.execute(
            update(ShopifyOutbox)
            .where(ShopifyOutbox.id == row_id)
            .values(
                state="done",
                native_transaction_gid=f"gid://shopify/StoreCreditAccountTransaction/{row_id}",
                done_at=now - timedelta(days=50) if index == 2 else created + timedelta(minutes=1),
            )
        )
    session.commit()

    report = archive(session, now, shop_id)

    assert report.held_back == {OUTBOX_NOT_LANDED: 1}
    assert (report.entries, report.outbox_rows) == (2, 2)  # the first credit, issued and revoked
    archived = session.scalars(
        select(ShopifyOutboxArchive.id)
        .where(ShopifyOutboxArchive.shop_id == shop_id)
        .order_by(ShopifyOutboxArchive.id)
    )
    assert list(archived) == [rows[0][0], rows[1][0]]
    assert verify_account(session, account.id, keys=KEYS, archived=True) == []


# -- reconciliation, the books check, the schedule ------------------------------------------------


def test_reconciliation_and_the_books_check_continue_from_the_checkpoint(app_context, now):
    shop_id = ShopFactory().id
    session = db.session
    account_id = history(session, shop_id, now)
    archive(session, now, shop_id)

    with settings_changed(app_context, archive_signing_keys=("archive-test-key",)):
        full = reconcile_shop(shop_id, full=True, now_iso=now.isoformat())
    assert (full["accounts_checked"], full["entries_checked"], full["open_findings"]) == (1, 3, 0)
    assert reconcile_shop(shop_id, full=True, now_iso=now.isoformat())["open_findings"] == 1
    finding = session.scalars(
        select(ReconciliationFinding).where(ReconciliationFinding.shop_id == shop_id)
    ).one()
    assert finding.finding_key == f"ledger:{account_id}:checkpoint_key_unknown"

    books = check_books(session, keys=KEYS, shop_id=shop_id)
    assert books.ok, books.lines()
    assert (books.accounts, books.entries, books.archived_entries) == (1, 3, 5)
    [totals] = books.totals
    assert (totals.balances, totals.live_lots, totals.entries) == (1800, 1800, 1800)


def test_the_scheduled_job_archives_only_when_retention_is_set(app: Flask, app_context, now):
    shop_id = ShopFactory().id
    t0 = now - timedelta(days=100)
    for step in range(51):  # 102 entries, each credit spent at once
        at = t0 + timedelta(minutes=step)
        operations.issue(
            db.session, by(shop_id, at), customer=CUSTOMER, amount=usd(100), expires_at=now
        )
        operations.redeem(db.session, by(shop_id, at), customer=CUSTOMER, amount=usd(100))
    account_id = account_of(db.session, shop_id, CUSTOMER).id

    assert archive_old_entries(now.isoformat()) == {"accounts": 0, "entries": 0, "refused": 0}
    assert len(sequences(db.session, LedgerEntry, account_id)) == 102

    with settings_changed(
        app, ledger_retention_days=30, archive_signing_keys=("archive-test-key",)
    ):
        result = archive_old_entries(now.isoformat())

    assert result["refused"] == 0
    assert result["entries"] >= 102  # (and whatever old entries other tests committed)

    assert sequences(db.session, LedgerEntry, account_id) == []
    assert verify_account(db.session, account_id, keys=KEYS, archived=True) == []


def test_the_commands_archive_and_verify_as_an_operator_would(app: Flask, app_context, now):
    shop = ShopFactory()
    account_id = history(db.session, shop.id, now)
    runner = app_context.test_cli_runner()
    archive_args = ["ledger", "archive", "--before", (now - timedelta(days=30)).date().isoformat()]
    archive_args += ["--shop", shop.domain]

    with settings_changed(app, archive_signing_keys=("archive-test-key",)):
        dry = runner.invoke(args=[*archive_args, "--dry-run"])
        done = runner.invoke(args=archive_args)
        verified = runner.invoke(args=["ledger", "verify", "--shop", shop.domain])

    assert dry.exit_code == 0, dry.output
    assert "would move 5 entries, 3 allocations, 0 outbox rows" in dry.output
    assert done.exit_code == 0, done.output
    assert "1 archived; moved 5 entries" in done.output
    assert "held back (active_lot): 1 accounts" in done.output
    assert verified.exit_code == 0, verified.output
    assert f"{shop.domain} USD: 1 accounts, balances 18.00, live lots 18.00, entries 18.00" in (
        verified.output
    )
    assert verified.output.splitlines()[-1].startswith("PASS: 1 accounts, 3 entries (+5 archived)")

    unkeyed = runner.invoke(args=["ledger", "verify", "--shop", shop.domain])  # no key set
    assert unkeyed.exit_code == 1
    assert f"FAIL account {account_id} ({shop.domain}, customer {CUSTOMER}, USD): " in (
        unkeyed.output
    )
    assert "checkpoint_unverified" in unkeyed.output
