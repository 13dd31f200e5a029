"""Finding (or creating) the customer and account an operation addresses, before any lock."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger.chain import GENESIS_HASH
from models import CreditAccount, CreditLot, Customer, LedgerEntry


def find_customer(session: Session, shop_id: int, shopify_customer_id: int) -> int | None:
    stmt = select(Customer.id).where(
        Customer.shop_id == shop_id, Customer.shopify_customer_id == shopify_customer_id
    )
    return session.execute(stmt).scalar_one_or_none()


def find_account(
    session: Session, shop_id: int, shopify_customer_id: int, currency: str
) -> int | None:
    stmt = (
        select(CreditAccount.id)
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(
            Customer.shop_id == shop_id,
            Customer.shopify_customer_id == shopify_customer_id,
            CreditAccount.currency == currency,
        )
    )
    return session.execute(stmt).scalar_one_or_none()


def ensure_account(
    session: Session, shop_id: int, shopify_customer_id: int, currency: str, now: datetime
) -> int:
    """The account's id, creating the customer and account if new (safe against a twin)."""
    account_id = find_account(session, shop_id, shopify_customer_id, currency)
    if account_id is not None:
        return account_id
    customer_id = ensure_customer(session, shop_id, shopify_customer_id, now)
    account = CreditAccount(
        shop_id=shop_id,
        customer_id=customer_id,
        currency=currency,
        balance=0,
        lifetime_credited=0,
        lifetime_debited=0,
        last_sequence=0,
        last_hash=GENESIS_HASH,
        created_at=now,
        updated_at=now,
    )
    if _insert_once(session, account):
        return account.id
    found = find_account(session, shop_id, shopify_customer_id, currency)
    assert found is not None
    return found


def ensure_customer(session: Session, shop_id: int, shopify_customer_id: int, now: datetime) -> int:
    """The customer's row id, creating it if new (safe against a concurrent twin)."""
    customer_id = find_customer(session, shop_id, shopify_customer_id)
    if customer_id is not None:
        return customer_id
    customer = Customer(
        shop_id=shop_id, shopify_customer_id=shopify_customer_id, created_at=now, updated_at=now
    )
    if _insert_once(session, customer):
        return customer.id
    found = find_customer(session, shop_id, shopify_customer_id)
    assert found is not None
    return found


def account_of_lot(session: Session, shop_id: int, lot_id: uuid.UUID) -> int | None:
    stmt = select(CreditLot.account_id).where(CreditLot.id == lot_id, CreditLot.shop_id == shop_id)
    return session.execute(stmt).scalar_one_or_none()


def entry_in_shop(session: Session, shop_id: int, entry_id: uuid.UUID) -> LedgerEntry | None:
    stmt = select(LedgerEntry).where(LedgerEntry.id == entry_id, LedgerEntry.shop_id == shop_id)
    return session.execute(stmt).scalar_one_or_none()


def _insert_once(session: Session, row: Customer | CreditAccount) -> bool:
    """Insert ``row`` in a savepoint; False if a concurrent transaction inserted its twin."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True
