"""The `flask` commands, worded exactly as CONTRACT.md says (scripts rely on the output)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from extensions import db
from ledger import operations
from ledger.book import Actor
from ledger.money import Money
from models import CreditLot, LedgerEntry, Shop
from tests.conftest import settings_changed
from tests.factories import ShopFactory
from tokens import TokenBox


@pytest.fixture
def runner(app_context):
    return app_context.test_cli_runner()


def _shop(domain: str) -> Shop:
    return db.session.execute(select(Shop).where(Shop.domain == domain)).scalar_one()


@pytest.mark.smoke
def test_shops_install_registers_the_shop_with_its_token_encrypted(runner, settings):
    result = runner.invoke(
        args=["shops", "install", "cli-test.myshopify.com", "--token", "shpat_x1"]
    )

    assert result.exit_code == 0, result.output
    assert result.output.startswith("installed cli-test.myshopify.com (shop id ")
    assert result.output.rstrip().endswith("native sync on)")
    shop = _shop("cli-test.myshopify.com")
    assert shop.is_installed
    assert shop.native_sync
    assert "shpat_x1" not in (shop.access_token_encrypted or "")
    box = TokenBox(settings.token_encryption_keys)
    assert box.decrypt(shop.access_token_encrypted or "") == "shpat_x1"


def test_shops_install_without_native_sync_and_again_reinstalls(runner):
    domain = "cli-resync.myshopify.com"
    runner.invoke(args=["shops", "install", domain, "--token", "one"])
    shop = _shop(domain)
    shop.uninstalled_at = datetime.now(UTC)
    db.session.commit()

    result = runner.invoke(args=["shops", "install", domain, "--token", "two", "--no-native-sync"])

    assert result.exit_code == 0, result.output
    assert "native sync off" in result.output
    shop = _shop(domain)
    assert shop.is_installed
    assert not shop.native_sync
    assert (
        db.session.scalar(select(func.count()).select_from(Shop).where(Shop.domain == domain)) == 1
    )


@pytest.mark.parametrize("domain", ["evil.com", "UPPER.myshopify.com", "a.myshopify.com.evil.com"])
def test_shops_install_refuses_a_domain_that_is_not_a_shop(runner, domain):
    result = runner.invoke(args=["shops", "install", domain, "--token", "t"])
    assert result.exit_code == 2
    assert "myshopify.com" in result.output


def test_credits_expire_prints_counts_and_is_idempotent(runner):
    shop = ShopFactory()
    issued_at = datetime(2026, 1, 1, tzinfo=UTC)
    for customer, cents in ((1, 1000), (2, 250)):
        operations.issue(
            db.session,
            Actor(shop.id, issued_at, "staff:1", "goodwill"),
            customer=customer,
            amount=Money(cents, "USD"),
            expires_at=issued_at + timedelta(days=30),
        )

    early = runner.invoke(
        args=["credits", "expire", "--shop", shop.domain, "--now", "2026-01-15T00:00:00Z"]
    )
    first = runner.invoke(
        args=["credits", "expire", "--shop", shop.domain, "--now", "2026-03-01T00:00:00+00:00"]
    )
    again = runner.invoke(
        args=["credits", "expire", "--shop", shop.domain, "--now", "2026-03-02T00:00:00+00:00"]
    )

    assert early.output == "expired 0 lots in 0 accounts\n"
    assert first.output == "expired 2 lots in 2 accounts (12.50 USD)\n"
    assert again.output == "expired 0 lots in 0 accounts\n"
    statuses = db.session.scalars(
        select(CreditLot.status).where(CreditLot.shop_id == shop.id)
    ).all()
    assert statuses == ["expired", "expired"]


def test_credits_expire_for_an_unknown_shop_fails(runner):
    result = runner.invoke(args=["credits", "expire", "--shop", "nobody.myshopify.com"])
    assert result.exit_code == 1
    assert "no shop nobody.myshopify.com" in result.output


@pytest.mark.smoke
def test_demo_seed_is_idempotent(runner):
    domain = "seed-twice.myshopify.com"
    first = runner.invoke(args=["demo", "seed", "--shop", domain])
    shop = _shop(domain)
    count = select(func.count()).select_from(LedgerEntry).where(LedgerEntry.shop_id == shop.id)
    entries = db.session.scalar(count)
    second = runner.invoke(args=["demo", "seed", "--shop", domain])

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert first.output.startswith(f"demo shop {domain} ready with 6 customers")
    assert entries
    assert db.session.scalar(count) == entries


@pytest.mark.smoke
def test_demo_token_calls_the_api_as_the_demo_shop(runner, client):
    runner.invoke(args=["demo", "seed"])
    token = runner.invoke(args=["demo", "token", "--user", "77"]).output.strip()

    answer = client.get("/api/customers/7408348290", headers={"Authorization": f"Bearer {token}"})

    assert answer.status_code == 200, answer.json
    assert answer.json["customer"]["email"] == "ada@example.com"
    assert answer.json["accounts"][0]["currency"] == "USD"


def test_demo_token_is_refused_in_production(app_context):
    with settings_changed(app_context, env="production"):
        result = app_context.test_cli_runner().invoke(args=["demo", "token"])
    assert result.exit_code == 1
    assert "only in development" in result.output
