"""A large, realistic shop for benchmarks and EXPLAIN tests (``flask demo seed --large``).

Ten thousand customers and a million entries cannot go through ``operations`` (a transaction
each, about 3 ms): the history is played in memory instead, account by account, with the
ledger's own working copy. Every entry is made by ``Book`` (``open_lot``, ``take_in_spend_order``,
``take_rest_of``, ``give_back``, ``post``: the same rows, hash chain included, the operations
write), expiry runs are ``ledger.expiry``'s own per-account step, and audit rows are the ones
``ledger.transaction`` and ``ledger.expiry`` write. The rows are then loaded with PostgreSQL
``COPY``, a chunk of customers per transaction, so every seeded account verifies
(``ledger.verify``): balances, lifetime totals, sequences, chain heads and lots all agree.

What a shop looks like: customers who joined over ``years`` (two by default) up to ``now``,
mostly in USD, some with a second account in EUR or CAD; credit issued by staff (manual,
goodwill), by cashback and by bulk imports, much of it expiring; spent by orders
(``order:{id}:redeem``), given back by cancellations (``redeem_reversal``), refunds paid to
store credit (``refund_credit``), corrections both ways (``adjust``), revocations, and the
nightly expiry run (03:00 UTC) closing what was due. How many entries each customer has is
heavy-tailed (a few customers have long ledgers, most a handful), scaled so the shop holds
about ``entries`` in all.

Generation is deterministic per customer (its own ``random.Random``); entry and lot ids are
random UUIDs, as in production. Each chunk commits customers with their whole history, so an
interrupted run leaves whole customers, and a second run seeds only the customers missing
(none once the shop is complete: it changes nothing).

PostgreSQL only (``COPY``); ``make run``'s SQLite gets the small demo seed.
"""

from __future__ import annotations

import heapq
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from ledger.allocation import spend_order
from ledger.book import AccountRow, Actor, Book, LotRow
from ledger.bulk import row_key
from ledger.chain import GENESIS_HASH
from ledger.expiry import EXPIRY_ACTOR
from ledger.expiry import _audit as expiry_audit_row
from ledger.expiry import _expire_account as expire_lots
from ledger.kinds import EntryKind, LotSource, LotStatus
from ledger.orders import REFUND_REASON, RETURN_REASON, SPEND_REASON
from ledger.transaction import _audit as operation_audit_row
from models import Customer

# Seeded customers' Shopify ids are FIRST_SHOPIFY_ID + 1 … + customers: far from real ids and
# from the small demo seed's, so both live in one shop.
FIRST_SHOPIFY_ID = 8_800_000_000_000
STAFF = ("staff:84100000017", "staff:84100000023", "staff:84100000031", "staff:84100000042")
# The nightly expiry run (jobs/schedule.py runs it daily).
EXPIRY_HOUR = 3
CHUNK_ENTRIES = 50_000  # entries per COPY transaction
TABLES = ("customers", "credit_accounts", "credit_lots", "ledger_entries", "entry_allocations",
          "audit_log")  # fmt: skip


class SeedRefused(Exception):
    """The database cannot take a large seed (it is not PostgreSQL)."""


@dataclass(frozen=True)
class Plan:
    """How large a shop to seed, and from which random seed."""

    customers: int = 10_000
    entries: int = 1_000_000
    seed: int = 1
    years: float = 2.0

    def __post_init__(self) -> None:
        if self.customers < 1 or self.entries < self.customers:
            raise ValueError("a plan needs at least one customer and one entry per customer")


@dataclass
class SeedReport:
    customers: int = 0  # customers added by this run
    already: int = 0  # the plan's customers found already seeded (skipped)
    accounts: int = 0
    lots: int = 0
    entries: int = 0
    allocations: int = 0
    audits: int = 0
    chunks: int = 0
    seconds: float = 0.0


Progress = Callable[[SeedReport, int], None]  # the report so far, the plan's customer count


