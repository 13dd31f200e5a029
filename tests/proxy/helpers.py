"""Signing App Proxy queries the way Shopify does, written from its documentation (§4.3).

Deliberately independent of storefront/signature.py: the test signer is checked against
Shopify's published vectors (test_signature.py), and the app's verifier against the signer.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

from tests.conftest import API_SECRET

PATH_PREFIX = "/apps/credit"


def proxy_signature(pairs: list[tuple[str, str]], secret: str) -> str:
    """Hex HMAC-SHA256 over the sorted ``key=v1,v2`` strings of every pair but ``signature``."""
    joined: dict[str, list[str]] = {}
    for key, value in pairs:
        if key != "signature":
            joined.setdefault(key, []).append(value)
    message = "".join(sorted(f"{key}={','.join(values)}" for key, values in joined.items()))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def proxy_pairs(
    shop: str,
    customer: str | int = "",
    *,
    timestamp: int | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """The parameters Shopify's App Proxy adds (plus ``extra`` the storefront sent)."""
    return [
        *(extra or []),
        ("shop", shop),
        ("logged_in_customer_id", str(customer)),
        ("path_prefix", PATH_PREFIX),
        ("timestamp", str(int(time.time()) if timestamp is None else timestamp)),
    ]


def signed_query(pairs: list[tuple[str, str]], secret: str = API_SECRET) -> str:
    return urlencode([*pairs, ("signature", proxy_signature(pairs, secret))])


def balance_url(
    shop: str, customer: str | int = "", *, secret: str = API_SECRET, **kw: object
) -> str:
    pairs = proxy_pairs(shop, customer, **kw)  # type: ignore[arg-type]
    return "/proxy/balance?" + signed_query(pairs, secret)
