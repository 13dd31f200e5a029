"""The fake's GraphQL: documents parsed, validated and executed by graphql-core against Shopify's
real Admin schema, with resolvers over the FakeShop state, query cost and a leaky bucket.

Sources handed to graphql-core are dicts keyed by GraphQL field name; a value may be a callable,
called with the field's arguments (connections, lazily built neighbours). A field the fake does
not model is a dict key that is missing: asking for it is an error naming the field, never a
silent null. Abstract types (interfaces, unions) resolve through the dict's "__typename".
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLResolveInfo,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    execute,
    get_named_type,
    is_leaf_type,
    parse,
    validate,
)
from graphql.execution.values import get_argument_values

from tests.fake_shopify import search
from tests.fake_shopify.bucket import CostBucket
from tests.fake_shopify.money import MoneyError, money, parse_amount
from tests.fake_shopify.store import (
    Account,
    Customer,
    FakeShop,
    Order,
    OrderTransaction,
    Refund,
    StoreCreditError,
    StoreCreditTransaction,
    gid,
    utc,
)

MUTATION_COST = 10
SINGLE_QUERY_MAX_COST = 1000
_GID = re.compile(r"^gid://shopify/(?P<type>[A-Za-z]+)/(?P<id>\d+)(?:\?.*)?$")


# ---------------------------------------------------------------------- reading a request
@dataclass(frozen=True)
class Operation:
    """What a request asks for, read before validation (faults and records need it)."""

    source: str
    document: DocumentNode | None
    definition: OperationDefinitionNode | None
    name: str | None
    root_fields: tuple[str, ...]
    syntax_error: GraphQLError | None

    @property
    def is_mutation(self) -> bool:
        return self.definition is not None and self.definition.operation == OperationType.MUTATION


def read_operation(source: str, operation_name: str | None) -> Operation:
    try:
        document = parse(source)
    except GraphQLError as error:
        return Operation(source, None, None, operation_name, (), error)
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        chosen = next((o for o in operations if o.name and o.name.value == operation_name), None)
    else:
        chosen = operations[0] if len(operations) == 1 else None
    name = operation_name or (chosen.name.value if chosen and chosen.name else None)
    roots = tuple(
        s.name.value
        for s in (chosen.selection_set.selections if chosen else ())
        if isinstance(s, FieldNode) and not s.name.value.startswith("__")
    )
    return Operation(source, document, chosen, name, roots, None)


def validation_errors(schema: GraphQLSchema, operation: Operation) -> list[GraphQLError]:
    if operation.syntax_error is not None:
        return [operation.syntax_error]
    assert operation.document is not None
    return list(validate(schema, operation.document))


# ---------------------------------------------------------------------- cost
class CostEstimator:
    """Shopify's requested-cost rules, simplified: scalars and enums 0, objects 1, connections
    2 + first/last x the cost of one node, lists with ``first`` first x the element, every
    mutation root field 10."""

    def __init__(self, schema: GraphQLSchema, operation: Operation, variables: dict[str, Any]):
        assert operation.document is not None
        self.schema = schema
        self.operation = operation
        self.variables = variables
        self.fragments = {
            d.name.value: d
            for d in operation.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }

    def requested(self) -> int:
        definition = self.operation.definition
        if definition is None:
            return 0
        if definition.operation == OperationType.MUTATION:
            return MUTATION_COST * max(1, len(self.operation.root_fields))
        root = self.schema.query_type
        assert root is not None
        return self._selections(definition.selection_set, root)

    def _selections(self, selection_set: SelectionSetNode | None, parent: Any) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self._field(selection, parent)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                kind = self.schema.get_type(condition.name.value) if condition else parent
                total += self._selections(selection.selection_set, kind)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None:
                    kind = self.schema.get_type(fragment.type_condition.name.value)
                    total += self._selections(fragment.selection_set, kind)
        return total

    def _field(self, node: FieldNode, parent: Any) -> int:
        definition = getattr(parent, "fields", {}).get(node.name.value)
        if definition is None:
            return 0
        named = get_named_type(definition.type)
        if is_leaf_type(named):
            return 0
        try:
            args = get_argument_values(definition, node, self.variables)
        except GraphQLError:
            args = {}
        size = args.get("first") or args.get("last")
        inner = self._selections(node.selection_set, named)
        if named.name.endswith("Connection"):
            return 2 + (size or 0) * inner
        if _is_list(definition.type):
            return (size or 1) * (1 + inner)
        return 1 + inner


def _is_list(kind: Any) -> bool:
    if isinstance(kind, GraphQLNonNull):
        kind = kind.of_type
    return isinstance(kind, GraphQLList)


def cost_extension(requested: int, actual: int | None, bucket: CostBucket) -> dict[str, Any]:
    return {
        "cost": {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": bucket.status(),
        }
    }


# ---------------------------------------------------------------------- execution
def run(
    schema: GraphQLSchema,
    shop: FakeShop,
    operation: Operation,
    variables: dict[str, Any] | None,
    installation_id: int,
) -> dict[str, Any]:
    """Execute a validated operation; the result's ``data``/``errors`` as Shopify answers."""
    assert operation.document is not None
    graph = Graph(shop, installation_id)
    result = execute(
        schema,
        operation.document,
        root_value=graph.root(),
        variable_values=variables,
        operation_name=operation.name,
        field_resolver=_resolve_field,
        type_resolver=_resolve_type,
    )
    assert not hasattr(result, "__await__")
    body: dict[str, Any] = {}
    if result.errors:  # type: ignore[union-attr]
        body["errors"] = [error.formatted for error in result.errors]  # type: ignore[union-attr]
    body["data"] = result.data  # type: ignore[union-attr]
    return body