def seed_large_shop(
    session: Session,
    shop_id: int,
    plan: Plan,
    *,
    now: datetime,
    progress: Progress | None = None,
) -> SeedReport:
    """Seed the plan's customers of ``shop_id`` that are missing, committing chunk by chunk.

    Raises:
        SeedRefused: the session is not on PostgreSQL.
    """
    if session.get_bind().dialect.name != "postgresql":
        raise SeedRefused("a large seed loads rows with PostgreSQL's COPY: use PostgreSQL")
    if session.scalar(_UNDER_ROW_SECURITY):
        raise SeedRefused(
            "PostgreSQL refuses COPY into tables under row-level security: seed as the schema's"
            " owner (creditcraft_migrator) or a superuser, not as a runtime role"
        )
    session.commit()
    started = time.perf_counter()
    report = SeedReport()
    seeded = _seeded_indexes(session, shop_id, plan)
    session.commit()
    report.already = len(seeded)
    missing = [index for index in range(plan.customers) if index not in seeded]
    budgets = entry_budgets(plan)
    for chunk in _chunks_of(missing, budgets):
        histories = _histories(session, shop_id, plan, chunk, budgets, now)
        _copy(session, histories)
        session.commit()
        _count(report, histories)
        report.seconds = time.perf_counter() - started
        if progress is not None:
            progress(report, plan.customers)
    report.seconds = time.perf_counter() - started
    return report


# True when row-level security applies to this login on ledger_entries (not its owner, not a
# superuser, no BYPASSRLS): COPY FROM is then refused outright.
_UNDER_ROW_SECURITY = text(
    "SELECT c.relrowsecurity AND NOT (r.rolsuper OR r.rolbypassrls"
    " OR pg_has_role(current_user, c.relowner, 'USAGE'))"
    " FROM pg_class c, pg_roles r"
    " WHERE c.oid = 'ledger_entries'::regclass AND r.rolname = current_user"
)


def analyze(connection: Connection) -> None:
    """VACUUM (ANALYZE) the seeded tables: fresh planner statistics (a COPY leaves them stale)
    and a visibility map, without which every index-only scan of the reports reads the heap as
    well (and is costed so). VACUUM cannot run inside a transaction, so it runs on a connection
    of its own in autocommit, and without giving empty pages at a table's end back to the
    system (that waits up to 5 s for a lock any open transaction writing the table holds).
    Pages a transaction still open then may see changing (an autovacuum ANALYZE begun during
    the seed, the app writing) stay for autovacuum to mark."""
    with connection.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as own:
        for table in TABLES:
            own.execute(text(f"VACUUM (ANALYZE, TRUNCATE false) {table}"))


# -- how many entries each customer gets --------------------------------------------------------


def entry_budgets(plan: Plan) -> list[int]:
    """Entries per customer, heavy-tailed (Pareto), capped at 20x the mean (and 2,000), about
    ``plan.entries`` in all. The first customer always has the longest ledger."""
    rng = random.Random(f"{plan.seed}:budgets")  # noqa: S311 - demo data, not a secret
    cap = max(2.0, min(2000.0, 20 * plan.entries / plan.customers))
    weights = [rng.paretovariate(1.3) for _ in range(plan.customers)]
    weights[0] = max(weights)
    capped: set[int] = set()
    while True:  # cap the heaviest, share what they could not take among the rest, again
        free = [i for i in range(plan.customers) if i not in capped]
        left = plan.entries - cap * len(capped)
        total = sum(weights[i] for i in free)
        over = {i for i in free if weights[i] / total * left > cap}
        if not over:
            break
        capped |= over
    return [
        round(cap) if i in capped else max(1, round(weights[i] / total * left))
        for i in range(plan.customers)
    ]


def _chunks_of(indexes: list[int], budgets: list[int]) -> Iterator[list[int]]:
    """Customers in chunks of about CHUNK_ENTRIES entries."""
    chunk: list[int] = []
    size = 0
    for index in indexes:
        chunk.append(index)
        size += budgets[index]
        if size >= CHUNK_ENTRIES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _seeded_indexes(session: Session, shop_id: int, plan: Plan) -> set[int]:
    found = session.scalars(
        select(Customer.shopify_customer_id).where(
            Customer.shop_id == shop_id,
            Customer.shopify_customer_id.between(
                FIRST_SHOPIFY_ID + 1, FIRST_SHOPIFY_ID + plan.customers
            ),
        )
    )
    return {shopify_id - FIRST_SHOPIFY_ID - 1 for shopify_id in found}


