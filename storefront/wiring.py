"""Flask glue: one Storefront per app, and committed ledger/shop changes routed to it."""

from __future__ import annotations

from flask import Flask, Request, Response, current_app, has_app_context
from flask.sessions import NullSession, SessionInterface, SessionMixin

from config import Settings
from storefront import tracking
from storefront.service import Storefront, StorefrontConfig

EXTENSION_KEY = "creditcraft.storefront"


def init_storefront(app: Flask, settings: Settings) -> Storefront:
    """Build the app's Storefront (no connection is opened here) and route invalidations."""
    storefront = Storefront(
        StorefrontConfig(
            secrets=(settings.shopify_api_secret, settings.shopify_api_secret_previous),
            redis_url=settings.redis_url,
            cache_ttl=settings.storefront_cache_ttl,
            local_ttl=settings.storefront_local_ttl,
            limit_per_ip=settings.proxy_rate_limit_per_ip,
            limit_per_shop=settings.proxy_rate_limit_per_shop,
        )
    )
    app.extensions[EXTENSION_KEY] = storefront
    app.session_interface = NoSessionUnder(PROXY_PREFIX, app.session_interface)
    tracking.install(_notify_current_app)
    return storefront


PROXY_PREFIX = "/proxy/"


class NoSessionUnder(SessionInterface):
    """The app's session interface, except under ``prefix``, where no session is opened.

    Shopify's App Proxy strips ``Cookie`` and ``Set-Cookie``: a storefront request can never
    carry a session, and opening one (cookie parsing, building a signing serializer) was the
    largest single cost of a cached balance look-up.
    """

    def __init__(self, prefix: str, inner: SessionInterface) -> None:
        self.prefix = prefix
        self.inner = inner

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if request.path.startswith(self.prefix):
            return self.make_null_session(app)
        return self.inner.open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        self.inner.save_session(app, session, response)

    def make_null_session(self, app: Flask) -> NullSession:
        return self.inner.make_null_session(app)

    def is_null_session(self, obj: object) -> bool:
        return self.inner.is_null_session(obj)


def current_storefront() -> Storefront:
    storefront: Storefront = current_app.extensions[EXTENSION_KEY]
    return storefront


def _notify_current_app(customers: set[tuple[int, int]], shops: set[str]) -> None:
    """Sessions belong to an app through its context (Flask-SQLAlchemy binds them so); a
    session used outside any app context has no storefront cache to keep current."""
    if not has_app_context():
        return
    storefront: Storefront | None = current_app.extensions.get(EXTENSION_KEY)
    if storefront is not None:
        storefront.invalidate(customers, shops)
