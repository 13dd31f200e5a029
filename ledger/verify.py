"""Re-checking accounts against DESIGN.md's invariants 1–4, from the rows alone.

Nothing cached is trusted: the entries are replayed, every hash is recomputed and every lot's
allocations are re-added. It returns every violation it finds, not just the first.

Two ways in, one replay:

- ``verify_account`` checks one account from its first entry (tests run it after every step);
- ``verify_accounts`` checks a batch of accounts, each from a ``Checkpoint`` (the sequence and
  hash up to which it was verified before): only the entries after it are read and hashed.
  The entry *at* the checkpoint is read too, as the anchor: it must still hash to the
  checkpoint's hash, and its ``balance_after`` is where the replay starts. Lots touched since
  are checked against all of their allocations, early ones included. Reconciliation runs it
  incrementally; from ``GENESIS`` it is a full check.

What an incremental check cannot see: a row changed *before* the checkpoint (other than the
anchor), and the lifetime totals (they need every entry). The nightly full run covers both.

Archived accounts (ledger/archive.py): an account whose oldest entries moved to the archive has
a *signed* checkpoint (ledger/checkpoints.py) recording the sequence, hash, balance and lifetime
totals at the end of the archived prefix. A check that would start at or before it (from
genesis, or from an older reconciliation checkpoint) starts there instead: the signature is
verified with ``keys`` (no keys, an unknown key or a bad signature is a violation), then the
hot entries are replayed from its hash and balance, and the lifetime totals re-added from its
totals. Lots add up what archived entries did to them too. With ``archived`` the archived
prefix itself is replayed from genesis as well and must end exactly at the checkpoint (a
restore check does this; reconciliation does not re-read the archive every night).

Rows are read with plain Core statements on the session's connection (no ORM objects), entries
streamed in account and sequence order with their allocations joined, so a batch's memory is
its lots, not its entries. The caller owns the transaction: for a consistent picture of a live
ledger, run it in a REPEATABLE READ snapshot (reconciliation does).
"""

from __future__ import annotations

import json
import queue
import threading
import typing
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    String,
    Text,
    Uuid,
    and_,
    any_,
    bindparam,
    cast,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from ledger.chain import CHAINED_FIELDS, GENESIS_HASH, canonical_plain, chain_hash, utc_text
from ledger.checkpoints import CheckpointKeys, SignedCheckpoint, latest_checkpoints
from ledger.kinds import LotStatus
from models import (
    CreditAccount,
    CreditLot,
    EntryAllocation,
    EntryAllocationArchive,
    LedgerEntry,
    LedgerEntryArchive,
)

Moves = list[tuple[str, int]]  # (lot id, amount) of one entry

# Rows fetched per round trip while streaming entries.
STREAM_CHUNK = 5000
# Ids per IN list.
IN_CHUNK = 1000


@dataclass(frozen=True)
class Violation:
    invariant: int
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Checkpoint:
    """An account's chain verified up to ``sequence``, whose entry hashes to ``hash``."""

    sequence: int = 0
    hash: str = GENESIS_HASH


GENESIS = Checkpoint()


@dataclass(frozen=True)
class AccountCheck:
    """What checking one account found, and how far its chain was read."""

    account_id: int
    since: Checkpoint
    head: Checkpoint  # the last entry read (``since`` when there was none)
    entries_checked: int
    violations: list[Violation]
    archived_checked: int = 0  # archived entries replayed (``archived``)

    @property
    def clean(self) -> bool:
        return not self.violations


def verify_account(
    session: Session,
    account_id: int,
    *,
    keys: CheckpointKeys | None = None,
    archived: bool = False,
) -> list[Violation]:
    """Every broken invariant (1 balance, 2 sequence, 3 hash chain, 4 lots) of one account."""
    [check] = verify_accounts(
        session, [account_id], every_lot=True, stream=False, keys=keys, archived=archived
    )
    return check.violations


