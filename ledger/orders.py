"""Bringing the ledger in line with what Shopify says an order did with store credit.

Every order topic (orders/create, orders/paid, orders/cancelled, refunds/create) leads to the
same step: read the order's store-credit transactions from Shopify (the truth about what was
spent and given back) and write what the ledger lacks, each under a key naming the business
event. Deliveries can come twice, concurrently, or in any order: the keys make every event
take effect once, and reading the whole order makes the order of arrival irrelevant (a
cancellation processed before the payment still writes the spend first, then its return).

- spend: the order's successful store-credit sales → one ``redeem`` (``order:{id}:redeem``),
  lots soonest-expiring first, exactly as Shopify debited them; nothing is pushed back.
- return: a refund or void of the store-credit payment → ``redeem_reversal`` onto the lots the
  spend took (``order:{id}:reversal:{transaction id}``), with their original expiry.
- refund to store credit of another tender → a ``refund_credit`` lot (``refund:{id}``).

A spend larger than the ledger holds (credit staff issued natively, outside CreditCraft) is
no crash: it becomes an open ``unmatched_native_spend`` finding, and the spend stays owed —
reconciliation imports the missing native credit and then writes it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import operations
from ledger.book import Actor
from ledger.errors import (
    AccountNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    LedgerError,
    NothingToReverse,
)
from ledger.findings import Finding, record_finding
from ledger.money import Money, exponent, normalize_currency
from models import LedgerEntry, ReconciliationFinding

# One reason for every path that writes an order's events: it is part of the request's
# fingerprint, so orders/paid and orders/cancelled must describe the spend the same way.
SPEND_REASON = "Paid with store credit at checkout"
RETURN_REASON = "Store-credit payment returned (order cancelled or refunded)"
REFUND_REASON = "Refund paid to store credit"


@dataclass(frozen=True)
class Movement:
    """One store-credit movement Shopify recorded on the order."""

    reference: int  # the order transaction's id (returns) or the refund's id (refund credit)
    amount: Money


@dataclass(frozen=True)
class OrderStoreCredit:
    """What Shopify says an order did with store credit, in the customer's currency."""

    order_id: int
    shopify_customer_id: int | None
    currency: str
    spent: Money | None = None
    returned: list[Movement] = field(default_factory=list)
    refunded_as_credit: list[Movement] = field(default_factory=list)

    @property
    def touches_store_credit(self) -> bool:
        return bool(self.spent or self.returned or self.refunded_as_credit)


def native_amount(value: object, currency: str) -> Money:
    """Money from a Shopify Decimal string ("12.5", "12.500"): exact, never rounded."""
    code = normalize_currency(currency)
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidAmount(
            "Shopify sent an amount that is not a number.", amount=str(value)
        ) from None
    minor = amount.scaleb(exponent(code))
    if not amount.is_finite() or minor != minor.to_integral_value():
        raise InvalidAmount("Shopify sent an amount finer than the currency.", amount=str(value))
    return Money(int(minor), code)


def sync_order(
    session: Session, shop_id: int, order: OrderStoreCredit, *, actor: str, now: datetime
) -> dict[str, Any]:
    """Write what the ledger lacks of ``order``; returns what happened, event by event."""
    if order.shopify_customer_id is None:
        return {"result": "no_customer"}  # a guest cannot hold store credit
    customer = order.shopify_customer_id
    outcome: dict[str, Any] = {"order": str(order.order_id), "customer": str(customer)}
    spend_entry = None
    if order.spent is not None:
        spend_entry = _write_spend(session, shop_id, order, actor, now, outcome)
    for returned in order.returned:
        if spend_entry is None:
            outcome.setdefault("returns", []).append(
                {"transaction": str(returned.reference), "result": "spend_not_recorded"}
            )
            continue
        outcome.setdefault("returns", []).append(
            _write_return(session, shop_id, order, spend_entry, returned, actor, now)
        )
    for refund in order.refunded_as_credit:
        by = Actor(shop_id, now, actor, REFUND_REASON, f"refund:{refund.reference}", False)
        receipt = operations.refund_credit(
            session,
            by,
            customer=customer,
            amount=refund.amount,
            shopify_refund_id=refund.reference,
            shopify_order_id=order.order_id,
        )
        outcome.setdefault("refunds", []).append(
            {
                "refund": str(refund.reference),
                "entry": receipt.entry["id"],
                "replayed": receipt.replayed,
            }
        )
    return outcome


