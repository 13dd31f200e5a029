"""Seeding many due lots fast, with books that verify: for the expiry tests and bench/expiry.py.

Going through ``operations.issue`` costs a transaction per lot (about 3 ms): fine for
hundreds, far too slow for 50,000 or 1,000,000. Here customers and accounts are created by
``INSERT … SELECT generate_series``, and each account's lots and ``issue`` entries are made by
the ledger's own ``Book`` (``open_lot`` then ``post``: the same rows, hash chain included, that
``issue`` would write) and loaded with ``COPY``. Every account's balance, lifetime totals,
sequence and chain head are then set from its book, so ``verify_account`` passes on every
seeded account: the expiry under test starts from a ledger that is consistent, not just
plausible.

The lots' due times are drawn from a seeded ``random.Random``, uniformly over ``spread``:
a batch of due lots in expiry order then touches many accounts (as real expiry would), and two
shops seeded with the same seed hold the same amounts due at the same times.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from ledger.book import AccountRow, Actor, Book
from ledger.chain import GENESIS_HASH
from ledger.kinds import EntryKind, LotSource

SEED_ACTOR = "system:seed"
_CHUNK = 2000  # accounts per COPY round

_LOT_COLUMNS = (
    "id",
    "shop_id",
    "account_id",
    "amount",
    "remaining",
    "status",
    "source",
    "reason",
    "note",
    "expires_at",
    "created_at",
)
_ENTRY_COLUMNS = (
    "id",
    "shop_id",
    "account_id",
    "sequence",
    "kind",
    "amount",
    "balance_before",
    "balance_after",
    "lot_id",
    "idempotency_key",
    "actor",
    "reason",
    "note",
    "metadata",
    "prev_hash",
    "hash",
    "created_at",
)


@dataclass(frozen=True)
class Seeded:
    shop_id: int
    accounts: int
    lots: int
    total: int  # minor units over all lots
    last_due: datetime  # every seeded lot is due at this time


def seed_due_lots(
    engine: Engine,
    shop_id: int,
    *,
    accounts: int,
    lots_per_account: int,
    issued_at: datetime,
    first_due: datetime,
    spread: timedelta,
    seed: int = 1,
    customer_base: int = 6_000_000_000,
    currency: str = "USD",
) -> Seeded:
    """Give ``accounts`` new customers of ``shop_id`` ``lots_per_account`` lots each, all due
    between ``first_due`` and ``first_due + spread``; committed chunk by chunk."""
    create_accounts(engine, shop_id, accounts, at=issued_at, base=customer_base, currency=currency)
    return fill_accounts(
        engine,
        shop_id,
        lots_per_account=lots_per_account,
        issued_at=issued_at,
        first_due=first_due,
        spread=spread,
        seed=seed,
    )


def create_accounts(
    engine: Engine, shop_id: int, accounts: int, *, at: datetime, base: int, currency: str
) -> None:
    """``accounts`` new customers (Shopify ids ``base + 1`` on), each with an empty account."""
    with engine.begin() as conn:
        _create_accounts(conn, shop_id, accounts, base, currency, at)


def fill_accounts(
    engine: Engine,
    shop_id: int,
    *,
    lots_per_account: int,
    issued_at: datetime,
    first_due: datetime,
    spread: timedelta,
    seed: int = 1,
    part: tuple[int, int] = (0, 1),
) -> Seeded:
    """Issue the lots to the shop's empty accounts (those with ``id % n == i`` for
    ``part=(i, n)``, so that ``n`` processes can fill one shop side by side)."""
    rng = random.Random(f"{seed}:{part[0]}")
    seconds = max(int(spread.total_seconds()), 1)
    accounts = lots = total = 0
    last_due = first_due
    by = Actor(shop_id=shop_id, now=issued_at, actor=SEED_ACTOR, reason="seeded")
    for chunk in _empty_accounts(engine, shop_id, part):
        books = []
        for account_id, customer_id, currency in chunk:
            account = AccountRow(
                account_id, shop_id, customer_id, currency, 0, 0, 0, 0, GENESIS_HASH
            )
            book = Book(account=account, lots={})
            for _ in range(lots_per_account):
                amount = rng.randint(1, 50_000)
                due = first_due + timedelta(seconds=rng.randrange(seconds))
                last_due = max(last_due, due)
                lot = book.open_lot(by, amount, source=LotSource.BULK, expires_at=due, note=None)
                book.post(by, EntryKind.ISSUE, amount, lot_id=lot.id, keyed=False)
                total += amount
            books.append(book)
        with engine.begin() as conn:
            _copy_books(conn, books)
        accounts += len(books)
        lots += len(books) * lots_per_account
    return Seeded(shop_id, accounts, lots, total, last_due)


def _create_accounts(
    conn: Connection, shop_id: int, accounts: int, base: int, currency: str, at: datetime
) -> None:
    conn.execute(
        text(
            "INSERT INTO customers (shop_id, shopify_customer_id, created_at, updated_at)"
            " SELECT :shop_id, :base + g, :at, :at FROM generate_series(1, :n) AS g"
        ),
        {"shop_id": shop_id, "base": base, "at": at, "n": accounts},
    )
    conn.execute(
        text(
            "INSERT INTO credit_accounts (shop_id, customer_id, currency, balance,"
            " lifetime_credited, lifetime_debited, last_sequence, last_hash, created_at,"
            " updated_at)"
            " SELECT shop_id, id, :currency, 0, 0, 0, 0, :genesis, :at, :at FROM customers"
            " WHERE shop_id = :shop_id AND shopify_customer_id BETWEEN :base + 1 AND :base + :n"
            " ORDER BY id"
        ),
        {
            "shop_id": shop_id,
            "currency": currency,
            "genesis": GENESIS_HASH,
            "at": at,
            "base": base,
            "n": accounts,
        },
    )


def _empty_accounts(engine: Engine, shop_id: int, part: tuple[int, int]) -> Iterator[list[Any]]:
    """The shop's accounts with no entry yet, ``_CHUNK`` at a time (keyset on id)."""
    after = 0
    while True:
        with engine.connect() as conn:
            chunk = conn.execute(
                text(
                    "SELECT id, customer_id, currency FROM credit_accounts"
                    " WHERE shop_id = :shop_id AND id > :after AND last_sequence = 0"
                    " AND id % :n = :i ORDER BY id LIMIT :limit"
                ),
                {"shop_id": shop_id, "after": after, "i": part[0], "n": part[1], "limit": _CHUNK},
            ).all()
        if not chunk:
            return
        yield [tuple(row) for row in chunk]
        after = chunk[-1][0]


