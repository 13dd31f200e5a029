"""A small subset of Shopify's search syntax, for the ``query:`` argument of connections.

Supported: ``field:value``, comparators ``field:>=value`` (``>``, ``<``, ``<=``, ``>=``),
quoted values, negation (``-field:value`` or ``NOT field:value``), implicit or explicit ``AND``,
and ``OR`` (binding looser than AND, as in Shopify). Terms on fields a connection does not
know are ignored, which is what Shopify does with filters it does not support.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_TERM = re.compile(r"^(?P<field>[a-z_]+):(?P<op><=|>=|<|>|=)?(?P<value>.*)$")

# A field's reader: the item's value for that field (None when it has none).
Readers = Mapping[str, Callable[[Any], Any]]
# Turns a filter's text value into a value comparable with what the reader returns.
Parsers = Mapping[str, Callable[[str], Any]]


@dataclass(frozen=True)
class Term:
    field: str
    op: str
    value: str
    negated: bool


def parse(query: str) -> list[list[Term]]:
    """OR-groups of AND-ed terms."""
    groups: list[list[Term]] = [[]]
    negate_next = False
    for token in shlex.split(query):
        if token == "OR":
            groups.append([])
            continue
        if token == "AND":
            continue
        if token == "NOT":
            negate_next = True
            continue
        negated = negate_next or token.startswith("-")
        negate_next = False
        match = _TERM.match(token.lstrip("-"))
        if match:
            groups[-1].append(
                Term(match["field"], match["op"] or "=", match["value"], negated=negated)
            )
    return [group for group in groups if group] or [[]]


def matcher(query: str | None, readers: Readers, parsers: Parsers) -> Callable[[Any], bool]:
    if not query:
        return lambda item: True
    groups = [[t for t in group if t.field in readers] for group in parse(query)]

    def matches(item: Any) -> bool:
        return any(all(_holds(t, item, readers, parsers) for t in group) for group in groups)

    return matches


def _holds(term: Term, item: Any, readers: Readers, parsers: Parsers) -> bool:
    actual = readers[term.field](item)
    try:
        wanted = parsers.get(term.field, str)(term.value)
    except ValueError:
        return term.negated  # a value that cannot be read matches nothing
    if actual is None:
        result = False
    elif term.op == "=":
        result = actual == wanted
    elif term.op == "<":
        result = actual < wanted
    elif term.op == "<=":
        result = actual <= wanted
    elif term.op == ">":
        result = actual > wanted
    else:
        result = actual >= wanted
    return result != term.negated
