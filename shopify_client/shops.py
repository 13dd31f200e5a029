"""Shop domains and where their Admin API lives.

Every URL this package builds starts from a shop domain checked here, so a forged ``shop``
parameter cannot point a request (and our token or client secret) at another host.
"""

from __future__ import annotations

import re

from shopify_client.errors import InvalidShopDomain

SHOP_DOMAIN = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
PRODUCTION_ORIGIN_TEMPLATE = "https://{shop}"


def is_shop_domain(value: str) -> bool:
    """True for ``<name>.myshopify.com`` in lower case (the form Shopify sends and we store)."""
    return SHOP_DOMAIN.fullmatch(value) is not None


def shop_origin(shop: str, origin_template: str = PRODUCTION_ORIGIN_TEMPLATE) -> str:
    """``https://acme.myshopify.com`` in production; the fake Shopify's origin in tests
    (``SHOPIFY_ADMIN_ORIGIN``, e.g. ``http://127.0.0.1:PORT/stores/{shop}``)."""
    if not is_shop_domain(shop):
        raise InvalidShopDomain(f"not a myshopify.com shop domain: {shop!r}")
    if "{shop}" not in origin_template or not origin_template.startswith(("https://", "http://")):
        raise ValueError("the admin origin template is an http(s) URL containing {shop}")
    return origin_template.replace("{shop}", shop).rstrip("/")
