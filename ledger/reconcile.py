"""Reconciliation: the ledger re-checked against itself, then each account against Shopify.

**The ledger's own checks** (``check_ledger``). Each account carries a checkpoint: the sequence
and hash up to which its chain was last verified clean. An incremental run reads only the
accounts whose head moved past their checkpoint, and of those only the entries after it
(``verify_accounts``); a full run verifies every account from its first entry. Batches of
accounts are read in one REPEATABLE READ snapshot each, so a ledger that keeps changing
meanwhile is seen consistently. A clean account's checkpoint moves to its head (a
compare-and-set, so two runs never move it backwards); an account with a violation keeps its
checkpoint, so every later run reads it again and sees the violation again. Chain breaks,
tampering and invariant violations are findings that no run resolves: the ledger is
append-only, nothing can "repair" it, and a person has to look.

**Against Shopify** (``reconcile_native_account``). The caller (a job; this module knows no
Shopify) reads the account's native ``StoreCreditAccount``: its balance and its transactions
since the account's native watermark. Each native transaction is matched to what the ledger
holds:

- a credit or debit CreditCraft mirrored: its GID is on the lot or the outbox row;
- an import of an earlier run: the entry keyed ``native:{GID}``;
- an order's payment, refund to store credit, or returned payment: the order's entries
  (a ``redeem``, a ``refund_credit``, the reversal keyed ``order:{id}:reversal:{transaction}``);
- an expiration: the lot of the credit it expired, expired by us too (or due: the expiry job
  runs every 15 minutes);
- a credit or debit matching an outbox row still on its way (a lost response): the sync job
  confirms it; nothing is imported.

Whatever is left was done outside CreditCraft (staff in Shopify admin, POS). With the shop's
auto-repair on, such credits and debits are imported as ``external`` entries (once each, keyed
by the native GID), and orders the ledger lacks are synced again (a webhook that never came).
Otherwise each is an open finding. The native balance is then compared with what the ledger
says Shopify should hold: its balance, less what has not reached Shopify yet (outbox rows not
landed) and less live lots past their expiry (Shopify has expired them already). The
watermark moves to the newest native transaction only once all of them are matched, so an
unmatched one is read again, and its finding resolved, by the run that finally matches it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine, Table, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from ledger.checkpoints import CheckpointKeys
from ledger.errors import LedgerError
from ledger.external import ExternalMovement, import_external
from ledger.findings import (
    CHAIN_BREAK,
    INVARIANT_VIOLATION,
    NATIVE_BALANCE_MISMATCH,
    NATIVE_EXPIRY_MISMATCH,
    NATIVE_ORDER_UNRECORDED,
    NATIVE_TRANSACTION_MISSING,
    OUTBOX_NOT_LANDED,
    UNMATCHED_NATIVE_SPEND,
    Finding,
    open_finding_keys,
    record_finding,
    resolve_findings,
)
from ledger.kinds import EntryKind, LotStatus
from ledger.money import Money
from ledger.native import NativeTransaction
from ledger.verify import AccountCheck, Checkpoint, Violation, verify_accounts
from models import (
    CreditAccount,
    CreditLot,
    Customer,
    LedgerEntry,
    ReconciliationRun,
    ShopifyOutbox,
)

# Accounts verified per snapshot: bounds a batch's memory (its lots) and the snapshot's age.
BATCH_ACCOUNTS = 200
# Native transactions are re-read from this long before the watermark: one made just before
# a run may become visible only after it (matching is idempotent, so overlap costs nothing).
NATIVE_OVERLAP = timedelta(minutes=10)
# Violations kept in a finding's details (the count says how many there were).
DETAILS_KEPT = 20


@dataclass
class Tally:
    """What a run did, for its ``reconciliation_runs`` row."""

    accounts_checked: int = 0
    entries_checked: int = 0
    native_checked: int = 0
    findings_opened: int = 0
    findings_resolved: int = 0
    repairs: int = 0
    errors: list[str] = field(default_factory=list)

    def opened(self, session: Session, shop_id: int, finding: Finding, now: datetime) -> None:
        if record_finding(session, shop_id, finding, now):
            self.findings_opened += 1

    def resolved(
        self, session: Session, shop_id: int, keys: Iterable[str], now: datetime, why: str
    ) -> None:
        self.findings_resolved += resolve_findings(session, shop_id, keys, now, why)


# -- runs -----------------------------------------------------------------------------------


def start_run(session: Session, shop_id: int, *, full: bool, now: datetime) -> int:
    """A new ``running`` row; runs of the shop still ``running`` died with their worker.

    The caller holds the shop's reconciliation lock, so no other run of the shop is alive.
    """
    session.execute(
        update(ReconciliationRun)
        .where(ReconciliationRun.shop_id == shop_id, ReconciliationRun.state == "running")
        .values(state="failed", finished_at=now, error="interrupted (its worker stopped)")
    )
    run = ReconciliationRun(
        shop_id=shop_id, kind="full" if full else "incremental", state="running", started_at=now
    )
    session.add(run)
    session.commit()
    return run.id


def finish_run(
    session: Session, run_id: int, tally: Tally, now: datetime, *, failure: str | None = None
) -> None:
    errors = [*tally.errors, *([failure] if failure else [])]
    session.execute(
        update(ReconciliationRun)
        .where(ReconciliationRun.id == run_id)
        .values(
            state="failed" if failure else "finished",
            finished_at=now,
            accounts_checked=tally.accounts_checked,
            entries_checked=tally.entries_checked,
            native_checked=tally.native_checked,
            findings_opened=tally.findings_opened,
            findings_resolved=tally.findings_resolved,
            repairs=tally.repairs,
            error="\n".join(errors)[:4000] if errors else None,
        )
    )
    session.commit()


# -- which accounts -------------------------------------------------------------------------


def changed_accounts(session: Session, shop_id: int) -> list[int]:
    """Accounts whose head moved since their checkpoint (new entries, or a changed head)."""
    stmt = (
        select(CreditAccount.id)
        .where(
            CreditAccount.shop_id == shop_id,
            or_(
                CreditAccount.last_sequence != CreditAccount.reconciled_sequence,
                CreditAccount.last_hash != CreditAccount.reconciled_hash,
            ),
        )
        .order_by(CreditAccount.id)
    )
    found = list(session.scalars(stmt))
    session.commit()
    return found


def all_accounts(session: Session, shop_id: int) -> list[int]:
    stmt = select(CreditAccount.id).where(CreditAccount.shop_id == shop_id)
    found = list(session.scalars(stmt.order_by(CreditAccount.id)))
    session.commit()
    return found


def natively_linked_accounts(session: Session, shop_id: int) -> list[int]:
    """Accounts known to have a native StoreCreditAccount: a staff edit in Shopify admin
    changes nothing on our side, so these are compared every run, changed or not."""
    stmt = select(CreditAccount.id).where(
        CreditAccount.shop_id == shop_id, CreditAccount.native_account_gid.is_not(None)
    )
    found = list(session.scalars(stmt.order_by(CreditAccount.id)))
    session.commit()
    return found


# -- the ledger's own checks ----------------------------------------------------------------


def check_ledger(
    session: Session,
    shop_id: int,
    account_ids: Sequence[int],
    *,
    full: bool,
    now: datetime,
    tally: Tally,
    keep_alive: Callable[[], None] = lambda: None,
    keys: CheckpointKeys | None = None,
) -> None:
    """Verify ``account_ids`` from their checkpoints (``full``: from their first entries);
    a finding for each kind of violation of an account; clean accounts' checkpoints advance.
    ``keys`` check the signatures of archive checkpoints (ledger/archive.py).

    Each batch is read in one snapshot and its findings and checkpoints committed before the
    next, so a run that stops half-way has kept what it verified.
    """
    for start in range(0, len(account_ids), BATCH_ACCOUNTS):
        batch = list(account_ids[start : start + BATCH_ACCOUNTS])
        keep_alive()
        session.commit()
        begin_snapshot(session)
        checkpoints = _checkpoints(session, batch)
        checks = verify_accounts(session, batch, None if full else checkpoints, keys=keys)
        session.commit()
        labels = _labels(session, [check.account_id for check in checks if not check.clean])
        for check in checks:
            tally.accounts_checked += 1
            tally.entries_checked += check.entries_checked
            for finding in _violation_findings(check, labels.get(check.account_id)):
                tally.opened(session, shop_id, finding, now)
        _advance(session, [check for check in checks if check.clean], checkpoints, now)
        session.commit()


def begin_snapshot(session: Session) -> None:
    """Start a REPEATABLE READ, read-only transaction: one consistent picture of the ledger.

    Only when the session owns its connection (bound to an engine) and has just committed. A
    session bound to a connection works inside its owner's transaction (tests, callers that
    manage their own), and that transaction is the picture.
    """
    bind = session.get_bind()
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        session.connection(
            execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        )


def _checkpoints(session: Session, account_ids: list[int]) -> dict[int, Checkpoint]:
    stmt = select(
        CreditAccount.id, CreditAccount.reconciled_sequence, CreditAccount.reconciled_hash
    ).where(CreditAccount.id.in_(account_ids))
    return {row[0]: Checkpoint(row[1], row[2]) for row in session.connection().execute(stmt)}


def _advance(
    session: Session, checks: list[AccountCheck], checkpoints: dict[int, Checkpoint], now: datetime
) -> None:
    """Move each clean account's checkpoint to its head, if no other run moved it meanwhile
    (compare-and-set; a full run from genesis never moves one back). One executemany."""
    moves = [
        {
            "account": check.account_id,
            "old_sequence": old.sequence,
            "old_hash": old.hash,
            "sequence": check.head.sequence,
            "hash": check.head.hash,
        }
        for check in checks
        if (old := checkpoints.get(check.account_id)) is not None
        and check.head.sequence >= old.sequence
    ]
    if moves:
        session.connection().execute(_ADVANCE.values(reconciled_at=now), moves)


_accounts_table = cast(Table, CreditAccount.__table__)
_ADVANCE = (
    update(_accounts_table)
    .where(
        _accounts_table.c.id == bindparam("account"),
        _accounts_table.c.reconciled_sequence == bindparam("old_sequence"),
        _accounts_table.c.reconciled_hash == bindparam("old_hash"),
    )
    .values(reconciled_sequence=bindparam("sequence"), reconciled_hash=bindparam("hash"))
)


def _violation_findings(check: AccountCheck, label: tuple[int, str] | None) -> Iterator[Finding]:
    """One finding per account and violation code (the first few violations in its details)."""
    by_code: dict[str, list[Violation]] = defaultdict(list)
    for violation in check.violations:
        by_code[violation.code].append(violation)
    customer, currency = label or (None, None)
    for code, found in by_code.items():
        first = found[0]
        expected = actual = None
        if code == "balance_mismatch":
            expected, actual = first.details["sum_of_entries"], first.details["balance"]
        yield Finding(
            kind=CHAIN_BREAK if first.invariant == 3 else INVARIANT_VIOLATION,
            key=f"ledger:{check.account_id}:{code}",
            account_id=check.account_id,
            shopify_customer_id=customer,
            currency=currency,
            expected=expected,
            actual=actual,
            details={
                "invariant": first.invariant,
                "code": code,
                "message": first.message,
                "count": len(found),
                "violations": [violation.details for violation in found[:DETAILS_KEPT]],
                "verified_from_sequence": check.since.sequence,
            },
        )


def _labels(session: Session, account_ids: list[int]) -> dict[int, tuple[int, str]]:
    """(Shopify customer id, currency) per account, to say whose account a finding is on."""
    if not account_ids:
        return {}
    stmt = (
        select(CreditAccount.id, Customer.shopify_customer_id, CreditAccount.currency)
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(CreditAccount.id.in_(account_ids))
    )
    return {row[0]: (row[1], row[2]) for row in session.execute(stmt)}


# -- against Shopify ------------------------------------------------------------------------


@dataclass(frozen=True)
class NativeAccount:
    """What Shopify holds for an account: ``gid`` None when it has no native account."""

    gid: str | None
    balance: Money
    transactions: list[NativeTransaction]  # oldest first, from the read's start on


@dataclass(frozen=True)
class NativeTarget:
    """Where to read an account's native side from, and since when."""

    account_id: int
    shopify_customer_id: int
    currency: str
    native_gid: str | None
    read_since: datetime | None  # None: every native transaction


