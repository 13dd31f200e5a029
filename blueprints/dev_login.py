"""``GET /app/dev/login``: open the demo shop's pages in a normal browser (``make run``).

Registered only when the app runs in development (blueprints/__init__.py), so in production
the route does not exist (404). Even then it answers only a request from a loopback address to
an app whose APP_URL is on loopback (403 otherwise): it hands out a session token for the demo
shop without Shopify, which nobody but the developer at this machine may have.

The token (60 minutes, staff ``dev-staff``) carries the development claim, so the pages render
without App Bridge (outside Shopify admin it would send the window to admin).
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, abort, redirect, request
from werkzeug.wrappers import Response

from blueprints.html import html_error
from blueprints.session_token import installed_shop, mint_development_token
from blueprints.settings import current_settings
from cli import DEMO_SHOP

bp = Blueprint("dev_login", __name__)

DEV_STAFF = "dev-staff"
TOKEN_MINUTES = 60


@bp.get("/app/dev/login")
def dev_login() -> Response:
    settings = current_settings()
    if settings.env != "development":
        abort(404)  # registered in development only; this guards a reused blueprint
    on_loopback = _is_loopback(urlsplit(settings.app_url).hostname)
    if not (on_loopback and _is_loopback(request.remote_addr)):
        return html_error(
            None, 403, "The development login answers only on 127.0.0.1 (APP_URL and the browser)."
        )
    shop = installed_shop(DEMO_SHOP)
    if shop is None:
        return html_error(None, 404, "No demo shop yet: run `flask demo seed` (make run does).")
    token = mint_development_token(
        settings, shop.domain, user=DEV_STAFF, minutes=TOKEN_MINUTES, now=datetime.now(UTC)
    )
    response = redirect(f"/app?{urlencode({'shop': shop.domain, 'id_token': token})}", code=302)
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
