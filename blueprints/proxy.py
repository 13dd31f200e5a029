"""``GET /proxy/balance``: the signed-in customer's store credit, for the storefront.

Shopify's App Proxy forwards ``https://{shop}/apps/credit/balance`` here with ``shop``,
``logged_in_customer_id``, ``path_prefix``, ``timestamp`` and ``signature`` added. In order:

1. the query is verified (storefront/signature.py): 400 for a repeated single-valued parameter
   or a malformed query, 401 for a missing or wrong signature or a stale timestamp; such
   requests count against the sending address's rate limit;
2. ``shop`` must be ``<name>.myshopify.com`` (400);
3. rate limits per client IP and per shop (429 with ``Retry-After``): behind the proxy, the
   client is the first ``X-Forwarded-For`` address, which Shopify adds;
4. the shop must be installed, not uninstalled, not erased: otherwise 404 ``shop_not_found``.
   A 404 rather than a 401, because the request itself is genuine (only Shopify can sign it);
   it reveals nothing, since unsigned requests never get this far;
5. an empty ``logged_in_customer_id`` answers ``{"logged_in": false}``; otherwise it must be a
   Shopify numeric id (400), and only that customer's balances are answered.

Every answer, errors included, carries ``Cache-Control: private, no-store``. ``format=liquid``
(signed like every parameter) answers ``application/liquid`` for Shopify to render inside the
shop's theme layout, as a storefront page; the snippet is ours alone, with every value
HTML-escaped and Liquid's delimiters neutralised, and no request input is ever echoed.
"""

from __future__ import annotations

import html
import ipaddress
import time

from flask import Blueprint, Response, request

import tenancy
from blueprints.errors import APIError
from extensions import current_session
from models.shop import is_shop_domain
from observability.logs import bind_shop
from storefront.cache import CachedBalances
from storefront.signature import ProxyQuery, ProxyRequestRejected, verify
from storefront.wiring import current_storefront

bp = Blueprint("proxy", __name__)

PRIVATE = "private, no-store"
MAX_SHOPIFY_ID = 2**63 - 1
JSON = "application/json"
LIQUID = "application/liquid"
_GUEST_JSON = b'{"logged_in":false}\n'


@bp.after_app_request
def _never_cached(response: Response) -> Response:
    # App-wide so that 404/405 under /proxy/ (answered before any view) get it too.
    if request.path.startswith("/proxy/"):
        response.headers["Cache-Control"] = PRIVATE
    return response


@bp.get("/proxy/balance")
def balance() -> Response:
    storefront = current_storefront()
    now = time.time()
    try:
        query = verify(request.query_string, storefront.config.secrets, now)
    except ProxyRequestRejected as rejected:
        _throttled(storefront.throttle_unsigned(request.remote_addr or "unknown", now))
        raise APIError(rejected.status, rejected.code, rejected.message) from None
    shop_domain = query.first("shop", "") or ""
    if not is_shop_domain(shop_domain):
        raise APIError(400, "invalid_shop", "The shop must be a <name>.myshopify.com domain.")
    bind_shop(shop_domain)  # signed by Shopify: the shop this look-up is for
    _throttled(storefront.throttle(shop_domain, _client_ip(), now))
    as_liquid = _wants_liquid(query)
    shop = storefront.shop(current_session, shop_domain)
    if shop is None or not shop.serving:
        raise APIError(404, "shop_not_found", "This shop does not use CreditCraft.")
    tenancy.use_shop(shop.id)  # row-level security: the balances read is this shop's
    customer = _customer_id(query)
    if customer is None:
        if as_liquid:
            return Response(_GUEST_LIQUID, mimetype=LIQUID)
        return Response(_GUEST_JSON, mimetype=JSON)
    found = storefront.balances(current_session, shop.id, customer, now)
    if as_liquid:
        return Response(_liquid(found), mimetype=LIQUID)
    body = b'{"logged_in":true,"customer_id":"%d","balances":%s}\n' % (customer, found.json)
    return Response(body, mimetype=JSON)


def _throttled(wait: int | None) -> None:
    if wait is not None:
        raise APIError(
            429,
            "rate_limited",
            "Too many balance look-ups; try again later.",
            headers={"Retry-After": str(wait)},
            retry_after=wait,
        )


def _client_ip() -> str:
    """The storefront visitor: Shopify's proxy puts the client's address first in
    X-Forwarded-For. Only called for verified requests, i.e. ones that came through it."""
    environ = request.environ
    first = environ.get("HTTP_X_FORWARDED_FOR", "").split(",", 1)[0].strip()
    return _normal_ip(first) or environ.get("REMOTE_ADDR") or "unknown"


_IPS: dict[str, str | None] = {}


def _normal_ip(text: str) -> str | None:
    """One spelling per address (IPv6 has many), remembered: parsing costs more than a look-up."""
    if text in _IPS:
        return _IPS[text]
    try:
        normal: str | None = str(ipaddress.ip_address(text))
    except ValueError:
        normal = None
    if len(_IPS) >= 10_000:
        _IPS.clear()
    _IPS[text] = normal
    return normal


def _wants_liquid(query: ProxyQuery) -> bool:
    formats = query.params.get("format", ["json"])
    if len(formats) > 1:
        raise APIError(400, "repeated_parameter", "The parameter format appears more than once.")
    if formats[0] not in ("json", "liquid"):
        raise APIError(400, "unsupported_format", "format must be json or liquid.")
    return formats[0] == "liquid"


def _customer_id(query: ProxyQuery) -> int | None:
    """The signed-in customer's Shopify id; None for a guest (empty or absent)."""
    raw = query.first("logged_in_customer_id", "") or ""
    if raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not 0 < int(raw) <= MAX_SHOPIFY_ID:
        raise APIError(400, "invalid_customer_id", "logged_in_customer_id is not a customer id.")
    return int(raw)


# -- the Liquid variant ---------------------------------------------------------------------

_GUEST_LIQUID = (
    '<div class="creditcraft-balance creditcraft-balance--guest">\n'
    '  <p><a href="{{ routes.account_login_url }}">Log in</a> to see your store credit.</p>\n'
    "</div>\n"
)


def _text(value: object) -> str:
    """HTML-escaped, and no Liquid delimiter can survive: ``{`` and ``}`` become entities."""
    return html.escape(str(value), quote=True).replace("{", "&#123;").replace("}", "&#125;")


def _liquid(found: CachedBalances) -> str:
    rows = []
    for item in found.balances():
        line = f"{_text(item['amount'])} {_text(item['currency'])}"
        expiry = item["next_expiry"]
        if expiry is not None:
            day = str(expiry["expires_at"])[:10]
            line += (
                f' <span class="creditcraft-balance__expiry">({_text(expiry["amount"])} '
                f"{_text(item['currency'])} expires on {_text(day)})</span>"
            )
        rows.append(f'    <li class="creditcraft-balance__amount">{line}</li>\n')
    if not rows:
        rows.append("    <li>You have no store credit.</li>\n")
    return (
        '<div class="creditcraft-balance">\n'
        "  <h2>Store credit</h2>\n"
        "  <ul>\n" + "".join(rows) + "  </ul>\n</div>\n"
    )
