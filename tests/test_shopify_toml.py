"""shopify.app.toml says what the code does: scopes, webhook topics, proxy, API version."""

from __future__ import annotations

import tomllib
from pathlib import Path

from config import DEFAULT_API_VERSION, DEFAULT_SCOPES
from webhooks.topics import COMPLIANCE_TOPICS, handlers

TOML = tomllib.loads((Path(__file__).parent.parent / "shopify.app.toml").read_text())


def test_scopes_are_the_ones_the_app_asks_for():
    assert TOML["access_scopes"]["scopes"] == DEFAULT_SCOPES
    assert TOML["access_scopes"]["use_legacy_install_flow"] is False


def test_every_handled_topic_is_subscribed_on_the_right_route():
    subscriptions = TOML["webhooks"]["subscriptions"]
    plain = {t for s in subscriptions if s["uri"] == "/webhooks" for t in s.get("topics", [])}
    compliance = {
        t
        for s in subscriptions
        if s["uri"] == "/webhooks/compliance"
        for t in s.get("compliance_topics", [])
    }
    assert compliance == COMPLIANCE_TOPICS
    assert plain == set(handlers()) - COMPLIANCE_TOPICS
    assert TOML["webhooks"]["api_version"] == DEFAULT_API_VERSION


def test_the_app_proxy_maps_to_the_proxy_routes():
    proxy = TOML["app_proxy"]
    assert (proxy["prefix"], proxy["subpath"]) == ("apps", "credit")
    assert proxy["url"].endswith("/proxy")
    assert TOML["embedded"] is True
    assert TOML["auth"]["redirect_urls"][0].endswith("/auth/callback")
