"""Shopify session tokens: the Bearer JWT App Bridge puts on every request of the embedded app.

HS256 signed with the app's secret (or the previous one during a rotation), ``aud`` = the API
key, ``exp``/``nbf`` with 10 s of leeway, ``iss`` and ``dest`` naming the same shop, and that
shop installed. Anything else is a 401 carrying ``X-Shopify-Retry-Invalid-Session-Request: 1``
so App Bridge fetches a fresh token and retries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import jwt
from flask import g, request
from sqlalchemy import select

import tenancy
from blueprints.errors import APIError
from blueprints.settings import current_settings
from config import Settings
from extensions import db
from models import Shop
from models.shop import is_shop_domain
from observability.logs import bind_shop

LEEWAY_SECONDS = 10
RETRY_HEADER = {"X-Shopify-Retry-Invalid-Session-Request": "1"}
# Set on the tokens ``mint_development_token`` makes (never on Shopify's own).
DEV_CLAIM = "creditcraft_dev"

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class StaffSession:
    shop: Shop
    user_id: str  # the staff member (``sub``); the actor on every entry they make

    @property
    def actor(self) -> str:
        return f"staff:{self.user_id}"


def decode_session_token(token: str, secrets: list[str], api_key: str) -> dict[str, Any]:
    """The verified claims of ``token``; raises jwt.InvalidTokenError if any check fails."""
    last_error: jwt.InvalidTokenError = jwt.InvalidSignatureError("no secret configured")
    for secret in secrets:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                audience=api_key,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "nbf", "iss", "dest", "aud", "sub"]},
            )
        except jwt.InvalidSignatureError as error:
            last_error = error
            continue
        _check_shop_claims(claims)
        return claims
    raise last_error


def shop_domain_of(claims: dict[str, Any]) -> str:
    return urlsplit(claims["dest"]).hostname or ""


def _check_shop_claims(claims: dict[str, Any]) -> None:
    dest = urlsplit(str(claims["dest"]))
    issuer = urlsplit(str(claims["iss"]))
    if dest.scheme != "https" or not is_shop_domain(dest.hostname or ""):
        raise jwt.InvalidTokenError("dest is not a shop")
    if issuer.hostname != dest.hostname or issuer.path.rstrip("/") != "/admin":
        raise jwt.InvalidTokenError("iss and dest name different shops")


def require_session_token(view: Callable[P, R]) -> Callable[P, R]:
    """Authenticate the request's Bearer session token; put the StaffSession on ``g.staff``."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        g.staff = _authenticate()
        bind_shop(g.staff.shop.domain)  # every log line of this request names the shop
        return view(*args, **kwargs)

    return wrapper


def verify_session_token(token: str) -> dict[str, Any]:
    """The claims of ``token`` checked against this app's key and secrets (current, previous);
    raises jwt.InvalidTokenError. The one check behind the API's Bearer tokens and the pages'
    ``id_token``."""
    settings = current_settings()
    secrets = [s for s in (settings.shopify_api_secret, settings.shopify_api_secret_previous) if s]
    return decode_session_token(token, secrets, settings.shopify_api_key)


def verified_claims(token: str) -> dict[str, Any] | None:
    """``verify_session_token`` for callers that only need yes or no."""
    try:
        return verify_session_token(token)
    except jwt.InvalidTokenError:
        return None


def installed_shop(shop_domain: str) -> Shop | None:
    """The shop a verified token names, if it has the app installed (not uninstalled); the
    request then works for that shop alone (row-level security, tenancy.py)."""
    shop = db.session.execute(select(Shop).where(Shop.domain == shop_domain)).scalar_one_or_none()
    if shop is None or not shop.is_installed:
        return None
    tenancy.use_shop(shop.id)
    return shop


def mint_development_token(
    settings: Settings, shop_domain: str, *, user: str, minutes: int, now: datetime
) -> str:
    """A session token for ``shop_domain`` signed as Shopify would, for development only
    (``flask demo token``, the pages' dev login). It carries ``creditcraft_dev``: a page
    opened with it is outside Shopify admin, so it renders without App Bridge."""
    if settings.is_production:
        raise PermissionError("development session tokens are never minted in production")
    claims = {
        "iss": f"https://{shop_domain}/admin",
        "dest": f"https://{shop_domain}",
        "aud": settings.shopify_api_key,
        "sub": user,
        "nbf": int(now.timestamp()),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=minutes)).timestamp()),
        DEV_CLAIM: True,
    }
    return jwt.encode(claims, settings.shopify_api_secret, algorithm="HS256")


def _authenticate() -> StaffSession:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("A session token is required (Authorization: Bearer …).")
    try:
        claims = verify_session_token(token.strip())
    except jwt.InvalidTokenError as error:
        raise _unauthorized(f"The session token is not valid: {error}.") from None
    shop = installed_shop(shop_domain_of(claims))
    if shop is None:
        raise _unauthorized("The session token's shop has not installed the app.")
    return StaffSession(shop=shop, user_id=str(claims["sub"]))


def _unauthorized(message: str) -> APIError:
    return APIError(401, "invalid_session_token", message, headers=RETRY_HEADER)
