"""Small helpers for ledger tests: an Actor factory and account lookups."""

from __future__ import annotations

import uuid
from datetime import datetime
from itertools import count

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.book import Actor
from ledger.money import Money
from models import CreditAccount, CreditLot, Customer, LedgerEntry

_keys = count(1)


def actor(
    shop_id: int,
    now: datetime,
    *,
    key: str | None = None,
    who: str = "staff:1",
    reason: str = "goodwill",
) -> Actor:
    return Actor(shop_id=shop_id, now=now, actor=who, reason=reason, idempotency_key=key)


def keyed(shop_id: int, now: datetime, **kwargs: object) -> Actor:
    return actor(shop_id, now, key=f"k-{next(_keys)}-{uuid.uuid4().hex[:6]}", **kwargs)  # type: ignore[arg-type]


def usd(cents: int) -> Money:
    return Money(cents, "USD")


def account_of(
    session: Session, shop_id: int, customer: int, currency: str = "USD"
) -> CreditAccount:
    return session.execute(
        select(CreditAccount)
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(
            Customer.shop_id == shop_id,
            Customer.shopify_customer_id == customer,
            CreditAccount.currency == currency,
        )
        .execution_options(populate_existing=True)
    ).scalar_one()


def lots_of(session: Session, account_id: int) -> list[CreditLot]:
    return list(
        session.scalars(
            select(CreditLot)
            .where(CreditLot.account_id == account_id)
            .order_by(CreditLot.created_at, CreditLot.id)
            .execution_options(populate_existing=True)
        )
    )


def entries_of(session: Session, account_id: int) -> list[LedgerEntry]:
    return list(
        session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.account_id == account_id)
            .order_by(LedgerEntry.sequence)
        )
    )


def lot(session: Session, lot_id: str | uuid.UUID) -> CreditLot:
    found = session.get(CreditLot, uuid.UUID(str(lot_id)), populate_existing=True)
    assert found is not None
    return found
