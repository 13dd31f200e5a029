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
from tests.conftest import settings_changed
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


def test_a_worker_runs_queued_jobs_in_a_forked_horse_against_the_database(app_context, settings):
    """`flask worker --burst` on real Redis: the job's effect lands in PostgreSQL."""
    import os
    import subprocess
    import sys

    from jobs.queues import queue

    if settings.redis_url is None:
        pytest.skip("needs REDIS_URL (make test provides it)")
    job = queue(settings, "default").enqueue(purge_idempotency_keys, "2000-01-01T00:00:00+00:00")
    env = os.environ | {
        "CREDITCRAFT_ENV": "test",
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app:create_app", "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    job.refresh()
    assert job.get_status() == "finished", done.stderr
    assert job.return_value() == 0  # the horse ran the job on the database and answered


def test_the_worker_refuses_to_start_without_redis(app_context):
    with settings_changed(app_context, redis_url=None):
        result = app_context.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code == 1
    assert "REDIS_URL is not set" in result.output
