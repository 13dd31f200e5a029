"""Retention: an account's oldest entries moved out of the hot table, behind a signed checkpoint.

``archive_ledger`` moves, account by account, a *prefix* of each chain — entries 1..S, or
from the account's last checkpoint on — into ``ledger_entries_archive`` (their allocations and
outbox rows into theirs), and records a ``ledger_checkpoints`` row signed with the newest
``CheckpointKeys`` key: entry S's sequence and hash, the balance after it, the lifetime totals
up to it, the cut. Verification continues the hot chain from that checkpoint
(ledger/verify.py), and can still replay the archived prefix from genesis up to it.

**Which entries may move.** Per account, the longest prefix whose entries are all older than
the cut, and whose moving leaves nothing hot that still needs them:

1. *Older than the cut*: every entry up to S was created before it (a prefix by sequence).
2. *Lots*: every lot an entry up to S touched (opened, or took from or gave back to) is
   closed — depleted, expired or revoked — and no entry after S touches it. An active lot's
   opening stays hot, so a lot never has half its history archived, the lots' own check
   (remaining = amount + allocations) keeps reading one table, and reconciliation still finds
   the credit behind a native expiration. Being a prefix, the chain stays hot from an active
   lot's opening on: a credit that never expires holds its account's later history hot until
   it is spent (oldest first, so usually soon) or revoked.
3. *Reversals*: a spend reversed by an entry after S stays hot (the reversal names it, and a
   refund reads what it took); a reversal and its spend move together (rule 2 implies it: a
   reversal gives back to the spend's lots). An archived spend cannot be reversed any more:
   the retention age must exceed the longest refund window.
4. *Native sync*: an entry's outbox row must have landed (``done``) before the cut, and on an
   account mirrored in Shopify the cut is moved back to its native watermark less
   reconciliation's overlap and a day: reconciliation re-reads native transactions from there
   and matches them against hot rows only, so nothing it may read again can lose its match
   (an unmatched native credit would be imported a second time). An account mirrored but
   never matched yet archives nothing.
5. *Clean*: the account verifies clean (from genesis, or its last checkpoint, signature
   included) before anything moves; a broken chain is never signed over.

Idempotency keys of archived entries stay spent: a trigger refuses a new entry with one.

**How.** One transaction per account, under the account's row lock (no entry can be added
meanwhile): plan, verify, sign, copy to the archive, delete from the hot tables, audit. The
verification replays the account's whole hot chain under that lock (tens of thousands of
entries a second): an account with a very long hot chain holds its customer's writes as long. The
database lets the DELETE through only for rows already in the archive, identical, and covered
by a checkpoint (migration's trigger). A run that stops half-way has archived whole accounts;
running it again carries on, and an account with nothing older than the cut left is skipped,
so a second run with the same cut changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Table,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.orm import Session

from ledger.book import AccountRow
from ledger.checkpoints import (
    CheckpointKeys,
    NoSigningKey,
    SignedCheckpoint,
    latest_checkpoints,
    record_checkpoint,
)
from ledger.kinds import LotStatus
from ledger.reconcile import NATIVE_OVERLAP
from ledger.store import lock_account
from ledger.verify import verify_accounts
from models import (
    AuditLog,
    CreditAccount,
    CreditLot,
    EntryAllocation,
    EntryAllocationArchive,
    LedgerEntry,
    LedgerEntryArchive,
    Shop,
    ShopifyOutbox,
    ShopifyOutboxArchive,
)
from models.base import UTCDateTime

# Beyond reconciliation's overlap, how much older than the native watermark an entry must be.
NATIVE_MARGIN = timedelta(days=1)
# The scheduled job moves an account's prefix once it is at least this long: one checkpoint
# (and audit row) per hundred entries or more, not one per account per day.
SCHEDULED_MIN_ENTRIES = 100
ACTOR = "system:archive"

# Why a prefix stops short of the cut (ArchiveReport.held_back counts accounts per reason).
ACTIVE_LOT = "active_lot"
LOT_USED_LATER = "lot_used_later"
REVERSED_LATER = "spend_reversed_later"
OUTBOX_NOT_LANDED = "outbox_not_landed_before_the_cut"
NATIVE_NOT_MATCHED = "native_side_never_matched"
TOO_FEW = "fewer_entries_than_the_minimum"

_ENTRIES = cast(Table, LedgerEntry.__table__)
_ALLOCATIONS = cast(Table, EntryAllocation.__table__)
_OUTBOX = cast(Table, ShopifyOutbox.__table__)


@dataclass(frozen=True)
class Plan:
    """What may move of one account: entries ``first``..``through`` (none if through < first).

    ``wanted`` is the last entry older than the cut; ``held_back`` says why ``through`` stops
    before it.
    """

    account_id: int
    first: int
    wanted: int
    through: int
    held_back: str | None = None

    @property
    def entries(self) -> int:
        return max(0, self.through - self.first + 1)


@dataclass
class ArchiveReport:
    dry_run: bool
    cut: datetime
    accounts_examined: int = 0
    accounts_archived: int = 0
    entries: int = 0
    allocations: int = 0
    outbox_rows: int = 0
    held_back: Counter[str] = field(default_factory=Counter)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (account, violations)

    def lines(self) -> list[str]:
        verb = "would move" if self.dry_run else "moved"
        out = [
            f"archive before {self.cut.isoformat()}: {self.accounts_examined} accounts examined, "
            f"{self.accounts_archived} archived; {verb} {self.entries} entries, "
            f"{self.allocations} allocations, {self.outbox_rows} outbox rows"
        ]
        out += [
            f"  held back ({reason}): {n} accounts" for reason, n in sorted(self.held_back.items())
        ]
        out += [f"  refused account {account}: {why}" for account, why in self.refused]
        return out


def archive_ledger(
    session: Session,
    *,
    before: datetime,
    keys: CheckpointKeys,
    now: datetime,
    shop_id: int | None = None,
    dry_run: bool = False,
    min_entries: int = 1,
) -> ArchiveReport:
    """Archive, account by account, every entry older than ``before`` that may move.

    ``min_entries``: an account moves only a prefix at least this long. ``dry_run`` plans and
    verifies the same, and changes nothing. Raises NoSigningKey without a key (unless dry).
    """
    if not keys and not dry_run:
        raise NoSigningKey("ARCHIVE_SIGNING_KEYS is not set: no checkpoint can be signed")
    report = ArchiveReport(dry_run=dry_run, cut=before)
    for shop in _shops(session, shop_id):
        for account_id in _candidates(session, shop, before):
            archive_account(
                session,
                account_id,
                before=before,
                keys=keys,
                now=now,
                report=report,
                dry_run=dry_run,
                min_entries=min_entries,
            )
    return report


def _shops(session: Session, shop_id: int | None) -> list[int]:
    stmt = select(Shop.id).where(Shop.erased_at.is_(None)).order_by(Shop.id)
    if shop_id is not None:
        stmt = stmt.where(Shop.id == shop_id)
    found = list(session.scalars(stmt))
    session.commit()
    return found


def _candidates(session: Session, shop_id: int, before: datetime) -> list[int]:
    """The shop's accounts with a hot entry older than the cut (an index range per shop)."""
    stmt = (
        select(LedgerEntry.account_id)
        .where(LedgerEntry.shop_id == shop_id, LedgerEntry.created_at < before)
        .distinct()
        .order_by(LedgerEntry.account_id)
    )
    found = list(session.scalars(stmt))
    session.commit()
    return found