def native_target(session: Session, account_id: int) -> NativeTarget:
    """Where to read the account's native side from: its transactions since the watermark.

    Also in a full run: every transaction before the watermark was matched when the watermark
    moved past it, and the balance comparison sees any difference made since. Re-reading a
    shop's whole native history every night would cost more API budget than it could find.
    """
    stmt = (
        select(
            Customer.shopify_customer_id,
            CreditAccount.currency,
            CreditAccount.native_account_gid,
            CreditAccount.native_checked_until,
        )
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(CreditAccount.id == account_id)
    )
    customer, currency, gid, checked_until = session.execute(stmt).one()
    session.commit()
    since = None if checked_until is None else checked_until - NATIVE_OVERLAP
    return NativeTarget(account_id, customer, currency, gid, since)


def remember_native_account(session: Session, account_id: int, gid: str) -> None:
    session.execute(
        update(CreditAccount)
        .where(CreditAccount.id == account_id, CreditAccount.native_account_gid.is_(None))
        .values(native_account_gid=gid)
    )
    session.commit()


@dataclass(frozen=True)
class _Lot:
    status: str
    remaining: int
    expires_at: datetime | None
    natively_present: bool


@dataclass(frozen=True)
class _Outbox:
    id: int
    signed_amount: int
    expires_at: datetime | None


