"""HTTP edges. ``register_blueprints`` is the one place URL prefixes are set."""

from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from blueprints import admin_api, api, auth, health, openapi, proxy, reports_api, webhooks

    app.register_blueprint(health.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(api.bp, url_prefix="/api")
    app.register_blueprint(reports_api.bp, url_prefix="/api")
    app.register_blueprint(admin_api.bp, url_prefix="/api")
    app.register_blueprint(openapi.bp, url_prefix="/api")
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(proxy.bp)  # routes carry their /proxy/ path themselves
    _register_pages(app)


def _register_pages(app: Flask) -> None:
    """The merchant's pages (routes carry their /app/... path themselves); the dev login only
    in development, so that in production its route does not exist."""
    from blueprints import dev_login, pages, report_pages
    from blueprints.settings import EXTENSION_KEY

    app.register_blueprint(pages.bp)
    app.register_blueprint(report_pages.bp)
    if app.extensions[EXTENSION_KEY].env == "development":
        app.register_blueprint(dev_login.bp)
