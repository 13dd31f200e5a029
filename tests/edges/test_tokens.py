"""Expiring offline tokens: refreshed before they expire, after a 401, once under concurrency."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from blueprints.settings import current_settings
from extensions import db
from models import ApiUsage, Shop
from shop_access import ShopNotConnected, admin_client, install_with_session_token
from shopify_client import documents
from tests.fake_shopify import FakeShopify
from tokens import TokenBox


def refreshes(fake: FakeShopify) -> list:
    return [r for r in fake.requests if r.kind == "token" and r.grant_type == "refresh_token"]


@pytest.fixture
def installed(connected: FakeShopify, shop_domain: str) -> Shop:
    connected.add_shop(shop_domain, currency="EUR", name="Token Shop")
    now = datetime.now(UTC)
    token = connected.session_token(shop_domain)
    return install_with_session_token(db.session, current_settings(), shop_domain, token, now)


def test_a_token_about_to_expire_is_refreshed_and_the_pair_rotated(connected, installed):
    box = TokenBox(current_settings().token_encryption_keys)
    old_refresh = box.decrypt(installed.refresh_token_encrypted)
    installed.access_token_expires_at = datetime.now(UTC) + timedelta(minutes=2)
    db.session.commit()
    client = admin_client(db.session, current_settings(), installed, datetime.now(UTC))
    assert client.query(documents.SHOP)["shop"]["currencyCode"] == "EUR"
    assert len(refreshes(connected)) == 1
    db.session.refresh(installed)
    assert box.decrypt(installed.refresh_token_encrypted) != old_refresh
    assert installed.access_token_expires_at > datetime.now(UTC) + timedelta(minutes=55)


def test_install_learns_the_shops_currency_and_time_zone(installed):
    assert (installed.currency, installed.name) == ("EUR", "Token Shop")


def test_a_fresh_token_is_used_as_it_is(connected, installed):
    client = admin_client(db.session, current_settings(), installed, datetime.now(UTC))
    client.query(documents.SHOP)
    assert refreshes(connected) == []


def test_a_401_refreshes_once_and_the_call_succeeds(connected, installed):
    connected.expire_access_token(installed.domain)
    client = admin_client(db.session, current_settings(), installed, datetime.now(UTC))
    assert client.query(documents.SHOP)["shop"]["myshopifyDomain"] == installed.domain
    assert len(refreshes(connected)) == 1


def test_a_refused_refresh_token_marks_the_shop_for_reauthorization(connected, installed):
    box = TokenBox(current_settings().token_encryption_keys)
    installed.refresh_token_encrypted = box.encrypt("shprt_revoked")
    installed.access_token_expires_at = datetime.now(UTC) - timedelta(minutes=1)
    db.session.commit()
    with pytest.raises(ShopNotConnected, match="reopen"):
        admin_client(db.session, current_settings(), installed, datetime.now(UTC))
    db.session.refresh(installed)
    assert installed.reauthorize_required_at is not None
    with pytest.raises(ShopNotConnected):  # and nothing calls Shopify until then
        admin_client(db.session, current_settings(), installed, datetime.now(UTC))
    assert len(refreshes(connected)) == 1


def test_query_cost_is_recorded_per_shop_and_day(connected, installed):
    client = admin_client(db.session, current_settings(), installed, datetime.now(UTC))
    client.query(documents.SHOP)
    client.query(documents.SHOP)
    usage = db.session.execute(
        select(ApiUsage).where(ApiUsage.shop_id == installed.id)
    ).scalar_one()
    assert usage.calls == 3  # the install's own read of the shop, then these two
    assert usage.requested_cost >= 3
    assert usage.throttled == 0


@pytest.mark.concurrency
def test_concurrent_refreshes_for_one_shop_spend_the_refresh_token_once(
    app, engine, shopify, on_postgresql
):
    """Two workers see the same stale token at once: one refreshes, the other reuses its pair."""
    if not on_postgresql:
        pytest.skip("row locks need PostgreSQL")
    from tests.conftest import settings_changed

    domain = f"race-{datetime.now(UTC).strftime('%H%M%S%f')}.myshopify.com"
    shopify.add_shop(domain)
    with app.app_context(), settings_changed(app, shopify_admin_origin=shopify.origin_template):
        settings = current_settings()
        with Session(engine) as setup:
            shop = install_with_session_token(
                setup, settings, domain, shopify.session_token(domain), datetime.now(UTC)
            )
            shop.access_token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
            setup.commit()
            shop_id = shop.id
        tokens: list[str] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def worker() -> None:
            try:
                with Session(engine) as own:
                    row = own.get(Shop, shop_id)
                    barrier.wait()
                    client = admin_client(own, settings, row, datetime.now(UTC))
                    client.query(documents.SHOP)
                    tokens.append(client._access_token)
            except BaseException as error:  # surfaced below
                errors.append(error)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            assert errors == []
            assert len(refreshes(shopify)) == 1
            assert len(set(tokens)) == 1
        finally:
            with Session(engine) as cleanup:
                cleanup.execute(delete(ApiUsage).where(ApiUsage.shop_id == shop_id))
                cleanup.execute(delete(Shop).where(Shop.id == shop_id))
                cleanup.commit()


def test_key_rotation_re_encrypts_every_stored_token(app_context, installed):
    from cryptography.fernet import Fernet

    from shop_access import rotate_token_encryption
    from tests.conftest import settings_changed

    old_keys = current_settings().token_encryption_keys
    plain = TokenBox(old_keys).decrypt(installed.access_token_encrypted)
    new_key = Fernet.generate_key().decode()
    with settings_changed(app_context, token_encryption_keys=(new_key, *old_keys)):
        assert rotate_token_encryption(db.session, current_settings()) >= 2
    db.session.refresh(installed)
    assert TokenBox((new_key,)).decrypt(installed.access_token_encrypted) == plain
    assert TokenBox((new_key,)).decrypt(installed.refresh_token_encrypted).startswith("shprt_")