def verify_accounts(
    session: Session,
    account_ids: Sequence[int],
    since: Mapping[int, Checkpoint] | None = None,
    *,
    every_lot: bool = False,
    stream: bool = True,
    keys: CheckpointKeys | None = None,
    archived: bool = False,
) -> list[AccountCheck]:
    """Check each account from its checkpoint in ``since`` (``GENESIS`` when absent), or from
    its signed archive checkpoint when that is later (``keys`` verify its signature).

    Lots: from a checkpoint, those the new entries touched are checked (invariant 4) and the
    live ones only summed (invariant 1, in the database); from genesis, the live ones and every
    lot an entry touched, or with ``every_lot`` every lot of the account (a scan).

    ``stream`` reads the entries through a server-side cursor, a chunk ahead in a thread (for
    batches of many entries); without it they come in one answer (one account's, in tests).
    ``archived`` also replays each archived prefix from genesis up to its checkpoint.
    """
    session.flush()
    since = {account_id: (since or {}).get(account_id, GENESIS) for account_id in account_ids}
    signed = latest_checkpoints(session, account_ids)
    bases = {a: point for a, point in signed.items() if since[a].sequence <= point.sequence}
    accounts = _accounts(session, account_ids)
    replays = {
        account_id: _Replay(
            account_id, accounts.get(account_id), since[account_id], bases.get(account_id)
        )
        for account_id in account_ids
    }
    for account_id, base in bases.items():
        replays[account_id].chain_found.extend(_signature_violations(base, keys))
    # From a signed checkpoint every hot entry is read: one still at or before it is a finding.
    reads = {a: GENESIS if a in bases else point for a, point in since.items()}
    for account_id, entry, moves in _entries(session, reads, stream=stream):
        replays[account_id].add(entry, moves)
    touched = {lot for replay in replays.values() for lot in replay.touched}
    whole = [account_id for account_id in account_ids if replays[account_id].whole]
    lots = _lots(session, whole, touched, every_lot=every_lot)
    live = _live_sums(session, [a for a in account_ids if not replays[a].whole])
    earlier = _earlier_moves(session, since, replays.values())
    if signed:
        archived_lots = {lot.id for a in signed for lot in lots.get(a, [])}
        _add_archived_moves(session, earlier, archived_lots)
    if archived and signed:
        for account_id, prefix in _archived_prefixes(session, signed, stream=stream).items():
            replays[account_id].archive_found = prefix.prefix_violations(signed[account_id])
            replays[account_id].archive_count = prefix.count
    return [
        replays[account_id].finish(lots.get(account_id, []), earlier, live.get(account_id, 0))
        for account_id in account_ids
    ]


def _signature_violations(base: SignedCheckpoint, keys: CheckpointKeys | None) -> list[Violation]:
    where = {"checkpoint_sequence": base.sequence, "key_id": base.key_id}
    if keys is None:
        return [
            Violation(
                3,
                "checkpoint_unverified",
                "The chain continues from a signed checkpoint, but no key was given to check it.",
                where,
            )
        ]
    problem = keys.problem(base)
    if problem == "unknown_key":
        return [
            Violation(
                3,
                "checkpoint_key_unknown",
                "The checkpoint is signed with a key that is not configured.",
                where,
            )
        ]
    if problem is not None:
        return [
            Violation(
                3,
                "checkpoint_signature_invalid",
                "The checkpoint's signature does not match its contents.",
                where,
            )
        ]
    return []


# -- reading --------------------------------------------------------------------------------

# Entry rows: CHAINED_FIELDS in order, then these. Ids are compared and hashed as strings, so
# PostgreSQL hands them over as text (no UUID objects to build for a million rows), and the
# metadata as its JSON text (nearly always "{}", which needs no parsing).
_N = len(CHAINED_FIELDS)
_PREV_HASH, _HASH, _ALLOC_LOT, _ALLOC_AMOUNT = _N, _N + 1, _N + 2, _N + 3
_I = {name: index for index, name in enumerate(CHAINED_FIELDS)}
_ACCOUNT_ID, _SEQUENCE, _AMOUNT = _I["account_id"], _I["sequence"], _I["amount"]
_BEFORE, _AFTER, _LOT_ID, _ID = _I["balance_before"], _I["balance_after"], _I["lot_id"], _I["id"]
_CREATED_AT, _METADATA = _I["created_at"], _I["metadata"]
_UUIDS = tuple(_I[name] for name in ("id", "lot_id", "reverses_entry_id"))
# Ids per query when looking lots up by id.
ID_CHUNK = 5000


