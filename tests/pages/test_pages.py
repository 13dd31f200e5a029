"""The merchant's pages: real data in the HTML, the session token as the only way in, the
headers every page carries, and the development login."""

from __future__ import annotations

import dataclasses
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from cli import DEMO_SHOP
from extensions import db
from ledger import bulk, operations
from ledger.book import Actor
from ledger.money import Money
from tests.conftest import API_KEY, session_token, settings_changed
from tests.factories import ShopFactory
from tests.pages.conftest import STAFF_ID, another_app, customer_of, installed, issue

APP_BRIDGE = '<script src="https://cdn.shopify.com/shopifycloud/app-bridge.js"></script>'


def texts_of(html: str, name: str) -> list[str]:
    """The inner text of each element with data-testid=name (one level: no nested tags)."""
    return re.findall(rf'data-testid="{re.escape(name)}"[^>]*>([^<]*)<', html)


def rows(html: str, name: str) -> int:
    return html.count(f'data-testid="{name}"')


# -- getting in --------------------------------------------------------------------------------


@pytest.mark.smoke
@pytest.mark.parametrize("path", ["/app/customers", "/app/customers/7000000001", "/app/bulk"])
def test_a_page_without_a_token_goes_to_the_bounce_and_back(client, shop, path):
    answer = client.get(path, query_string={"shop": shop.domain, "host": "YWRtaW4", "query": "x"})

    assert answer.status_code == 302
    target = urlsplit(answer.headers["Location"])
    assert target.path == "/app/bounce"
    query = parse_qs(target.query)
    assert query["shop"] == [shop.domain]
    assert query["host"] == ["YWRtaW4"]
    reload = urlsplit(query["shopify-reload"][0])
    assert reload.path == path
    assert "id_token" not in reload.query


@pytest.mark.parametrize(
    "token",
    [
        lambda domain: session_token(domain, secret="not-our-secret-0123456789abcdef0123"),
        lambda domain: session_token(domain, audience="another-app"),
        lambda domain: session_token(domain, issued=datetime.now(UTC) - timedelta(minutes=5)),
        lambda domain: "not-a-jwt",
    ],
    ids=["forged", "another-app", "expired", "garbage"],
)
def test_a_token_that_does_not_verify_is_a_bounce(client, shop, token):
    answer = client.get(
        "/app/customers", query_string={"shop": shop.domain, "id_token": token(shop.domain)}
    )
    assert answer.status_code == 302
    assert urlsplit(answer.headers["Location"]).path == "/app/bounce"


def test_a_shop_without_the_app_installed_bounces_to_the_install(client, app_context):
    gone = ShopFactory(uninstalled_at=datetime.now(UTC))
    token = session_token(gone.domain)

    answer = client.get("/app/customers", query_string={"shop": gone.domain, "id_token": token})

    assert answer.status_code == 302
    reload = parse_qs(urlsplit(answer.headers["Location"]).query)["shopify-reload"][0]
    assert urlsplit(reload).path == "/app"
    assert parse_qs(urlsplit(reload).query)["shop"] == [gone.domain]


@pytest.mark.smoke
def test_pages_carry_the_frame_ancestors_and_no_referrer(pages, shop):
    answer = pages.get("/app/customers")

    assert answer.status_code == 200
    assert answer.headers["Content-Security-Policy"] == (
        f"frame-ancestors https://{shop.domain} https://admin.shopify.com;"
    )
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.mimetype == "text/html"


@pytest.mark.smoke
def test_an_embedded_page_loads_app_bridge_with_the_nav_menu_and_renders_its_token(pages):
    answer = pages.get("/app/customers", host="YWRtaW4", embedded="1")
    html = answer.text

    assert html.count(APP_BRIDGE) == 1
    assert html.index(APP_BRIDGE) < html.index("</head>")
    assert f'<meta name="shopify-api-key" content="{API_KEY}">' in html
    assert "<ui-nav-menu>" in html
    token = re.search(r'name="creditcraft-session-token" content="([^"]+)"', html)
    assert token is not None
    assert token.group(1) == parse_qs(urlsplit(answer.request.url).query)["id_token"][0]
    # Links keep the admin context (the token is added fresh by app.js, or by the bounce).
    nav = re.search(r'href="([^"]+)" data-app-link data-testid="nav-bulk-issue"', html)
    assert nav is not None
    link = urlsplit(nav.group(1).replace("&amp;", "&"))
    assert link.path == "/app/bulk"
    expected = {"shop": [pages.shop.domain], "host": ["YWRtaW4"], "embedded": ["1"]}
    assert parse_qs(link.query) == expected
    assert 'src="/static/app.js"' in html
    assert 'href="/static/app.css"' in html


