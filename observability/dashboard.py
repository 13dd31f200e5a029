"""rq-dashboard for operators, behind HTTP basic auth: ``create_dashboard()`` is a WSGI app.

Run it on its own::

    RQ_DASHBOARD_USERNAME=ops RQ_DASHBOARD_PASSWORD=... REDIS_URL=redis://... \\
        gunicorn -b 127.0.0.1:9181 'observability.dashboard:create_dashboard()'

or mount it beside the app (werkzeug's DispatcherMiddleware, e.g. under ``/ops/rq``)::

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    application = DispatcherMiddleware(create_app(), {"/ops/rq": create_dashboard()})

It refuses to start without ``RQ_DASHBOARD_USERNAME``, ``RQ_DASHBOARD_PASSWORD`` and
``REDIS_URL`` (``RQ_DASHBOARD_REDIS_URL`` wins if set), naming what is missing. The check is
in front of everything (pages, JSON, static files), compares in constant time, and refuses
requests a browser marks as coming from another site (``Sec-Fetch-Site: cross-site``) or
unsafe methods whose ``Origin`` is another host: basic credentials ride along with any request
the browser makes, so without this a page elsewhere could make the operator's browser delete
or requeue jobs. Serve it over HTTPS (credentials travel with every request).

rq-dashboard 0.9 offers ``add_basic_auth`` for "casual use" only: it compares with ``!=``,
guards the blueprint but not the app, and adds a hook to the module-level blueprint each time
it is called; this wraps the whole WSGI app instead.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Flask
from werkzeug.datastructures import Authorization

from config import ConfigError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

REALM = "CreditCraft operations"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def create_dashboard(environ: Mapping[str, str] | None = None) -> Flask:
    """rq-dashboard's Flask app on REDIS_URL, wrapped in basic auth; fails fast if unset."""
    env = os.environ if environ is None else environ
    username = env.get("RQ_DASHBOARD_USERNAME", "")
    password = env.get("RQ_DASHBOARD_PASSWORD", "")
    redis_url = env.get("RQ_DASHBOARD_REDIS_URL") or env.get("REDIS_URL", "")
    missing = [
        name
        for name, value in (
            ("RQ_DASHBOARD_USERNAME", username),
            ("RQ_DASHBOARD_PASSWORD", password),
            ("REDIS_URL", redis_url),
        )
        if not value.strip()
    ]
    if missing:
        raise ConfigError(f"config: the RQ dashboard needs {', '.join(missing)}")

    from rq_dashboard.web import blueprint, setup_rq_connection

    app = Flask("rq_dashboard")
    app.config["RQ_DASHBOARD_REDIS_URL"] = redis_url
    app.config["RQ_DASHBOARD_POLL_INTERVAL"] = 2500
    app.register_blueprint(blueprint)
    setup_rq_connection(app)
    app.wsgi_app = BasicAuth(app.wsgi_app, username, password)  # type: ignore[method-assign]
    return app


class BasicAuth:
    """WSGI middleware: one username and password, or 401; cross-site requests, 403."""

    def __init__(self, app: WSGIApplication, username: str, password: str) -> None:
        self.app = app
        self._username = username.encode()
        self._password = password.encode()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not self._authorized(environ.get("HTTP_AUTHORIZATION")):
            return _answer(
                start_response,
                "401 Unauthorized",
                b"Authentication required.\n",
                [("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')],
            )
        if _cross_site(environ):
            return _answer(start_response, "403 Forbidden", b"Cross-site request refused.\n")
        return self.app(environ, start_response)

    def _authorized(self, header: str | None) -> bool:
        auth = Authorization.from_header(header)
        if auth is None or auth.type != "basic":
            return False
        # Both compared, always: the time taken says nothing about which one was wrong.
        user_ok = hmac.compare_digest((auth.username or "").encode(), self._username)
        password_ok = hmac.compare_digest((auth.password or "").encode(), self._password)
        return user_ok and password_ok


def _cross_site(environ: Mapping[str, Any]) -> bool:
    if environ.get("HTTP_SEC_FETCH_SITE") == "cross-site":
        return True
    origin = environ.get("HTTP_ORIGIN")
    if environ.get("REQUEST_METHOD", "GET") in SAFE_METHODS or not origin:
        return False
    return urlsplit(origin).netloc != environ.get("HTTP_HOST", "")


def _answer(
    start_response: StartResponse,
    status: str,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *(headers or []),
        ],
    )
    return [body]
