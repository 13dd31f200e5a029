"""Keeping the local copy of a Shopify customer current, whatever order deliveries arrive in.

Shopify does not order webhook deliveries. Each change carries the time Shopify made it
(the payload's ``updated_at``, else the delivery's trigger time); a change older than what we
already hold is stale and changes nothing. Deleting a customer in Shopify marks the row: the
ledger, and any money on it, stays. Only a redaction removes personal data.

Only customers CreditCraft already knows (credit issued to them, or addressed by the merchant)
are kept current: we hold no personal data of anyone else. That is data minimisation, and it
also means a genuine customer payload replayed under another shop's header (only the body is
signed) finds no customer there and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Customer


@dataclass(frozen=True)
class CustomerChange:
    shopify_customer_id: int
    changed_at: datetime
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None


def apply_change(session: Session, shop_id: int, change: CustomerChange, now: datetime) -> str:
    """Record a create/update; ``applied``, ``stale``, ``redacted`` or ``not_a_credit_holder``."""
    customer = _locked(session, shop_id, change.shopify_customer_id)
    if customer is None:
        return "not_a_credit_holder"
    if customer.redacted_at is not None:
        return "redacted"  # a late delivery must not bring redacted data back
    if _is_stale(customer, change.changed_at):
        return "stale"
    customer.email = change.email
    customer.first_name = change.first_name
    customer.last_name = change.last_name
    customer.deleted_at = None
    customer.shopify_updated_at = change.changed_at
    customer.updated_at = now
    return "applied"


def mark_deleted(
    session: Session, shop_id: int, shopify_customer_id: int, changed_at: datetime, now: datetime
) -> str:
    """Shopify deleted the customer; ``applied``, ``stale`` or ``not_a_credit_holder``."""
    customer = _locked(session, shop_id, shopify_customer_id)
    if customer is None:
        return "not_a_credit_holder"
    if _is_stale(customer, changed_at):
        return "stale"
    customer.deleted_at = changed_at
    customer.shopify_updated_at = changed_at
    customer.updated_at = now
    return "applied"


def _locked(session: Session, shop_id: int, shopify_customer_id: int) -> Customer | None:
    """The customer's row, if we know them, locked so two deliveries apply one at a time."""
    stmt = (
        select(Customer)
        .where(Customer.shop_id == shop_id, Customer.shopify_customer_id == shopify_customer_id)
        .with_for_update()
    )
    return session.execute(stmt).scalar_one_or_none()


def _is_stale(customer: Customer, changed_at: datetime) -> bool:
    return customer.shopify_updated_at is not None and changed_at <= customer.shopify_updated_at
