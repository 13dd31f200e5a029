"""A known history for the report tests, written through the ledger's own operations.

Shop A (America/New_York: EDT until 2026-11-01 06:00Z, then EST) holds USD and JPY credit
for three customers from September to November 2026: issues with and without expiry, a
spend and part of it given back, a refund to store credit, a debit, an expiry run, a revoked
lot, an adjustment up, a credit made in Shopify (external), and a lot past its expiry that no
expiry run has swept yet. Shop B (UTC) holds USD credit too, on the same days, which no
report of shop A may show.

Balances of shop A, in minor units, after each step (the figures the tests assert):

    USD  Sep 01 +10000 issue (lot A, exp Oct 01)       10000
         Sep 05  +5000 issue (lot B, no expiry)        15000
         Sep 10  -3000 redeem (from lot A)             12000
         Sep 12  +1000 redeem_reversal (to lot A)      13000
         Sep 15  +2000 refund_credit (lot C)           15000
         Sep 20   -500 adjust (from lot A)             14500
         Oct 02  -7500 expire (lot A's rest)            7000
         Oct 05  -2000 revoke (lot C)                   5000
         Oct 10  +1500 adjust up (no expiry)            6500
         Oct 12   +700 external (no expiry)             7200
         Oct 25 02:00Z +4000 issue, exp Dec 10         11200   (local day: Oct 24)
         Nov 01 04:30Z +1200 issue, exp Nov 21         12400   (never swept: past due)
         Nov 15  -1000 redeem (from lot B)             11400
         Nov 21 03:00Z +2500 issue, exp 2027-02-01     13900   (local day: Nov 20)
    JPY  Sep 03  +5000 issue, exp Oct 15                5000
         Sep 08  -1200 redeem                           3800
         Oct 16  -3800 expire                              0
         Oct 20   +800 issue, exp 2027-06-01             800
         Oct 26   +300 issue, exp Nov 10                1100
         Nov 05   +200 issue, exp 2028-01-01            1300
         Nov 11   -300 expire (local day: Nov 10)       1000
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import operations
from ledger.book import Actor
from ledger.expiry import expire_due
from ledger.external import ExternalMovement, import_external
from ledger.money import Money
from models import CreditAccount, Customer, Shop
from tests.factories import ShopFactory

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
ALICE, BOB, CAROL = 7_100_000_001, 7_100_000_002, 7_100_000_003
OTHER_SHOP_CUSTOMER = 7_100_000_009


def at(text: str) -> datetime:
    """``"2026-09-01 12:00"`` as a UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def by(shop_id: int, when: str, reason: str = "goodwill") -> Actor:
    return Actor(shop_id=shop_id, now=at(when), actor="staff:42", reason=reason)


@dataclass(frozen=True)
class History:
    shop_a: int
    shop_b: int
    domain_a: str
    domain_b: str


def usd(cents: int) -> Money:
    return Money(cents, "USD")


def jpy(yen: int) -> Money:
    return Money(yen, "JPY")


def build_history(session: Session) -> History:
    shop_a: Shop = ShopFactory(timezone="America/New_York", currency="USD")
    shop_b: Shop = ShopFactory(timezone="UTC", currency="USD")
    a, b = int(shop_a.id), int(shop_b.id)
    _shop_b(session, b)
    _alice(session, a)
    _bob_and_carol(session, a)
    return History(shop_a=a, shop_b=b, domain_a=shop_a.domain, domain_b=shop_b.domain)