@dataclass
class LedgerView:
    """What the ledger holds of one account, as far as Shopify could know it."""

    balance: int = 0
    gids: set[str] = field(default_factory=set)  # mirrored or imported native transactions
    lots_by_gid: dict[str, _Lot] = field(default_factory=dict)
    spent_orders: set[int] = field(default_factory=set)
    refunded_orders: set[int] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    unlanded: list[_Outbox] = field(default_factory=list)  # outbox rows not in Shopify (yet)
    due_remaining: int = 0  # live lots past expiry that Shopify has expired already

    def expected_native_balance(self, awaiting: set[int]) -> int:
        """The balance Shopify should show; ``awaiting``: outbox rows seen there already."""
        not_there = sum(row.signed_amount for row in self.unlanded if row.id not in awaiting)
        return self.balance - not_there - self.due_remaining


_OPENING_KINDS = {
    EntryKind.ISSUE.value,
    EntryKind.REFUND_CREDIT.value,
    EntryKind.ADJUST.value,
    EntryKind.EXTERNAL.value,
}


def ledger_view(session: Session, account_id: int, now: datetime) -> LedgerView:
    """One read of the account's entries with their lots and outbox rows."""
    stmt = (
        select(
            LedgerEntry.kind,
            LedgerEntry.amount,
            LedgerEntry.idempotency_key,
            LedgerEntry.shopify_order_id,
            LedgerEntry.lot_id,
            CreditLot.status,
            CreditLot.remaining,
            CreditLot.expires_at,
            CreditLot.native_transaction_gid,
            ShopifyOutbox.id,
            ShopifyOutbox.state,
            ShopifyOutbox.operation,
            ShopifyOutbox.amount,
            ShopifyOutbox.expires_at,
            ShopifyOutbox.native_transaction_gid,
            ShopifyOutbox.skipped_reason,
        )
        .outerjoin(
            CreditLot,
            and_(
                CreditLot.id == LedgerEntry.lot_id,
                LedgerEntry.kind.in_(sorted(_OPENING_KINDS)),
                LedgerEntry.amount > 0,
            ),
        )
        .outerjoin(ShopifyOutbox, ShopifyOutbox.entry_id == LedgerEntry.id)
        .where(LedgerEntry.account_id == account_id)
    )
    view = LedgerView()
    for row in session.execute(stmt):
        (
            kind,
            _amount,
            key,
            order,
            lot_id,
            lot_status,
            remaining,
            expires_at,
            lot_gid,
            outbox_id,
            state,
            operation,
            outbox_amount,
            outbox_expiry,
            outbox_gid,
            skipped,
        ) = cast(Any, row)
        if key:
            view.keys.add(key)
            if key.startswith("native:"):
                view.gids.add(key.removeprefix("native:"))
        if kind == EntryKind.REDEEM.value and order is not None:
            view.spent_orders.add(order)
        if kind == EntryKind.REFUND_CREDIT.value and order is not None:
            view.refunded_orders.add(order)
        landed = outbox_id is None or (
            state == "done" and outbox_gid is not None and skipped is None
        )
        if outbox_gid:
            view.gids.add(outbox_gid)
        if lot_gid:
            view.gids.add(lot_gid)
            landed = True
        if not landed:
            sign = 1 if operation == "credit" else -1
            view.unlanded.append(_Outbox(outbox_id, sign * outbox_amount, outbox_expiry))
        if lot_id is not None and lot_status is not None:
            lot = _Lot(lot_status, remaining, expires_at, natively_present=landed)
            # The native credit is the lot's, named on the lot or on its outbox row.
            credit_gid = lot_gid or (outbox_gid if operation == "credit" else None)
            if credit_gid:
                view.lots_by_gid[credit_gid] = lot
            if lot.natively_present and _due(lot, now):
                view.due_remaining += remaining
    view.balance = session.execute(
        select(CreditAccount.balance).where(CreditAccount.id == account_id)
    ).scalar_one()
    return view