def _on_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _text_id(column: Any, postgresql: bool) -> Any:
    return cast(column, String) if postgresql else column


def _ids_in(column: Any, ids: list[str], postgresql: bool) -> ColumnElement[bool]:
    """``column`` among ``ids``: one array parameter on PostgreSQL, an IN list elsewhere."""
    if postgresql:
        return column == any_(cast(bindparam(None, ids, type_=ARRAY(String)), ARRAY(Uuid)))
    found: ColumnElement[bool] = column.in_([uuid.UUID(value) for value in ids])
    return found


@dataclass(frozen=True)
class _Account:
    balance: int
    lifetime_credited: int
    lifetime_debited: int
    last_sequence: int
    last_hash: str


@dataclass(frozen=True)
class _Lot:
    id: str
    account_id: int
    amount: int
    remaining: int
    status: str


def _accounts(session: Session, account_ids: Sequence[int]) -> dict[int, _Account]:
    found: dict[int, _Account] = {}
    for chunk in _chunks(list(account_ids), IN_CHUNK):
        stmt = select(
            CreditAccount.id,
            CreditAccount.balance,
            CreditAccount.lifetime_credited,
            CreditAccount.lifetime_debited,
            CreditAccount.last_sequence,
            CreditAccount.last_hash,
        ).where(CreditAccount.id.in_(chunk))
        for row in session.connection().execute(stmt):
            found[row[0]] = _Account(*row[1:])
    return found


def _entries(
    session: Session, since: Mapping[int, Checkpoint], *, stream: bool, archive: bool = False
) -> Iterator[tuple[int, list[Any], Moves]]:
    """Each account's entries from its checkpoint's own entry on, in order, with their moves
    (``archive``: its archived entries, with their archived allocations)."""
    entries: type[LedgerEntry] | type[LedgerEntryArchive] = (
        LedgerEntryArchive if archive else LedgerEntry
    )
    allocations: type[EntryAllocation] | type[EntryAllocationArchive] = (
        EntryAllocationArchive if archive else EntryAllocation
    )
    from_genesis = [account_id for account_id, point in since.items() if point.sequence == 0]
    conditions: list[ColumnElement[bool]] = [
        and_(entries.account_id == account_id, entries.sequence >= point.sequence)
        for account_id, point in since.items()
        if point.sequence > 0
    ]
    if from_genesis:
        conditions.append(entries.account_id.in_(from_genesis))
    if not conditions:
        return
    postgresql = _on_postgresql(session)
    columns = [getattr(entries, "meta" if name == "metadata" else name) for name in CHAINED_FIELDS]
    for position in _UUIDS:
        columns[position] = _text_id(columns[position], postgresql)
    if postgresql:
        columns[_METADATA] = cast(entries.meta, Text)
        # The time as the chain spells it (utc_text), made by the server, which has a core of
        # its own: Python would pay a type conversion and a strftime per entry.
        columns[_CREATED_AT] = func.to_char(
            func.timezone("UTC", entries.created_at), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'
        )
    stmt = (
        select(
            *columns,
            entries.prev_hash,
            entries.hash,
            _text_id(allocations.lot_id, postgresql),
            allocations.amount,
        )
        .outerjoin(allocations, allocations.entry_id == entries.id)
        .where(or_(*conditions))
        .order_by(entries.account_id, entries.sequence, entries.id)
    )
    if not stream:
        yield from _grouped([session.connection().execute(stmt).all()])
        return
    result = session.connection().execute(stmt.execution_options(yield_per=STREAM_CHUNK))
    try:
        partitions = result.partitions()
        yield from _grouped(_read_ahead(partitions) if postgresql else partitions)
    finally:
        result.close()


