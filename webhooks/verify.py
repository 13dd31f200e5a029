"""Webhook signatures: base64 HMAC-SHA256 of the raw body, with the app secret.

During a secret rotation Shopify may sign with either secret, so both are tried. The
comparison is constant-time, and only the raw bytes as received are ever hashed: a body
parsed and re-serialised would not match.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def sign(body: bytes, secret: str) -> str:
    """The ``X-Shopify-Hmac-Sha256`` value Shopify sends for ``body``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def is_authentic(body: bytes, header: str | None, secrets: Iterable[str | None]) -> bool:
    """True if ``header`` is the signature of ``body`` under any configured secret."""
    if not header:
        return False
    given = header.strip().encode()
    return any(
        hmac.compare_digest(sign(body, secret).encode(), given) for secret in secrets if secret
    )