def _copy_books(conn: Connection, books: list[Book]) -> None:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY credit_lots ({', '.join(_LOT_COLUMNS)}) FROM STDIN") as copy:
        for book in books:
            for lot in book.lots.values():
                copy.write_row(
                    (lot.id, lot.shop_id, lot.account_id, lot.amount, lot.remaining,
                     str(lot.status), str(lot.source), lot.reason, lot.note, lot.expires_at,
                     lot.created_at)
                )  # fmt: skip
    with cursor.copy(f"COPY ledger_entries ({', '.join(_ENTRY_COLUMNS)}) FROM STDIN") as copy:
        for book in books:
            for entry in book.entries:
                copy.write_row(
                    tuple("{}" if name == "metadata" else entry[name] for name in _ENTRY_COLUMNS)
                )
    cursor.execute("CREATE TEMP TABLE IF NOT EXISTS seed_heads (id bigint, balance bigint,"
                   " last_sequence bigint, last_hash text) ON COMMIT DELETE ROWS")  # fmt: skip
    with cursor.copy("COPY seed_heads FROM STDIN") as copy:
        for book in books:
            account = book.account
            copy.write_row((account.id, account.balance, account.last_sequence, account.last_hash))
    cursor.execute(
        "UPDATE credit_accounts AS a SET balance = h.balance, lifetime_credited = h.balance,"
        " last_sequence = h.last_sequence, last_hash = h.last_hash"
        " FROM seed_heads AS h WHERE a.id = h.id"
    )