_END = object()


def _read_ahead(partitions: Iterator[Sequence[Row[Any]]]) -> Iterator[Sequence[Row[Any]]]:
    """Fetch the next chunk of rows in a thread while the caller hashes this one.

    The server works out the next chunk meanwhile, on a core of its own (waiting on the socket
    releases the GIL), instead of after we ask for it. The connection is used by that thread
    alone until it has stopped; nothing else uses it meanwhile.
    """
    ready: queue.Queue[object] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for partition in partitions:
                if not hand_over(partition):
                    return
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            hand_over(error)
            return
        hand_over(_END)

    reader = threading.Thread(target=fetch, name="verify-read-ahead", daemon=True)
    reader.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield typing.cast(Sequence[Row[Any]], item)
    finally:
        stop.set()
        reader.join()


def _grouped(
    partitions: Iterable[Sequence[Row[Any]]],
) -> Iterator[tuple[int, list[Any], Moves]]:
    """One item per entry, its values made plain: the joined rows of an entry with several
    allocations folded into its moves."""
    current: list[Any] | None = None
    current_id: object = None
    moves: Moves = []
    for partition in partitions:
        for row in partition:
            if current is None or row[_ID] != current_id:
                if current is not None:
                    yield current[_ACCOUNT_ID], current, moves
                current, current_id, moves = _plain_values(row), row[_ID], []
            lot = row[_ALLOC_LOT]
            if lot is not None:
                moves.append((lot if lot.__class__ is str else str(lot), row[_ALLOC_AMOUNT]))
    if current is not None:
        yield current[_ACCOUNT_ID], current, moves


def _plain_values(row: Row[Any]) -> list[Any]:
    """The row with ids as strings, the time as the chain spells it, the metadata a dict."""
    values = list(row)
    for position in _UUIDS:
        value = values[position]
        if value is not None and value.__class__ is not str:
            values[position] = str(value)
    created = values[_CREATED_AT]
    if created.__class__ is not str:
        values[_CREATED_AT] = utc_text(created)
    metadata = values[_METADATA]
    if metadata.__class__ is str:
        values[_METADATA] = {} if metadata == "{}" else json.loads(metadata)
    return values


def _lots(
    session: Session, genesis_ids: Sequence[int], touched: set[str], *, every_lot: bool
) -> dict[int, list[_Lot]]:
    """Per account: the lots touched (by id) and, of accounts checked from genesis, the live
    ones (an index) or, with ``every_lot``, all of them (a scan: ``verify_account``)."""
    postgresql = _on_postgresql(session)
    columns = (
        _text_id(CreditLot.id, postgresql),
        CreditLot.account_id,
        CreditLot.amount,
        CreditLot.remaining,
        CreditLot.status,
    )
    rows: dict[str, _Lot] = {}
    connection = session.connection()
    for chunk in _chunks(list(genesis_ids), IN_CHUNK):
        scope: ColumnElement[bool] = CreditLot.account_id.in_(chunk)
        if not every_lot:
            scope = and_(scope, CreditLot.status == LotStatus.ACTIVE.value)
        for row in connection.execute(select(*columns).where(scope)):
            lot = _Lot(str(row[0]), *row[1:])
            rows[lot.id] = lot
    for chunk in _chunks(sorted(touched - rows.keys()), ID_CHUNK):
        stmt = select(*columns).where(_ids_in(CreditLot.id, chunk, postgresql))
        for row in connection.execute(stmt):
            lot = _Lot(str(row[0]), *row[1:])
            rows[lot.id] = lot
    by_account: dict[int, list[_Lot]] = defaultdict(list)
    for lot in rows.values():
        by_account[lot.account_id].append(lot)
    return by_account


