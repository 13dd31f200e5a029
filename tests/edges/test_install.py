"""Installing: the embedded first load (token exchange) and the authorization-code grant."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from blueprints.admin_query import sign
from extensions import db
from models import Shop
from tests.conftest import API_KEY, API_SECRET
from tests.fake_shopify import FakeShopify


def token_requests(fake: FakeShopify, grant: str | None = None) -> list:
    return [
        r
        for r in fake.requests
        if r.kind == "token" and (grant is None or grant in (r.grant_type or ""))
    ]


def shop_row(session, domain: str) -> Shop | None:
    return session.execute(select(Shop).where(Shop.domain == domain)).scalar_one_or_none()


class TestEmbeddedFirstLoad:
    def test_first_load_exchanges_the_id_token_for_an_expiring_offline_token(
        self, client, connected, shop_domain
    ):
        connected.add_shop(shop_domain, name="Edge Shop")
        id_token = connected.session_token(shop_domain)
        answer = client.get(f"/app?shop={shop_domain}&embedded=1&id_token={id_token}")
        assert answer.status_code == 200
        assert answer.headers["Content-Security-Policy"] == (
            f"frame-ancestors https://{shop_domain} https://admin.shopify.com;"
        )
        assert f'content="{API_KEY}"' in answer.text
        shop = shop_row(db.session, shop_domain)
        assert shop is not None
        assert shop.is_installed
        assert shop.access_token_encrypted
        assert not shop.access_token_encrypted.startswith("shpat_")
        assert shop.refresh_token_encrypted
        assert shop.access_token_expires_at is not None
        left = shop.access_token_expires_at - datetime.now(UTC)
        assert timedelta(minutes=55) < left <= timedelta(hours=1)
        assert shop.refresh_token_expires_at - datetime.now(UTC) > timedelta(days=89)
        assert "write_store_credit_account_transactions" in (shop.scopes or "")
        assert shop.name == "Edge Shop"  # read from Shopify once installed
        assert shop.shopify_shop_id == connected.shop(shop_domain).id
        exchange = token_requests(connected, "token-exchange")
        assert len(exchange) == 1

    def test_later_loads_reuse_the_stored_token(self, client, connected, shop_domain):
        connected.add_shop(shop_domain)
        for _ in range(3):
            token = connected.session_token(shop_domain)
            assert client.get(f"/app?shop={shop_domain}&id_token={token}").status_code == 200
        assert len(token_requests(connected)) == 1

    def test_a_load_without_a_valid_id_token_bounces_for_a_fresh_one(
        self, client, connected, shop_domain
    ):
        connected.add_shop(shop_domain)
        forged = connected.session_token(shop_domain).rsplit(".", 1)[0] + ".bad"
        answer = client.get(f"/app?shop={shop_domain}&host=abc&id_token={forged}")
        assert answer.status_code == 302
        target = urlsplit(answer.headers["Location"])
        assert target.path == "/app/bounce"
        reload = parse_qs(target.query)["shopify-reload"][0]
        assert reload.startswith("/app?")
        assert "id_token" not in reload
        page = client.get(answer.headers["Location"])
        assert page.status_code == 200
        assert "app-bridge.js" in page.text
        assert page.headers["Content-Security-Policy"].startswith(
            f"frame-ancestors https://{shop_domain}"
        )
        assert token_requests(connected) == []
        assert shop_row(db.session, shop_domain) is None

    def test_a_token_for_another_app_is_refused(self, client, connected, shop_domain):
        connected.add_shop(shop_domain)
        other = connected.session_token(shop_domain, aud="someone-elses-app")
        assert client.get(f"/app?shop={shop_domain}&id_token={other}").status_code == 302
        assert token_requests(connected) == []

    def test_without_a_shop_there_is_nothing_to_bounce_to(self, client, connected):
        answer = client.get("/app")
        assert answer.status_code == 400
        assert answer.headers["Content-Security-Policy"] == "frame-ancestors 'none';"

    def test_a_bounce_never_reloads_outside_the_app(self, client, connected, shop_domain):
        answer = client.get(f"/app/bounce?shop={shop_domain}&shopify-reload=https://evil.example/")
        assert answer.status_code == 400

    def test_reinstall_after_uninstall_starts_fresh(self, client, connected, shop_domain):
        connected.add_shop(shop_domain)
        client.get(f"/app?shop={shop_domain}&id_token={connected.session_token(shop_domain)}")
        shop = shop_row(db.session, shop_domain)
        shop.uninstalled_at = datetime.now(UTC)
        shop.access_token_encrypted = shop.refresh_token_encrypted = None
        db.session.commit()
        answer = client.get(
            f"/app?shop={shop_domain}&id_token={connected.session_token(shop_domain)}"
        )
        assert answer.status_code == 200
        db.session.refresh(shop)
        assert shop.is_installed
        assert shop.uninstalled_at is None
        assert len(token_requests(connected)) == 2


class TestAuthorizationCodeGrant:
    def begin(self, client, shop_domain: str) -> str:
        answer = client.get(f"/auth?shop={shop_domain}")
        assert answer.status_code == 302
        return parse_qs(urlsplit(answer.headers["Location"]).query)["state"][0]

    @pytest.mark.parametrize(
        "shop",
        ["evil.com", "shop.myshopify.com.evil.com", "-x.myshopify.com", "", "a_b.myshopify.com"],
    )
    def test_a_shop_that_is_not_a_myshopify_host_is_a_400(self, client, connected, shop):
        answer = client.get("/auth", query_string={"shop": shop})
        assert answer.status_code == 400
        assert answer.json["error"]["code"] == "invalid_shop"

    def test_begin_redirects_to_the_grant_screen_with_a_state_bound_to_this_browser(
        self, client, connected, shop_domain
    ):
        answer = client.get(f"/auth?shop={shop_domain}")
        target = urlsplit(answer.headers["Location"])
        assert answer.headers["Location"].startswith(
            connected.origin(shop_domain) + "/admin/oauth/authorize"
        )
        query = parse_qs(target.query)
        assert query["client_id"] == [API_KEY]
        assert query["redirect_uri"] == ["http://127.0.0.1:8000/auth/callback"]
        assert len(query["state"][0]) == 32
        cookie = answer.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie
        assert "Path=/auth/callback" in cookie

    def test_the_callback_installs_the_shop(self, client, connected, shop_domain):
        connected.add_shop(shop_domain)
        state = self.begin(client, shop_domain)
        answer = client.get(
            f"/auth/callback?{connected.signed_callback_query(shop_domain, state=state)}"
        )
        assert answer.status_code == 302
        handle = shop_domain.split(".")[0]
        assert (
            answer.headers["Location"]
            == f"https://admin.shopify.com/store/{handle}/apps/{API_KEY}/"
        )
        shop = shop_row(db.session, shop_domain)
        assert shop is not None
        assert shop.is_installed
        assert shop.refresh_token_encrypted
        assert len(token_requests(connected, "authorization_code")) == 1

    def test_a_forged_hmac_is_a_401_and_installs_nothing(self, client, connected, shop_domain):
        connected.add_shop(shop_domain)
        state = self.begin(client, shop_domain)
        query = connected.signed_callback_query(shop_domain, state=state, secret="not-the-secret")
        answer = client.get(f"/auth/callback?{query}")
        assert answer.status_code == 401
        assert answer.json["error"]["code"] == "invalid_hmac"
        assert token_requests(connected) == []

    @pytest.mark.parametrize("skew", [-91, 91])
    def test_a_stale_timestamp_is_a_401(self, client, connected, shop_domain, skew):
        connected.add_shop(shop_domain)
        state = self.begin(client, shop_domain)
        query = connected.signed_callback_query(
            shop_domain, state=state, timestamp=int(time.time()) + skew
        )
        assert client.get(f"/auth/callback?{query}").status_code == 401

    def test_a_state_from_another_browser_is_a_401(
        self, client, app_context, connected, shop_domain
    ):
        connected.add_shop(shop_domain)
        self.begin(client, shop_domain)
        query = connected.signed_callback_query(shop_domain, state="0" * 32)
        answer = client.get(f"/auth/callback?{query}")
        assert answer.status_code == 401
        assert answer.json["error"]["code"] == "invalid_state"
        fresh_browser = app_context.test_client()
        state = self.begin(client, shop_domain)
        query = connected.signed_callback_query(shop_domain, state=state)
        assert fresh_browser.get(f"/auth/callback?{query}").status_code == 401
        assert token_requests(connected) == []

    def test_a_repeated_security_parameter_is_a_400(self, client, connected, shop_domain):
        connected.add_shop(shop_domain)
        state = self.begin(client, shop_domain)
        query = connected.signed_callback_query(shop_domain, state=state)
        answer = client.get(f"/auth/callback?{query}&shop=other-shop.myshopify.com")
        assert answer.status_code == 400

    def test_a_signed_callback_for_a_bad_shop_is_a_400(self, client, connected):
        params = [
            ("code", "abc"),
            ("shop", "evil.com"),
            ("state", "s"),
            ("timestamp", str(int(time.time()))),
        ]
        query = "&".join(f"{k}={v}" for k, v in params) + f"&hmac={sign(params, API_SECRET)}"
        assert client.get(f"/auth/callback?{query}").status_code == 400
