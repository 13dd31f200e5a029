"""The real app under row-level security: the web as the app role, jobs as the worker role.

Two shops install through the embedded app's first load (token exchange against the fake
Shopify), issue credit, list customers, read a ledger and a storefront balance, and receive
webhooks; an RQ worker connected as the worker role then runs every job that was queued (native
sync, the bulk import's lanes, webhook processing up to a shop's erasure) and the periodic
sweeps. Everything works, and neither shop's session token reaches the other shop's data.

The apps use a Redis database of their own (the queues and the storefront cache must not mix
with the rest of the suite's, whose ids belong to another database).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from rq import Queue, SimpleWorker
from sqlalchemy import Engine, text

from config import DEFAULT_SCOPES, Settings
from jobs.queues import QUEUES
from storefront.wiring import EXTENSION_KEY
from tests.conftest import auth
from tests.fake_shopify import FakeShopify
from tests.tenancy.conftest import RlsDatabase

REDIS_DB = 7
CUSTOMERS = (7_700_001, 7_700_002, 7_700_003)


@pytest.fixture
def redis_url() -> Iterator[str]:
    base = os.environ.get("REDIS_URL")
    if not base:
        pytest.skip("needs REDIS_URL (make test provides it)")
    url = base.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def fake(shopify: FakeShopify) -> Iterator[FakeShopify]:
    granted = shopify.scopes
    shopify.scopes = tuple(DEFAULT_SCOPES.split(","))
    try:
        yield shopify
    finally:
        shopify.scopes = granted


def make_app(settings: Settings, database_url: str, redis_url: str, fake: FakeShopify) -> Flask:
    from app import create_app

    return create_app(
        dataclasses.replace(
            settings,
            database_url=database_url,
            redis_url=redis_url,
            shopify_admin_origin=fake.origin_template,
        )
    )


@pytest.fixture
def apps(
    settings: Settings, rls_database: RlsDatabase, redis_url: str, fake: FakeShopify
) -> Iterator[tuple[Flask, Flask]]:
    """The web (app role) and a worker (worker role), as production runs them."""
    from extensions import db

    web = make_app(settings, rls_database.app_url, redis_url, fake)
    worker = make_app(settings, rls_database.worker_url, redis_url, fake)
    try:
        yield web, worker
    finally:
        for each in (web, worker):
            each.extensions[EXTENSION_KEY].close()
            with each.app_context():
                db.engine.dispose()


def run_worker(worker: Flask, redis_url: str) -> None:
    """Every queued job, by an RQ worker in this process connected as the worker role."""
    connection = redis.Redis.from_url(redis_url)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with worker.app_context():
            queues = [Queue(name, connection=connection) for name in QUEUES]
            SimpleWorker(queues, connection=connection).work(burst=True)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        connection.close()


def job_failures(redis_url: str) -> list[str]:
    connection = redis.Redis.from_url(redis_url)
    try:
        failed = []
        for name in QUEUES:
            registry = Queue(name, connection=connection).failed_job_registry
            failed += [f"{name}: {job_id}" for job_id in registry.get_job_ids()]
        return failed
    finally:
        connection.close()


def one(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def headers(domain: str) -> dict[str, str]:
    return {**auth(domain), "Idempotency-Key": str(uuid.uuid4())}


def test_the_app_works_under_row_level_security_and_keeps_shops_apart(
    apps, fake, redis_url, superuser
):
    web, worker = apps
    client = web.test_client()
    a, b = (f"rls-e2e-{label}-{uuid.uuid4().hex[:8]}.myshopify.com" for label in "ab")
    for domain, customer in ((a, CUSTOMERS[0]), (b, CUSTOMERS[1])):
        fake_shop = fake.add_shop(domain, restore_rate=1000.0)
        fake_shop.add_customer(customer, email=f"{customer}@example.com")
        if domain == a:
            fake_shop.add_customer(CUSTOMERS[2], email="third@example.com")
        # The embedded app's first load installs the shop (token exchange) and shows it.
        page = client.get(f"/app?shop={domain}&embedded=1&id_token={fake.session_token(domain)}")
        assert page.status_code == 200, page.get_data(as_text=True)

    expires = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    issued = client.post(
        f"/api/customers/{CUSTOMERS[0]}/credits",
        json={"amount": "25.00", "currency": "USD", "reason": "goodwill"},
        headers=headers(a),
    )
    assert issued.status_code == 201, issued.get_data(as_text=True)
    expiring = client.post(
        f"/api/customers/{CUSTOMERS[0]}/credits",
        json={
            "amount": "5.00",
            "currency": "USD",
            "reason": "promo",
            "expires_at": expires.isoformat(),
        },
        headers=headers(a),
    )
    assert expiring.status_code == 201, expiring.get_data(as_text=True)
    b_issue = client.post(
        f"/api/customers/{CUSTOMERS[1]}/credits",
        json={"amount": "7.00", "currency": "USD", "reason": "goodwill"},
        headers=headers(b),
    )
    assert b_issue.status_code == 201, b_issue.get_data(as_text=True)

    listed = client.get("/api/customers", headers=auth(a)).get_json()["customers"]
    assert [(c["id"], c["balances"]) for c in listed] == [
        (str(CUSTOMERS[0]), [{"currency": "USD", "amount": "30.00"}])
    ]
    ledger = client.get(f"/api/customers/{CUSTOMERS[0]}/ledger", headers=auth(a)).get_json()
    assert [entry["kind"] for entry in ledger["entries"]] == ["issue", "issue"]
    # Shop A's token reaches none of shop B's customers, and the other way round.
    assert [
        c["id"] for c in client.get("/api/customers", headers=auth(b)).get_json()["customers"]
    ] == [str(CUSTOMERS[1])]
    assert client.get(f"/api/customers/{CUSTOMERS[1]}", headers=auth(a)).status_code == 404
    assert client.get(f"/api/customers/{CUSTOMERS[0]}/ledger", headers=auth(b)).status_code == 404

    # The embedded pages (the id_token is the staff member's session token).
    for domain, mine, theirs in ((a, CUSTOMERS[0], CUSTOMERS[1]), (b, CUSTOMERS[1], CUSTOMERS[0])):
        token = fake.session_token(domain)
        page = client.get(f"/app/customers?id_token={token}")
        assert page.status_code == 200, page.get_data(as_text=True)
        assert f"/app/customers/{mine}" in page.text
        assert f"/app/customers/{theirs}" not in page.text
        assert client.get(f"/app/customers/{mine}?id_token={token}").status_code == 200
        assert client.get(f"/app/customers/{theirs}?id_token={token}").status_code == 404
    home = client.get(f"/app?shop={a}&id_token={fake.session_token(a)}")  # installed already
    assert home.status_code == 200, home.get_data(as_text=True)
    assert "30.00" in home.text
    # The report and admin pages (blueprints/report_pages.py), each shop's own figures only.
    for domain, mine, theirs in ((a, "30.00", "7.00"), (b, "7.00", "30.00")):
        token = fake.session_token(domain)
        liability = client.get(f"/app/liability?id_token={token}")
        assert liability.status_code == 200, liability.get_data(as_text=True)
        assert f'data-testid="liability-USD">{mine}&nbsp;' in liability.text
        assert f">{theirs}&nbsp;" not in liability.text
        for path in ("/app/reconciliation", "/app/settings", "/app/audit"):
            page = client.get(f"{path}?id_token={token}")
            assert page.status_code == 200, page.get_data(as_text=True)

    # A bulk import (issued by the worker's lanes, each a thread of its own).
    csv = f"customer_id,amount,currency,reason\n{CUSTOMERS[2]},3.00,USD,promo\n"
    created = client.post(
        "/api/bulk-imports?filename=promo.csv", data=csv, content_type="text/csv", headers=auth(a)
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    import_id = created.get_json()["bulk_import"]["id"]
    started = client.post(f"/api/bulk-imports/{import_id}/start", headers=auth(a))
    assert started.status_code == 202, started.get_data(as_text=True)

    # The storefront look-up (App Proxy).
    query = fake.signed_proxy_query(a, logged_in_customer_id=str(CUSTOMERS[0]))
    balance = client.get(f"/proxy/balance?{query}")
    assert balance.status_code == 200, balance.get_data(as_text=True)
    assert balance.get_json()["balances"][0]["amount"] == "30.00"

    # Webhooks: recorded by the web, processed by the worker.
    for domain, topic, payload in (
        (a, "customers/update", {"id": CUSTOMERS[0], "email": "renamed@example.com"}),
        (b, "app/uninstalled", {"myshopify_domain": b}),
        ("never-installed.myshopify.com", "customers/update", {"id": 1}),
    ):
        body, sent = fake.signed_webhook(domain, topic, payload)
        recorded = client.post("/webhooks", data=body, headers=sent)
        assert recorded.get_json() == {"status": "recorded"}, recorded.get_data(as_text=True)

    run_worker(worker, redis_url)
    assert job_failures(redis_url) == []
    # A's credits are mirrored; B's waits (B uninstalled before its turn); the bulk row's
    # waits for the sweeper.
    with superuser.connect() as conn:
        outbox = conn.execute(
            text(
                "SELECT domain, shopify_outbox.state FROM shopify_outbox JOIN shops "
                "ON shops.id = shop_id ORDER BY shopify_outbox.id"
            )
        ).all()
    assert outbox == [(a, "done"), (a, "done"), (b, "pending"), (a, "pending")]
    native = fake.shop(a).transactions(CUSTOMERS[0], "USD")
    assert sorted(tx["amount"] for tx in native) == ["25.00", "5.00"]
    assert one(superuser, "SELECT state FROM bulk_imports WHERE id = :i", i=import_id) == "finished"
    with superuser.connect() as conn:
        events = conn.execute(text("SELECT topic || ' ' || shop_domain, state FROM webhook_events"))
        states = {row[0]: row[1] for row in events}
    assert states == {
        f"customers/update {a}": "processed",
        f"app/uninstalled {b}": "processed",
        "customers/update never-installed.myshopify.com": "ignored",
    }
    assert one(
        superuser, "SELECT email FROM customers WHERE shopify_customer_id = :c", c=CUSTOMERS[0]
    ) == ("renamed@example.com")

    # shop/redact for the uninstalled shop B: the worker erases B's rows (and nothing of A's).
    body, sent = fake.signed_webhook(b, "shop/redact", {"shop_id": 1, "shop_domain": b})
    assert client.post("/webhooks/compliance", data=body, headers=sent).status_code == 200
    run_worker(worker, redis_url)
    b_id = one(superuser, "SELECT id FROM shops WHERE domain = :d", d=b)
    a_id = one(superuser, "SELECT id FROM shops WHERE domain = :d", d=a)
    assert one(superuser, "SELECT erased_at IS NOT NULL FROM shops WHERE id = :s", s=b_id)
    assert one(superuser, "SELECT count(*) FROM ledger_entries WHERE shop_id = :s", s=b_id) == 0
    assert one(superuser, "SELECT count(*) FROM ledger_entries WHERE shop_id = :s", s=a_id) == 3

    # The periodic jobs, as the worker role: the cross-shop sweeps and the per-shop runs.
    from jobs.credits import expire_credits
    from jobs.maintenance import erase_due_shops, purge_idempotency_keys
    from jobs.reconcile import reconcile_shop
    from jobs.sync import sweep_outbox
    from jobs.webhooks import prune_webhook_payloads, sweep_webhooks

    later = (datetime.now(UTC) + timedelta(days=40)).isoformat()
    keys = one(superuser, "SELECT count(*) FROM idempotency_keys")
    payloads = one(superuser, "SELECT count(*) FROM webhook_events WHERE payload IS NOT NULL")
    assert keys >= 2
    assert payloads >= 3
    with worker.app_context():
        assert sweep_webhooks() == 0
        assert sweep_outbox() == 1  # the bulk row's
    run_worker(worker, redis_url)
    assert [tx["amount"] for tx in fake.shop(a).transactions(CUSTOMERS[2], "USD")] == ["3.00"]
    with worker.app_context():
        assert purge_idempotency_keys(later) == keys  # every shop's
        assert prune_webhook_payloads(later) == payloads  # every shop's, and shop-less ones
        assert erase_due_shops() == 0
        result = reconcile_shop(a_id, full=True)
        assert result["result"] == "finished", result
        assert result["open_findings"] == 0, result
        # After reconciling: expiring ahead of Shopify's clock would be a (true) mismatch.
        report = expire_credits(now_iso=(expires + timedelta(minutes=1)).isoformat())
        assert report.lots >= 1
    assert one(superuser, "SELECT count(*) FROM idempotency_keys") == 0
    assert (
        one(superuser, "SELECT status FROM credit_lots WHERE expires_at = :e", e=expires)
        == "expired"
    )