@pytest.mark.smoke
def test_the_static_files_are_served(client):
    script = client.get("/static/app.js")
    style = client.get("/static/app.css")
    assert script.status_code == 200
    assert "sessionToken" in script.text
    assert style.status_code == 200
    script.close()
    style.close()


# -- Customers ---------------------------------------------------------------------------------


def test_customers_lists_balances_and_finds_by_name_email_or_shopify_id(pages, shop, now):
    ada = customer_of(shop, first_name="Ada", last_name="Lovelace", email="ada@example.com")
    grace = customer_of(shop, first_name="Grace", last_name="Hopper", email="grace@example.com")
    issue(db.session, shop, ada, "12.50", now=now)
    issue(db.session, shop, ada, "3.00", now=now, currency="EUR")

    listed = pages.get("/app/customers").text
    assert rows(listed, "customer-row") == 2
    assert texts_of(listed, "customer-balance-USD") == ["12.50&nbsp;"]
    assert texts_of(listed, "customer-balance-EUR") == ["3.00&nbsp;"]
    assert "No credit" in listed  # Grace

    for query in ("lovelace", "ADA@example", str(ada.shopify_customer_id)):
        found = pages.get("/app/customers", query=query).text
        assert rows(found, "customer-row") == 1, query
        assert f'data-customer-id="{ada.shopify_customer_id}"' in found
    none = pages.get("/app/customers", query="nobody-like-this").text
    assert rows(none, "customer-row") == 0
    assert "No customer matches “nobody-like-this”" in none
    assert f'data-customer-id="{grace.shopify_customer_id}"' not in none


def test_customers_are_paginated_with_a_next_page_link(pages, shop):
    for n in range(51):
        customer_of(shop, last_name=f"Paged{n:02d}")

    first = pages.get("/app/customers").text
    assert rows(first, "customer-row") == 50
    next_link = re.search(r'href="([^"]+)" data-app-link data-testid="next-page"', first)
    assert next_link is not None
    params = parse_qs(urlsplit(next_link.group(1).replace("&amp;", "&")).query)
    assert params["shop"] == [shop.domain]
    assert "id_token" not in params

    second = pages.get("/app/customers", after=params["after"][0]).text
    assert rows(second, "customer-row") == 1
    assert 'data-testid="next-page"' not in second
    assert 'data-testid="first-page"' in second


def test_an_empty_shop_says_so(pages):
    html = pages.get("/app/customers").text
    assert rows(html, "customer-row") == 0
    assert "No customers yet." in html


# -- Customer ----------------------------------------------------------------------------------


def test_a_customer_page_shows_accounts_lots_and_the_ledger_newest_first(pages, shop, now):
    ada = customer_of(shop, first_name="Ada", last_name="Lovelace", email="ada@example.com")
    first = issue(db.session, shop, ada, "25.00", now=now - timedelta(days=2), reason="welcome")
    issue(
        db.session,
        shop,
        ada,
        "10.00",
        now=now - timedelta(days=1),
        reason="cashback",
        actor=f"staff:{STAFF_ID}",
        expires_at=now + timedelta(days=30),
    )
    operations.adjust(
        db.session,
        Actor(shop_id=shop.id, now=now, actor="staff:42", reason="typo fix"),
        customer=ada.shopify_customer_id,
        amount=Money(-500, "USD"),
    )

    answer = pages.get(f"/app/customers/{ada.shopify_customer_id}")
    html = answer.text

    assert answer.status_code == 200
    assert "<h1>Ada Lovelace</h1>" in html
    assert texts_of(html, "balance-USD") == ["30.00&nbsp;"]
    assert rows(html, "lot-row") == 2
    assert rows(html, "ledger-row") == 3
    kinds = re.findall(r'data-testid="ledger-row" data-entry-id="[^"]+" data-kind="(\w+)"', html)
    assert kinds == ["adjust", "issue", "issue"]  # newest first
    ledger = html[html.index('data-testid="ledger-table"') :]
    assert ledger.index("typo fix") < ledger.index("cashback") < ledger.index("welcome")
    assert "staff:42" in html
    assert f"staff:{STAFF_ID}" in html
    assert first["id"] in html
    # The forms that change credit, each to its API route.
    assert f'data-api-path="/api/customers/{ada.shopify_customer_id}/credits"' in html
    assert f'data-api-path="/api/customers/{ada.shopify_customer_id}/debits"' in html
    assert html.count('data-api-path="/api/lots/') == 2  # each active lot can be revoked
    assert "data-confirm=" in html


