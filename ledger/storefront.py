"""What a storefront may show a signed-in customer: spendable credit per currency, next expiry.

One statement per look-up, walking indexes only: the customer by ``(shop_id,
shopify_customer_id)`` (unique), their accounts by ``(customer_id, currency)`` (unique), and
each account's live lots through the partial index ``ix_credit_lots_account_active``
(``account_id, expires_at WHERE status = 'active'``). Sums happen here, not in SQL: a customer
has a handful of live lots, and the same rows give both the balance and the next expiry.

The amount is what the customer can spend *now*: a lot is dead at its ``expires_at`` even if
the expiry job has not swept it yet (redeem ignores it too), so it is left out here, and the
answer carries ``valid_until`` — the instant the next lot dies — for caches to honour.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, text
from sqlalchemy.orm import Session

from ledger.money import format_amount
from ledger.views import iso
from models import CreditAccount, CreditLot, Customer, Shop

# Built once (see store.py): building a select costs more than running it on a hot path.
# ``status = 'active'`` is literal so the planner matches the partial index in every plan.
_LIVE_LOTS_OF_CUSTOMER = (
    select(CreditAccount.currency, CreditLot.remaining, CreditLot.expires_at)
    .select_from(Customer)
    .join(CreditAccount, CreditAccount.customer_id == Customer.id)
    .outerjoin(
        CreditLot,
        and_(
            CreditLot.account_id == CreditAccount.id,
            text("credit_lots.status = 'active'"),
            or_(CreditLot.expires_at.is_(None), CreditLot.expires_at > bindparam("now")),
        ),
    )
    .where(
        Customer.shop_id == bindparam("shop_id"),
        Customer.shopify_customer_id == bindparam("customer"),
        CreditAccount.shop_id == bindparam("shop_id"),
    )
)
_SHOP_BY_DOMAIN = select(Shop.id, Shop.installed_at, Shop.uninstalled_at, Shop.erased_at).where(
    Shop.domain == bindparam("domain")
)


@dataclass(frozen=True, slots=True)
class CurrencyBalance:
    currency: str
    amount: int  # minor units spendable now
    next_expiry_amount: int  # minor units dying at next_expiry_at (0 when nothing expires)
    next_expiry_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        next_expiry = None
        if self.next_expiry_at is not None:
            next_expiry = {
                "amount": format_amount(self.next_expiry_amount, self.currency),
                "expires_at": iso(self.next_expiry_at),
            }
        return {
            "currency": self.currency,
            "amount": format_amount(self.amount, self.currency),
            "next_expiry": next_expiry,
        }


@dataclass(frozen=True, slots=True)
class StorefrontBalances:
    balances: list[CurrencyBalance]
    valid_until: datetime | None  # the soonest expiry: after it, this answer is out of date

    def to_json(self) -> list[dict[str, Any]]:
        return [balance.to_json() for balance in self.balances]


def customer_balances(
    session: Session, shop_id: int, shopify_customer_id: int, now: datetime
) -> StorefrontBalances:
    """The customer's spendable credit per currency at ``now``, sorted by currency.

    Every account the customer has is listed (an emptied one as "0.00"); a customer with no
    account, or unknown to us, has none.
    """
    params = {"shop_id": shop_id, "customer": shopify_customer_id, "now": now}
    lots: dict[str, list[tuple[int, datetime | None]]] = defaultdict(list)
    for currency, remaining, expires_at in session.connection().execute(
        _LIVE_LOTS_OF_CUSTOMER, params
    ):
        bucket = lots[currency]  # an account without live lots still gets its (empty) bucket
        if remaining is not None:
            bucket.append((remaining, expires_at))
    balances = [_sum(currency, lots[currency]) for currency in sorted(lots)]
    expiries = [b.next_expiry_at for b in balances if b.next_expiry_at is not None]
    return StorefrontBalances(balances=balances, valid_until=min(expiries, default=None))


def _sum(currency: str, lots: list[tuple[int, datetime | None]]) -> CurrencyBalance:
    dated = [expires_at for _, expires_at in lots if expires_at is not None]
    soonest = min(dated, default=None)
    dying = sum(remaining for remaining, expires_at in lots if soonest and expires_at == soonest)
    return CurrencyBalance(
        currency=currency,
        amount=sum(remaining for remaining, _ in lots),
        next_expiry_amount=dying,
        next_expiry_at=soonest,
    )


@dataclass(frozen=True, slots=True)
class StorefrontShop:
    id: int
    serving: bool  # installed, not uninstalled, not erased


def find_shop(session: Session, domain: str) -> StorefrontShop | None:
    """The shop by its myshopify domain, and whether its storefront may be answered."""
    row = session.connection().execute(_SHOP_BY_DOMAIN, {"domain": domain}).one_or_none()
    if row is None:
        return None
    serving = row.installed_at is not None and row.uninstalled_at is None and row.erased_at is None
    return StorefrontShop(id=row.id, serving=serving)