# -- one customer's history ---------------------------------------------------------------------

FIRST_NAMES = (
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "John",
    "Radia", "Tim", "Katherine", "Donald", "Sophie", "Linus", "Hedy", "Guido", "Annie", "Bjarne",
    "Mary", "Niklaus", "Shafi", "Leslie", "Jean", "Claude", "Evelyn", "Vint", "Joan", "Whitfield",
    "Lynn", "Yukihiro", "Adele", "Rasmus", "Ida", "James", "Karen", "Bob", "Carol", "Dorothy",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Ritchie",
    "Allen", "McCarthy", "Perlman", "Berners-Lee", "Johnson", "Knuth", "Wilson", "Torvalds",
    "Lamarr", "van Rossum", "Easley", "Stroustrup", "Keller", "Wirth", "Goldwasser", "Lamport",
    "Sammet", "Shannon", "Berezin", "Cerf", "Clarke", "Diffie", "Conway", "Matsumoto",
    "Goldberg", "Lerdorf", "Rhodes", "Gosling", "Sparck Jones", "Kahn", "Shaw", "Vaughan",
)  # fmt: skip


@dataclass
class _Customer:
    index: int
    id: int
    shopify_id: int
    email: str
    first_name: str
    last_name: str
    joined: datetime


@dataclass
class _History:
    customers: list[_Customer] = field(default_factory=list)
    books: list[Book] = field(default_factory=list)
    created: dict[int, tuple[datetime, datetime]] = field(default_factory=dict)  # per account
    audits: list[dict[str, Any]] = field(default_factory=list)


def _histories(
    session: Session,
    shop_id: int,
    plan: Plan,
    indexes: list[int],
    budgets: list[int],
    now: datetime,
) -> _History:
    rngs = {index: _rng(plan, index) for index in indexes}
    currencies = {index: _currencies(rngs[index]) for index in indexes}
    customer_ids = _next_ids(session, "customers", len(indexes))
    account_ids = iter(_next_ids(session, "credit_accounts", sum(map(len, currencies.values()))))
    history = _History()
    first = now - timedelta(days=365 * plan.years)
    for index, customer_id in zip(indexes, customer_ids, strict=True):
        rng = rngs[index]
        first_name, last_name = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        joined = first + (now - timedelta(days=3) - first) * rng.random() ** 0.8
        customer = _Customer(
            index=index,
            id=customer_id,
            shopify_id=FIRST_SHOPIFY_ID + index + 1,
            email=f"{first_name}.{last_name}.{index + 1}@example.com".lower().replace(" ", "-"),
            first_name=first_name,
            last_name=last_name,
            joined=joined,
        )
        history.customers.append(customer)
        shares = _split(budgets[index], len(currencies[index]))
        serial = iter(range(index * 100_000 + 1, (index + 1) * 100_000))  # the customer's ids
        for currency, budget in zip(currencies[index], shares, strict=True):
            account = AccountRow(next(account_ids), shop_id, customer_id, currency,
                                 0, 0, 0, 0, GENESIS_HASH)  # fmt: skip
            play = _Play(rng, Book(account=account, lots={}), serial)
            play.run(budget, joined, now)
            history.books.append(play.finished())
            history.created[account.id] = (joined, play.last_at or joined)
            history.audits.extend(play.audits)
    return history


def _rng(plan: Plan, index: int) -> random.Random:
    """The customer's own generator: its history does not depend on which others are seeded."""
    return random.Random(f"{plan.seed}:customer:{index}")  # noqa: S311 - demo data, not a secret


def _currencies(rng: random.Random) -> list[str]:
    """Most customers hold USD only; some also EUR or CAD; a few EUR only."""
    roll = rng.random()
    if roll < 0.83:
        return ["USD"]
    if roll < 0.91:
        return ["USD", "EUR"]
    if roll < 0.96:
        return ["USD", "CAD"]
    return ["EUR"]


