"""The HMAC Shopify puts on admin query strings (install request, OAuth callback, app load).

Per Shopify's docs and its Python library: every parameter but ``hmac`` (and ``signature``),
decoded, written ``key=value`` with ``%``→``%25`` and ``&``→``%26`` in keys and values and
``=``→``%3D`` in keys; ``ids[]=1&ids[]=2`` becomes ``ids=["1", "2"]``; sorted; joined with
``&``; hex HMAC-SHA256 with the app secret (or the previous one), compared in constant time.
The timestamp must be within 90 s of now, as Shopify's Node library requires. A security
parameter given twice is refused outright: which copy would we believe?
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

MAX_CLOCK_SKEW_SECONDS = 90
SINGLE_VALUED = ("hmac", "shop", "timestamp", "state", "code", "host", "id_token")


class QueryRejected(Exception):  # noqa: N818 - names the outcome the caller maps to a status
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class SignedQuery:
    params: dict[str, str]  # single-valued parameters (the verified ones)

    def get(self, name: str) -> str | None:
        return self.params.get(name)


def parse(raw_query: str) -> list[tuple[str, str]]:
    return parse_qsl(raw_query, keep_blank_values=True)


def message(pairs: Iterable[tuple[str, str]]) -> str:
    """The string Shopify signs, from the decoded query pairs."""
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        if key in ("hmac", "signature"):
            continue
        grouped.setdefault(key, []).append(value)
    parts = []
    for key, values in grouped.items():
        if key.endswith("[]"):
            value = json.dumps(values, separators=(", ", ":"))
            key = key[:-2]
        else:
            value = values[-1]
        parts.append(f"{_escape(key, is_key=True)}={_escape(value, is_key=False)}")
    return "&".join(sorted(parts))


def sign(pairs: Iterable[tuple[str, str]], secret: str) -> str:
    return hmac.new(secret.encode(), message(pairs).encode(), hashlib.sha256).hexdigest()


def verify(raw_query: str, secrets: Iterable[str | None], now: float) -> SignedQuery:
    """The verified query; raises QueryRejected (400 malformed, 401 forged or stale)."""
    pairs = parse(raw_query)
    counts: dict[str, int] = {}
    for key, _ in pairs:
        counts[key] = counts.get(key, 0) + 1
    repeated = [name for name in SINGLE_VALUED if counts.get(name, 0) > 1]
    if repeated:
        raise QueryRejected(400, "repeated_parameter", f"{repeated[0]} appears more than once.")
    params = {key: value for key, value in pairs if not key.endswith("[]")}
    given = params.get("hmac", "")
    if not given:
        raise QueryRejected(401, "invalid_hmac", "The request carries no hmac.")
    if not any(
        hmac.compare_digest(sign(pairs, secret).encode(), given.lower().encode())
        for secret in secrets
        if secret
    ):
        raise QueryRejected(401, "invalid_hmac", "The request's hmac does not match.")
    timestamp = params.get("timestamp", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        raise QueryRejected(401, "stale_request", "The request's timestamp is not current.")
    return SignedQuery(params)


def _escape(text: str, *, is_key: bool) -> str:
    text = text.replace("%", "%25").replace("&", "%26")
    return text.replace("=", "%3D") if is_key else text