def archive_account(
    session: Session,
    account_id: int,
    *,
    before: datetime,
    keys: CheckpointKeys,
    now: datetime,
    report: ArchiveReport,
    dry_run: bool = False,
    min_entries: int = 1,
) -> None:
    """Plan, verify, sign and move one account's prefix, in one transaction (see the module).

    The transaction ends here either way: committed, or rolled back (a dry run, nothing to
    move, or a failure: the account is reported refused, with the error, and left as it was).
    """
    report.accounts_examined += 1
    try:
        moved = _archive_locked(
            session, account_id, before, keys, now, report, dry_run=dry_run, min_entries=min_entries
        )
    except NoSigningKey:
        session.rollback()
        raise
    except Exception as error:  # noqa: BLE001 - one account's failure holds up no other
        session.rollback()
        report.refused.append((account_id, f"{type(error).__name__}: {error}"[:500]))
        return
    except BaseException:
        session.rollback()
        raise
    if moved is None or dry_run:
        session.rollback()
    else:
        session.commit()
    if moved is not None:
        report.accounts_archived += 1
        report.entries += moved[0]
        report.allocations += moved[1]
        report.outbox_rows += moved[2]


def _archive_locked(
    session: Session,
    account_id: int,
    before: datetime,
    keys: CheckpointKeys,
    now: datetime,
    report: ArchiveReport,
    *,
    dry_run: bool,
    min_entries: int,
) -> tuple[int, int, int] | None:
    """(entries, allocations, outbox rows) moved (a dry run: that would move), or None."""
    account = lock_account(session, account_id)
    if account is None:
        return None
    base = latest_checkpoints(session, [account_id]).get(account_id)
    plan = plan_account(session, account, base, before)
    if plan.entries and plan.entries < min_entries:
        plan = Plan(account_id, plan.first, plan.wanted, plan.first - 1, TOO_FEW)
    if plan.held_back:
        report.held_back[plan.held_back] += 1
    if not plan.entries:
        return None
    [check] = verify_accounts(session, [account_id], keys=keys or None, stream=False)
    if not check.clean:
        codes = sorted({violation.code for violation in check.violations})
        report.refused.append((account_id, ", ".join(codes)))
        return None
    checkpoint = _checkpoint(session, account, base, plan, before, now)
    if dry_run:
        return _count(session, account_id, plan)
    checkpoint = keys.sign(checkpoint)
    record_checkpoint(session, checkpoint)
    moved = _move(session, account_id, plan, now)
    _audit(session, account, plan, checkpoint, moved, now)
    return moved