def _alice(session: Session, a: int) -> None:
    issue = operations.issue
    issue(
        session,
        by(a, "2026-09-01 12:00"),
        customer=ALICE,
        amount=usd(10000),
        expires_at=at("2026-10-01 12:00"),
    )
    issue(session, by(a, "2026-09-05 12:00"), customer=ALICE, amount=usd(5000))
    spend = operations.redeem(
        session, by(a, "2026-09-10 12:00"), customer=ALICE, amount=usd(3000), shopify_order_id=9001
    )
    operations.redeem_reversal(
        session, by(a, "2026-09-12 12:00"), entry_id=uuid.UUID(spend.entry["id"]), amount=usd(1000)
    )
    refund = operations.refund_credit(
        session, by(a, "2026-09-15 12:00"), customer=ALICE, amount=usd(2000), shopify_refund_id=77
    )
    operations.adjust(session, by(a, "2026-09-20 12:00"), customer=ALICE, amount=usd(-500))
    expire_due(session, now=at("2026-10-02 00:00"), shop_id=a)
    assert refund.lot is not None
    operations.revoke(session, by(a, "2026-10-05 12:00"), lot_id=uuid.UUID(refund.lot["id"]))
    operations.adjust(session, by(a, "2026-10-10 12:00"), customer=ALICE, amount=usd(1500))
    import_external(
        session,
        a,
        _account(session, a, ALICE, "USD"),
        ExternalMovement(
            native_gid="gid://shopify/StoreCreditAccountCreditTransaction/1",
            amount=usd(700),
            occurred_at=at("2026-10-12 11:00"),
            event="ADJUSTMENT",
        ),
        now=at("2026-10-12 12:00"),
    )


def _bob_and_carol(session: Session, a: int) -> None:
    issue = operations.issue
    issue(
        session,
        by(a, "2026-09-03 12:00"),
        customer=BOB,
        amount=jpy(5000),
        expires_at=at("2026-10-15 12:00"),
    )
    operations.redeem(
        session, by(a, "2026-09-08 12:00"), customer=BOB, amount=jpy(1200), shopify_order_id=9002
    )
    expire_due(session, now=at("2026-10-16 00:00"), shop_id=a)
    issue(
        session,
        by(a, "2026-10-20 12:00"),
        customer=BOB,
        amount=jpy(800),
        expires_at=at("2027-06-01 12:00"),
    )
    issue(
        session,
        by(a, "2026-10-25 02:00"),
        customer=CAROL,
        amount=usd(4000),
        expires_at=at("2026-12-10 12:00"),
    )
    issue(
        session,
        by(a, "2026-10-26 15:00"),
        customer=BOB,
        amount=jpy(300),
        expires_at=at("2026-11-10 12:00"),
    )
    issue(
        session,
        by(a, "2026-11-01 04:30"),
        customer=CAROL,
        amount=usd(1200),
        expires_at=at("2026-11-21 12:00"),
    )
    issue(
        session,
        by(a, "2026-11-05 12:00"),
        customer=BOB,
        amount=jpy(200),
        expires_at=at("2028-01-01 12:00"),
    )
    expire_due(session, now=at("2026-11-11 00:00"), shop_id=a)
    operations.redeem(
        session, by(a, "2026-11-15 12:00"), customer=ALICE, amount=usd(1000), shopify_order_id=9003
    )
    issue(
        session,
        by(a, "2026-11-21 03:00"),
        customer=CAROL,
        amount=usd(2500),
        expires_at=at("2027-02-01 12:00"),
    )


def _shop_b(session: Session, b: int) -> None:
    """Shop B's credit on the same days: large, round amounts that would show in A's figures."""
    operations.issue(
        session,
        by(b, "2026-09-02 12:00"),
        customer=OTHER_SHOP_CUSTOMER,
        amount=usd(99900),
        expires_at=at("2026-10-20 12:00"),
    )
    operations.issue(
        session, by(b, "2026-09-02 13:00"), customer=OTHER_SHOP_CUSTOMER, amount=jpy(70000)
    )
    operations.redeem(
        session, by(b, "2026-10-03 12:00"), customer=OTHER_SHOP_CUSTOMER, amount=usd(10000)
    )
    expire_due(session, now=at("2026-10-21 00:00"), shop_id=b)
    operations.issue(
        session,
        by(b, "2026-11-20 12:00"),
        customer=OTHER_SHOP_CUSTOMER,
        amount=usd(33300),
        expires_at=at("2026-12-01 12:00"),
    )


def _account(session: Session, shop_id: int, customer: int, currency: str) -> int:
    return session.execute(
        select(CreditAccount.id)
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(
            Customer.shop_id == shop_id,
            Customer.shopify_customer_id == customer,
            CreditAccount.currency == currency,
        )
    ).scalar_one()
