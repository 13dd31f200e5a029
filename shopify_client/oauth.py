"""Access tokens from Shopify's token endpoint: token exchange, refresh, authorization code.

ShopifyAPI 12.7.0 has none of the first two and drops the refresh fields from the third
(``Session.request_token`` keeps only ``access_token`` and ``scope``), so these are plain
HTTPS requests to ``{origin}/admin/oauth/access_token``. Offline tokens are always asked for
as **expiring** (``expiring: 1``): mandatory for public apps created since 2026-04-01, and the
only kind Shopify accepts from 2027-01-01 (reference §1.6).

Retries: 429 (honouring Retry-After), 5xx and network failures, up to ``max_attempts``.
Repeating a refresh with the same refresh token is safe (Shopify answers the same pair within
a short window); a repeated token exchange merely issues the token again; an authorization
code is single-use, so a repeat after a lost answer is refused (InvalidGrant), never doubled.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from shopify_client import _http
from shopify_client.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidSubjectToken,
    OAuthError,
    TokenEndpointUnavailable,
    TokenRequestRejected,
)
from shopify_client.shops import PRODUCTION_ORIGIN_TEMPLATE, shop_origin

log = logging.getLogger(__name__)

# Grant and token-type names from RFC 8693 and Shopify, not secrets.
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105
OFFLINE_ACCESS_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:offline-access-token"  # noqa: S105
MAX_RETRY_AFTER_SECONDS = 30.0

_ERRORS: dict[str, type[OAuthError]] = {
    "invalid_subject_token": InvalidSubjectToken,
    "invalid_grant": InvalidGrant,
    "invalid_client": InvalidClient,
}


@dataclass(frozen=True)
class TokenSet:
    """What the token endpoint granted; times are absolute (UTC), from the ``now`` given.

    ``expires_at`` and the refresh fields are None for a non-expiring token. Tokens are left
    out of ``repr`` so that logging a TokenSet cannot leak them.
    """

    access_token: str = field(repr=False)
    scope: str
    expires_at: datetime | None
    refresh_token: str | None = field(repr=False)
    refresh_token_expires_at: datetime | None

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(part.strip() for part in self.scope.split(",") if part.strip())


def exchange_session_token(
    shop: str,
    id_token: str,
    *,
    api_key: str,
    api_secret: str,
    origin_template: str = PRODUCTION_ORIGIN_TEMPLATE,
    timeout: float = 10.0,
    now: datetime | None = None,
    max_attempts: int = 3,
    sleep: Callable[[float], None] = time.sleep,
) -> TokenSet:
    """Token exchange: an App Bridge session token (id_token) → an expiring offline token.

    Raises InvalidSubjectToken (the session token is bad or stale: get a fresh one),
    InvalidClient, TokenRequestRejected, TokenEndpointUnavailable.
    """
    fields = {
        "client_id": api_key,
        "client_secret": api_secret,
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": id_token,
        "subject_token_type": ID_TOKEN_TYPE,
        "requested_token_type": OFFLINE_ACCESS_TOKEN_TYPE,
        "expiring": 1,
    }
    return _request_token(shop, fields, origin_template, timeout, now, max_attempts, sleep)


def refresh_access_token(
    shop: str,
    refresh_token: str,
    *,
    api_key: str,
    api_secret: str,
    origin_template: str = PRODUCTION_ORIGIN_TEMPLATE,
    timeout: float = 10.0,
    now: datetime | None = None,
    max_attempts: int = 3,
    sleep: Callable[[float], None] = time.sleep,
) -> TokenSet:
    """A new access token **and a new refresh token** (the old one is spent: store both
    atomically). Raises InvalidGrant (refresh token invalid, expired or revoked: the merchant
    must open the app again), InvalidClient, TokenRequestRejected, TokenEndpointUnavailable."""
    fields = {
        "client_id": api_key,
        "client_secret": api_secret,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
    }
    return _request_token(shop, fields, origin_template, timeout, now, max_attempts, sleep)


def exchange_authorization_code(
    shop: str,
    code: str,
    *,
    api_key: str,
    api_secret: str,
    origin_template: str = PRODUCTION_ORIGIN_TEMPLATE,
    timeout: float = 10.0,
    now: datetime | None = None,
    max_attempts: int = 3,
    sleep: Callable[[float], None] = time.sleep,
) -> TokenSet:
    """Authorization-code grant (non-embedded install), asking for an expiring offline token.

    The callback's HMAC, state and timestamp must be checked before calling this. Raises
    TokenRequestRejected (``invalid_request``: the code is unknown or already used, as Shopify
    answers), InvalidClient, TokenEndpointUnavailable."""
    fields = {
        "client_id": api_key,
        "client_secret": api_secret,
        "code": code,
        "expiring": 1,
    }
    return _request_token(shop, fields, origin_template, timeout, now, max_attempts, sleep)


def authorize_url(
    shop: str,
    *,
    api_key: str,
    scopes: Iterable[str] | str,
    redirect_uri: str,
    state: str,
    origin_template: str = PRODUCTION_ORIGIN_TEMPLATE,
) -> str:
    """Where to send the merchant to approve the app (offline access: no ``grant_options[]``).

    ``scopes`` is a list or Shopify's comma-separated string.
    """
    scope = scopes if isinstance(scopes, str) else ",".join(scopes)
    query = urlencode(
        {"client_id": api_key, "scope": scope, "redirect_uri": redirect_uri, "state": state}
    )
    return f"{shop_origin(shop, origin_template)}/admin/oauth/authorize?{query}"


def _request_token(
    shop: str,
    fields: Mapping[str, Any],
    origin_template: str,
    timeout: float,
    now: datetime | None,
    max_attempts: int,
    sleep: Callable[[float], None],
) -> TokenSet:
    url = f"{shop_origin(shop, origin_template)}/admin/oauth/access_token"
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    issued_at = now or datetime.now(UTC)  # before sending: expiries err on the early side
    body = json.dumps(fields).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    grant = str(fields.get("grant_type", "authorization_code"))
    reason = ""
    for attempt in range(1, max_attempts + 1):
        wait = min(2.0 ** (attempt - 1), 8.0)
        try:
            answer = _http.post(url, body, headers, timeout)
        except (_http.NotSent, _http.NoAnswer) as failure:
            reason = str(failure)
        else:
            if answer.status == 200:
                return _token_set(shop, answer, issued_at)
            if answer.status == 429 or answer.status >= 500:
                reason = f"HTTP {answer.status}"
                if answer.status == 429:
                    wait = answer.retry_after(cap=MAX_RETRY_AFTER_SECONDS)
            else:
                raise _refusal(shop, answer)
        if attempt < max_attempts:
            log.info("shopify %s token (%s): %s, retrying in %.1f s", shop, grant, reason, wait)
            sleep(wait)
    raise TokenEndpointUnavailable(
        f"token endpoint unavailable after {max_attempts} attempts: {reason}",
        shop=shop,
        status=None,
        error=None,
    )


def _token_set(shop: str, answer: _http.HTTPAnswer, issued_at: datetime) -> TokenSet:
    try:
        payload = json.loads(answer.body)
        access_token = payload["access_token"]
        scope = payload.get("scope", "")
        if not isinstance(access_token, str) or not access_token or not isinstance(scope, str):
            raise ValueError("no access token")
        return TokenSet(
            access_token=access_token,
            scope=scope,
            expires_at=_after(issued_at, payload.get("expires_in")),
            refresh_token=payload.get("refresh_token") or None,
            refresh_token_expires_at=_after(issued_at, payload.get("refresh_token_expires_in")),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise TokenRequestRejected(
            "the token endpoint answered 200 without a usable token",
            shop=shop,
            status=200,
            error=None,
        ) from error


def _after(issued_at: datetime, seconds: object) -> datetime | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"not a number of seconds: {seconds!r}")
    return issued_at + timedelta(seconds=seconds)


def _refusal(shop: str, answer: _http.HTTPAnswer) -> OAuthError:
    error: str | None = None
    description = ""
    try:
        payload = json.loads(answer.body)
        if isinstance(payload, dict):
            error = payload.get("error") if isinstance(payload.get("error"), str) else None
            description = str(payload.get("error_description") or "")
    except ValueError:
        pass
    if error is None and answer.status == 401:
        error = "invalid_client"
    kind = _ERRORS.get(error or "", TokenRequestRejected)
    message = f"HTTP {answer.status} {error or 'error'}" + (
        f": {description}" if description else ""
    )
    return kind(message, shop=shop, status=answer.status, error=error)