def test_a_long_time_customer_shows_every_active_lot_and_the_newest_closed_ones(pages, shop, now):
    ada = customer_of(shop)
    for n in range(23):
        entry = issue(db.session, shop, ada, "1.00", now=now + timedelta(minutes=n))
        operations.revoke(
            db.session,
            Actor(
                shop_id=shop.id,
                now=now + timedelta(minutes=n, seconds=1),
                actor="staff:1",
                reason="x",
            ),
            lot_id=uuid.UUID(entry["lot_id"]),
        )
    issue(db.session, shop, ada, "5.00", now=now - timedelta(days=1), reason="old but active")
    issue(db.session, shop, ada, "6.00", now=now + timedelta(hours=1), reason="new and active")

    html = pages.get(f"/app/customers/{ada.shopify_customer_id}").text

    statuses = re.findall(r'data-testid="lot-row" data-lot-id="[^"]+" data-status="(\w+)"', html)
    assert statuses.count("active") == 2
    assert statuses.count("revoked") == 20
    assert texts_of(html, "closed-lots-hidden")[0].startswith("3 older spent, expired or revoked")


def test_the_ledger_pages_back_through_older_entries(pages, shop, now):
    ada = customer_of(shop)
    for n in range(27):
        issue(db.session, shop, ada, "1.00", now=now - timedelta(hours=30 - n), reason=f"r{n}")

    first = pages.get(f"/app/customers/{ada.shopify_customer_id}").text
    assert rows(first, "ledger-row") == 25
    link = re.search(r'href="([^"]+)" data-app-link data-testid="next-page"', first)
    assert link is not None
    cursor = parse_qs(urlsplit(link.group(1).replace("&amp;", "&")).query)["cursor"][0]

    older = pages.get(f"/app/customers/{ada.shopify_customer_id}", cursor=cursor).text
    assert rows(older, "ledger-row") == 2
    ledger = older[older.index('data-testid="ledger-table"') :]
    assert ">r1<" in ledger
    assert ">r0<" in ledger
    assert ">r26<" not in ledger


def test_a_ledger_cursor_we_did_not_make_is_a_400_page(pages, shop):
    ada = customer_of(shop)
    answer = pages.get(f"/app/customers/{ada.shopify_customer_id}", cursor="bm9wZQ")
    assert answer.status_code == 400
    assert "not one we made" in answer.text


@pytest.mark.smoke
def test_another_shops_customer_is_a_404_page(pages, app_context):
    elsewhere = customer_of(ShopFactory())

    answer = pages.get(f"/app/customers/{elsewhere.shopify_customer_id}")

    assert answer.status_code == 404
    assert answer.mimetype == "text/html"
    assert "This shop has no such customer." in answer.text
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert pages.get("/app/customers/not-a-number").status_code == 404


@pytest.mark.smoke
def test_values_are_html_escaped(pages, shop, now):
    evil = customer_of(
        shop, first_name="<script>alert(1)</script>", last_name="", email="x@example.com"
    )
    issue(db.session, shop, evil, "1.00", now=now, reason='"><img src=x onerror=alert(2)>')

    for path, params in (
        (f"/app/customers/{evil.shopify_customer_id}", {}),
        ("/app/customers", {"query": "<script>"}),
    ):
        html = pages.get(path, **params).text
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<img src=x" not in html


def test_the_admin_link_is_app_bridges_when_embedded_and_admin_shopify_com_otherwise(
    pages, shop, dev_client
):
    ada = customer_of(shop)
    html = pages.get(f"/app/customers/{ada.shopify_customer_id}").text
    assert f'href="shopify://admin/customers/{ada.shopify_customer_id}" target="_top"' in html

    token = _dev_token(dev_client, shop.domain)
    dev = dev_client.get(
        f"/app/customers/{ada.shopify_customer_id}",
        query_string={"shop": shop.domain, "id_token": token},
    ).text
    handle = shop.domain.removesuffix(".myshopify.com")
    assert (
        f'href="https://admin.shopify.com/store/{handle}/customers/{ada.shopify_customer_id}" '
        'target="_blank"'
    ) in dev


