"""Tokens from the fake Shopify's token endpoint: exchange, refresh rotation, code, failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from config import DEFAULT_API_VERSION
from shopify_client import documents, oauth
from shopify_client.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidShopDomain,
    InvalidSubjectToken,
    TokenEndpointUnavailable,
    TokenRequestRejected,
)
from shopify_client.graphql import AdminClient, ThrottleTracker
from tests.conftest import API_KEY, API_SECRET
from tests.shopify_client.conftest import SHOP, Waits

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def options(fake, **overrides):
    return {
        "api_key": API_KEY,
        "api_secret": API_SECRET,
        "origin_template": fake.origin_template,
        "now": NOW,
        **overrides,
    }


def works(fake, access_token: str, shop: str = SHOP) -> bool:
    client = AdminClient(
        shop,
        access_token,
        api_version=DEFAULT_API_VERSION,
        admin_origin_template=fake.origin_template,
        throttle=ThrottleTracker(),
    )
    return client.query(documents.SHOP)["shop"]["myshopifyDomain"] == shop


def test_token_exchange_gives_an_expiring_offline_token_and_a_refresh_token(shopify):
    shopify.add_shop(SHOP)
    tokens = oauth.exchange_session_token(SHOP, shopify.session_token(SHOP), **options(shopify))

    assert tokens.access_token.startswith("shpat_")
    assert tokens.refresh_token is not None
    assert tokens.refresh_token.startswith("shprt_")
    assert tokens.expires_at == NOW + timedelta(seconds=3600)
    assert tokens.refresh_token_expires_at == NOW + timedelta(days=90)
    assert "write_store_credit_account_transactions" in tokens.scopes
    assert tokens.access_token not in repr(tokens)
    assert tokens.refresh_token not in repr(tokens)
    assert works(shopify, tokens.access_token)
    (request,) = shopify.requests[:1]
    assert request.kind == "token"
    assert request.grant_type == oauth.TOKEN_EXCHANGE_GRANT


def test_refresh_rotates_both_tokens_and_spends_the_old_refresh_token(shopify, install):
    first = install()
    second = oauth.refresh_access_token(SHOP, first.refresh_token, **options(shopify))

    assert second.access_token != first.access_token
    assert second.refresh_token != first.refresh_token
    assert second.expires_at == NOW + timedelta(seconds=3600)
    assert works(shopify, second.access_token)
    third = oauth.refresh_access_token(SHOP, second.refresh_token, **options(shopify))
    assert works(shopify, third.access_token)
    with pytest.raises(InvalidGrant) as refused:  # spent, and its replacement is in use
        oauth.refresh_access_token(SHOP, first.refresh_token, **options(shopify))
    assert refused.value.status == 400
    assert refused.value.error == "invalid_grant"


def test_an_unknown_refresh_token_is_an_invalid_grant(shopify, install):
    install()
    with pytest.raises(InvalidGrant):
        oauth.refresh_access_token(SHOP, "shprt_" + "0" * 32, **options(shopify))


def test_a_refresh_whose_answer_was_lost_is_retried_with_the_same_token(shopify, install):
    """Shopify answers a prompt retry of a refresh with the same result (reference §1.6)."""
    first = install()
    shopify.faults.add("lost_response", operation="token")
    waits = Waits()

    second = oauth.refresh_access_token(SHOP, first.refresh_token, **options(shopify, sleep=waits))

    assert waits.calls == [1.0]
    grants = [r for r in shopify.requests if r.grant_type == "refresh_token"]
    assert [r.status for r in grants] == [None, 200]
    assert works(shopify, second.access_token)


def test_a_bad_or_foreign_session_token_is_an_invalid_subject_token(shopify):
    shopify.add_shop(SHOP)
    shopify.add_shop("other.myshopify.com")
    for id_token in (
        shopify.session_token("other.myshopify.com"),  # names another shop
        shopify.session_token(
            SHOP, exp=int((datetime.now(UTC) - timedelta(minutes=5)).timestamp())
        ),
        "not-a-jwt",
    ):
        with pytest.raises(InvalidSubjectToken) as refused:
            oauth.exchange_session_token(SHOP, id_token, **options(shopify))
        assert refused.value.status == 400


def test_wrong_client_credentials_are_an_invalid_client(shopify):
    shopify.add_shop(SHOP)
    with pytest.raises(InvalidClient) as refused:
        oauth.exchange_session_token(
            SHOP, shopify.session_token(SHOP), **options(shopify, api_secret="wrong-secret")
        )
    assert refused.value.status == 401


def test_authorization_code_grant_once(shopify):
    shopify.add_shop(SHOP)
    code = shopify.authorization_code(SHOP)

    tokens = oauth.exchange_authorization_code(SHOP, code, **options(shopify))

    assert tokens.refresh_token is not None  # expiring: 1 was asked for
    assert tokens.expires_at == NOW + timedelta(seconds=3600)
    assert works(shopify, tokens.access_token)
    with pytest.raises(TokenRequestRejected) as refused:  # Shopify: invalid_request, not grant
        oauth.exchange_authorization_code(SHOP, code, **options(shopify))
    assert refused.value.error == "invalid_request"


def test_server_errors_and_429_are_retried_honouring_retry_after(shopify):
    shopify.add_shop(SHOP)
    shopify.faults.add("server_error", operation="token")
    shopify.faults.add("rate_limited", operation="token")
    waits = Waits()

    tokens = oauth.exchange_session_token(
        SHOP, shopify.session_token(SHOP), **options(shopify, sleep=waits, max_attempts=3)
    )

    assert waits.calls == [1.0, 1.0]  # backoff after the 503; Retry-After: 1 after the 429
    assert [r.status for r in shopify.requests if r.kind == "token"] == [503, 429, 200]
    assert works(shopify, tokens.access_token)


def test_the_endpoint_unavailable_on_every_attempt(shopify):
    shopify.add_shop(SHOP)
    shopify.faults.add("server_error", operation="token", times=3)
    waits = Waits()

    with pytest.raises(TokenEndpointUnavailable, match="after 3 attempts: HTTP 503"):
        oauth.exchange_session_token(
            SHOP, shopify.session_token(SHOP), **options(shopify, sleep=waits, max_attempts=3)
        )
    assert waits.calls == [1.0, 2.0]


def test_a_slow_token_endpoint_times_out_and_is_retried(shopify):
    shopify.add_shop(SHOP)
    shopify.faults.add("slow", operation="token", delay=1.0)
    waits = Waits()

    tokens = oauth.exchange_session_token(
        SHOP, shopify.session_token(SHOP), **options(shopify, sleep=waits, timeout=0.2)
    )

    assert waits.calls == [1.0]
    assert works(shopify, tokens.access_token)


def test_nothing_is_sent_for_a_shop_that_is_not_a_myshopify_domain(shopify):
    for shop in ("evil.com", "acme.myshopify.com.evil.com", "ACME.myshopify.com", ""):
        with pytest.raises(InvalidShopDomain):
            oauth.exchange_session_token(shop, "x", **options(shopify))
    assert shopify.requests == []


def test_authorize_url():
    url = oauth.authorize_url(
        SHOP,
        api_key=API_KEY,
        scopes=["read_customers", "write_store_credit_account_transactions"],
        redirect_uri="https://app.example/auth/callback",
        state="nonce-123",
    )

    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", SHOP, "/admin/oauth/authorize")
    assert parse_qs(parts.query) == {
        "client_id": [API_KEY],
        "scope": ["read_customers,write_store_credit_account_transactions"],
        "redirect_uri": ["https://app.example/auth/callback"],
        "state": ["nonce-123"],
    }
    with pytest.raises(InvalidShopDomain):
        oauth.authorize_url(
            "evil.com", api_key=API_KEY, scopes="x", redirect_uri="https://a", state="s"
        )
