"""The ledger on PostgreSQL against an in-memory model, every invariant checked after every step.

Hypothesis drives issue, refund_credit, adjust (up and down), redeem, redeem_reversal, revoke and
expire_due on a few (customer, currency) accounts while time only moves forward, and replays or
reuses idempotency keys. The model below knows nothing of ``ledger/``: it re-states the spend
order (soonest expiry first, never-expiring last, ties by age then lot id) and the reversal rule
(last-spent lot first; a lot closed meanwhile takes its share and is closed again at once).

Each example runs in its own connection and outer transaction, rolled back in teardown(); the
operations' commits only release savepoints inside it. Lot and entry ids come from a seed
Hypothesis draws, so an example replays (and shrinks) exactly. Rules lean toward the subtle
cases (lots that tie on expiry, a lot dying right now, returns to several or closed lots),
which ``event()`` labels.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import ledger.book
from ledger import operations
from ledger.book import Actor
from ledger.errors import (
    EntryNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    LedgerError,
    LotNotActive,
    LotNotFound,
    NothingToReverse,
)
from ledger.expiry import expire_due
from ledger.money import Money
from ledger.verify import verify_account
from ledger.views import Receipt
from models import AuditLog, CreditAccount, CreditLot, Customer, IdempotencyKey, LedgerEntry, Shop

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CUSTOMER_IDS = (4101, 4102)
ACCOUNT_KEYS = [(customer, currency) for customer in CUSTOMER_IDS for currency in ("USD", "JPY")]
CREDIT = st.integers(1, 5000)
# A lot's expiry: none, some days ahead, or the same as a live lot's of that account (a tie).
EXPIRY_DAYS = st.none() | st.integers(1, 8) | st.integers(1, 45) | st.just("shared")
# Time moves by whole days, quarter days, or (as often as both) exactly to the next expiry.
STEP = st.one_of(
    st.integers(0, 40).map(lambda n: timedelta(days=n)),
    st.integers(1, 8).map(lambda q: timedelta(hours=6 * q)),
    st.just("to the next expiry"),
    st.just("to the next expiry"),
)
# A debit: all that is spendable, one more, about half, or a fixed amount (often too much).
DEBIT = st.sampled_from(["all", "over"]) | st.sampled_from(["half", "third"]) | st.integers(1, 3000)
# A reversal: all that is left, about half of it, or a fixed amount (maybe too much).
PART = st.none() | st.just("half") | st.integers(1, 300) | st.integers(1, 6000)
PICK = st.integers(0, 10_000)

ACTIVE, DEPLETED, EXPIRED, REVOKED = "active", "depleted", "expired", "revoked"

SETTINGS = settings(
    max_examples=100,
    stateful_step_count=35,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- the model ------------------------------------------------------------------------------


@dataclass
class MLot:
    id: str
    amount: int
    remaining: int
    expires_at: datetime | None
    created_at: datetime
    source: str
    status: str = ACTIVE

    def spend_key(self) -> tuple[bool, datetime, datetime, str]:
        # Expiring before never-expiring, sooner expiry first, then older, then by id.
        return (self.expires_at is None, self.expires_at or START, self.created_at, self.id)

    def dead_at(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass
class MAccount:
    lots: dict[str, MLot] = field(default_factory=dict)
    balance: int = 0
    entries: int = 0

    def spendable(self, now: datetime) -> list[MLot]:
        live = [lot for lot in self.lots.values() if lot.status == ACTIVE and not lot.dead_at(now)]
        return sorted(live, key=MLot.spend_key)


@dataclass(frozen=True)
class LotFacts:
    """What the test compares of a lot, read from the database or from the model."""

    amount: int
    remaining: int
    status: str
    expires_at: datetime | None
    created_at: datetime
    source: str

    @classmethod
    def of(cls, lot: CreditLot | MLot) -> LotFacts:
        return cls(
            lot.amount, lot.remaining, lot.status, lot.expires_at, lot.created_at, lot.source
        )


@dataclass
class MDebit:
    entry_id: str
    account: tuple[int, str]
    kind: str  # "redeem" (reversible) or "adjust" (not a spend: EntryNotFound)
    taken: dict[str, int]
    returned: dict[str, int] = field(default_factory=dict)

    def returnable(self) -> dict[str, int]:
        """Per lot, what the spend took and no reversal gave back yet."""
        left = {lot: taken - self.returned.get(lot, 0) for lot, taken in self.taken.items()}
        return {lot: part for lot, part in left.items() if part > 0}


@dataclass
class Call:
    """The last keyed request: how to send it again, and what it answered the first time."""

    op: Callable[..., Receipt]
    kwargs: dict[str, Any]
    key: str
    at: datetime
    outcome: dict[str, Any] | LedgerError


def days(n: int) -> timedelta:
    return timedelta(days=n)


def changed(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The same request with one parameter different."""
    amount = kwargs.get("amount")
    if isinstance(amount, Money):
        bump = 1 if amount.minor > 0 else -1
        return kwargs | {"amount": Money(amount.minor + bump, amount.currency)}
    if "lot_id" in kwargs:
        return kwargs | {"note": "a different note"}
    return kwargs | {"shopify_order_id": 991}