def _resolve_field(source: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
    name = info.field_name
    if not isinstance(source, dict) or name not in source:
        raise GraphQLError(f"The fake Shopify does not model {info.parent_type.name}.{name}")
    value = source[name]
    return value(**args) if callable(value) else value


def _resolve_type(value: Any, info: GraphQLResolveInfo, abstract_type: Any) -> str:
    return value["__typename"]


def _iso(moment: datetime | None) -> str | None:
    """Shopify's DateTime: UTC, seconds, "Z"."""
    return None if moment is None else utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return utc(datetime.fromisoformat(str(value)))
    except ValueError:
        raise GraphQLError(f"Invalid DateTime '{value}'") from None


def parse_gid(value: Any) -> tuple[str, int]:
    match = _GID.match(str(value))
    if match is None:
        raise GraphQLError(f"Invalid global id '{value}'")
    return match["type"], int(match["id"])


def _cursor(key: int) -> str:
    return base64.urlsafe_b64encode(f"fake:{key}".encode()).decode()


def _cursor_key(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        prefix, _, key = text.partition(":")
        if prefix != "fake":
            raise ValueError(text)
        return int(key)
    except (ValueError, UnicodeDecodeError):
        raise GraphQLError(f"Invalid cursor '{cursor}'") from None


def connection(
    items: Sequence[Any], args: dict[str, Any], key: Callable[[Any], int], view: Callable
) -> dict[str, Any]:
    """A Relay connection over ``items`` (already filtered and sorted), as Shopify pages."""
    first, last = args.get("first"), args.get("last")
    if first is None and last is None:
        raise GraphQLError("you must provide one of first or last")
    if (first is not None and first < 0) or (last is not None and last < 0):
        raise GraphQLError("first and last must be non-negative")
    ordered = list(reversed(items)) if args.get("reverse") else list(items)
    keys = [key(item) for item in ordered]

    def position(cursor: str) -> int:
        wanted = _cursor_key(cursor)
        if wanted not in keys:
            raise GraphQLError(f"Invalid cursor '{cursor}'")
        return keys.index(wanted)

    start = position(args["after"]) + 1 if args.get("after") else 0
    end = position(args["before"]) if args.get("before") else len(ordered)
    indices = list(range(start, max(start, end)))
    if first is not None:
        indices = indices[:first]
    if last is not None:
        indices = indices[-last:] if last else []
    edges = [{"cursor": _cursor(keys[i]), "node": view(ordered[i])} for i in indices]
    return {
        "edges": edges,
        "nodes": [edge["node"] for edge in edges],
        "pageInfo": {
            "hasNextPage": (indices[-1] if indices else end - 1) < len(ordered) - 1,
            "hasPreviousPage": (indices[0] if indices else start) > 0,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


def _truncate(items: Iterable[Any], first: int | None) -> list[Any]:
    items = list(items)
    return items if first is None else items[:first]


def _money_bag(amount: Decimal, currency: str) -> dict[str, Any]:
    return {"shopMoney": money(amount, currency), "presentmentMoney": money(amount, currency)}


class Graph:
    """Dict views of one shop's state, built lazily as the query walks them."""

    def __init__(self, shop: FakeShop, installation_id: int) -> None:
        self.shop = shop
        self.installation_id = installation_id

    def root(self) -> dict[str, Any]:
        return {
            "shop": self.shop_view,
            "currentAppInstallation": self.installation_view,
            "customer": lambda id: self._lookup(id, self._customer, "Customer"),
            "storeCreditAccount": lambda id: self._lookup(id, self._account, "StoreCreditAccount"),
            "order": lambda id: self._lookup(id, self._order, "Order"),
            "node": lambda id: self.node(id),
            "nodes": lambda ids: [self.node(one) for one in ids],
            "storeCreditAccountCredit": self.credit,
            "storeCreditAccountDebit": self.debit,
        }

    # ------------------------------------------------------------------ lookups
    def _lookup(self, raw: Any, find: Callable[[int], Any], *types: str) -> Any:
        kind, number = parse_gid(raw)
        return find(number) if kind in types else None

    def _customer(self, number: int) -> dict[str, Any] | None:
        customer = self.shop.customers.get(number)
        return self.customer(customer) if customer else None

    def _account(self, number: int) -> dict[str, Any] | None:
        account = self.shop.accounts.get(number)
        return self.account(account) if account else None

    def _order(self, number: int) -> dict[str, Any] | None:
        order = self.shop.orders.get(number)
        return self.order(order) if order else None

    def node(self, raw: Any) -> dict[str, Any] | None:
        kind, number = parse_gid(raw)
        if kind == "Customer":
            return self._customer(number)
        if kind == "StoreCreditAccount":
            return self._account(number)
        if kind == "Order":
            return self._order(number)
        if kind == "OrderTransaction":
            tx = self.shop.order_transactions.get(number)
            return self.order_transaction(tx) if tx else None
        if kind == "Refund":
            refund = self.shop.refunds.get(number)
            return self.refund(refund) if refund else None
        if kind == "Shop":
            return self.shop_view() if number == self.shop.id else None
        if kind == "AppInstallation":
            return self.installation_view() if number == self.installation_id else None
        for account in self.shop.accounts.values():
            for tx in self.shop.settle(account).transactions:
                if tx.id == number and tx.typename == kind and tx.gid is not None:
                    return self.transaction(tx)
        return None

    # ------------------------------------------------------------------ views
    def shop_view(self) -> dict[str, Any]:
        shop = self.shop
        return {
            "__typename": "Shop",
            "id": shop.gid,
            "name": shop.name,
            "email": f"owner@{shop.domain}",
            "currencyCode": shop.currency,
            "ianaTimezone": shop.iana_timezone,
            "myshopifyDomain": shop.domain,
            "createdAt": _iso(shop.created_at),
            "updatedAt": _iso(shop.created_at),
        }

    def installation_view(self) -> dict[str, Any]:
        return {
            "__typename": "AppInstallation",
            "id": gid("AppInstallation", self.installation_id),
            "accessScopes": [
                {"__typename": "AccessScope", "handle": handle} for handle in self.shop.scopes
            ],
        }

    def customer(self, customer: Customer) -> dict[str, Any]:
        names = " ".join(n for n in (customer.first_name, customer.last_name) if n)
        return {
            "__typename": "Customer",
            "id": gid("Customer", customer.id),
            "legacyResourceId": str(customer.id),
            "email": customer.email,
            "firstName": customer.first_name,
            "lastName": customer.last_name,
            "displayName": names or customer.email or "",
            "defaultEmailAddress": (
                {"emailAddress": customer.email, "validFormat": "@" in customer.email}
                if customer.email
                else None
            ),
            "createdAt": _iso(customer.created_at),
            "updatedAt": _iso(customer.updated_at),
            "storeCreditAccounts": lambda **args: self._accounts_of(customer, args),
        }

    def _accounts_of(self, customer: Customer, args: dict[str, Any]) -> dict[str, Any]:
        matches = search.matcher(
            args.get("query"),
            {"currency_code": lambda a: a.currency, "id": lambda a: a.id},
            {"currency_code": str.upper, "id": _numeric_id},
        )
        accounts = [a for a in self.shop.accounts_of(customer) if matches(a)]
        return connection(accounts, args, lambda a: a.id, self.account)

    def account(self, account: Account) -> dict[str, Any]:
        self.shop.settle(account)
        return {
            "__typename": "StoreCreditAccount",
            "id": account.gid,
            "balance": lambda: money(self.shop.settle(account).balance, account.currency),
            "owner": lambda: self.customer(account.owner),
            "transactions": lambda **args: self._transactions(account, args),
        }

    def _transactions(self, account: Account, args: dict[str, Any]) -> dict[str, Any]:
        matches = search.matcher(
            args.get("query"),
            {
                "type": lambda tx: tx.kind,
                "id": lambda tx: tx.id,
                "expires_at": lambda tx: tx.expires_at,
            },
            {"type": str.lower, "id": _numeric_id, "expires_at": _search_time},
        )
        txs = [tx for tx in self.shop.settle(account).transactions if matches(tx)]
        if args.get("sortKey") == "EXPIRES_AT":
            txs.sort(key=lambda tx: (tx.expires_at is None, tx.expires_at or tx.created_at, tx.id))
        else:
            txs.sort(key=lambda tx: (tx.created_at, tx.id))
        return connection(txs, args, lambda tx: tx.id, self.transaction)

    def transaction(self, tx: StoreCreditTransaction) -> dict[str, Any]:
        currency = tx.account.currency
        view: dict[str, Any] = {
            "__typename": tx.typename,
            "account": lambda: self.account(tx.account),
            "amount": money(tx.signed_amount, currency),
            "balanceAfterTransaction": money(tx.balance_after, currency),
            "createdAt": _iso(tx.created_at),
            "event": tx.event,
            "origin": (lambda: self.order_transaction(tx.origin)) if tx.origin else None,
        }
        if tx.gid is not None:
            view["id"] = tx.gid
        if tx.kind == "credit":
            view["expiresAt"] = _iso(tx.expires_at)
            view["remainingAmount"] = money(tx.shown_remaining, currency)
        target = tx.target
        if tx.kind == "debit_revert" and target is not None:
            view["debitTransaction"] = lambda: self.transaction(target)
        if tx.kind == "expiration" and target is not None:
            view["creditTransaction"] = lambda: self.transaction(target)
        return view

    def order(self, order: Order) -> dict[str, Any]:
        currency = order.currency
        return {
            "__typename": "Order",
            "id": order.gid,
            "legacyResourceId": str(order.id),
            "name": order.name,
            "email": order.customer.email if order.customer else None,
            "createdAt": _iso(order.created_at),
            "updatedAt": _iso(order.updated_at),
            "processedAt": _iso(order.created_at),
            "cancelledAt": _iso(order.cancelled_at),
            "cancelReason": order.cancel_reason.upper() if order.cancel_reason else None,
            "currencyCode": currency,
            "presentmentCurrencyCode": currency,
            "customer": (lambda: self.customer(order.customer)) if order.customer else None,
            "displayFinancialStatus": order.financial_status.upper(),
            "paymentGatewayNames": list(dict.fromkeys(tx.gateway for tx in order.sales())),
            "test": False,
            "totalPriceSet": _money_bag(order.total, currency),
            "currentTotalPriceSet": _money_bag(order.total - order.refunded, currency),
            "totalRefundedSet": _money_bag(order.refunded, currency),
            "transactions": lambda **args: self._order_transactions(order, args),
            "refunds": lambda **args: [
                self.refund(r) for r in _truncate(order.refunds, args.get("first"))
            ],
        }

    def _order_transactions(self, order: Order, args: dict[str, Any]) -> list[dict[str, Any]]:
        # Every modelled transaction is a settled SALE or REFUND: none can still be captured
        # or resolved by hand.
        if args.get("capturable") or args.get("manuallyResolvable"):
            return []
        return [
            self.order_transaction(tx) for tx in _truncate(order.transactions, args.get("first"))
        ]

    def order_transaction(self, tx: OrderTransaction) -> dict[str, Any]:
        parent = tx.parent
        return {
            "__typename": "OrderTransaction",
            "id": tx.gid,
            "kind": tx.kind,
            "status": tx.status,
            "gateway": tx.gateway,
            "test": False,
            "errorCode": None,
            "amountSet": _money_bag(tx.amount, tx.order.currency),
            "createdAt": _iso(tx.created_at),
            "processedAt": _iso(tx.created_at),
            "parentTransaction": (lambda: self.order_transaction(parent)) if parent else None,
            "order": lambda: self.order(tx.order),
        }

    def refund(self, refund: Refund) -> dict[str, Any]:
        return {
            "__typename": "Refund",
            "id": refund.gid,
            "legacyResourceId": str(refund.id),
            "createdAt": _iso(refund.created_at),
            "processedAt": _iso(refund.created_at),
            "updatedAt": _iso(refund.created_at),
            "order": lambda: self.order(refund.order),
            "totalRefundedSet": _money_bag(refund.total, refund.order.currency),
            "transactions": lambda **args: connection(
                refund.transactions, args, lambda tx: tx.id, self.order_transaction
            ),
        }

    # ------------------------------------------------------------------ mutations
    def credit(self, id: str, creditInput: dict[str, Any]) -> dict[str, Any]:
        try:
            owner, account = self._target(id, owner_error="OWNER_NOT_FOUND")
            amount_input = creditInput["creditAmount"]
            currency = amount_input["currencyCode"]
            tx = self.shop.apply_credit(
                owner,
                account,
                _amount(amount_input["amount"], currency),
                currency,
                _parse_datetime(creditInput.get("expiresAt")),
            )
        except StoreCreditError as error:
            return {"storeCreditAccountTransaction": None, "userErrors": [_user_error(error)]}
        return {"storeCreditAccountTransaction": self.transaction(tx), "userErrors": []}

    def debit(self, id: str, debitInput: dict[str, Any]) -> dict[str, Any]:
        try:
            amount_input = debitInput["debitAmount"]
            currency = amount_input["currencyCode"]
            owner, account = self._target(id, owner_error="ACCOUNT_NOT_FOUND")
            if account is None:
                assert owner is not None
                account = self.shop.account_for(owner, currency)
            if account is None:
                raise StoreCreditError(
                    "ACCOUNT_NOT_FOUND", "Store credit account does not exist", ["id"]
                )
            tx = self.shop.apply_debit(account, _amount(amount_input["amount"], currency), currency)
        except StoreCreditError as error:
            return {"storeCreditAccountTransaction": None, "userErrors": [_user_error(error)]}
        return {"storeCreditAccountTransaction": self.transaction(tx), "userErrors": []}

    def _target(self, raw: str, owner_error: str) -> tuple[Customer | None, Account | None]:
        """The ``id`` argument: a StoreCreditAccount, or an owner (Customer) GID."""
        kind, number = parse_gid(raw)
        if kind == "StoreCreditAccount":
            account = self.shop.accounts.get(number)
            if account is None:
                raise StoreCreditError(
                    "ACCOUNT_NOT_FOUND", "Store credit account does not exist", ["id"]
                )
            return None, account
        customer = self.shop.customers.get(number) if kind == "Customer" else None
        if customer is None:
            raise StoreCreditError(owner_error, "Owner does not exist", ["id"])
        return customer, None


def _amount(value: Any, currency: str) -> Decimal:
    try:
        return parse_amount(value, currency)
    except MoneyError as error:
        raise GraphQLError(str(error)) from None


def _user_error(error: StoreCreditError) -> dict[str, Any]:
    return {"code": error.code, "field": error.field, "message": error.message}


def _numeric_id(value: str) -> int:
    return parse_gid(value)[1] if value.startswith("gid://") else int(value)


def _search_time(value: str) -> datetime:
    return utc(datetime.fromisoformat(value))