# -- planning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    """Sequences ``start``..``end`` (``None``: for good) cannot end the prefix."""

    start: int
    end: int | None
    reason: str


def plan_account(
    session: Session, account: AccountRow, base: SignedCheckpoint | None, before: datetime
) -> Plan:
    """The prefix of ``account`` (after ``base``) that may move for the cut ``before``."""
    first = (base.sequence if base else 0) + 1
    cut = _account_cut(session, account.id, before)
    if cut is None:
        return Plan(account.id, first, first - 1, first - 1, NATIVE_NOT_MATCHED)
    newer = session.scalar(
        select(func.min(LedgerEntry.sequence)).where(
            LedgerEntry.account_id == account.id, LedgerEntry.created_at >= cut
        )
    )
    wanted = account.last_sequence if newer is None else newer - 1
    if wanted < first:
        return Plan(account.id, first, wanted, first - 1)
    blocks = [
        *_outbox_blocks(session, account.id, first, wanted, cut),
        *_lot_blocks(session, account.id, first, wanted),
        *_reversal_blocks(session, account.id, first, wanted),
    ]
    through, reason = _longest_prefix(wanted, blocks)
    return Plan(account.id, first, wanted, max(through, first - 1), reason)


def _longest_prefix(wanted: int, blocks: Sequence[_Block]) -> tuple[int, str | None]:
    """The last sequence ≤ ``wanted`` no block covers, and the reason it is not ``wanted``."""
    through, reason = wanted, None
    moved = True
    while moved:
        moved = False
        for block in blocks:
            if block.start <= through and (block.end is None or through <= block.end):
                through, reason, moved = block.start - 1, block.reason, True
    return through, reason


def _account_cut(session: Session, account_id: int, before: datetime) -> datetime | None:
    """``before``, or earlier on an account mirrored in Shopify (rule 4); None: nothing."""
    gid, checked_until = session.execute(
        select(CreditAccount.native_account_gid, CreditAccount.native_checked_until).where(
            CreditAccount.id == account_id
        )
    ).one()
    mirrored = gid is not None or bool(
        session.scalar(select(exists().where(ShopifyOutbox.account_id == account_id)))
    )
    if not mirrored:
        return before
    if checked_until is None:
        return None
    return min(before, checked_until - NATIVE_OVERLAP - NATIVE_MARGIN)


def _in_prefix(first: int, through: int) -> Any:
    return LedgerEntry.sequence.between(first, through)