def _live_sums(session: Session, account_ids: Sequence[int]) -> dict[int, int]:
    """What each account's live lots hold, summed by the database (one row per account)."""
    sums: dict[int, int] = {}
    for chunk in _chunks(list(account_ids), IN_CHUNK):
        stmt = (
            select(CreditLot.account_id, func.sum(CreditLot.remaining))
            .where(CreditLot.account_id.in_(chunk), CreditLot.status == LotStatus.ACTIVE.value)
            .group_by(CreditLot.account_id)
        )
        for account_id, total in session.connection().execute(stmt):
            sums[account_id] = int(total)
    return sums


@dataclass
class _Earlier:
    """What entries at or before their account's checkpoint did to each lot."""

    moved: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    opened: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _earlier_moves(
    session: Session, since: Mapping[int, Checkpoint], replays: Iterable[_Replay]
) -> _Earlier:
    """Allocations and openings, by entries the replay did not read, of the lots it touched."""
    earlier = _Earlier()
    wanted = sorted({lot for replay in replays if not replay.whole for lot in replay.touched})
    postgresql = _on_postgresql(session)
    connection = session.connection()
    has_moves = exists().where(EntryAllocation.entry_id == LedgerEntry.id)
    for chunk in _chunks(wanted, ID_CHUNK):
        moved = (
            select(
                _text_id(EntryAllocation.lot_id, postgresql),
                LedgerEntry.account_id,
                LedgerEntry.sequence,
                EntryAllocation.amount,
            )
            .join(LedgerEntry, LedgerEntry.id == EntryAllocation.entry_id)
            .where(_ids_in(EntryAllocation.lot_id, chunk, postgresql))
        )
        for row in connection.execute(moved):
            if row[2] <= since.get(row[1], GENESIS).sequence:
                earlier.moved[str(row[0])] += row[3]
        opened = select(
            _text_id(LedgerEntry.lot_id, postgresql),
            LedgerEntry.account_id,
            LedgerEntry.sequence,
            LedgerEntry.amount,
        ).where(_ids_in(LedgerEntry.lot_id, chunk, postgresql), ~has_moves)
        for row in connection.execute(opened):
            if row[2] <= since.get(row[1], GENESIS).sequence:
                earlier.opened[str(row[0])] += row[3]
    return earlier


def _add_archived_moves(session: Session, earlier: _Earlier, lot_ids: set[str]) -> None:
    """Add what archived entries did to ``lot_ids``: their allocations, and their openings
    (an entry naming the lot without allocations opened it)."""
    postgresql = _on_postgresql(session)
    connection = session.connection()
    has_moves = exists().where(EntryAllocationArchive.entry_id == LedgerEntryArchive.id)
    for chunk in _chunks(sorted(lot_ids), ID_CHUNK):
        lot = _text_id(EntryAllocationArchive.lot_id, postgresql)
        moved = (
            select(lot, func.sum(EntryAllocationArchive.amount))
            .where(_ids_in(EntryAllocationArchive.lot_id, chunk, postgresql))
            .group_by(EntryAllocationArchive.lot_id)
        )
        for lot_id, total in connection.execute(moved):
            earlier.moved[str(lot_id)] += int(typing.cast(Any, total))
        opened = (
            select(
                _text_id(LedgerEntryArchive.lot_id, postgresql), func.sum(LedgerEntryArchive.amount)
            )
            .where(_ids_in(LedgerEntryArchive.lot_id, chunk, postgresql), ~has_moves)
            .group_by(LedgerEntryArchive.lot_id)
        )
        for lot_id, total in connection.execute(opened):
            earlier.opened[str(lot_id)] += int(typing.cast(Any, total))


def _archived_prefixes(
    session: Session, signed: Mapping[int, SignedCheckpoint], *, stream: bool
) -> dict[int, _Replay]:
    """Each account's archived entries replayed from genesis (``prefix_violations`` then
    says whether they end at its checkpoint)."""
    replays = {account_id: _Replay(account_id, None, GENESIS) for account_id in signed}
    from_genesis = dict.fromkeys(signed, GENESIS)
    for account_id, entry, moves in _entries(session, from_genesis, stream=stream, archive=True):
        replays[account_id].add(entry, moves)
    return replays


