"""How Shopify signs what it sends to apps (shopify-platform.md §1.3.1, §2, §3.2, §4.3).

Each function builds the signed thing from scratch, the way Shopify's documentation describes
it, so tests can check them against the published vectors (§10) and the app's verifiers against
these.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import jwt


def webhook_hmac(secret: str, body: bytes) -> str:
    """``X-Shopify-Hmac-Sha256``: base64 of HMAC-SHA256 over the raw body bytes."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def proxy_signature(secret: str, params: Iterable[tuple[str, str]]) -> str:
    """App Proxy ``signature``: every parameter but ``signature`` as ``key=value`` (a repeated
    key's values joined by "," in received order), sorted, concatenated without separator,
    hex HMAC-SHA256."""
    values: dict[str, list[str]] = {}
    for key, value in params:
        if key != "signature":
            values.setdefault(key, []).append(value)
    message = "".join(sorted(f"{key}={','.join(vals)}" for key, vals in values.items()))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def admin_hmac(secret: str, params: Iterable[tuple[str, str]]) -> str:
    """The ``hmac`` of admin redirects (install, OAuth callback): every parameter but ``hmac``
    and ``signature`` as ``key=value`` ("%" and "&" escaped in both, "=" in keys), sorted,
    joined with "&", hex HMAC-SHA256. An array parameter ``ids[]=2&ids[]=1`` is signed as
    ``ids=["2", "1"]``."""

    def escape(text: str, is_key: bool) -> str:
        text = text.replace("%", "%25").replace("&", "%26")
        return text.replace("=", "%3D") if is_key else text

    values: dict[str, str] = {}
    arrays: dict[str, list[str]] = {}
    for key, value in params:
        if key in ("hmac", "signature"):
            continue
        if key.endswith("[]"):
            arrays.setdefault(key[:-2], []).append(value)
        else:
            values[key] = value
    for key, items in arrays.items():
        values[key] = "[" + ", ".join(f'"{item}"' for item in items) + "]"
    message = "&".join(
        sorted(f"{escape(key, True)}={escape(value, False)}" for key, value in values.items())
    )
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def signed_query(params: list[tuple[str, str]], name: str, signature: str) -> str:
    return urlencode([*params, (name, signature)])


def session_token(
    shop_domain: str, api_key: str, api_secret: str, sub: str, **claims: object
) -> str:
    """An App Bridge session token (id_token): HS256 JWT, 60 s life."""
    now = datetime.now(UTC)
    payload: dict[str, object] = {
        "iss": f"https://{shop_domain}/admin",
        "dest": f"https://{shop_domain}",
        "aud": api_key,
        "sub": sub,
        "exp": int((now + timedelta(seconds=60)).timestamp()),
        "nbf": int(now.timestamp()),
        "iat": int(now.timestamp()),
        "jti": str(uuid.uuid4()),
        "sid": uuid.uuid4().hex,
    }
    payload.update(claims)
    return jwt.encode(payload, api_secret, algorithm="HS256")