def _due(lot: _Lot, now: datetime) -> bool:
    return lot.status == LotStatus.ACTIVE and lot.expires_at is not None and lot.expires_at <= now


@dataclass
class Classification:
    """Native transactions sorted by what the ledger makes of them."""

    matched: int = 0
    to_import: list[NativeTransaction] = field(default_factory=list)
    orders: dict[int, list[NativeTransaction]] = field(default_factory=dict)
    awaiting: dict[int, NativeTransaction] = field(default_factory=dict)  # outbox id → tx
    unexplained: list[tuple[NativeTransaction, str, str]] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        """Every transaction read is matched: the watermark may move past them."""
        return not (self.to_import or self.orders or self.awaiting or self.unexplained)


def classify(view: LedgerView, native: NativeAccount, now: datetime) -> Classification:
    result = Classification()
    outbox_free = list(view.unlanded)
    importing: set[str] = set()
    for tx in native.transactions:
        verdict, why = _match(view, tx, now, importing)
        if verdict == MATCHED:
            result.matched += 1
        elif verdict == ORDER:
            assert tx.origin_order is not None
            result.orders.setdefault(tx.origin_order, []).append(tx)
        elif verdict == EXTERNAL:
            row = _outbox_twin(outbox_free, tx)
            if row is not None:
                outbox_free.remove(row)
                result.awaiting[row.id] = tx
            else:
                result.to_import.append(tx)
                if tx.gid:
                    importing.add(tx.gid)
        else:
            result.unexplained.append((tx, verdict, why))
    return result


