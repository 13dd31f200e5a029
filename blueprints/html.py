"""HTML answers of the embedded app: the headers every page carries, errors, and the bounce.

Every HTML answer carries ``Content-Security-Policy: frame-ancestors https://{shop}
https://admin.shopify.com`` (or ``'none'`` when no shop is known), as App Review requires;
``Referrer-Policy: no-referrer``, because page URLs carry the session token (``id_token``);
and ``Cache-Control: no-store``.
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Response, make_response, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from models.shop import is_shop_domain

# What a page's links keep of the query Shopify loaded the app with (the token is fetched anew).
ADMIN_CONTEXT_PARAMS = ("shop", "host", "embedded")


def html_page(body: str, shop: str | None, status: int = 200) -> Response:
    response = make_response(body, status)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    ancestors = f"https://{shop} https://admin.shopify.com" if shop else "'none'"
    response.headers["Content-Security-Policy"] = f"frame-ancestors {ancestors};"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def html_error(shop: str | None, status: int, message: str) -> Response:
    return html_page(render_template("app/error.html", message=message), shop, status)


def bounce(reload_path: str | None = None) -> BaseResponse:
    """Send a load without a valid id_token to the bounce page, where App Bridge reloads
    ``reload_path`` (default: this request's URL) with a fresh one.

    The shop named in the query only chooses where to bounce; nothing is shown or done for it
    until the token comes back verified.
    """
    shop = request.args.get("shop", "")
    if not is_shop_domain(shop):
        return html_error(None, 400, "Open CreditCraft from your Shopify admin.")
    query = [(k, v) for k, v in request.args.items(multi=True) if k != "id_token"]
    keep = [(k, v) for k, v in query if k in ADMIN_CONTEXT_PARAMS]
    reload_url = reload_path or f"{request.path}?{urlencode(query)}"
    return redirect(f"/app/bounce?{urlencode([*keep, ('shopify-reload', reload_url)])}", code=302)
