"""What the merchant and the customer read of the ledger is the same before and after retention
archives old entries: the ledger CSV export, the customer's data export, the customer's ledger
pages (ledger/export.py, ledger/privacy.py, ledger/queries.py).

The history mixes, in one shop, entries that move (closed lots older than the cut) and entries
that stay (an active lot's, recent ones), with an archived entry and a hot one written at the
same instant, so reading both tables must interleave them as they were written.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger import operations
from ledger.archive import archive_ledger
from ledger.book import Actor
from ledger.checkpoints import CheckpointKeys
from ledger.expiry import expire_due
from ledger.export import LedgerRange, ledger_csv_rows
from ledger.money import Money
from ledger.privacy import export_customer
from ledger.queries import find_customer_row, ledger_page
from models import LedgerEntry, LedgerEntryArchive
from tests.factories import ShopFactory

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
CUT = T0 + timedelta(days=20)
NOW = T0 + timedelta(days=60)
ALICE, BOB = 7_300_000_001, 7_300_000_002


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def by(shop_id: int, at: datetime) -> Actor:
    return Actor(shop_id, at, "staff:1", "goodwill", f"k-{uuid.uuid4().hex}")


@pytest.fixture
def shop_id(session: Session) -> int:
    """Alice: USD 10.00 (expiring), 4.00 spent, the rest expired — all older than the cut, so
    it moves — and 3.00 lately; EUR 5.00 with no expiry (an active lot: stays), issued at the
    very instant of her USD spend, and 1.00 of it spent. Bob: USD 2.00 that expired (moves)."""
    shop = int(ShopFactory().id)
    usd, eur = (lambda minor: Money(minor, "USD")), (lambda minor: Money(minor, "EUR"))
    operations.issue(session, by(shop, day(0)), customer=ALICE, amount=usd(1000), expires_at=day(5))
    operations.redeem(session, by(shop, day(1)), customer=ALICE, amount=usd(400))
    operations.issue(session, by(shop, day(1)), customer=ALICE, amount=eur(500))
    operations.issue(session, by(shop, day(1)), customer=BOB, amount=usd(200), expires_at=day(4))
    expire_due(session, now=day(6), shop_id=shop)
    operations.redeem(session, by(shop, day(8)), customer=ALICE, amount=eur(100))
    operations.issue(session, by(shop, day(30)), customer=ALICE, amount=usd(300))
    return shop


def archive(session: Session, shop_id: int) -> int:
    report = archive_ledger(
        session, before=CUT, keys=CheckpointKeys(["reads-test-key"]), now=NOW, shop_id=shop_id
    )
    archived = session.scalar(
        select(func.count()).where(LedgerEntryArchive.shop_id == shop_id)
    )  # fmt: skip
    assert report.entries == archived
    return report.entries


def hot_count(session: Session, shop_id: int) -> int:
    return int(session.scalar(select(func.count()).where(LedgerEntry.shop_id == shop_id)) or 0)


RANGES = [
    LedgerRange(),
    LedgerRange(start=day(1)),  # from the shared instant on
    LedgerRange(end=day(1)),  # up to it, excluded
    LedgerRange(start=day(0.5), end=day(7)),  # across the expiry run
    LedgerRange(start=CUT),  # after the cut: nothing archived in it
    LedgerRange(currency="USD"),
    LedgerRange(currency="EUR", end=CUT),
]


def test_the_ledger_csv_reads_archived_entries_in_order(session, shop_id):
    before = {r: "".join(ledger_csv_rows(session, shop_id, r)) for r in RANGES}
    entries = hot_count(session, shop_id)

    moved = archive(session, shop_id)

    # Alice's USD (issue, spend, expiry) and Bob's (issue, expiry) moved; her EUR stays.
    assert moved == 5
    assert hot_count(session, shop_id) == entries - moved
    after = {r: "".join(ledger_csv_rows(session, shop_id, r)) for r in RANGES}
    assert after == before
    assert before[LedgerRange()].count("\r\n") == entries + 1  # the header, a line per entry


def test_the_customer_data_export_holds_archived_entries(session, shop_id):
    before = [export_customer(session, shop_id, customer) for customer in (ALICE, BOB)]

    archive(session, shop_id)

    after = [export_customer(session, shop_id, customer) for customer in (ALICE, BOB)]
    assert after == before
    [bob] = after[1]["accounts"]
    assert [entry["kind"] for entry in bob["entries"]] == ["issue", "expire"]


@pytest.mark.parametrize("currency", [None, "USD", "EUR"])
def test_ledger_pages_go_on_into_the_archive(session, shop_id, currency):
    alice = find_customer_row(session, shop_id, ALICE)
    assert alice is not None

    def every_page(limit: int) -> list[list[dict[str, object]]]:
        pages, cursor = [], None
        while True:
            page, cursor = ledger_page(
                session, alice, currency=currency, before=cursor, limit=limit
            )
            pages.append(page)
            if cursor is None:
                return pages

    before = {limit: every_page(limit) for limit in (1, 2, 3, 50)}

    archive(session, shop_id)

    after = {limit: every_page(limit) for limit in (1, 2, 3, 50)}
    assert after == before
    [everything] = after[50]
    expected = {None: 6, "USD": 4, "EUR": 2}[currency]
    assert len(everything) == expected
    assert len({entry["id"] for entry in everything}) == expected
    times = [(entry["created_at"], entry["id"]) for entry in everything]
    assert times == sorted(times, reverse=True)