# A verdict: one of these three, or a finding kind with the reason.
MATCHED, ORDER, EXTERNAL = "matched", "order", "external"
Verdict = tuple[str, str]


def _match(view: LedgerView, tx: NativeTransaction, now: datetime, importing: set[str]) -> Verdict:
    if tx.gid is not None and tx.gid in view.gids:
        return MATCHED, ""
    if tx.kind == "expiration":
        return _match_expiration(view, tx, now, importing)
    if tx.origin_order is not None:
        return (MATCHED, "") if _order_recorded(view, tx) else (ORDER, "")
    if tx.gid is None:  # pragma: no cover - only expirations come without an id
        return NATIVE_TRANSACTION_MISSING, "a native transaction without an id"
    return EXTERNAL, ""


def _order_recorded(view: LedgerView, tx: NativeTransaction) -> bool:
    order = tx.origin_order
    assert order is not None
    if tx.kind == "debit":
        return order in view.spent_orders
    if tx.kind == "debit_revert":
        if tx.origin_transaction is not None:
            return f"order:{order}:reversal:{tx.origin_transaction}" in view.keys
        return any(key.startswith(f"order:{order}:reversal:") for key in view.keys)
    return order in view.refunded_orders  # a refund paid to store credit


def _match_expiration(
    view: LedgerView, tx: NativeTransaction, now: datetime, importing: set[str]
) -> Verdict:
    if tx.credit_gid is not None and tx.credit_gid in importing:
        return MATCHED, ""  # imported with Shopify's expiry, so due in the ledger too
    lot = view.lots_by_gid.get(tx.credit_gid or "")
    if lot is None:
        return (
            NATIVE_TRANSACTION_MISSING,
            "Shopify expired a credit the ledger does not know",
        )
    if lot.status == LotStatus.EXPIRED or _due(lot, now):
        return MATCHED, ""
    return (
        NATIVE_EXPIRY_MISMATCH,
        f"Shopify expired a credit the ledger holds as {lot.status}"
        + (f" until {lot.expires_at.isoformat()}" if lot.expires_at else ""),
    )