class SeededIds:
    """Stands in for ``uuid`` in ledger.book: lot and entry ids from a seed Hypothesis draws.

    Ties in spend order fall to the lot id, so with random ids an example would not replay
    the same way (Hypothesis then reports a flaky strategy instead of shrinking).
    """

    UUID = uuid.UUID

    def __init__(self) -> None:
        self.random = random.Random(0)

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self.random.getrandbits(128), version=4)


IDS = SeededIds()


# -- the machine ----------------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    engine: ClassVar[Engine]

    def __init__(self) -> None:
        super().__init__()
        self.conn = self.engine.connect()
        self.outer = self.conn.begin()
        self.session = Session(bind=self.conn, join_transaction_mode="create_savepoint")
        shop = Shop(
            domain=f"stateful-{uuid.uuid4().hex[:12]}.myshopify.com",
            name="Stateful",
            currency="USD",
            timezone="UTC",
            installed_at=START,
            created_at=START,
        )
        self.session.add(shop)
        self.session.commit()
        self.shop_id = shop.id
        self.now = START
        self.accounts: dict[tuple[int, str], MAccount] = {}
        self.debits: list[MDebit] = []
        self.audits = 0
        self.keys = 0
        self.key_counter = 0
        self.last: Call | None = None
        self.expired_just_now = False

    @initialize(seed=st.integers(0, 2**32 - 1))
    def seed_ids(self, seed: int) -> None:
        IDS.random.seed(seed)

    def teardown(self) -> None:
        self.session.close()
        self.outer.rollback()
        self.conn.close()

    # -- calling the ledger -----------------------------------------------------------------

    def _send(
        self, op: Callable[..., Receipt], kwargs: dict[str, Any], keyed: bool
    ) -> Receipt | LedgerError:
        """One new request: it writes an audit row, and a key row when keyed, either way."""
        self.expired_just_now = False
        key = None
        if keyed:
            self.key_counter += 1
            key = f"stateful-{self.key_counter}"
        by = Actor(self.shop_id, self.now, "staff:7", "stateful", idempotency_key=key)
        try:
            result: Receipt | LedgerError = op(self.session, by, **kwargs)
        except LedgerError as rejection:
            result = rejection
        self.audits += 1
        if key is not None:
            self.keys += 1
            outcome = result if isinstance(result, LedgerError) else result.to_json()
            self.last = Call(op, kwargs, key, self.now, outcome)
        return result

    def _ok(self, op: Callable[..., Receipt], kwargs: dict[str, Any], keyed: bool) -> Receipt:
        result = self._send(op, kwargs, keyed)
        assert isinstance(result, Receipt), f"{op.__name__} refused: {result!r}"
        assert not result.replayed
        return result

    def _refused(
        self, op: Callable[..., Receipt], kwargs: dict[str, Any], keyed: bool, error: type
    ) -> LedgerError:
        result = self._send(op, kwargs, keyed)
        assert type(result) is error, f"{op.__name__}: expected {error.__name__}, got {result!r}"
        assert isinstance(result, LedgerError)
        return result

    @staticmethod
    def _target(pick: int, preferred: list[tuple[int, str]]) -> tuple[int, str]:
        """Mostly one of ``preferred``; now and then any account, maybe one not opened yet."""
        if preferred and pick % 4:
            return preferred[pick // 8 % len(preferred)]
        return ACCOUNT_KEYS[pick // 8 % len(ACCOUNT_KEYS)]

    def _account(self, customer: int, currency: str) -> MAccount:
        return self.accounts.setdefault((customer, currency), MAccount())

    def _all_lots(self) -> list[tuple[MAccount, MLot]]:
        return [(acct, lot) for acct in self.accounts.values() for lot in acct.lots.values()]

    # -- credits ----------------------------------------------------------------------------

    def _credit(
        self,
        op: Callable[..., Receipt],
        source: str,
        pick: int,
        amount: int,
        expires_in: int | str | None,
        keyed: bool,
        later: bool,
    ) -> None:
        if later:  # an hour on: lots then differ in age, not only in id
            self.now += timedelta(hours=1)
        customer, currency = self._target(pick, sorted(self.accounts))
        # Expiries fall on whole days from START, so time often lands exactly on one (a lot is
        # dead at its expires_at); a "shared" expiry ties with a live lot (the older goes first).
        today = START + days((self.now - START).days)
        expires_at = None
        if expires_in == "shared":
            lots = self.accounts.get((customer, currency), MAccount()).lots.values()
            ahead = [
                lot.expires_at
                for lot in lots
                if lot.expires_at and lot.expires_at > self.now and lot.created_at < self.now
            ]
            expires_at = min(ahead, default=today + days(1))
            event("credit: ties an older lot's expiry" if ahead else "credit: nothing to tie with")
        elif isinstance(expires_in, int):
            expires_at = today + days(expires_in)
        kwargs = {"customer": customer, "amount": Money(amount, currency), "expires_at": expires_at}
        receipt = self._ok(op, kwargs, keyed)
        assert receipt.lot is not None
        acct = self._account(customer, currency)
        lot_id = receipt.lot["id"]
        acct.lots[lot_id] = MLot(lot_id, amount, amount, expires_at, self.now, source)
        acct.balance += amount
        acct.entries += 1
        assert receipt.account["entries"] == acct.entries

    @rule(pick=PICK, amount=CREDIT, exp=EXPIRY_DAYS, keyed=st.booleans(), later=st.booleans())
    def issue(
        self, pick: int, amount: int, exp: int | str | None, keyed: bool, later: bool
    ) -> None:
        self._credit(operations.issue, "manual", pick, amount, exp, keyed, later)

    @rule(pick=PICK, amount=CREDIT, exp=EXPIRY_DAYS, keyed=st.booleans(), later=st.booleans())
    def refund_credit(
        self, pick: int, amount: int, exp: int | str | None, keyed: bool, later: bool
    ) -> None:
        self._credit(operations.refund_credit, "refund", pick, amount, exp, keyed, later)

    @rule(pick=PICK, amount=CREDIT, exp=EXPIRY_DAYS, keyed=st.booleans(), later=st.booleans())
    def adjust_up(
        self, pick: int, amount: int, exp: int | str | None, keyed: bool, later: bool
    ) -> None:
        self._credit(operations.adjust, "manual", pick, amount, exp, keyed, later)

    # -- debits -----------------------------------------------------------------------------

    def _debit(self, kind: str, pick: int, amount: int | str, keyed: bool) -> None:
        # Mostly an account that has credit; now and then any, maybe one that does not exist.
        funded = sorted(key for key, acct in self.accounts.items() if acct.balance > 0)
        # Above all one where order is subtle: a lot dies right now (it must no longer be
        # spent), or live lots share an expiry (the older is spent first).
        subtle = [key for key in funded if self._has_lot_dying_now(key) or self._has_tie(key)]
        customer, currency = self._target(pick, (subtle if pick % 8 else []) or funded)
        acct = self.accounts.get((customer, currency))
        live = acct.spendable(self.now) if acct else []
        available = sum(lot.remaining for lot in live)
        if amount == "all":
            amount = max(available, 1)
        elif amount == "over":
            amount = available + 1
        elif amount in ("half", "third"):
            amount = max(available // (2 if amount == "half" else 3), 1)
        assert isinstance(amount, int)
        if kind == "redeem":
            op = operations.redeem
            kwargs = {"customer": customer, "amount": Money(amount, currency)}
        else:
            op = operations.adjust
            kwargs = {"customer": customer, "amount": Money(-amount, currency)}
        if available < amount:
            event(f"{kind}: insufficient funds")
            error = self._refused(op, kwargs, keyed, InsufficientFunds)
            assert error.details == {"requested": amount, "available": available}
            return
        assert acct is not None
        if self._has_lot_dying_now((customer, currency)):
            event(f"{kind}: a live lot expires right now")
        if self._has_tie((customer, currency)):
            event(f"{kind}: lots share an expiry, {'all' if amount == available else 'partly'}")
        taken: dict[str, int] = {}
        left = amount
        for lot in live:
            part = min(lot.remaining, left)
            if part == 0:
                break
            taken[lot.id] = part
            lot.remaining -= part
            left -= part
            if lot.remaining == 0:
                lot.status = DEPLETED
        acct.balance -= amount
        acct.entries += 1
        receipt = self._ok(op, kwargs, keyed)
        event(f"{kind}: from {len(taken)} lot(s)")
        assert receipt.account["entries"] == acct.entries
        self.debits.append(MDebit(receipt.entry["id"], (customer, currency), kind, taken))

    def _has_lot_dying_now(self, key: tuple[int, str]) -> bool:
        lots = self.accounts[key].lots.values()
        return any(lot.status == ACTIVE and lot.expires_at == self.now for lot in lots)

    def _has_tie(self, key: tuple[int, str]) -> bool:
        live = [lot for lot in self.accounts[key].spendable(self.now) if lot.expires_at]
        return len({lot.expires_at for lot in live}) < len({lot.spend_key()[1:3] for lot in live})

    @rule(pick=PICK, amount=DEBIT, keyed=st.booleans())
    def redeem(self, pick: int, amount: int | str, keyed: bool) -> None:
        self._debit("redeem", pick, amount, keyed)

    @rule(pick=PICK, amount=DEBIT, keyed=st.booleans())
    def adjust_down(self, pick: int, amount: int | str, keyed: bool) -> None:
        self._debit("adjust", pick, amount, keyed)

    @precondition(lambda self: self.debits)
    @rule(pick=PICK, part=PART, keyed=st.booleans())
    def redeem_reversal(self, pick: int, part: int | str | None, keyed: bool) -> None:
        # Mostly a spend with something left to give back, often to several lots (the order
        # matters) or to a lot closed since; now and then any debit: one given back in full
        # already, or an adjustment (no spend to reverse).
        open_ = [debit for debit in self.debits if debit.kind == "redeem" and debit.returnable()]
        subtle = [d for d in open_ if len(d.returnable()) > 1 or self._touches_closed_lot(d)]
        candidates = self.debits
        if pick % 8:
            candidates = (subtle if pick % 8 > 2 else []) or open_ or self.debits
        debit = candidates[pick // 8 % len(candidates)]
        _, currency = debit.account
        if part == "half":
            part = max(sum(debit.returnable().values()) // 2, 1)
        assert not isinstance(part, str)
        amount = None if part is None else Money(part, currency)
        kwargs = {"entry_id": uuid.UUID(debit.entry_id), "amount": amount}
        op = operations.redeem_reversal
        if debit.kind != "redeem":
            self._refused(op, kwargs, keyed, EntryNotFound)
            return
        acct = self.accounts[debit.account]
        returnable = debit.returnable()
        total = sum(returnable.values())
        wanted = total if part is None else part
        if total == 0 or wanted > total:
            event("reversal: nothing (or not that much) to reverse")
            error = self._refused(op, kwargs, keyed, NothingToReverse)
            assert error.details["returnable"] == total
            return
        # The lot spent last is refilled first.
        order = sorted((acct.lots[lot_id] for lot_id in returnable), key=MLot.spend_key)
        moves: list[tuple[MLot, int]] = []
        for lot in reversed(order):
            give = min(returnable[lot.id], wanted)
            if give:
                moves.append((lot, give))
                wanted -= give
        event(f"reversal: to {len(moves)} lot(s)")
        past_expiry = set()
        for lot, give in moves:
            if lot.status in (DEPLETED, ACTIVE) and lot.dead_at(self.now):
                # Dead at its expiry, swept or not: what it holds expires with what returns.
                event(f"reversal onto a {lot.status} lot past its expiry")
                past_expiry.add(lot.id)
            lot.remaining += give
            acct.balance += give
            debit.returned[lot.id] = debit.returned.get(lot.id, 0) + give
            if lot.status == DEPLETED:
                lot.status = ACTIVE
        acct.entries += 1
        closed = 0
        for lot, _ in moves:
            if lot.id in past_expiry:  # returned money must not outlive the lot's expiry
                lot.status = EXPIRED
            if lot.status in (EXPIRED, REVOKED):
                event(f"reversal onto a {lot.status} lot")
                acct.balance -= lot.remaining
                lot.remaining = 0
                acct.entries += 1
                closed += 1
        receipt = self._ok(op, kwargs, keyed)
        assert len(receipt.entries) == 1 + closed
        assert receipt.account["entries"] == acct.entries

    def _touches_closed_lot(self, debit: MDebit) -> bool:
        lots = self.accounts[debit.account].lots
        return any(lots[lot_id].status in (EXPIRED, REVOKED) for lot_id in debit.returnable())

    # -- closing lots -----------------------------------------------------------------------

    @rule(pick=PICK, keyed=st.booleans())
    def revoke(self, pick: int, keyed: bool) -> None:
        lots = self._all_lots()
        if not lots:
            self._refused(operations.revoke, {"lot_id": uuid.uuid4()}, keyed, LotNotFound)
            return
        # Mostly a lot still active; now and then any, to be refused if closed.
        active = [(acct, lot) for acct, lot in lots if lot.status == ACTIVE]
        candidates = active if active and pick % 4 else lots
        acct, lot = candidates[pick // 8 % len(candidates)]
        kwargs = {"lot_id": uuid.UUID(lot.id)}
        if lot.status != ACTIVE:
            event(f"revoke a {lot.status} lot")
            self._refused(operations.revoke, kwargs, keyed, LotNotActive)
            return
        acct.balance -= lot.remaining
        lot.remaining = 0
        lot.status = REVOKED
        acct.entries += 1
        receipt = self._ok(operations.revoke, kwargs, keyed)
        assert receipt.account["entries"] == acct.entries

    def _anything_due(self) -> bool:
        lots = (lot for acct in self.accounts.values() for lot in acct.lots.values())
        return any(lot.status == ACTIVE and lot.dead_at(self.now) for lot in lots)

    @precondition(_anything_due)  # with nothing due, tick() runs it (a no-op run) now and then
    @rule()
    def expire(self) -> None:
        """The expiry job at ``now``: each lot due gets one expire entry; a second run, none."""
        lots = accounts = 0
        by_currency: Counter[str] = Counter()
        for (_, currency), acct in self.accounts.items():
            due = [
                lot for lot in acct.lots.values() if lot.status == ACTIVE and lot.dead_at(self.now)
            ]
            for lot in due:
                by_currency[currency] += lot.remaining
                acct.balance -= lot.remaining
                lot.remaining = 0
                lot.status = EXPIRED
                acct.entries += 1
            lots += len(due)
            accounts += bool(due)
        report = expire_due(self.session, now=self.now, shop_id=self.shop_id)
        event(f"expire: {min(lots, 3)}+ lot(s)" if lots >= 3 else f"expire: {lots} lot(s)")
        assert (report.lots, report.accounts) == (lots, accounts)
        assert dict(report.amounts) == dict(by_currency)
        self.audits += accounts
        self.expired_just_now = True

    @rule(step=STEP, then_expire=st.booleans())
    def tick(self, step: timedelta | str, then_expire: bool) -> None:
        """Time moves forward, and the scheduled expiry job may run right then."""
        if isinstance(step, str):  # to the next expiry still ahead, and stay on the boundary
            then_expire = False
            ahead = [
                lot.expires_at
                for acct in self.accounts.values()
                for lot in acct.lots.values()
                if lot.status == ACTIVE and lot.expires_at and lot.expires_at > self.now
            ]
            step = min(ahead) - self.now if ahead else timedelta(0)
        self.now += step
        self.expired_just_now = False
        if then_expire:
            self.expire()

    # -- idempotency ------------------------------------------------------------------------

    def _retry_by(self, call: Call) -> Actor:
        """The actor of a retry with the last key: now, unless the request's expiry has passed.

        Operations refuse an expiry in the past before they look at the key, so a retry sent
        after the lot's expiry is an invalid_expiry, not a replay: send it from before then.
        """
        at = self.now
        expires_at = call.kwargs.get("expires_at")
        if expires_at is not None and expires_at <= at:
            at = call.at
        return Actor(self.shop_id, at, "staff:7", "stateful", idempotency_key=call.key)

    @precondition(lambda self: self.last is not None)
    @rule()
    def replay_last_key(self) -> None:
        """Same key, same request: the first answer again (a rejection too); nothing written."""
        call = self.last
        assert call is not None
        by = self._retry_by(call)
        try:
            result: Receipt | LedgerError = call.op(self.session, by, **call.kwargs)
        except LedgerError as rejection:
            result = rejection
        if isinstance(call.outcome, LedgerError):
            event("replay a rejection")
            assert type(result) is type(call.outcome)
            assert isinstance(result, LedgerError)
            assert result.to_dict() == call.outcome.to_dict()
        else:
            event("replay a success")
            assert isinstance(result, Receipt), result
            assert result.replayed
            assert result.to_json() == call.outcome

    @precondition(lambda self: self.last is not None)
    @rule(other_operation=st.booleans())
    def reuse_last_key(self, other_operation: bool) -> None:
        """Same key, different request: a conflict, and nothing written."""
        call = self.last
        assert call is not None
        if other_operation:
            op: Callable[..., Receipt] = operations.issue
            kwargs: dict[str, Any] = {"customer": 4101, "amount": Money(100, "USD")}
            if call.op is operations.issue:
                op = operations.redeem
        else:
            op, kwargs = call.op, changed(call.kwargs)
        by = self._retry_by(call)
        with pytest.raises(IdempotencyConflict):
            op(self.session, by, **kwargs)

    # -- after every step -------------------------------------------------------------------

    @invariant()
    def database_agrees_with_model(self) -> None:
        # A fresh read-only session on the same connection: nothing cached, no savepoint.
        with Session(bind=self.conn, join_transaction_mode="rollback_only") as session:
            self._check(session)

    def _check(self, session: Session) -> None:
        shop = self.shop_id
        rows = session.execute(
            select(CreditAccount, Customer.shopify_customer_id)
            .join(Customer, Customer.id == CreditAccount.customer_id)
            .where(CreditAccount.shop_id == shop)
        ).all()
        accounts = {(customer, account.currency): account for account, customer in rows}
        assert set(accounts) == set(self.accounts)
        entries = dict(
            session.execute(
                select(LedgerEntry.account_id, func.count())
                .where(LedgerEntry.shop_id == shop)
                .group_by(LedgerEntry.account_id)
            ).all()
        )
        lots: dict[int, dict[str, LotFacts]] = defaultdict(dict)
        for lot in session.scalars(select(CreditLot).where(CreditLot.shop_id == shop)):
            lots[lot.account_id][str(lot.id)] = LotFacts.of(lot)
        for key, model in self.accounts.items():
            account = accounts[key]
            assert verify_account(session, account.id) == []
            active = sum(lot.remaining for lot in model.lots.values() if lot.status == ACTIVE)
            assert account.balance == model.balance == active >= 0
            assert account.last_sequence == entries[account.id] == model.entries
            assert lots[account.id] == {lot.id: LotFacts.of(lot) for lot in model.lots.values()}
        if self.expired_just_now:  # the job left no active lot past its expiry
            assert not [
                facts
                for by_id in lots.values()
                for facts in by_id.values()
                if facts.status == ACTIVE and facts.expires_at and facts.expires_at <= self.now
            ]
        audits = select(func.count()).where(AuditLog.shop_id == shop).scalar_subquery()
        keys = select(func.count()).where(IdempotencyKey.shop_id == shop).scalar_subquery()
        assert tuple(session.execute(select(audits, keys)).one()) == (self.audits, self.keys)


def test_ledger_matches_the_model_step_by_step(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger.book, "uuid", IDS)
    LedgerMachine.engine = engine
    run_state_machine_as_test(LedgerMachine, settings=SETTINGS)