def _outbox_blocks(
    session: Session, account_id: int, first: int, wanted: int, cut: datetime
) -> Iterator[_Block]:
    stmt = (
        select(LedgerEntry.sequence)
        .join(ShopifyOutbox, ShopifyOutbox.entry_id == LedgerEntry.id)
        .where(
            LedgerEntry.account_id == account_id,
            _in_prefix(first, wanted),
            ~and_(
                ShopifyOutbox.state == "done",
                ShopifyOutbox.done_at.is_not(None),
                ShopifyOutbox.done_at < cut,
            ),
        )
    )
    for sequence in session.scalars(stmt):
        yield _Block(sequence, None, OUTBOX_NOT_LANDED)


def _lot_blocks(session: Session, account_id: int, first: int, wanted: int) -> Iterator[_Block]:
    """Rule 2: the prefix cannot end between a lot's first and last touch; nor after its
    first touch at all if the lot is active or touched again after ``wanted``."""
    touches = _lot_touches(session, account_id, first)
    first_touch: dict[Any, int] = {}
    last_touch: dict[Any, int] = {}
    for lot_id, sequence in touches:
        if sequence <= wanted:
            first_touch[lot_id] = min(sequence, first_touch.get(lot_id, sequence))
        last_touch[lot_id] = max(sequence, last_touch.get(lot_id, sequence))
    if not first_touch:
        return
    active = set(
        session.scalars(
            select(CreditLot.id).where(
                CreditLot.id.in_(list(first_touch)), CreditLot.status == LotStatus.ACTIVE.value
            )
        )
    )
    for lot_id, start in first_touch.items():
        if lot_id in active:
            yield _Block(start, None, ACTIVE_LOT)
        elif last_touch[lot_id] > wanted:
            yield _Block(start, None, LOT_USED_LATER)
        elif last_touch[lot_id] > start:
            yield _Block(start, last_touch[lot_id] - 1, LOT_USED_LATER)


def _lot_touches(session: Session, account_id: int, first: int) -> list[tuple[Any, int]]:
    """(lot, sequence) of every hot entry from ``first`` on that opens or moves a lot."""
    opened = select(LedgerEntry.lot_id, LedgerEntry.sequence).where(
        LedgerEntry.account_id == account_id,
        LedgerEntry.sequence >= first,
        LedgerEntry.lot_id.is_not(None),
    )
    moved = (
        select(EntryAllocation.lot_id, LedgerEntry.sequence)
        .join(LedgerEntry, LedgerEntry.id == EntryAllocation.entry_id)
        .where(LedgerEntry.account_id == account_id, LedgerEntry.sequence >= first)
    )
    return [(row[0], row[1]) for stmt in (opened, moved) for row in session.execute(stmt)]


def _reversal_blocks(
    session: Session, account_id: int, first: int, wanted: int
) -> Iterator[_Block]:
    """Rule 3: a spend and its reversal on either side of the end is no prefix."""
    spend = _ENTRIES.alias("spend")
    stmt = (
        select(spend.c.sequence, LedgerEntry.sequence)
        .join(spend, spend.c.id == LedgerEntry.reverses_entry_id)
        .where(
            LedgerEntry.account_id == account_id,
            LedgerEntry.reverses_entry_id.is_not(None),
            spend.c.sequence.between(first, wanted),
        )
    )
    for spent_at, reversed_at in session.execute(stmt):
        yield _Block(cast(int, spent_at), cast(int, reversed_at) - 1, REVERSED_LATER)


# -- the checkpoint and the move ------------------------------------------------------------