def test_issuing_from_the_page_s_form_path_lands_in_the_ledger_shown(pages, shop):
    """The issue form's fields, sent as app.js sends them, are what the API takes."""
    ada = customer_of(shop)
    html = pages.get(f"/app/customers/{ada.shopify_customer_id}").text
    start = html.index('id="issue-form"')
    form = html[start : html.index("</form>", start)]
    names = set(re.findall(r'<(?:input|select)[^>]* name="(\w+)"', form))
    assert names == {"amount", "currency", "expires_at", "reason", "source", "note"}

    answer = pages.client.post(
        f"/api/customers/{ada.shopify_customer_id}/credits",
        json={
            "amount": "7.25",
            "currency": "USD",
            "reason": "from the page",
            "source": "goodwill",
            "expires_at": (datetime.now(UTC) + timedelta(days=9)).isoformat(),
        },
        headers={
            "Authorization": f"Bearer {session_token(shop.domain, sub=STAFF_ID)}",
            "Idempotency-Key": "page-form-1",
        },
    )
    assert answer.status_code == 201, answer.json

    shown = pages.get(f"/app/customers/{ada.shopify_customer_id}").text
    assert texts_of(shown, "balance-USD") == ["7.25&nbsp;"]
    assert "from the page" in shown
    assert f"staff:{STAFF_ID}" in shown


# -- Bulk issue --------------------------------------------------------------------------------