def _outbox_twin(rows: list[_Outbox], tx: NativeTransaction) -> _Outbox | None:
    """An outbox row this native credit or debit may be (its response was lost)."""
    for row in rows:
        if row.signed_amount != tx.amount.minor:
            continue
        if tx.kind == "credit" and not _same_instant(row.expires_at, tx.expires_at):
            continue
        return row
    return None


def _same_instant(ours: datetime | None, theirs: datetime | None) -> bool:
    if ours is None or theirs is None:
        return ours is theirs
    return abs(ours - theirs) < timedelta(seconds=1)


@dataclass(frozen=True)
class NativeOutcome:
    expected_balance: int
    native_balance: int
    imported: int
    orders_synced: int
    settled: bool


SyncOrder = Callable[[int], None]


def reconcile_native_account(
    session: Session,
    shop_id: int,
    target: NativeTarget,
    native: NativeAccount,
    *,
    auto_repair: bool,
    now: datetime,
    tally: Tally,
    sync_order: SyncOrder,
) -> NativeOutcome:
    """Match ``native`` with the ledger; repair what may be repaired; record what is left.

    ``sync_order(order_id)`` writes what an order did (the caller reads it from Shopify).
    """
    view = ledger_view(session, target.account_id, now)
    found = classify(view, native, now)
    session.commit()
    tally.native_checked += len(native.transactions)
    imported = synced = 0
    if auto_repair and (found.to_import or found.orders):
        imported = _import_all(session, shop_id, target, found.to_import, now, tally)
        synced = _sync_orders(found.orders, sync_order, tally)
        tally.repairs += imported + synced
        view = ledger_view(session, target.account_id, now)
        found = classify(view, native, now)
        session.commit()
    _record_native_findings(session, shop_id, target, found, now, tally)
    expected = view.expected_native_balance(set(found.awaiting))
    _record_balance(session, shop_id, target, expected, native.balance.minor, now, tally)
    if found.settled and native.transactions:
        newest = max(tx.created_at for tx in native.transactions)
        session.execute(
            update(CreditAccount)
            .where(
                CreditAccount.id == target.account_id,
                or_(
                    CreditAccount.native_checked_until.is_(None),
                    CreditAccount.native_checked_until < newest,
                ),
            )
            .values(native_checked_until=newest)
        )
    session.commit()
    return NativeOutcome(expected, native.balance.minor, imported, synced, found.settled)