# -- the replay -----------------------------------------------------------------------------


class _Replay:
    """One account's entries, fed in sequence order, checked as they come.

    ``base``: the signed checkpoint the chain continues from (the entries before it are
    archived), which then stands for ``since``: there is no entry at it to anchor on, but its
    balance and lifetime totals are known, so the account is checked whole from there.
    """

    def __init__(
        self,
        account_id: int,
        account: _Account | None,
        since: Checkpoint,
        base: SignedCheckpoint | None = None,
    ) -> None:
        self.account_id = account_id
        self.account = account
        self.base = base
        if base is not None:
            since = Checkpoint(base.sequence, base.hash)
        self.since = since
        # Whole: the state at the start is known (genesis, or a signed checkpoint), so the
        # balance is re-added from it, the lifetime totals too, and the live lots are read.
        self.whole = since.sequence == 0 or base is not None
        self.anchored = since.sequence == 0
        self.count = 0
        self.previous_after: int | None = 0 if self.anchored else None
        self.previous_hash = since.hash
        self.head_sequence = since.sequence
        self.start_balance = 0
        self.sum = 0
        self.credited = 0
        self.debited = 0
        if base is not None:
            self.previous_after = self.start_balance = base.balance
            self.credited, self.debited = base.lifetime_credited, base.lifetime_debited
        self.archive_found: list[Violation] = []
        self.archive_count = 0
        self.moved: dict[str, int] = defaultdict(int)
        self.opened: dict[str, int] = defaultdict(int)
        self.touched: set[str] = set()
        self.sequence_found: list[Violation] = []
        self.chain_found: list[Violation] = []
        self.lot_found: list[Violation] = []

    def add(self, entry: list[Any], moves: Moves) -> None:
        if not self.anchored:
            self._anchor(entry, moves)
            return
        # The hot path: a million entries in a full run. Details are built on a violation only.
        self.count += 1
        expected_sequence = self.since.sequence + self.count
        if entry[_SEQUENCE] != expected_sequence:
            self.sequence_found.append(
                Violation(
                    2, "sequence_gap", f"Expected entry {expected_sequence} here.", _where(entry)
                )
            )
        before, after, amount = entry[_BEFORE], entry[_AFTER], entry[_AMOUNT]
        if self.previous_after is not None and before != self.previous_after:
            self.sequence_found.append(
                Violation(
                    2,
                    "balance_chain_broken",
                    "balance_before is not the last after.",
                    _where(entry)
                    | {"balance_before": before, "previous_after": self.previous_after},
                )
            )
        if after != before + amount:
            self.sequence_found.append(
                Violation(
                    2, "balance_after_wrong", "balance_after is not before + amount.", _where(entry)
                )
            )
        self.previous_after = after
        self._check_link(entry, moves)
        self.sum += amount
        if amount > 0:
            self.credited += amount
        else:
            self.debited -= amount
        if entry[_LOT_ID] is not None or moves:
            self._note_lots(entry, moves)

    def _anchor(self, entry: list[Any], moves: Moves) -> None:
        """The entry at the checkpoint: unchanged since it was verified, or the chain broke.

        From a signed checkpoint: the first entry after it (entries it covers are archived;
        one still here is a finding, and is not replayed).
        """
        if self.base is not None:
            if entry[_SEQUENCE] <= self.base.sequence:
                self.chain_found.append(
                    Violation(
                        3,
                        "archived_entry_still_hot",
                        "An entry the signed checkpoint covers is still in the hot table.",
                        _where(entry),
                    )
                )
                return
            self.anchored = True
            self.add(entry, moves)
            return
        self.anchored = True
        where = _where(entry)
        if entry[_SEQUENCE] != self.since.sequence:
            # The checkpoint's entry is gone: replay what follows as it is.
            self.chain_found.append(
                Violation(
                    3,
                    "checkpoint_missing",
                    "The entry the last reconciliation ended on is gone.",
                    {"checkpoint": self.since.sequence},
                )
            )
            self.previous_after = entry[_BEFORE]
            self.start_balance = entry[_BEFORE]
            self.add(entry, moves)
            return
        recomputed = chain_hash(entry[_PREV_HASH], _canonical(entry, moves))
        if entry[_HASH] != self.since.hash or recomputed != entry[_HASH]:
            self.chain_found.append(
                Violation(
                    3,
                    "checkpoint_mismatch",
                    "The entry the last reconciliation ended on has changed since.",
                    where | {"checkpoint_hash": self.since.hash},
                )
            )
        self.previous_after = entry[_AFTER]
        self.start_balance = entry[_AFTER]

    def _check_link(self, entry: list[Any], moves: Moves) -> None:
        expected = chain_hash(self.previous_hash, _canonical(entry, moves))
        if entry[_PREV_HASH] != self.previous_hash:
            self.chain_found.append(
                Violation(
                    3, "chain_broken", "prev_hash is not the previous entry's hash.", _where(entry)
                )
            )
        if entry[_HASH] != expected:
            self.chain_found.append(
                Violation(
                    3, "hash_mismatch", "The entry does not hash to its stored hash.", _where(entry)
                )
            )
        self.previous_hash = entry[_HASH]
        self.head_sequence = entry[_SEQUENCE]

    def _note_lots(self, entry: list[Any], moves: Moves) -> None:
        lot_id = entry[_LOT_ID]
        if lot_id is not None:
            self.touched.add(lot_id)
            if not moves:
                self.opened[lot_id] += entry[_AMOUNT]
        for moved_lot, part in moves:
            self.touched.add(moved_lot)
            self.moved[moved_lot] += part
        if moves and sum(part for _, part in moves) != entry[_AMOUNT]:
            self.lot_found.append(
                Violation(
                    4,
                    "allocations_mismatch",
                    "Allocations do not add up to the entry.",
                    {"entry_id": str(entry[_ID])},
                )
            )

    def finish(self, lots: list[_Lot], earlier: _Earlier, live_sum: int) -> AccountCheck:
        """``lots``: those read for this account; ``live_sum``: what its live lots hold, as
        summed by the database (used from a checkpoint, where the live lots are not read)."""
        account = self.account
        if account is None:
            missing = Violation(
                1, "account_missing", "No such account.", {"account_id": self.account_id}
            )
            return AccountCheck(self.account_id, self.since, self.since, 0, [missing])
        if not self.anchored and self.base is None:  # nothing at or after the checkpoint
            self.chain_found.append(
                Violation(
                    3,
                    "checkpoint_missing",
                    "The entry the last reconciliation ended on is gone.",
                    {"checkpoint": self.since.sequence},
                )
            )
        violations = [
            *self._balance(account, lots, live_sum),
            *self.sequence_found,
            *self._last_sequence(account),
            *self.chain_found,
            *self._chain_head(account),
            *self.lot_found,
            *self._lots(lots, earlier),
            *self.archive_found,
        ]
        head = Checkpoint(self.head_sequence, self.previous_hash)
        return AccountCheck(
            self.account_id, self.since, head, self.count, violations, self.archive_count
        )

    def _balance(self, account: _Account, lots: list[_Lot], live_sum: int) -> Iterator[Violation]:
        by_entries = self.start_balance + self.sum
        in_lots = (
            sum(lot.remaining for lot in lots if lot.status == LotStatus.ACTIVE)
            if self.whole
            else live_sum
        )
        facts = {"balance": account.balance, "sum_of_entries": by_entries, "sum_of_lots": in_lots}
        if account.balance < 0:
            yield Violation(1, "negative_balance", "The balance is below zero.", facts)
        if not account.balance == by_entries == in_lots:
            yield Violation(1, "balance_mismatch", "Balance, entries and lots disagree.", facts)
        if self.whole and (account.lifetime_credited, account.lifetime_debited) != (
            self.credited,
            self.debited,
        ):
            yield Violation(
                1,
                "totals_mismatch",
                "Lifetime totals differ from the entries.",
                {
                    "credited": [account.lifetime_credited, self.credited],
                    "debited": [account.lifetime_debited, self.debited],
                },
            )

    def prefix_violations(self, checkpoint: SignedCheckpoint) -> list[Violation]:
        """What replaying an archived prefix from genesis found, and whether it ends exactly
        where ``checkpoint`` says (sequence, hash, balance, lifetime totals)."""
        found = [
            Violation(v.invariant, f"archived_{v.code}", f"In the archive: {v.message}", v.details)
            for v in (*self.sequence_found, *self.chain_found, *self.lot_found)
        ]
        ends = {"checkpoint_sequence": checkpoint.sequence, "archived_through": self.head_sequence}
        if self.count != checkpoint.sequence or self.head_sequence != checkpoint.sequence:
            found.append(
                Violation(
                    3,
                    "archive_checkpoint_sequence_mismatch",
                    "The archived entries do not end at the checkpoint.",
                    ends | {"archived_entries": self.count},
                )
            )
        if self.previous_hash != checkpoint.hash:
            found.append(
                Violation(
                    3,
                    "archive_checkpoint_hash_mismatch",
                    "The archived chain does not end at the checkpoint's hash.",
                    ends | {"chain_head": self.previous_hash, "checkpoint_hash": checkpoint.hash},
                )
            )
        replayed = (self.previous_after, self.credited, self.debited)
        recorded = (checkpoint.balance, checkpoint.lifetime_credited, checkpoint.lifetime_debited)
        if replayed != recorded:
            found.append(
                Violation(
                    1,
                    "archive_checkpoint_totals_mismatch",
                    "The archived entries do not add up to the checkpoint's balance and totals.",
                    ends | {"replayed": list(replayed), "checkpoint": list(recorded)},
                )
            )
        return found

    def _last_sequence(self, account: _Account) -> Iterator[Violation]:
        read = self.since.sequence + self.count
        if account.last_sequence != read:
            yield Violation(
                2,
                "last_sequence_wrong",
                "The account's last sequence is off.",
                {"last_sequence": account.last_sequence, "entries": read},
            )

    def _chain_head(self, account: _Account) -> Iterator[Violation]:
        if account.last_hash != self.previous_hash:
            yield Violation(
                3,
                "head_mismatch",
                "The account's last hash is not the chain's head.",
                {"last_hash": account.last_hash, "chain_head": self.previous_hash},
            )

    def _lots(self, lots: list[_Lot], earlier: _Earlier) -> Iterator[Violation]:
        # From a checkpoint, the lots no new entry touched were checked before: only their
        # part of the balance (invariant 1) is checked again, as a sum.
        for lot in lots:
            moved = earlier.moved.get(lot.id, 0) + self.moved.get(lot.id, 0)
            opened = earlier.opened.get(lot.id, 0) + self.opened.get(lot.id, 0)
            where = {"lot_id": lot.id, "amount": lot.amount, "remaining": lot.remaining}
            if lot.remaining != lot.amount + moved:
                yield Violation(
                    4,
                    "lot_remaining_mismatch",
                    "remaining is not amount minus allocations.",
                    where | {"allocated": moved},
                )
            if opened != lot.amount:
                yield Violation(
                    4,
                    "lot_opening_mismatch",
                    "No entry opened the lot for its amount.",
                    where | {"opened": opened},
                )
            if not 0 <= lot.remaining <= lot.amount:
                yield Violation(4, "lot_out_of_range", "remaining is outside 0..amount.", where)


def _where(entry: list[Any]) -> dict[str, Any]:
    return {"sequence": entry[_SEQUENCE], "entry_id": entry[_ID]}


def _canonical(entry: list[Any], moves: Moves) -> bytes:
    # zip stops at the last chained field: the row's trailing columns are not hashed.
    return canonical_plain(dict(zip(CHAINED_FIELDS, entry, strict=False)), moves)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