def test_bulk_shows_the_dry_run_then_progress_and_the_result(pages, shop):
    ada = customer_of(shop)
    grace = customer_of(shop)
    csv = (
        "customer_id,amount,currency,reason\n"
        f"{ada.shopify_customer_id},5.00,USD,promo\n"
        f"{grace.shopify_customer_id},2.50,USD,promo\n"
    ).encode()
    headers = {"Authorization": f"Bearer {session_token(shop.domain)}"}
    created = pages.client.post(
        "/api/bulk-imports",
        data={"file": (io.BytesIO(csv), "promo.csv")},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert created.status_code == 201, created.json
    import_id = created.json["bulk_import"]["id"]

    report = pages.get("/app/bulk", **{"import": import_id}).text
    assert texts_of(report, "report-rows") == ["2"]
    assert texts_of(report, "report-valid") == ["2"]
    assert "7.50" in report  # the total per currency
    assert 'id="bulk-start-form"' in report
    assert f'data-api-path="/api/bulk-imports/{import_id}/start"' in report
    assert 'data-testid="bulk-progress"' not in report
    assert rows(report, "import-row") == 1

    # Confirmed: the import is issuing (the job not run yet) and the page shows its progress.
    bulk.start_import(db.session, shop.id, import_id, actor="staff:1", now=datetime.now(UTC))
    issuing = pages.get("/app/bulk", **{"import": import_id}).text
    progress = re.search(r'id="bulk-progress"[^>]*data-state="(\w+)" data-percent="(\d+)"', issuing)
    assert progress is not None
    assert progress.groups() == ("issuing", "0")
    assert '<progress max="100" value="0"' in issuing

    with settings_changed(pages.client.application, redis_url=None):  # the job runs inline
        started = pages.client.post(f"/api/bulk-imports/{import_id}/start", headers=headers)
    assert started.status_code == 200, started.json

    done = pages.get("/app/bulk", **{"import": import_id}).text
    progress = re.search(r'id="bulk-progress"[^>]*data-state="(\w+)" data-percent="(\d+)"', done)
    assert progress is not None
    assert progress.groups() == ("finished", "100")
    assert f'data-download="/api/bulk-imports/{import_id}/result"' in done
    assert 'id="bulk-start-form"' not in done


def test_a_file_with_errors_shows_them_and_cannot_be_confirmed(pages, shop):
    csv = b"customer_id,amount,currency,reason\n123,abc,USD,promo\n"
    created = pages.client.post(
        "/api/bulk-imports",
        data={"file": (io.BytesIO(csv), "bad.csv")},
        headers={"Authorization": f"Bearer {session_token(shop.domain)}"},
        content_type="multipart/form-data",
    )
    import_id = created.json["bulk_import"]["id"]

    html = pages.get("/app/bulk", **{"import": import_id}).text

    assert rows(html, "report-error") >= 1
    assert 'data-testid="bulk-invalid"' in html
    assert 'id="bulk-start-form"' not in html


def test_bulk_without_imports_and_another_shops_import(pages, app_context):
    html = pages.get("/app/bulk").text
    assert "No imports yet." in html
    assert 'id="bulk-upload-form"' in html
    assert 'data-api-encoding="multipart"' in html
    assert pages.get("/app/bulk", **{"import": "999999999"}).status_code == 404


# -- Dashboard ---------------------------------------------------------------------------------


def test_the_dashboard_shows_liability_activity_and_what_expires_soon(pages, shop):
    now = datetime.now(UTC)
    ada = customer_of(shop)
    issue(db.session, shop, ada, "40.00", now=now - timedelta(days=3))
    soon = now + timedelta(days=5)
    issue(db.session, shop, ada, "15.00", now=now - timedelta(days=1), expires_at=soon)

    answer = pages.get("/app")
    html = answer.text

    assert answer.status_code == 200
    assert re.search(r'data-testid="liability-USD"><span class="money">55.00', html)
    assert re.search(r'data-testid="expiring-USD"><span class="money">15.00', html)
    assert texts_of(html, "open-findings-count") == ["0"]
    assert texts_of(html, "failed-syncs-count") == ["0"]
    chart = html[html.index('data-testid="chart-USD"') :]
    assert chart.count('<rect class="bar issued"') == 2  # two days with credit issued
    assert "Issued 55.00" in chart


def test_an_empty_dashboard_says_so(pages):
    html = pages.get("/app").text
    assert "No customer holds store credit yet." in html
    assert "No credit was issued, redeemed or expired in the last 30 days." in html


# -- the development login ---------------------------------------------------------------------


def _dev_token(dev_client, domain: str) -> str:
    from blueprints.session_token import mint_development_token
    from blueprints.settings import current_settings

    return mint_development_token(
        current_settings(), domain, user="dev-staff", minutes=60, now=datetime.now(UTC)
    )


def test_the_dev_login_opens_the_demo_shop_without_app_bridge(dev_client, settings):
    demo = installed(DEMO_SHOP, settings)

    answer = dev_client.get("/app/dev/login")

    assert answer.status_code == 302
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    target = urlsplit(answer.headers["Location"])
    assert target.path == "/app"
    query = parse_qs(target.query)
    assert query["shop"] == [demo.domain]
    page = dev_client.get(answer.headers["Location"])
    assert page.status_code == 200
    assert "app-bridge.js" not in page.text
    assert "<ui-nav-menu>" not in page.text
    assert 'data-embedded="false"' in page.text
    customers = dev_client.get(
        "/app/customers", query_string={"shop": demo.domain, "id_token": query["id_token"][0]}
    )
    assert customers.status_code == 200
    assert "app-bridge.js" not in customers.text


def test_the_dev_login_refuses_a_request_from_another_machine(dev_client):
    ShopFactory(domain=DEMO_SHOP)
    answer = dev_client.get("/app/dev/login", environ_base={"REMOTE_ADDR": "10.0.0.5"})
    assert answer.status_code == 403
    assert "id_token" not in answer.headers.get("Location", "")


def test_the_dev_login_refuses_when_the_app_is_not_on_loopback(dev_app, dev_client):
    ShopFactory(domain=DEMO_SHOP)
    with settings_changed(dev_app, app_url="https://creditcraft.example.com"):
        assert dev_client.get("/app/dev/login").status_code == 403


def test_the_dev_login_does_not_exist_outside_development(client, settings):
    assert client.get("/app/dev/login").status_code == 404  # the test app (env "test")
    with another_app(settings, env="production") as production:
        assert not [r for r in production.url_map.iter_rules() if r.rule == "/app/dev/login"]
        assert production.test_client().get("/app/dev/login").status_code == 404


def test_a_dev_token_shows_app_bridge_pages_outside_development(pages, shop):
    """The development claim means nothing in production or tests: the page stays embedded."""
    from blueprints.session_token import mint_development_token
    from blueprints.settings import current_settings

    token = mint_development_token(
        dataclasses.replace(current_settings(), env="development"),
        shop.domain,
        user="dev-staff",
        minutes=5,
        now=datetime.now(UTC),
    )
    html = pages.client.get(
        "/app/customers", query_string={"shop": shop.domain, "id_token": token}
    ).text
    assert APP_BRIDGE in html


def test_the_demo_token_command_and_the_dev_login_mint_the_same_kind_of_token(app_context):
    """One minting function: the CLI's tokens carry the development claim too."""
    import jwt

    from tests.conftest import API_SECRET

    ShopFactory(domain=DEMO_SHOP)
    output = app_context.test_cli_runner().invoke(args=["demo", "token", "--user", "9"]).output
    claims = jwt.decode(output.strip(), API_SECRET, algorithms=["HS256"], audience=API_KEY)
    assert claims["sub"] == "9"
    assert claims["creditcraft_dev"] is True
    assert claims["dest"] == f"https://{DEMO_SHOP}"