def _import_all(
    session: Session,
    shop_id: int,
    target: NativeTarget,
    transactions: list[NativeTransaction],
    now: datetime,
    tally: Tally,
) -> int:
    """Import in the order Shopify applied them (a debit may need the credit before it)."""
    imported = 0
    for tx in transactions:
        assert tx.gid is not None
        movement = ExternalMovement(
            native_gid=tx.gid,
            amount=tx.amount,
            occurred_at=tx.created_at,
            event=tx.event,
            expires_at=tx.expires_at if tx.kind == "credit" else None,
        )
        try:
            receipt = import_external(session, shop_id, target.account_id, movement, now=now)
        except LedgerError as refused:
            tally.errors.append(f"import of {tx.gid} refused: {refused.code}")
            continue
        if not receipt.replayed:
            imported += 1
    return imported


def _sync_orders(
    orders: dict[int, list[NativeTransaction]], sync_order: SyncOrder, tally: Tally
) -> int:
    synced = 0
    for order_id in sorted(orders):
        try:
            sync_order(order_id)
        except Exception as error:  # noqa: BLE001 - one order's failure leaves it open; go on
            tally.errors.append(f"order {order_id} sync failed: {type(error).__name__}: {error}")
            continue
        synced += 1
    return synced


def _record_native_findings(
    session: Session,
    shop_id: int,
    target: NativeTarget,
    found: Classification,
    now: datetime,
    tally: Tally,
) -> None:
    """A finding per unmatched transaction; the account's other native findings are resolved.

    The watermark has not moved past an unmatched transaction, so every one still unmatched
    was read again by this run: an open finding not among them was matched meanwhile.
    """
    current: list[Finding] = []
    for tx in found.to_import:
        current.append(
            _tx_finding(target, tx, NATIVE_TRANSACTION_MISSING, "done outside CreditCraft")
        )
    for txs in found.orders.values():
        for tx in txs:
            current.append(
                _tx_finding(target, tx, NATIVE_ORDER_UNRECORDED, "the order's entry is missing")
            )
    for tx, kind, why in found.unexplained:
        current.append(_tx_finding(target, tx, kind, why))
    for finding in current:
        tally.opened(session, shop_id, finding, now)
    still = {finding.key for finding in current}
    earlier = open_finding_keys(
        session,
        shop_id,
        kinds=[NATIVE_TRANSACTION_MISSING, NATIVE_ORDER_UNRECORDED, NATIVE_EXPIRY_MISMATCH],
        account_id=target.account_id,
    )
    gone = [key for key in earlier if key not in still]
    tally.resolved(session, shop_id, gone, now, "matched in the ledger (imported or synced)")


def _tx_finding(target: NativeTarget, tx: NativeTransaction, kind: str, why: str) -> Finding:
    return Finding(
        kind=kind,
        key=tx.key,
        account_id=target.account_id,
        shopify_customer_id=target.shopify_customer_id,
        currency=target.currency,
        actual=tx.amount.minor,
        details={
            "reason": why,
            "native_transaction": tx.gid,
            "type": tx.kind,
            "event": tx.event,
            "amount": tx.amount.minor,
            "created_at": tx.created_at.isoformat(),
            "expires_at": tx.expires_at.isoformat() if tx.expires_at else None,
            "order": str(tx.origin_order) if tx.origin_order else None,
            "credit": tx.credit_gid,
        },
    )


def _balance_key(account_id: int) -> str:
    return f"native:account:{account_id}:balance"


def _record_balance(
    session: Session,
    shop_id: int,
    target: NativeTarget,
    expected: int,
    native: int,
    now: datetime,
    tally: Tally,
) -> None:
    key = _balance_key(target.account_id)
    if expected == native:
        tally.resolved(session, shop_id, [key], now, "native balance agrees with the ledger")
        return
    tally.opened(
        session,
        shop_id,
        Finding(
            kind=NATIVE_BALANCE_MISMATCH,
            key=key,
            account_id=target.account_id,
            shopify_customer_id=target.shopify_customer_id,
            currency=target.currency,
            expected=expected,
            actual=native,
            details={"difference": native - expected},
        ),
        now,
    )