def _write_spend(
    session: Session,
    shop_id: int,
    order: OrderStoreCredit,
    actor: str,
    now: datetime,
    outcome: dict[str, Any],
) -> uuid.UUID | None:
    assert order.spent is not None
    assert order.shopify_customer_id is not None
    key = f"order:{order.order_id}:redeem"
    by = Actor(shop_id, now, actor, SPEND_REASON, key, False)
    try:
        receipt = operations.redeem(
            session,
            by,
            customer=order.shopify_customer_id,
            amount=order.spent,
            shopify_order_id=order.order_id,
        )
    except (InsufficientFunds, AccountNotFound) as short:
        _record_unmatched_spend(session, shop_id, order, key, short, now)
        outcome["spend"] = {"result": "unmatched_native_spend", "key": key}
        return None
    except IdempotencyConflict as conflict:
        # The order's spend was written with another amount (a later capture changed it).
        _record_finding(
            session,
            shop_id,
            "order_spend_changed",
            key,
            order,
            order.spent.minor,
            None,
            {"error": conflict.to_dict()},
            now,
        )
        outcome["spend"] = {"result": "spend_changed", "key": key}
        return _spend_entry_id(session, shop_id, key)
    _resolve_finding(session, shop_id, key, now)
    outcome["spend"] = {"entry": receipt.entry["id"], "replayed": receipt.replayed}
    return uuid.UUID(receipt.entry["id"])


def _write_return(
    session: Session,
    shop_id: int,
    order: OrderStoreCredit,
    spend_entry: uuid.UUID,
    returned: Movement,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    key = f"order:{order.order_id}:reversal:{returned.reference}"
    by = Actor(shop_id, now, actor, RETURN_REASON, key, False)
    try:
        receipt = operations.redeem_reversal(
            session,
            by,
            entry_id=spend_entry,
            amount=returned.amount,
            shopify_order_id=order.order_id,
        )
    except NothingToReverse as refused:
        _record_finding(
            session,
            shop_id,
            "return_exceeds_spend",
            key,
            order,
            returned.amount.minor,
            None,
            {"error": refused.to_dict()},
            now,
        )
        return {"transaction": str(returned.reference), "result": "return_exceeds_spend"}
    return {
        "transaction": str(returned.reference),
        "entry": receipt.entry["id"],
        "replayed": receipt.replayed,
    }


def _spend_entry_id(session: Session, shop_id: int, key: str) -> uuid.UUID | None:
    stmt = select(LedgerEntry.id).where(
        LedgerEntry.shop_id == shop_id, LedgerEntry.idempotency_key == key
    )
    return session.execute(stmt).scalar_one_or_none()


def _record_unmatched_spend(
    session: Session,
    shop_id: int,
    order: OrderStoreCredit,
    key: str,
    error: LedgerError,
    now: datetime,
) -> None:
    assert order.spent is not None
    available = error.details.get("available")
    _record_finding(
        session,
        shop_id,
        "unmatched_native_spend",
        key,
        order,
        order.spent.minor,
        available if isinstance(available, int) else None,
        {
            "order_id": str(order.order_id),
            "amount": str(order.spent.minor),
            "error": error.to_dict(),
        },
        now,
    )


def _record_finding(
    session: Session,
    shop_id: int,
    kind: str,
    key: str,
    order: OrderStoreCredit,
    expected: int | None,
    actual: int | None,
    details: dict[str, Any],
    now: datetime,
) -> None:
    """Open (or see again) the finding ``key``: one row per business event, however often."""
    finding = Finding(
        kind=kind,
        key=key,
        shopify_customer_id=order.shopify_customer_id,
        currency=order.currency,
        expected=expected,
        actual=actual,
        details=details,
    )
    record_finding(session, shop_id, finding, now)
    session.commit()


def _resolve_finding(session: Session, shop_id: int, key: str, now: datetime) -> None:
    """The event that was owed is written now: its finding (if any) is resolved."""
    finding = session.execute(
        select(ReconciliationFinding).where(
            ReconciliationFinding.shop_id == shop_id,
            ReconciliationFinding.finding_key == key,
            ReconciliationFinding.resolved_at.is_(None),
        )
    ).scalar_one_or_none()
    if finding is not None:
        finding.resolved_at = now
        finding.resolution = "the spend was written once the ledger held enough credit"
        session.commit()
