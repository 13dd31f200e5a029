"""The state of one fake shop: customers, native store credit, orders and refunds.

Native store credit follows Shopify's rules (shopify-platform.md §5):
- one account per owner and currency, created by the first credit in that currency;
- a debit spends the credits that expire soonest first (credits without expiry last, ties by
  age); each debit remembers what it took from which credit, so a revert puts it back there;
- a credit past its ``expiresAt`` expires lazily, with an Expiration transaction for what it
  still held, whenever its account is next read or changed (Shopify runs a job; the result seen
  through the API is the same);
- order payments debit (event ORDER_PAYMENT), cancellations and refunds of a store-credit
  payment revert that debit (DebitRevert), refunds of another tender to store credit are new
  credits (event ORDER_REFUND).

All methods run under the owning FakeShopify's lock; ``clock`` gives the fake's "now".
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tests.fake_shopify.bucket import CostBucket
from tests.fake_shopify.money import format_amount, parse_amount

ZERO = Decimal(0)
STORE_CREDIT_GATEWAY = "shopify_store_credit"
EVENTS = frozenset(
    {
        "ADJUSTMENT",
        "ORDER_CANCELLATION",
        "ORDER_PAYMENT",
        "ORDER_REFUND",
        "PAYMENT_FAILURE",
        "PAYMENT_RETURNED",
        "TAX_FINALIZATION",
    }
)
TYPENAMES = {
    "credit": "StoreCreditAccountCreditTransaction",
    "debit": "StoreCreditAccountDebitTransaction",
    "debit_revert": "StoreCreditAccountDebitRevertTransaction",
    "expiration": "StoreCreditAccountExpirationTransaction",
}


class StoreCreditError(Exception):
    """A refusal Shopify reports as a userError; ``code`` is its enum value."""

    def __init__(self, code: str, message: str, field: list[str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field


def gid(kind: str, number: int) -> str:
    return f"gid://shopify/{kind}/{number}"


def utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(eq=False)
class Customer:
    id: int
    email: str | None
    first_name: str | None
    last_name: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(eq=False)
class StoreCreditTransaction:
    kind: str  # credit | debit | debit_revert | expiration
    id: int
    account: Account
    amount: Decimal
    balance_after: Decimal
    created_at: datetime
    event: str
    origin: OrderTransaction | None = None
    # credits
    expires_at: datetime | None = None
    remaining: Decimal = ZERO  # still spendable
    expired_amount: Decimal = ZERO  # what expiry took (shown as remainingAmount once expired)
    # debits: (credit, amount) still taken from each credit, in the order they were spent
    allocations: list[tuple[StoreCreditTransaction, Decimal]] = field(default_factory=list)
    # debit reverts and expirations: the transaction they act on
    target: StoreCreditTransaction | None = None

    @property
    def typename(self) -> str:
        return TYPENAMES[self.kind]

    @property
    def signed_amount(self) -> Decimal:
        """As Shopify shows it: debits and expirations negative ("-9.99")."""
        return -self.amount if self.kind in ("debit", "expiration") else self.amount

    @property
    def gid(self) -> str | None:
        """Expiration transactions have no id in the Admin API (they are not Nodes)."""
        return None if self.kind == "expiration" else gid(self.typename, self.id)

    @property
    def expired(self) -> bool:
        return self.expired_amount > ZERO

    @property
    def shown_remaining(self) -> Decimal:
        """``remainingAmount``: after expiry, what was left at the moment it expired."""
        return self.remaining if self.remaining > ZERO or not self.expired else self.expired_amount

    @property
    def unreverted(self) -> Decimal:
        return sum((amount for _, amount in self.allocations), ZERO)

    def record(self) -> dict[str, Any]:
        """A plain view for tests (``FakeShop.transactions``)."""
        cur = self.account.currency
        return {
            "id": self.gid,
            "type": self.kind,
            "typename": self.typename,
            "amount": format_amount(self.signed_amount, cur),
            "currency": cur,
            "balance_after": format_amount(self.balance_after, cur),
            "created_at": self.created_at,
            "event": self.event,
            "origin": gid("OrderTransaction", self.origin.id) if self.origin else None,
            "expires_at": self.expires_at,
            "remaining": (
                format_amount(self.shown_remaining, cur) if self.kind == "credit" else None
            ),
            "target": self.target.gid if self.target else None,
        }


@dataclass(eq=False)
class Account:
    id: int
    owner: Customer
    currency: str
    created_at: datetime
    balance: Decimal = ZERO
    transactions: list[StoreCreditTransaction] = field(default_factory=list)

    @property
    def gid(self) -> str:
        return gid("StoreCreditAccount", self.id)

    def credits(self) -> Iterator[StoreCreditTransaction]:
        return (tx for tx in self.transactions if tx.kind == "credit")


@dataclass(eq=False)
class OrderTransaction:
    id: int
    order: Order
    kind: str  # SALE | REFUND
    gateway: str
    amount: Decimal
    created_at: datetime
    parent: OrderTransaction | None = None
    refund: Refund | None = None
    status: str = "SUCCESS"

    @property
    def gid(self) -> str:
        return gid("OrderTransaction", self.id)


@dataclass(eq=False)
class Refund:
    id: int
    order: Order
    created_at: datetime
    transactions: list[OrderTransaction] = field(default_factory=list)

    @property
    def gid(self) -> str:
        return gid("Refund", self.id)

    @property
    def total(self) -> Decimal:
        return sum((tx.amount for tx in self.transactions), ZERO)


@dataclass(eq=False)
class Order:
    id: int
    number: int
    customer: Customer | None
    currency: str
    created_at: datetime
    updated_at: datetime
    transactions: list[OrderTransaction] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    store_credit_debit: StoreCreditTransaction | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None

    @property
    def gid(self) -> str:
        return gid("Order", self.id)

    @property
    def name(self) -> str:
        return f"#{self.number}"

    def sales(self) -> list[OrderTransaction]:
        return [tx for tx in self.transactions if tx.kind == "SALE"]

    def sale(self, gateway: str) -> OrderTransaction | None:
        return next((tx for tx in self.sales() if tx.gateway == gateway), None)

    @property
    def total(self) -> Decimal:
        return sum((tx.amount for tx in self.sales()), ZERO)

    @property
    def refunded(self) -> Decimal:
        return sum((r.total for r in self.refunds), ZERO)

    def refunded_against(self, sale: OrderTransaction) -> Decimal:
        """Refunds counted against a tender: those with it as parent, and for a non-store-credit
        tender also the refunds of it *to* store credit (a REFUND on the store-credit gateway
        without parent)."""
        total = ZERO
        for tx in self.transactions:
            if tx.kind != "REFUND":
                continue
            if tx.parent is sale or (
                sale.gateway != STORE_CREDIT_GATEWAY
                and tx.parent is None
                and tx.gateway == STORE_CREDIT_GATEWAY
            ):
                total += tx.amount
        return total

    @property
    def financial_status(self) -> str:
        if self.refunded <= ZERO:
            return "paid"
        return "refunded" if self.refunded >= self.total else "partially_refunded"


class FakeShop:
    """One shop's data. Obtain through ``FakeShopify.add_shop`` / ``FakeShopify.shop``."""

    def __init__(
        self,
        domain: str,
        *,
        shop_id: int,
        installation_id: int,
        currency: str,
        name: str,
        iana_timezone: str,
        scopes: tuple[str, ...],
        restore_rate: float,
        maximum_available: float,
        clock: Callable[[], datetime],
        ids: itertools.count[int],
        lock: Any,
    ) -> None:
        self.domain = domain
        self.id = shop_id
        self.installation_id = installation_id
        self.currency = currency
        self.name = name
        self.iana_timezone = iana_timezone
        self.scopes = scopes
        self.bucket = CostBucket(maximum_available, restore_rate)
        self.created_at = clock()
        # Shopify caps an account's balance (per currency; the real figure is not published).
        # None: no cap; set a Decimal to make credits beyond it fail with CREDIT_LIMIT_EXCEEDED.
        self.credit_limit: Decimal | None = None
        self.customers: dict[int, Customer] = {}
        self.accounts: dict[int, Account] = {}
        self.orders: dict[int, Order] = {}
        self.refunds: dict[int, Refund] = {}
        self.order_transactions: dict[int, OrderTransaction] = {}
        self._clock = clock
        self._ids = ids
        self._lock = lock

    @property
    def gid(self) -> str:
        return gid("Shop", self.id)

    def now(self) -> datetime:
        return self._clock()

    def next_id(self) -> int:
        return next(self._ids)

    # ------------------------------------------------------------------ customers
    def add_customer(
        self,
        customer_id: int,
        email: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> Customer:
        with self._lock:
            if customer_id in self.customers:
                raise ValueError(f"customer {customer_id} already exists in {self.domain}")
            now = self.now()
            customer = Customer(customer_id, email, first_name, last_name, now, now)
            self.customers[customer_id] = customer
            return customer

    def customer(self, customer_id: int) -> Customer:
        try:
            return self.customers[customer_id]
        except KeyError:
            raise StoreCreditError(
                "OWNER_NOT_FOUND", f"customer {customer_id} does not exist", ["id"]
            ) from None

    # ------------------------------------------------------------------ store credit: reads
    def account_for(self, customer: Customer, currency: str) -> Account | None:
        return next(
            (a for a in self.accounts.values() if a.owner is customer and a.currency == currency),
            None,
        )

    def accounts_of(self, customer: Customer) -> list[Account]:
        return sorted(
            (a for a in self.accounts.values() if a.owner is customer), key=lambda a: a.id
        )

    def settle(self, account: Account) -> Account:
        """Apply due expiries; every read or change of an account goes through here."""
        now = self.now()
        due = sorted(
            (
                tx
                for tx in account.credits()
                if tx.expires_at is not None and tx.expires_at <= now and tx.remaining > ZERO
            ),
            key=lambda tx: (tx.expires_at, tx.id),
        )
        for credit in due:
            assert credit.expires_at is not None
            amount = credit.remaining
            credit.remaining = ZERO
            credit.expired_amount += amount
            last = account.transactions[-1].created_at
            self._post(
                account,
                "expiration",
                -amount,
                "ADJUSTMENT",
                created_at=max(credit.expires_at, last),
                target=credit,
            )
        return account

    def balance(self, customer_id: int, currency: str) -> str:
        """The native balance as a decimal string ("0.00" when there is no account)."""
        with self._lock:
            account = self.account_for(self.customer(customer_id), currency)
            if account is None:
                return format_amount(ZERO, currency)
            return format_amount(self.settle(account).balance, currency)

    def transactions(self, customer_id: int, currency: str) -> list[dict[str, Any]]:
        """The native transactions of that account, oldest first (plain dicts)."""
        with self._lock:
            account = self.account_for(self.customer(customer_id), currency)
            if account is None:
                return []
            return [tx.record() for tx in self.settle(account).transactions]

    # ------------------------------------------------------------------ store credit: writes
    def credit(
        self,
        customer_id: int,
        amount: str,
        currency: str,
        expires_at: datetime | None = None,
        event: str = "ADJUSTMENT",
    ) -> str:
        """A native credit made outside any app (staff in the admin); returns its GID."""
        with self._lock:
            customer = self.customer(customer_id)
            return self.apply_credit(
                customer, None, parse_amount(amount, currency), currency, expires_at, event
            ).gid  # type: ignore[return-value]

    def debit(self, customer_id: int, amount: str, currency: str) -> str:
        """A native debit made outside any app; returns its GID."""
        with self._lock:
            customer = self.customer(customer_id)
            account = self.account_for(customer, currency)
            if account is None:
                raise StoreCreditError("ACCOUNT_NOT_FOUND", f"no {currency} account", ["id"])
            tx = self.apply_debit(account, parse_amount(amount, currency), currency)
            return tx.gid  # type: ignore[return-value]

    def apply_credit(
        self,
        owner: Customer | None,
        account: Account | None,
        amount: Decimal,
        currency: str,
        expires_at: datetime | None,
        event: str = "ADJUSTMENT",
        origin: OrderTransaction | None = None,
    ) -> StoreCreditTransaction:
        """``storeCreditAccountCredit``'s rules; ``account`` given, or found/created for owner."""
        if event not in EVENTS:
            raise ValueError(f"unknown StoreCreditSystemEvent {event!r}")
        if amount <= ZERO:
            raise StoreCreditError(
                "NEGATIVE_OR_ZERO_AMOUNT",
                "A positive amount must be used to credit a store credit account",
                ["creditInput", "creditAmount", "amount"],
            )
        if expires_at is not None and utc(expires_at) <= self.now():
            raise StoreCreditError(
                "EXPIRES_AT_IN_PAST",
                "The expiry date must be in the future.",
                ["creditInput", "expiresAt"],
            )
        if account is not None and account.currency != currency:
            raise StoreCreditError(
                "MISMATCHING_CURRENCY",
                "The currency provided does not match the currency of the store credit account.",
                ["creditInput", "creditAmount", "currencyCode"],
            )
        if account is None:
            assert owner is not None
            account = self.account_for(owner, currency) or self._open_account(owner, currency)
        self.settle(account)
        if self.credit_limit is not None and account.balance + amount > self.credit_limit:
            raise StoreCreditError(
                "CREDIT_LIMIT_EXCEEDED",
                "The operation would cause the account's credit limit to be exceeded",
                ["creditInput", "creditAmount", "amount"],
            )
        return self._post(
            account,
            "credit",
            amount,
            event,
            origin=origin,
            expires_at=utc(expires_at) if expires_at else None,
            remaining=amount,
        )

    def apply_debit(
        self,
        account: Account,
        amount: Decimal,
        currency: str,
        event: str = "ADJUSTMENT",
        origin: OrderTransaction | None = None,
    ) -> StoreCreditTransaction:
        """``storeCreditAccountDebit``'s rules: soonest expiry first, no expiry last."""
        if amount <= ZERO:
            raise StoreCreditError(
                "NEGATIVE_OR_ZERO_AMOUNT",
                "A positive amount must be used to debit a store credit account",
                ["debitInput", "debitAmount", "amount"],
            )
        if account.currency != currency:
            raise StoreCreditError(
                "MISMATCHING_CURRENCY",
                "The currency provided does not match the currency of the store credit account.",
                ["debitInput", "debitAmount", "currencyCode"],
            )
        self.settle(account)
        if amount > account.balance:
            raise StoreCreditError(
                "INSUFFICIENT_FUNDS",
                "The store credit account does not have sufficient funds to satisfy the request",
                ["debitInput", "debitAmount", "amount"],
            )
        allocations: list[tuple[StoreCreditTransaction, Decimal]] = []
        left = amount
        for credit in sorted(
            (tx for tx in account.credits() if tx.remaining > ZERO), key=_spending_order
        ):
            take = min(left, credit.remaining)
            credit.remaining -= take
            allocations.append((credit, take))
            left -= take
            if left == ZERO:
                break
        return self._post(account, "debit", -amount, event, origin=origin, allocations=allocations)

    def revert_debit(
        self,
        debit: StoreCreditTransaction,
        amount: Decimal,
        event: str,
        origin: OrderTransaction | None,
    ) -> StoreCreditTransaction:
        """Give back (part of) a debit to the credits it spent, most recently spent first.

        A credit that has expired meanwhile expires again at once (settle), so returned money
        never outlives its credit's expiry.
        """
        if amount <= ZERO or amount > debit.unreverted:
            raise ValueError(f"cannot revert {amount} of a debit with {debit.unreverted} left")
        account = debit.account
        self.settle(account)
        left = amount
        for index in range(len(debit.allocations) - 1, -1, -1):
            credit, taken = debit.allocations[index]
            back = min(left, taken)
            credit.remaining += back
            debit.allocations[index] = (credit, taken - back)
            left -= back
            if left == ZERO:
                break
        debit.allocations = [(c, a) for c, a in debit.allocations if a > ZERO]
        revert = self._post(account, "debit_revert", amount, event, origin=origin, target=debit)
        self.settle(account)
        return revert

    def _open_account(self, owner: Customer, currency: str) -> Account:
        account = Account(self.next_id(), owner, currency, self.now())
        self.accounts[account.id] = account
        return account

    def _post(
        self,
        account: Account,
        kind: str,
        signed_amount: Decimal,
        event: str,
        *,
        created_at: datetime | None = None,
        **details: Any,
    ) -> StoreCreditTransaction:
        account.balance += signed_amount
        tx = StoreCreditTransaction(
            kind=kind,
            id=self.next_id(),
            account=account,
            amount=abs(signed_amount),
            balance_after=account.balance,
            created_at=created_at or self.now(),
            event=event,
            **details,
        )
        account.transactions.append(tx)
        return tx

    # ------------------------------------------------------------------ orders and refunds
    def place_order(
        self,
        order_id: int,
        customer_id: int,
        currency: str,
        store_credit: str,
        other: str = "0.00",
        other_gateway: str = "shopify_payments",
    ) -> dict[str, Any]:
        """An order paid with native store credit and/or another gateway; returns its payload.

        Raises StoreCreditError (INSUFFICIENT_FUNDS, ...) when the store credit cannot pay.
        """
        with self._lock:
            if order_id in self.orders:
                raise ValueError(f"order {order_id} already exists")
            customer = self.customer(customer_id)
            credit_part = parse_amount(store_credit, currency)
            other_part = parse_amount(other, currency)
            if credit_part < ZERO or other_part < ZERO or credit_part + other_part <= ZERO:
                raise ValueError("an order needs a positive total and no negative tender")
            account = self.account_for(customer, currency)
            if credit_part > ZERO and account is None:
                raise StoreCreditError("INSUFFICIENT_FUNDS", f"no {currency} store credit")
            now = self.now()
            order = Order(order_id, 1000 + len(self.orders) + 1, customer, currency, now, now)
            if credit_part > ZERO:
                assert account is not None
                sale = self._order_tx(order, "SALE", STORE_CREDIT_GATEWAY, credit_part)
                try:
                    order.store_credit_debit = self.apply_debit(
                        account, credit_part, currency, "ORDER_PAYMENT", origin=sale
                    )
                except StoreCreditError:
                    del self.order_transactions[sale.id]
                    raise
            if other_part > ZERO:
                self._order_tx(order, "SALE", other_gateway, other_part)
            self.orders[order_id] = order
            return self.order_payload(order_id)

    def cancel_order(
        self, order_id: int, refund: bool = True, *, refund_id: int | None = None
    ) -> dict[str, Any]:
        """Cancel; with ``refund`` every tender's unrefunded rest goes back in one Refund
        (store credit by DebitRevert, event ORDER_CANCELLATION). Returns the order payload."""
        with self._lock:
            order = self.order(order_id)
            if order.cancelled_at is not None:
                raise ValueError(f"order {order_id} is already cancelled")
            order.cancelled_at = self.now()
            order.cancel_reason = "customer"
            order.updated_at = order.cancelled_at
            if refund:
                record = self._new_refund(order, refund_id)
                for sale in order.sales():
                    rest = sale.amount - order.refunded_against(sale)
                    if rest > ZERO:
                        self._refund_tender(order, record, sale, rest, "ORDER_CANCELLATION")
                if not record.transactions:
                    del self.refunds[record.id]
                    order.refunds.remove(record)
            return self.order_payload(order_id)

    def refund(
        self,
        order_id: int,
        refund_id: int,
        *,
        to_store_credit: str = "0.00",
        store_credit_payment: str = "0.00",
        other: str = "0.00",
    ) -> dict[str, Any]:
        """A refund; returns its payload.

        ``to_store_credit``: part of the other tender refunded AS NEW store credit (a native
        credit, event ORDER_REFUND; a REFUND on the store-credit gateway without parent).
        ``store_credit_payment``: part of the store-credit payment given back (DebitRevert,
        event ORDER_REFUND; a REFUND whose parent is the store-credit SALE).
        ``other``: part of the other tender refunded to it (REFUND with that SALE as parent).
        """
        with self._lock:
            if refund_id in self.refunds:
                raise ValueError(f"refund {refund_id} already exists")
            order = self.order(order_id)
            to_credit = parse_amount(to_store_credit, order.currency)
            back = parse_amount(store_credit_payment, order.currency)
            to_other = parse_amount(other, order.currency)
            if min(to_credit, back, to_other) < ZERO or to_credit + back + to_other <= ZERO:
                raise ValueError("a refund needs a positive amount and no negative part")
            credit_sale = order.sale(STORE_CREDIT_GATEWAY)
            other_sale = next((s for s in order.sales() if s.gateway != STORE_CREDIT_GATEWAY), None)
            credit_left = (
                credit_sale.amount - order.refunded_against(credit_sale) if credit_sale else ZERO
            )
            if back > credit_left:
                raise ValueError(f"order {order_id} has less store-credit payment to give back")
            other_left = (
                other_sale.amount - order.refunded_against(other_sale) if other_sale else ZERO
            )
            if to_credit + to_other > other_left:
                raise ValueError(f"order {order_id} has less of its other tender to refund")
            record = self._new_refund(order, refund_id)
            if back > ZERO:
                assert credit_sale is not None
                self._refund_tender(order, record, credit_sale, back, "ORDER_REFUND")
            if to_other > ZERO:
                assert other_sale is not None
                self._refund_tender(order, record, other_sale, to_other, "ORDER_REFUND")
            if to_credit > ZERO:
                assert order.customer is not None
                tx = self._order_tx(order, "REFUND", STORE_CREDIT_GATEWAY, to_credit)
                tx.refund = record
                record.transactions.append(tx)
                self.apply_credit(
                    order.customer, None, to_credit, order.currency, None, "ORDER_REFUND", tx
                )
            order.updated_at = self.now()
            return self.refund_payload(refund_id)

    def order(self, order_id: int) -> Order:
        try:
            return self.orders[order_id]
        except KeyError:
            raise KeyError(f"no order {order_id} in {self.domain}") from None

    def _new_refund(self, order: Order, refund_id: int | None) -> Refund:
        record = Refund(refund_id or self.next_id(), order, self.now())
        if record.id in self.refunds:
            raise ValueError(f"refund {record.id} already exists")
        self.refunds[record.id] = record
        order.refunds.append(record)
        return record

    def _refund_tender(
        self, order: Order, record: Refund, sale: OrderTransaction, amount: Decimal, event: str
    ) -> None:
        tx = self._order_tx(order, "REFUND", sale.gateway, amount, parent=sale)
        tx.refund = record
        record.transactions.append(tx)
        if sale.gateway == STORE_CREDIT_GATEWAY:
            assert order.store_credit_debit is not None
            self.revert_debit(order.store_credit_debit, amount, event, origin=tx)

    def _order_tx(
        self,
        order: Order,
        kind: str,
        gateway: str,
        amount: Decimal,
        parent: OrderTransaction | None = None,
    ) -> OrderTransaction:
        tx = OrderTransaction(self.next_id(), order, kind, gateway, amount, self.now(), parent)
        order.transactions.append(tx)
        self.order_transactions[tx.id] = tx
        return tx

    # ------------------------------------------------------------------ REST payloads
    def order_payload(self, order_id: int) -> dict[str, Any]:
        """The order as REST webhooks (orders/create, paid, cancelled, updated) carry it."""
        with self._lock:
            order = self.order(order_id)
            cur = order.currency
            total = format_amount(order.total, cur)
            current = format_amount(order.total - order.refunded, cur)
            gateways = list(dict.fromkeys(tx.gateway for tx in order.sales()))
            return {
                "id": order.id,
                "admin_graphql_api_id": order.gid,
                "name": order.name,
                "order_number": order.number,
                "number": order.number - 1000,
                "email": order.customer.email if order.customer else None,
                "contact_email": order.customer.email if order.customer else None,
                "created_at": _rest_time(order.created_at),
                "updated_at": _rest_time(order.updated_at),
                "processed_at": _rest_time(order.created_at),
                "cancelled_at": _rest_time(order.cancelled_at),
                "cancel_reason": order.cancel_reason,
                "closed_at": None,
                "currency": cur,
                "presentment_currency": cur,
                "total_price": total,
                "subtotal_price": total,
                "current_total_price": current,
                "total_outstanding": format_amount(ZERO, cur),
                "total_discounts": format_amount(ZERO, cur),
                "total_tax": format_amount(ZERO, cur),
                "total_price_set": _price_set(total, cur),
                "current_total_price_set": _price_set(current, cur),
                "financial_status": order.financial_status,
                "fulfillment_status": None,
                "payment_gateway_names": gateways,
                "customer": _customer_payload(order.customer) if order.customer else None,
                "line_items": [],
                "discount_codes": [],
                "note": None,
                "note_attributes": [],
                "tags": "",
                "test": False,
                "refunds": [self._refund_body(r) for r in order.refunds],
            }

    def refund_payload(self, refund_id: int) -> dict[str, Any]:
        """The refunds/create webhook body."""
        with self._lock:
            try:
                return self._refund_body(self.refunds[refund_id])
            except KeyError:
                raise KeyError(f"no refund {refund_id} in {self.domain}") from None

    def _refund_body(self, record: Refund) -> dict[str, Any]:
        return {
            "id": record.id,
            "admin_graphql_api_id": record.gid,
            "order_id": record.order.id,
            "created_at": _rest_time(record.created_at),
            "processed_at": _rest_time(record.created_at),
            "note": None,
            "restock": False,
            "user_id": None,
            "refund_line_items": [],
            "refund_shipping_lines": [],
            "order_adjustments": [],
            "duties": [],
            "refund_duties": [],
            "transactions": [_transaction_payload(tx) for tx in record.transactions],
        }


def _spending_order(credit: StoreCreditTransaction) -> tuple[bool, datetime, int]:
    """Soonest expiry first, credits without expiry last, then oldest first."""
    return (credit.expires_at is None, credit.expires_at or credit.created_at, credit.id)


def _rest_time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def _price_set(amount: str, currency: str) -> dict[str, Any]:
    money = {"amount": amount, "currency_code": currency}
    return {"shop_money": money, "presentment_money": dict(money)}


def _customer_payload(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "admin_graphql_api_id": gid("Customer", customer.id),
        "email": customer.email,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "created_at": _rest_time(customer.created_at),
        "updated_at": _rest_time(customer.updated_at),
        "state": "enabled",
        "verified_email": True,
        "tags": "",
        "currency": None,
        "phone": None,
        "note": None,
        "tax_exempt": False,
    }


def _transaction_payload(tx: OrderTransaction) -> dict[str, Any]:
    return {
        "id": tx.id,
        "admin_graphql_api_id": tx.gid,
        "order_id": tx.order.id,
        "kind": tx.kind.lower(),
        "status": tx.status.lower(),
        "amount": format_amount(tx.amount, tx.order.currency),
        "currency": tx.order.currency,
        "gateway": tx.gateway,
        "parent_id": tx.parent.id if tx.parent else None,
        "created_at": _rest_time(tx.created_at),
        "processed_at": _rest_time(tx.created_at),
        "test": False,
        "source_name": "web",
        "message": None,
        "error_code": None,
        "authorization": None,
        "receipt": {},
    }
