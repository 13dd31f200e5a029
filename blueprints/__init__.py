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
