"""static/app.js sends the Settings and Reconciliation forms as the API reads them: PUT and
DELETE (no body), switches as true or false, whole numbers as JSON numbers, an emptied expiry
as null, and an error the API names beside its field.

The pages as the server renders them, run by Debian's Chromium through Playwright; every request
the page makes is answered here (the API calls recorded and answered as the test says, the CDN
refused), so no server runs and nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, Route, sync_playwright

from extensions import db
from ledger import presets
from tests.pages.test_report_pages import add_finding

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ORIGIN = "http://creditcraft.test"
OK = (200, {})


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing (scripts/with-services.sh installs it)")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@dataclass
class Sent:
    method: str
    path: str
    body: Any
    authorization: str | None


@dataclass
class Served:
    """The page in a tab, and what it sent to the API."""

    page: Page
    sent: list[Sent] = field(default_factory=list)

    def submit(self, form_id: str, *, reloads: bool = True) -> Sent:
        """Press the form's button and wait for its API call, and then for the page to load
        again (as app.js does after a change), so the next step acts on the new page."""
        before = len(self.sent)
        with contextlib.ExitStack() as waits:
            if reloads:
                waits.enter_context(self.page.expect_navigation())
            waits.enter_context(self.page.expect_request(lambda r: "/api/" in r.url))
            self.page.click(f"#{form_id} [type=submit]")
        assert len(self.sent) == before + 1
        return self.sent[-1]


@pytest.fixture
def serve(browser: Browser) -> Iterator[Callable[..., Served]]:
    contexts = []

    def open_page(html: str, answer: Callable[[Sent], tuple[int, dict[str, Any]]]) -> Served:
        context = browser.new_context()
        contexts.append(context)
        served = Served(context.new_page())
        served.page.on("dialog", lambda dialog: dialog.accept())  # data-confirm

        def route(route: Route, request: Request) -> None:
            url = urlsplit(request.url)
            if f"{url.scheme}://{url.netloc}" != ORIGIN:
                route.abort()  # Shopify's CDN: the page must work without it
            elif url.path.startswith("/static/"):
                route.fulfill(path=ROOT / url.path.lstrip("/"))
            elif url.path.startswith("/api/"):
                body = request.post_data
                sent = Sent(
                    request.method,
                    url.path,
                    None if body is None else json.loads(body),
                    request.headers.get("authorization"),
                )
                served.sent.append(sent)
                status, answered = answer(sent)
                route.fulfill(status=status, json=answered)
            else:  # the page itself, and its reload after a change
                route.fulfill(status=200, content_type="text/html", body=html)

        served.page.route("**/*", route)
        served.page.goto(f"{ORIGIN}/app/page?id_token=x")
        return served

    yield open_page
    for context in contexts:
        context.close()


def test_settings_are_put_with_switches_as_booleans_and_an_empty_expiry_as_null(pages, shop, serve):
    shop.default_expiry_days, shop.native_sync, shop.notify_customer = 90, True, False
    db.session.commit()
    tab = serve(pages.get("/app/settings").text, lambda _sent: OK)

    tab.page.fill("#settings-form-default_expiry_days", "")
    tab.page.uncheck("#settings-form-native_sync")
    tab.page.check("#settings-form-notify_customer")
    emptied = tab.submit("settings-form")
    tab.page.fill("#settings-form-default_expiry_days", "45")
    days = tab.submit("settings-form")

    assert emptied.method == "PUT"
    assert emptied.path == "/api/settings"
    assert emptied.body == {
        "default_expiry_days": None,
        "native_sync": False,
        "notify_customer": True,
        "auto_repair": shop.auto_repair,
    }
    token = tab.page.get_attribute('meta[name="creditcraft-session-token"]', "content")
    assert emptied.authorization == f"Bearer {token}"
    assert days.body["default_expiry_days"] == 45


def test_presets_are_added_with_days_as_a_number_edited_with_put_and_deleted(pages, shop, serve):
    kept = presets.create_preset(
        db.session,
        shop.id,
        {"name": "Apology", "amount": "5.00", "currency": "USD", "reason": "Sorry"},
        actor="staff:1",
        now=shop.created_at,
    )
    tab = serve(pages.get("/app/settings").text, lambda _sent: OK)

    tab.page.fill("#preset-add-name", "Loyalty 10")
    tab.page.fill("#preset-add-amount", "10.00")
    tab.page.fill("#preset-add-expiry_days", "30")
    tab.page.fill("#preset-add-reason", "Loyalty reward")
    tab.page.select_option("#preset-add-source", "goodwill")
    added = tab.submit("preset-add")
    tab.page.click(f'[data-testid="preset-row"][data-preset-id="{kept["id"]}"] summary')
    tab.page.fill(f"#preset-edit-{kept['id']}-reason", "Sorry again")
    edited = tab.submit(f"preset-edit-{kept['id']}")
    deleted = tab.submit(f"preset-delete-{kept['id']}")

    assert (added.method, added.path) == ("POST", "/api/presets")
    assert added.body == {
        "name": "Loyalty 10",
        "amount": "10.00",
        "currency": "USD",
        "expiry_days": 30,
        "reason": "Loyalty reward",
        "source": "goodwill",
    }
    assert (edited.method, edited.path) == ("PUT", f"/api/presets/{kept['id']}")
    assert edited.body == {  # no expiry: left out, as the API reads "never"
        "name": "Apology",
        "amount": "5.00",
        "currency": "USD",
        "reason": "Sorry again",
        "source": "manual",
    }
    assert (deleted.method, deleted.path, deleted.body) == (
        "DELETE",
        f"/api/presets/{kept['id']}",
        None,
    )


def test_an_error_the_api_names_shows_beside_its_switch(pages, serve):
    message = "native_sync must be true or false."

    def refuse(_sent: Sent) -> tuple[int, dict[str, Any]]:
        error = {"code": "invalid_field", "message": message, "details": {"field": "native_sync"}}
        return 422, {"error": error}

    tab = serve(pages.get("/app/settings").text, refuse)
    tab.submit("settings-form", reloads=False)

    slot = tab.page.locator('#settings-form [data-error-for="native_sync"]')
    slot.wait_for(state="visible")
    assert slot.text_content() == message
    assert tab.page.get_attribute("#settings-form-native_sync", "aria-invalid") == "true"


def test_a_full_run_and_a_resolution_are_sent_as_the_api_reads_them(pages, shop, serve, now):
    finding = add_finding(shop, "chain:script", now)
    tab = serve(pages.get("/app/reconciliation").text, lambda _sent: OK)

    tab.page.check('[data-testid="run-full"]')
    run = tab.submit("run-form")
    tab.page.click(f'[data-finding-id="{finding.id}"] [data-testid="resolve-open"]')
    tab.page.fill(f"#resolve-{finding.id}-note", "Checked with the owner.")
    resolved = tab.submit(f"resolve-{finding.id}")

    assert (run.method, run.path, run.body) == ("POST", "/api/reconciliation/runs", {"full": True})
    assert (resolved.method, resolved.path) == (
        "POST",
        f"/api/reconciliation/findings/{finding.id}/resolve",
    )
    assert resolved.body == {"note": "Checked with the owner."}