# -- the outbox and orders, shop-wide ---------------------------------------------------------


def check_outbox(
    session: Session, shop_id: int, *, auto_repair: bool, now: datetime, tally: Tally
) -> None:
    """Rows the native sync gave up on are findings; with auto-repair they go back to pending.

    A re-queued row keeps its ``ambiguous`` flag: the sync job reads the account's native
    transactions before sending it again, so a credit whose response was lost is not sent
    twice. Findings of rows that have landed since are resolved.
    """
    dead = session.execute(
        select(
            ShopifyOutbox.id,
            ShopifyOutbox.account_id,
            ShopifyOutbox.operation,
            ShopifyOutbox.amount,
            ShopifyOutbox.currency,
            ShopifyOutbox.attempts,
            ShopifyOutbox.last_error,
        ).where(ShopifyOutbox.shop_id == shop_id, ShopifyOutbox.state == "dead")
    ).all()
    for row_id, account_id, operation, amount, currency, attempts, error in dead:
        tally.opened(
            session,
            shop_id,
            Finding(
                kind=OUTBOX_NOT_LANDED,
                key=f"outbox:{row_id}",
                account_id=account_id,
                currency=currency,
                expected=amount if operation == "credit" else -amount,
                details={"operation": operation, "attempts": attempts, "last_error": error},
            ),
            now,
        )
    if auto_repair and dead:
        tally.repairs += len(requeue_dead_outbox(session, [row[0] for row in dead], now))
    session.commit()
    open_keys = open_finding_keys(session, shop_id, kinds=[OUTBOX_NOT_LANDED])
    row_ids = [int(key.removeprefix("outbox:")) for key in open_keys]
    landed = session.scalars(
        select(ShopifyOutbox.id).where(ShopifyOutbox.id.in_(row_ids), ShopifyOutbox.state == "done")
    ).all()
    tally.resolved(
        session, shop_id, [f"outbox:{row_id}" for row_id in landed], now, "landed in Shopify"
    )
    session.commit()


def requeue_dead_outbox(session: Session, row_ids: list[int], now: datetime) -> list[int]:
    """Put the dead rows among ``row_ids`` back to ``pending`` (the sweeper or a sync job
    sends them); returns the ids requeued. The ``ambiguous`` flag stays, see check_outbox."""
    if not row_ids:
        return []
    requeued = session.execute(
        update(ShopifyOutbox)
        .where(ShopifyOutbox.id.in_(row_ids), ShopifyOutbox.state == "dead")
        .values(state="pending", attempts=0, next_attempt_at=now, claimed_at=None, updated_at=now)
        .returning(ShopifyOutbox.id)
    ).scalars()
    return list(requeued)


def retry_unmatched_spends(
    session: Session, shop_id: int, *, tally: Tally, sync_order: SyncOrder
) -> None:
    """Sync again each order whose native spend the ledger could not cover when it came.

    Run after the imports: the credit the spend needed may be in the ledger now. The order
    sync resolves the finding when it writes the spend (the caller counts what it resolved).
    """
    keys = open_finding_keys(session, shop_id, kinds=[UNMATCHED_NATIVE_SPEND])
    session.commit()
    orders = sorted({order for order in map(_order_of, keys) if order is not None})
    tally.repairs += _sync_orders(dict.fromkeys(orders, []), sync_order, tally)


def _order_of(key: str) -> int | None:
    parts = key.split(":")
    if len(parts) == 3 and parts[0] == "order" and parts[2] == "redeem" and parts[1].isdigit():
        return int(parts[1])
    return None


def summary(tally: Tally) -> dict[str, Any]:
    return {
        "accounts_checked": tally.accounts_checked,
        "entries_checked": tally.entries_checked,
        "native_checked": tally.native_checked,
        "findings_opened": tally.findings_opened,
        "findings_resolved": tally.findings_resolved,
        "repairs": tally.repairs,
        "errors": list(tally.errors),
    }
