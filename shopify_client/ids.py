"""Shopify global IDs: ``gid://shopify/<Kind>/<number>``.

We store numeric ids next to the shop and build GIDs only at the API boundary.
"""

from __future__ import annotations

import re

_GID = re.compile(r"gid://shopify/(?P<kind>[A-Za-z][A-Za-z0-9]*)/(?P<id>[0-9]+)(?:\?[^#\s]*)?")
_KIND = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def gid(kind: str, id_: int | str) -> str:
    """``gid("Customer", 42)`` → ``"gid://shopify/Customer/42"``; ``id_`` must be a positive
    integer (or its decimal string)."""
    if not _KIND.fullmatch(kind):
        raise ValueError(f"not a GID kind: {kind!r}")
    number = _positive_int(id_)
    return f"gid://shopify/{kind}/{number}"


def numeric_id(global_id: str, kind: str | None = None) -> int:
    """The number at the end of a GID; with ``kind``, the GID must be of that kind.

    A query string (some GIDs carry one) is ignored. Anything else raises ValueError.
    """
    match = _GID.fullmatch(global_id)
    if match is None:
        raise ValueError(f"not a Shopify GID: {global_id!r}")
    if kind is not None and match["kind"] != kind:
        raise ValueError(f"expected a {kind} GID, got {global_id!r}")
    return _positive_int(match["id"])


def gid_kind(global_id: str) -> str:
    """``"gid://shopify/Customer/42"`` → ``"Customer"``."""
    match = _GID.fullmatch(global_id)
    if match is None:
        raise ValueError(f"not a Shopify GID: {global_id!r}")
    return match["kind"]


def _positive_int(value: int | str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"not an id: {value!r}")
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit():
            raise ValueError(f"not an id: {value!r}")
        value = int(value)
    if value <= 0:
        raise ValueError(f"not an id: {value!r}")
    return value
