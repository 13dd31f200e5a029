"""``make run``'s way in, in a real browser: the app built in development mode on loopback,
/app/dev/login, and the demo shop's dashboard without App Bridge (outside Shopify admin it
would send the window to admin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from cli import DEMO_CUSTOMERS, DEMO_SHOP
from config import Settings
from tests.browser.conftest import Tab, flask_command, serving
from tests.pages.conftest import another_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def development_server(
    settings: Settings, scratch_database: str, scratch_redis: str | None
) -> Iterator[str]:
    """The app as `make run` builds it (development, APP_URL on 127.0.0.1), with the demo
    shop `flask demo seed` makes, served on a loopback port."""
    with another_app(
        settings,
        env="development",
        app_url="http://127.0.0.1:8000",
        database_url=scratch_database,
        redis_url=scratch_redis,
    ) as app:
        flask_command(app.test_cli_runner(), "demo", "seed")
        with serving(app) as base:
            yield base


def test_the_dev_login_lands_on_the_demo_shops_dashboard_without_app_bridge(
    development_server: str, tab: Tab
):
    page = tab.page
    page.goto(f"{development_server}/app/dev/login")

    expect(page.locator("h1")).to_have_text("Dashboard")
    assert page.url.startswith(f"{development_server}/app?")
    assert f"shop={DEMO_SHOP}" in page.url
    assert "id_token=" in page.url
    expect(page.get_by_test_id("liability")).to_be_visible()
    expect(page.locator('script[src$="app-bridge.js"]')).to_have_count(0)
    expect(page.locator("ui-nav-menu")).to_have_count(0)
    expect(page.locator("body")).to_have_attribute("data-embedded", "false")

    # The minted token works on: the nav reaches the customers, and one's page.
    with page.expect_navigation():
        page.get_by_test_id("nav-customers").click()
    _, _, first, last = DEMO_CUSTOMERS[0]
    with page.expect_navigation():
        page.get_by_role("link", name=f"{first} {last}").click()
    expect(page.locator("h1")).to_have_text(f"{first} {last}")
    admin = page.get_by_test_id("admin-link")
    expect(admin).to_have_attribute("target", "_blank")  # admin.shopify.com, not shopify://
