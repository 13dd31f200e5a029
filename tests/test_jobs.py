"""Job functions run inline (the schedule that calls them comes with the jobs issue)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from extensions import current_session
from jobs.maintenance import purge_idempotency_keys
from ledger import operations
from ledger.book import Actor
from ledger.errors import IdempotencyConflict
from ledger.idempotency import KEY_TTL
from ledger.money import Money
from models import IdempotencyKey, LedgerEntry
from tests.factories import ShopFactory


def test_idempotency_keys_live_at_least_a_day_then_the_job_purges_them(app_context):
    shop = ShopFactory()
    used_at = datetime(2026, 11, 1, 12, tzinfo=UTC)
    by = Actor(shop.id, used_at, "staff:1", "goodwill", idempotency_key="purge-me")
    operations.issue(current_session(), by, customer=1, amount=Money(100, "USD"))
    keys = select(IdempotencyKey.key).where(IdempotencyKey.shop_id == shop.id)
    assert timedelta(hours=24) <= KEY_TTL

    kept = purge_idempotency_keys((used_at + timedelta(hours=24)).isoformat())
    assert current_session().scalars(keys).all() == ["purge-me"]

    purge_idempotency_keys((used_at + KEY_TTL + timedelta(seconds=1)).isoformat())
    assert current_session().scalars(keys).all() == []
    assert kept >= 0


def test_after_the_purge_a_reused_key_is_refused_and_never_applies_twice(app_context):
    """Stripe would take it as new; a ledger key names an effect forever (entries keep it)."""
    shop = ShopFactory()
    used_at = datetime(2026, 11, 1, 12, tzinfo=UTC)
    by = Actor(shop.id, used_at, "staff:1", "goodwill", idempotency_key="order:42:redeem")
    first = operations.issue(current_session(), by, customer=1, amount=Money(100, "USD"))
    purge_idempotency_keys((used_at + KEY_TTL + timedelta(seconds=1)).isoformat())

    later = Actor(shop.id, used_at + timedelta(days=3), "staff:1", "goodwill", "order:42:redeem")
    with pytest.raises(IdempotencyConflict) as refused:
        operations.issue(current_session(), later, customer=1, amount=Money(100, "USD"))

    assert refused.value.details["entry_id"] == first.entry["id"]
    entries = select(LedgerEntry.id).where(LedgerEntry.shop_id == shop.id)
    assert len(current_session().scalars(entries).all()) == 1