def _checkpoint(
    session: Session,
    account: AccountRow,
    base: SignedCheckpoint | None,
    plan: Plan,
    before: datetime,
    now: datetime,
) -> SignedCheckpoint:
    """The chain's state after entry ``plan.through`` (unsigned)."""
    credited, debited = session.execute(
        select(
            func.coalesce(func.sum(case((LedgerEntry.amount > 0, LedgerEntry.amount), else_=0)), 0),
            func.coalesce(
                func.sum(case((LedgerEntry.amount < 0, -LedgerEntry.amount), else_=0)), 0
            ),
        ).where(LedgerEntry.account_id == account.id, _in_prefix(plan.first, plan.through))
    ).one()
    last_hash, balance, last_at = session.execute(
        select(LedgerEntry.hash, LedgerEntry.balance_after, LedgerEntry.created_at).where(
            LedgerEntry.account_id == account.id, LedgerEntry.sequence == plan.through
        )
    ).one()
    return SignedCheckpoint(
        shop_id=account.shop_id,
        account_id=account.id,
        sequence=plan.through,
        hash=last_hash,
        balance=balance,
        lifetime_credited=(base.lifetime_credited if base else 0) + int(cast(Any, credited)),
        lifetime_debited=(base.lifetime_debited if base else 0) + int(cast(Any, debited)),
        last_entry_at=last_at,
        cut_at=before,
        created_at=now,
    )


def _prefix_ids(account_id: int, plan: Plan) -> Any:
    return select(_ENTRIES.c.id).where(
        _ENTRIES.c.account_id == account_id, _ENTRIES.c.sequence.between(plan.first, plan.through)
    )


def _move(session: Session, account_id: int, plan: Plan, now: datetime) -> tuple[int, int, int]:
    """Copy the prefix's rows to the archive, then delete them from the hot tables.

    Every column of each hot table is copied by name: a hot column the archive lacks fails
    the copy, and the account stays as it was.
    """
    ids = _prefix_ids(account_id, plan)
    in_prefix = and_(
        _ENTRIES.c.account_id == account_id, _ENTRIES.c.sequence.between(plan.first, plan.through)
    )
    copies = (
        (LedgerEntryArchive, _ENTRIES, in_prefix),
        (EntryAllocationArchive, _ALLOCATIONS, _ALLOCATIONS.c.entry_id.in_(ids)),
        (ShopifyOutboxArchive, _OUTBOX, _OUTBOX.c.entry_id.in_(ids)),
    )
    stamp = literal(now, UTCDateTime())
    for archive, hot, where in copies:
        names = [column.name for column in hot.columns]
        source = select(*hot.columns, stamp).where(where)
        session.execute(insert(archive).from_select([*names, "archived_at"], source))
    outbox = _rows(session, delete(_OUTBOX).where(_OUTBOX.c.entry_id.in_(ids)))
    allocations = _rows(session, delete(_ALLOCATIONS).where(_ALLOCATIONS.c.entry_id.in_(ids)))
    entries = _rows(session, delete(_ENTRIES).where(in_prefix))
    if entries != plan.entries:  # pragma: no cover - the account is locked; sequences are dense
        raise RuntimeError(f"account {account_id}: moved {entries} entries, planned {plan.entries}")
    return entries, allocations, outbox


def _count(session: Session, account_id: int, plan: Plan) -> tuple[int, int, int]:
    """What ``_move`` would move (a dry run)."""
    ids = _prefix_ids(account_id, plan)
    allocations = session.scalar(
        select(func.count()).select_from(_ALLOCATIONS).where(_ALLOCATIONS.c.entry_id.in_(ids))
    )
    outbox = session.scalar(
        select(func.count()).select_from(_OUTBOX).where(_OUTBOX.c.entry_id.in_(ids))
    )
    return plan.entries, int(allocations or 0), int(outbox or 0)


def _rows(session: Session, statement: Any) -> int:
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return result.rowcount


def _audit(
    session: Session,
    account: AccountRow,
    plan: Plan,
    checkpoint: SignedCheckpoint,
    moved: tuple[int, int, int],
    now: datetime,
) -> None:
    session.execute(
        insert(AuditLog).values(
            shop_id=account.shop_id,
            actor=ACTOR,
            action="ledger.archive",
            target_type="credit_account",
            target_id=str(account.id),
            outcome="success",
            details={
                "from_sequence": plan.first,
                "through_sequence": plan.through,
                "cut": checkpoint.cut_at.isoformat(),
                "entries": moved[0],
                "allocations": moved[1],
                "outbox_rows": moved[2],
                "checkpoint_hash": checkpoint.hash,
                "key_id": checkpoint.key_id,
                "held_back": plan.held_back,
            },
            created_at=now,
        )
    )
