"""Every GraphQL document we send is valid for Shopify's real Admin schema and cheap enough.

The schema is the introspection JSON that scripts/fetch-admin-schema.sh takes from
@shopify/dev-mcp for SHOPIFY_API_VERSION (DEFAULT_API_VERSION here).
"""

from __future__ import annotations

from typing import Any

import pytest
from graphql import (
    FieldNode,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    is_leaf_type,
    parse,
)

from config import DEFAULT_API_VERSION
from shopify_client import documents
from shopify_client.documents import Document
from tests.fake_shopify import load_admin_schema, validate_document

# The page size callers may pass as $first (documents.py states the same bound).
MAX_PAGE = 50
# Shopify refuses a single query requesting more than 1000 points; "well under" that.
COST_BUDGET = 600

DOCUMENTS = {name: value for name, value in vars(documents).items() if isinstance(value, Document)}


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return load_admin_schema(DEFAULT_API_VERSION)


def test_the_module_lists_every_document_once():
    assert set(DOCUMENTS.values()) == set(documents.ALL)
    assert len(documents.ALL) == len(set(documents.ALL))
    operations = [document.operation for document in documents.ALL]
    assert len(operations) == len(set(operations)), "operation names identify calls in usage"


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_document_validates_against_the_admin_schema(schema, name):
    assert validate_document(schema, DOCUMENTS[name].text) == []


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_document_is_one_named_operation_of_its_kind(name):
    document = DOCUMENTS[name]
    definitions = parse(document.text).definitions
    assert len(definitions) == 1
    (operation,) = definitions
    assert isinstance(operation, OperationDefinitionNode)
    assert operation.name is not None
    assert operation.name.value == document.operation
    assert operation.operation.value == document.kind


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_document_requests_well_under_the_single_query_limit(schema, name):
    assert requested_cost(schema, DOCUMENTS[name]) <= COST_BUDGET


def test_the_estimate_follows_shopifys_rules(schema):
    """The estimator itself: object 1, scalar 0, connection 2 + first × node, mutation 10."""
    assert requested_cost(schema, documents.SHOP) == 1
    assert requested_cost(schema, documents.STORE_CREDIT_TRANSACTIONS) == 1 + 1 + 2 + 50 * 5
    assert requested_cost(schema, documents.ORDER_STORE_CREDIT) == (
        1 + 1 + 25 * 4 + 5 * (1 + 2 + 5 * 4)
    )
    assert requested_cost(schema, documents.STORE_CREDIT_DEBIT) == 10 + 1 + 1 + 1 + 1 + 1


def test_a_document_must_name_its_operation():
    with pytest.raises(ValueError, match="query Name"):
        Document("{ shop { id } }")
    with pytest.raises(ValueError, match="query Name"):
        Document("query { shop { id } }")
    assert Document("mutation Go($id: ID!) { x }").kind == "mutation"


# --- a requested-cost estimate by Shopify's published defaults ------------------------------
# (https://shopify.dev/docs/api/usage/limits: scalar and enum 0, object 1, connection sized by
# `first`, mutation 10; interfaces cost their most expensive member.) It over-counts
# slightly (pageInfo is charged per node), which is the safe side for a budget.


def requested_cost(schema: GraphQLSchema, document: Document) -> int:
    (operation,) = parse(document.text).definitions
    assert isinstance(operation, OperationDefinitionNode)
    root = schema.mutation_type if document.kind == "mutation" else schema.query_type
    assert root is not None
    per_field = 10 if document.kind == "mutation" else None
    total = 0
    for selection in operation.selection_set.selections:
        assert isinstance(selection, FieldNode)
        cost = _field_cost(root, selection)
        total += cost if per_field is None else per_field + cost - 1
    return total


def _selection_cost(parent: GraphQLNamedType, selection_set: SelectionSetNode | None) -> int:
    if selection_set is None:
        return 0
    common = 0
    by_type: dict[str, int] = {}
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            common += _field_cost(parent, selection)
        else:
            assert isinstance(selection, InlineFragmentNode)
            assert selection.type_condition
            name = selection.type_condition.name.value
            member = _SCHEMA_TYPES[name]
            by_type[name] = by_type.get(name, 0) + _selection_cost(member, selection.selection_set)
    return common + max(by_type.values(), default=0)


def _field_cost(parent: GraphQLNamedType, node: FieldNode) -> int:
    if node.name.value == "__typename":
        return 0
    assert isinstance(parent, GraphQLObjectType | GraphQLInterfaceType)
    definition = parent.fields[node.name.value]
    named = get_named_type(definition.type)
    if is_leaf_type(named):
        return 0
    first = _first(node)
    if named.name.endswith("Connection"):
        assert first is not None, f"{node.name.value}: a connection needs first"
        return 2 + first * _node_cost(named, node.selection_set)
    inner = _selection_cost(named, node.selection_set)
    if _is_list(definition.type):
        return (first if first is not None else 1) * (1 + inner)
    return 1 + inner


def _node_cost(connection: GraphQLNamedType, selection_set: SelectionSetNode | None) -> int:
    """One node of a connection: 1 + its fields (the nodes/edges wrappers and pageInfo are
    covered by the connection's own 2)."""
    assert isinstance(connection, GraphQLObjectType)
    assert selection_set is not None
    for selection in selection_set.selections:
        assert isinstance(selection, FieldNode)
        if selection.name.value == "nodes":
            node_type = get_named_type(connection.fields["nodes"].type)
            return 1 + _selection_cost(node_type, selection.selection_set)
        if selection.name.value == "edges":
            raise AssertionError("use nodes { … }: shorter, and the same cost")
    return 0


def _first(node: FieldNode) -> int | None:
    for argument in node.arguments:
        if argument.name.value == "first":
            if isinstance(argument.value, IntValueNode):
                return int(argument.value.value)
            if isinstance(argument.value, VariableNode):
                return MAX_PAGE
    return None


def _is_list(type_: Any) -> bool:
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    return isinstance(type_, GraphQLList)


_SCHEMA_TYPES: dict[str, GraphQLNamedType] = {}


@pytest.fixture(autouse=True)
def _types(schema):
    _SCHEMA_TYPES.update(schema.type_map)