def _split(budget: int, parts: int) -> list[int]:
    """A budget shared 4:1 between a primary and a second account."""
    if parts == 1:
        return [budget]
    second = max(1, budget // 5) if budget > 1 else 0
    return [budget - second, second] if second else [budget]


def _next_ids(session: Session, table: str, count: int) -> list[int]:
    """``count`` ids from the table's own sequence, so rows can be hashed before they exist."""
    if count == 0:
        return []
    rows = session.execute(
        text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
        {"table": table, "n": count},
    )
    return [row[0] for row in rows]


# What happens to an account, and how often (expiry happens by itself, nightly).
_EVENTS = ("issue", "redeem", "refund", "reversal", "adjust_up", "adjust_down", "revoke")
_WEIGHTS = (30, 34, 6, 5, 3, 3, 2)
_ISSUES: tuple[tuple[LotSource, str, int, tuple[int | None, ...]], ...] = (
    # source, reason, weight, expiry in days (None: never)
    (LotSource.MANUAL, "Customer service credit", 30, (None, None, 365)),
    (LotSource.GOODWILL, "Goodwill: late delivery", 15, (None, 180)),
    (LotSource.CASHBACK, "Cashback on order", 35, (90,)),
    (LotSource.BULK, "Spring promotion (bulk import)", 20, (30, 60)),
)
_ISSUE_WEIGHTS = tuple(weight for _, _, weight, _ in _ISSUES)
_AMOUNTS = (500, 1000, 1000, 1500, 2000, 2500, 2500, 5000, 7500, 10000)


@dataclass
class _Spend:
    """A redeem that a cancellation may still give back: per lot, what is returnable."""

    entry_id: uuid.UUID
    order_id: int
    at: datetime
    returnable: dict[uuid.UUID, int]


class _Play:
    """One account's history, played forward in time on its Book."""

    def __init__(self, rng: random.Random, book: Book, serial: Iterator[int]) -> None:
        self.rng = rng
        self.book = book
        self.closed: dict[uuid.UUID, LotRow] = {}  # kept out of the Book: spends scan its lots
        self.due: list[tuple[datetime, str, uuid.UUID]] = []  # heap of (expires_at, id) to run
        self.spends: list[_Spend] = []
        self.audits: list[dict[str, Any]] = []
        self.last_at: datetime | None = None
        self.serial = serial  # order, refund and transaction ids, unique in the shop
        # Some customers rarely spend their credit (and some of it expires): fewer orders.
        spender = rng.choice((0.25, 0.5, 1.0, 1.0))
        self.weights = [
            weight * spender if event == "redeem" else weight
            for event, weight in zip(_EVENTS, _WEIGHTS, strict=True)
        ]

    # -- the timeline ---------------------------------------------------------------------------

    def run(self, budget: int, start: datetime, end: datetime) -> None:
        """Events from ``start`` until the customer stops coming (a third stop before ``end``
        and leave their credit to expire); the nightly expiry runs until ``end``."""
        last_visit = end
        if self.rng.random() < 0.35:
            last_visit = start + (end - start) * self.rng.uniform(0.3, 0.95)
        span = (last_visit - start).total_seconds()
        times = sorted(start + timedelta(seconds=span * self.rng.random()) for _ in range(budget))
        for at in times:
            self._expire_until(at)
            if len(self.book.entries) >= budget:
                break
            self._event(at)
        self._expire_until(end)

    def finished(self) -> Book:
        self.book.lots.update(self.closed)
        return self.book

    def _event(self, at: datetime) -> None:
        event = self.rng.choices(_EVENTS, self.weights)[0]
        available = self._available(at)
        if event in ("redeem", "adjust_down") and available == 0:
            event = "issue"
        if event == "revoke" and not self._revocable(at):
            event = "issue"
        if event == "reversal" and self._reversible(at) is None:
            event = "redeem" if available else "issue"
        getattr(self, f"_{event}")(at, available)
        self._file_closed_lots()
        self.last_at = at

    # -- events ---------------------------------------------------------------------------------

    def _issue(self, at: datetime, _available: int) -> None:
        source, reason, _weight, expiries = self.rng.choices(_ISSUES, _ISSUE_WEIGHTS)[0]
        days = self.rng.choice(expiries)
        key = None
        if source == LotSource.BULK:
            key = row_key(f"{self.rng.getrandbits(64):016x}", self.rng.randint(1, 5000))
        else:
            key = self._ui_key()
        by = Actor(self.book.account.shop_id, at, self._staff(), reason, key)
        amount = self.rng.choice(_AMOUNTS)
        expires_at = None if days is None else at + timedelta(days=days)
        lot = self.book.open_lot(by, amount, source=source, expires_at=expires_at, note=None)
        entry = self.book.post(by, EntryKind.ISSUE, amount, lot_id=lot.id)
        self._audit(by, "issue", entry)
        self._watch(lot)

    def _refund(self, at: datetime, _available: int) -> None:
        refund_id, order_id = self._id(), self._id()
        by = Actor(self.book.account.shop_id, at, "webhook:refunds/create", REFUND_REASON,
                   f"refund:{refund_id}", False)  # fmt: skip
        amount = self.rng.choice(_AMOUNTS)
        lot = self.book.open_lot(by, amount, source=LotSource.REFUND, expires_at=None, note=None)
        entry = self.book.post(
            by,
            EntryKind.REFUND_CREDIT,
            amount,
            lot_id=lot.id,
            shopify_refund_id=refund_id,
            shopify_order_id=order_id,
        )
        self._audit(by, "refund_credit", entry)

    def _redeem(self, at: datetime, available: int) -> None:
        order_id = self._id()
        by = Actor(self.book.account.shop_id, at, "webhook:orders/paid", SPEND_REASON,
                   f"order:{order_id}:redeem", False)  # fmt: skip
        # Part of an order's total; now and then a large order that takes most of the balance.
        wanted = self.rng.randint(500, 6000)
        if self.rng.random() < 0.25:
            wanted = max(wanted, round(available * self.rng.uniform(0.5, 1.0)))
        amount = min(available, wanted)
        moves = self.book.take_in_spend_order(amount, at)
        entry = self.book.post(
            by, EntryKind.REDEEM, -amount, allocations=moves, shopify_order_id=order_id
        )
        self._audit(by, "redeem", entry)
        self.spends.append(_Spend(entry["id"], order_id, at, {lot: -part for lot, part in moves}))
        del self.spends[:-20]  # cancellations come soon after the order

    def _reversal(self, at: datetime, _available: int) -> None:
        """Give back (all or part of) a recent spend onto its lots, the lot spent last first."""
        spend = self._reversible(at)
        assert spend is not None
        for lot_id in spend.returnable:  # depleted lots come back into the Book
            if lot_id in self.closed:
                self.book.lots[lot_id] = self.closed.pop(lot_id)
        total = sum(spend.returnable.values())
        wanted = total if self.rng.random() < 0.6 else self.rng.randint(1, total)
        lots = sorted((self.book.lots[lot].as_spendable() for lot in spend.returnable),
                      key=spend_order, reverse=True)  # fmt: skip
        moves = []
        for lot in lots:
            part = min(spend.returnable[lot.id], wanted)
            if part:
                moves.append((lot.id, part))
                spend.returnable[lot.id] -= part
                wanted -= part
        for lot_id, part in moves:
            self.book.give_back(self.book.lots[lot_id], part)
        by = Actor(self.book.account.shop_id, at, "webhook:orders/cancelled", RETURN_REASON,
                   f"order:{spend.order_id}:reversal:{self._id()}", False)  # fmt: skip
        entry = self.book.post(
            by,
            EntryKind.REDEEM_REVERSAL,
            sum(part for _, part in moves),
            allocations=moves,
            reverses_entry_id=spend.entry_id,
            shopify_order_id=spend.order_id,
        )
        self._audit(by, "redeem_reversal", entry)

    def _adjust_up(self, at: datetime, _available: int) -> None:
        by = Actor(self.book.account.shop_id, at, self._staff(), "Balance correction")
        amount = self.rng.choice(_AMOUNTS[:5])
        lot = self.book.open_lot(by, amount, source=LotSource.MANUAL, expires_at=None, note=None)
        entry = self.book.post(by, EntryKind.ADJUST, amount, lot_id=lot.id)
        self._audit(by, "adjust", entry)

    def _adjust_down(self, at: datetime, available: int) -> None:
        by = Actor(self.book.account.shop_id, at, self._staff(), "Balance correction",
                   self._ui_key())  # fmt: skip
        amount = self.rng.randint(1, min(available, 2500))
        moves = self.book.take_in_spend_order(amount, at)
        entry = self.book.post(by, EntryKind.ADJUST, -amount, allocations=moves)
        self._audit(by, "adjust", entry)

    def _revoke(self, at: datetime, _available: int) -> None:
        lot = self.rng.choice(self._revocable(at))
        by = Actor(self.book.account.shop_id, at, self._staff(), "Issued in error")
        moves = self.book.take_rest_of(lot, LotStatus.REVOKED)
        entry = self.book.post(by, EntryKind.REVOKE, moves[0][1], lot_id=lot.id, allocations=moves)
        self._audit(by, "revoke", entry)

    # -- the nightly expiry run -----------------------------------------------------------------

    def _expire_until(self, until: datetime) -> None:
        """Every nightly run up to ``until`` that had lots of this account due: run it."""
        while self.due:
            run_at = _next_run(self.due[0][0])
            if run_at > until:
                return
            lots = []
            while self.due and self.due[0][0] <= run_at:
                _, _, lot_id = heapq.heappop(self.due)
                lot = self.book.lots.get(lot_id)
                if lot is not None and lot.status == LotStatus.ACTIVE:
                    lots.append(lot)
            if not lots:
                continue
            by = Actor(self.book.account.shop_id, run_at, EXPIRY_ACTOR, "expired")
            run = expire_lots(by, self.book.account, lots)  # shares the account row: chains on
            self.book.entries.extend(run.entries)
            self.book.allocations.extend(run.allocations)
            self.audits.append(expiry_audit_row(by, run))
            self._file_closed_lots()
            self.last_at = run_at

    # -- small things ---------------------------------------------------------------------------

    def _available(self, at: datetime) -> int:
        """What a spend at ``at`` could take (``allocation.spendable``'s rule, summed)."""
        return sum(
            lot.remaining
            for lot in self.book.lots.values()
            if lot.status == LotStatus.ACTIVE and (lot.expires_at is None or lot.expires_at > at)
        )

    def _revocable(self, at: datetime) -> list[LotRow]:
        return [
            lot
            for lot in self.book.lots.values()
            if lot.status == LotStatus.ACTIVE and (lot.expires_at is None or lot.expires_at > at)
        ]

    def _reversible(self, at: datetime) -> _Spend | None:
        """The most recent spend of the last 60 days with something to give back whose lots
        are all still alive (a return onto a dead lot would have to close it again)."""
        for spend in reversed(self.spends):
            if at - spend.at > timedelta(days=60):
                return None
            if not any(spend.returnable.values()):
                continue
            lots = [self.book.lots.get(lot) or self.closed[lot] for lot in spend.returnable]
            if all(
                lot.status in (LotStatus.ACTIVE, LotStatus.DEPLETED)
                and (lot.expires_at is None or lot.expires_at > at)
                for lot in lots
            ):
                return spend
        return None

    def _watch(self, lot: LotRow) -> None:
        if lot.expires_at is not None:
            heapq.heappush(self.due, (lot.expires_at, str(lot.id), lot.id))

    def _file_closed_lots(self) -> None:
        for lot_id in [i for i, lot in self.book.lots.items() if lot.status != LotStatus.ACTIVE]:
            self.closed[lot_id] = self.book.lots.pop(lot_id)

    def _audit(self, by: Actor, operation: str, entry: dict[str, Any]) -> None:
        row = operation_audit_row(by, operation, entry, None, currency=self.book.account.currency)
        self.audits.append(row)

    def _staff(self) -> str:
        return self.rng.choice(STAFF)

    def _ui_key(self) -> str | None:
        """Half of the UI's calls carry an Idempotency-Key."""
        if self.rng.random() < 0.5:
            return f"ui-{uuid.UUID(int=self.rng.getrandbits(128))}"
        return None

    def _id(self) -> int:
        return 6_000_000_000 + next(self.serial)


def _next_run(due: datetime) -> datetime:
    """The first nightly expiry run at or after ``due``."""
    run = due.astimezone(UTC).replace(hour=EXPIRY_HOUR, minute=0, second=0, microsecond=0)
    return run if run >= due else run + timedelta(days=1)


# -- loading ------------------------------------------------------------------------------------

_CUSTOMER_COLUMNS = ("id", "shop_id", "shopify_customer_id", "email", "first_name", "last_name",
                     "created_at", "updated_at")  # fmt: skip
_ACCOUNT_COLUMNS = ("id", "shop_id", "customer_id", "currency", "balance", "lifetime_credited",
                    "lifetime_debited", "last_sequence", "last_hash", "created_at",
                    "updated_at")  # fmt: skip
_LOT_COLUMNS = ("id", "shop_id", "account_id", "amount", "remaining", "status", "source",
                "reason", "note", "expires_at", "created_at")  # fmt: skip
_ENTRY_COLUMNS = ("id", "shop_id", "account_id", "sequence", "kind", "amount", "balance_before",
                  "balance_after", "lot_id", "reverses_entry_id", "shopify_order_id",
                  "shopify_refund_id", "idempotency_key", "actor", "reason", "note", "metadata",
                  "prev_hash", "hash", "created_at")  # fmt: skip
_ALLOCATION_COLUMNS = ("shop_id", "entry_id", "lot_id", "amount")
_AUDIT_COLUMNS = ("shop_id", "actor", "action", "target_type", "target_id", "outcome",
                  "error_code", "details", "created_at")  # fmt: skip


def _copy(session: Session, history: _History) -> None:
    """Every row of the chunk, table by table in foreign-key order, with COPY."""
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    shop_id = history.books[0].account.shop_id
    tables: Sequence[tuple[str, Sequence[str], Iterable[Sequence[Any]]]] = (
        ("customers", _CUSTOMER_COLUMNS, (
            (c.id, shop_id, c.shopify_id, c.email, c.first_name, c.last_name, c.joined, c.joined)
            for c in history.customers)),
        ("credit_accounts", _ACCOUNT_COLUMNS, (
            (a.id, a.shop_id, a.customer_id, a.currency, a.balance, a.lifetime_credited,
             a.lifetime_debited, a.last_sequence, a.last_hash, *history.created[a.id])
            for a in (book.account for book in history.books))),
        ("credit_lots", _LOT_COLUMNS, (
            (lot.id, lot.shop_id, lot.account_id, lot.amount, lot.remaining, str(lot.status),
             str(lot.source), lot.reason, lot.note, lot.expires_at, lot.created_at)
            for book in history.books for lot in book.lots.values())),
        ("ledger_entries", _ENTRY_COLUMNS, (
            [json.dumps(e[n]) if n == "metadata" else e[n] for n in _ENTRY_COLUMNS]
            for book in history.books for e in book.entries)),
        ("entry_allocations", _ALLOCATION_COLUMNS, (
            (a["shop_id"], a["entry_id"], a["lot_id"], a["amount"])
            for book in history.books for a in book.allocations)),
        ("audit_log", _AUDIT_COLUMNS, (
            [json.dumps(row[n]) if n == "details" else row[n] for n in _AUDIT_COLUMNS]
            for row in history.audits)),
    )  # fmt: skip
    try:
        for table, columns, rows in tables:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
    finally:
        cursor.close()


def _count(report: SeedReport, history: _History) -> None:
    report.chunks += 1
    report.customers += len(history.customers)
    report.accounts += len(history.books)
    report.lots += sum(len(book.lots) for book in history.books)
    report.entries += sum(len(book.entries) for book in history.books)
    report.allocations += sum(len(book.allocations) for book in history.books)
    report.audits += len(history.audits)


# Kept for callers that look the seeded customers up (the bench, tests).
def seeded_shopify_ids(plan: Plan) -> range:
    return range(FIRST_SHOPIFY_ID + 1, FIRST_SHOPIFY_ID + plan.customers + 1)
