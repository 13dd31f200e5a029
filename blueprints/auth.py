"""Install and authorization: the embedded app's first load, and the authorization-code grant.

- ``GET /app`` (embedded, Shopify-managed installation): the first load carries ``id_token``;
  when the shop has no usable offline token, token exchange turns the id_token into an
  expiring offline token (+ refresh token), stored encrypted. A load without a valid id_token
  gets the bounce page, where App Bridge reloads the URL with a fresh one.
- ``GET /auth?shop=`` → Shopify's grant screen → ``GET /auth/callback`` (non-embedded or
  legacy installs): HMAC over the query, a fresh timestamp, and ``state`` equal to the nonce
  we set in a signed, short-lived cookie on this browser.

Every HTML answer carries the headers blueprints/html.py sets (CSP ``frame-ancestors``, as
App Review requires; ``Referrer-Policy``; ``no-store``). The first load renders the Dashboard
(blueprints/pages.py).
"""

from __future__ import annotations

import base64
import secrets
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import Blueprint, Response, make_response, redirect, render_template, request
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

import tenancy
from blueprints import admin_query, pages
from blueprints.errors import APIError
from blueprints.html import bounce, html_error, html_page
from blueprints.session_token import shop_domain_of, verified_claims
from blueprints.settings import current_settings
from extensions import current_session
from models import Shop
from models.shop import is_shop_domain
from shop_access import install_with_code, install_with_session_token, needs_token_exchange
from shopify_client import oauth
from shopify_client.errors import InvalidSubjectToken, ShopifyClientError

bp = Blueprint("auth", __name__)

STATE_COOKIE = "creditcraft_oauth_state"
STATE_MAX_AGE_SECONDS = 300
# The state cookie is signed with a key derived from SECRET_KEY for this one purpose: never
# with the Shopify secret, whose HMACs must mean "Shopify sent this" and nothing else.
STATE_SALT = "creditcraft.oauth-state"


# -- the embedded app --------------------------------------------------------------------------


@bp.get("/app")
def app_home() -> ResponseReturnValue:
    settings = current_settings()
    id_token = request.args.get("id_token", "")
    claims = verified_claims(id_token) if id_token else None
    if claims is None:
        return bounce()
    shop_domain = shop_domain_of(claims)
    now = datetime.now(UTC)
    session = current_session()
    shop = session.execute(select(Shop).where(Shop.domain == shop_domain)).scalar_one_or_none()
    if needs_token_exchange(shop, now):
        try:
            shop = install_with_session_token(session, settings, shop_domain, id_token, now)
        except InvalidSubjectToken:
            return bounce()  # Shopify refused this id_token: App Bridge fetches a new one
        except ShopifyClientError:
            return html_error(
                shop_domain,
                503,
                "Shopify could not be reached to finish the install. Reload in a moment.",
            )
    assert shop is not None
    tenancy.use_shop(shop.id)  # row-level security: the page shows this shop's rows alone
    pages.open_page(shop, claims, id_token)
    return pages.dashboard()


@bp.get("/app/bounce")
def bounce_page() -> Response:
    """The "patch id_token" page: App Bridge reloads ``shopify-reload`` with a fresh id_token."""
    shop = request.args.get("shop", "")
    reload_url = request.args.get("shopify-reload", "")
    if not is_shop_domain(shop) or not reload_url.startswith("/app"):
        return html_error(None, 400, "Open CreditCraft from your Shopify admin.")
    page = render_template("app/bounce.html", api_key=current_settings().shopify_api_key)
    return html_page(page, shop)


# -- the authorization-code grant ----------------------------------------------------------------


@bp.get("/auth")
def begin() -> Response:
    settings = current_settings()
    shop = request.args.get("shop", "").strip().lower()
    if not is_shop_domain(shop):
        raise APIError(
            400,
            "invalid_shop",
            "shop must be <name>.myshopify.com.",
            shop=request.args.get("shop", ""),
        )
    state = secrets.token_hex(16)
    url = oauth.authorize_url(
        shop,
        api_key=settings.shopify_api_key,
        scopes=settings.shopify_scopes,
        redirect_uri=f"{settings.app_url}/auth/callback",
        state=state,
        origin_template=settings.shopify_admin_origin,
    )
    if request.args.get("embedded") == "1":
        # Shopify's grant screen refuses to load in the admin's iframe: leave it first.
        response = html_page(
            render_template("app/exit_iframe.html", api_key=settings.shopify_api_key, url=url), shop
        )
    else:
        response = make_response(redirect(url, code=302))
    response.set_cookie(
        STATE_COOKIE,
        _state_signer().dumps({"state": state, "shop": shop}),
        max_age=STATE_MAX_AGE_SECONDS,
        path="/auth/callback",
        secure=settings.app_url.startswith("https://"),
        httponly=True,
        samesite="Lax",
    )
    return response


@bp.get("/auth/callback")
def callback() -> Response:
    settings = current_settings()
    try:
        query = admin_query.verify(
            request.query_string.decode("utf-8", "replace"),
            (settings.shopify_api_secret, settings.shopify_api_secret_previous),
            time.time(),
        )
    except admin_query.QueryRejected as rejected:
        raise APIError(rejected.status, rejected.code, rejected.message) from None
    shop = query.get("shop") or ""
    if not is_shop_domain(shop):
        raise APIError(400, "invalid_shop", "shop must be <name>.myshopify.com.")
    if not _state_matches(query.get("state"), shop):
        raise APIError(401, "invalid_state", "The OAuth state does not match this browser's.")
    code = query.get("code")
    if not code:
        raise APIError(400, "missing_code", "The callback carries no authorization code.")
    try:
        installed = install_with_code(current_session(), settings, shop, code, datetime.now(UTC))
    except ShopifyClientError as error:
        raise APIError(
            502, "token_request_failed", f"Shopify refused the authorization code: {error}."
        ) from None
    missing = _missing_scopes(settings.shopify_scopes, installed.scopes or "")
    if missing:
        raise APIError(
            403, "scopes_not_granted", "Some required scopes were not granted.", missing=missing
        )
    response = make_response(redirect(_after_install_url(shop, query.get("host")), code=302))
    response.delete_cookie(STATE_COOKIE, path="/auth/callback")
    return response


def _state_signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_settings().secret_key, salt=STATE_SALT)


def _state_matches(state: str | None, shop: str) -> bool:
    cookie = request.cookies.get(STATE_COOKIE)
    if not state or not cookie:
        return False
    try:
        saved = _state_signer().loads(cookie, max_age=STATE_MAX_AGE_SECONDS)
    except BadSignature:
        return False
    return (
        isinstance(saved, dict)
        and secrets.compare_digest(str(saved.get("state", "")), state)
        and saved.get("shop") == shop
    )


def _missing_scopes(required: str, granted: str) -> list[str]:
    """Required scopes not granted (a write scope implies its read scope)."""
    have = {s.strip() for s in granted.split(",") if s.strip()}
    have |= {"read_" + s[len("write_") :] for s in have if s.startswith("write_")}
    return sorted(s.strip() for s in required.split(",") if s.strip() and s.strip() not in have)


def _after_install_url(shop: str, host: str | None) -> str:
    """Back into Shopify admin when ``host`` names it; else our own app page for the shop."""
    settings = current_settings()
    if host:
        try:
            admin = base64.urlsafe_b64decode(host + "=" * (-len(host) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            admin = ""
        if admin.startswith("admin.shopify.com/store/") or admin == f"{shop}/admin":
            return f"https://{admin}/apps/{settings.shopify_api_key}/"
    return f"{settings.app_url}/app?{urlencode({'shop': shop})}"
