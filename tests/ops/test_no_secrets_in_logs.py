"""The issue's "done when": a full run at DEBUG leaves logs with no secret, token or customer PII,
and metrics that show the run.

The run goes through the real app and the fake Shopify: install by token exchange, credit
issued through the API and mirrored by the native-sync job, the customer named by a
customers/update delivery, a signed orders/paid and a refunds/create processed by the webhook
job (through RQ), storefront look-ups (a miss, then a cache hit), a customers/data_request and
its download, a bulk import addressed by email. Every record any logger emits (ours,
werkzeug, RQ, SQLAlchemy's statements at INFO) is captured raw — message, arguments, extras,
traceback — and as our JSON lines; neither may contain a secret or the customer's data.
"""

from __future__ import annotations

import io
import ipaddress
import itertools
import signal
import uuid
from datetime import UTC, datetime

import pytest
from rq import SimpleWorker

from jobs.queues import shared_queue
from storefront.wiring import current_storefront
from tests.conftest import session_token
from tests.ops.conftest import scrape, value
from tests.proxy.helpers import balance_url

CUSTOMER = 7_700_001
EMAIL = "zebulonia.quixotewright@example.org"
FIRST, LAST, PHONE = "Zebulonia", "Quixotewright", "+15550134679"
ORDER, REFUND, DATA_REQUEST = 880_001, 990_001, 9_101
QUEUES = ("webhooks", "sync", "bulk")
_addresses = itertools.count(int(ipaddress.IPv4Address("10.77.0.1")))


@pytest.fixture
def queues(settings):
    if settings.redis_url is None:
        pytest.skip("needs REDIS_URL (make test provides it)")
    found = {name: shared_queue(settings.redis_url, name) for name in QUEUES}
    for queue in found.values():
        queue.empty()
    yield found
    for queue in found.values():
        queue.empty()


def work(queues) -> None:
    """RQ workers in this thread (the test's app context) until every queue is empty."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for _ in range(5):  # a job may enqueue another (an issue's native sync)
            pending = [queue for queue in queues.values() if queue.count]
            if not pending:
                return
            for queue in pending:
                SimpleWorker([queue], connection=queue.connection).work(burst=True)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    raise AssertionError("the queues did not drain")


def test_a_full_run_logs_no_secret_nor_pii_and_shows_in_the_metrics(
    captured, client, connected, shop_domain, settings, queues, close_app_storefront
):
    client.environ_base["REMOTE_ADDR"] = str(ipaddress.IPv4Address(next(_addresses)))
    before = scrape(client)
    sessions: list[str] = []

    def staff(**extra: str) -> dict[str, str]:
        sessions.append(session_token(shop_domain, sub="8410000077"))
        return {"Authorization": f"Bearer {sessions[-1]}", **extra}

    def deliver(topic: str, payload: dict) -> None:
        body, headers = connected.signed_webhook(shop_domain, topic, payload)
        path = (
            "/webhooks/compliance"
            if topic.startswith(("customers/data", "customers/red"))
            else "/webhooks"
        )
        answer = client.post(path, data=body, headers=headers)
        assert answer.get_json() == {"status": "recorded"}, answer.get_data(as_text=True)

    # Install by token exchange (the embedded app's first load).
    fake_shop = connected.add_shop(shop_domain, restore_rate=1000.0)
    fake_shop.add_customer(CUSTOMER, email=EMAIL, first_name=FIRST, last_name=LAST)
    sessions.append(connected.session_token(shop_domain))
    assert client.get(f"/app?shop={shop_domain}&id_token={sessions[-1]}").status_code == 200

    # Credit, mirrored into the fake's native store credit by the sync job.
    issued = client.post(
        f"/api/customers/{CUSTOMER}/credits",
        json={"amount": "50.00", "currency": "USD", "reason": "goodwill"},
        headers=staff(**{"Idempotency-Key": str(uuid.uuid4())}),
    )
    assert issued.status_code == 201, issued.get_data(as_text=True)
    work(queues)
    assert fake_shop.balance(CUSTOMER, "USD") == "50.00"

    # The customer's details, an order paid partly with store credit, and its refund.
    deliver(
        "customers/update",
        {
            "id": CUSTOMER,
            "email": EMAIL,
            "first_name": FIRST,
            "last_name": LAST,
            "phone": PHONE,
            "updated_at": datetime.now(UTC).isoformat(),
        },
    )
    fake_shop.place_order(ORDER, CUSTOMER, "USD", store_credit="10.00", other="5.00")
    deliver("orders/paid", fake_shop.order_payload(ORDER))
    fake_shop.refund(ORDER, REFUND, to_store_credit="4.00")
    deliver("refunds/create", fake_shop.refund_payload(REFUND))
    work(queues)
    account = client.get(f"/api/customers/{CUSTOMER}", headers=staff()).get_json()
    assert EMAIL in str(account)
    assert "44.00" in str(account)

    # The storefront: a miss, then a hit.
    cache = current_storefront().cache
    assert cache is not None
    assert cache.wait_until_listening()
    for _ in range(2):
        answer = client.get(balance_url(shop_domain, CUSTOMER))
        assert answer.get_json()["balances"][0]["amount"] == "44.00"

    # A data request, and its download by the merchant.
    deliver(
        "customers/data_request",
        {
            "shop_id": fake_shop.id,
            "shop_domain": shop_domain,
            "orders_requested": [ORDER],
            "customer": {"id": CUSTOMER, "email": EMAIL, "phone": PHONE},
            "data_request": {"id": DATA_REQUEST},
        },
    )
    work(queues)
    (request,) = client.get("/api/data-requests", headers=staff()).get_json()["data_requests"]
    download = client.get(f"/api/data-requests/{request['id']}", headers=staff())
    assert download.status_code == 200
    assert EMAIL in download.get_data(as_text=True)

    # A bulk import addressed by email.
    upload = client.post(
        "/api/bulk-imports",
        data={
            "file": (
                io.BytesIO(f"email,amount,currency,reason\r\n{EMAIL},7.50,USD,promo\r\n".encode()),
                "promo.csv",
            )
        },
        headers=staff(),
        content_type="multipart/form-data",
    )
    assert upload.status_code == 201, upload.get_data(as_text=True)
    found = upload.get_json()["bulk_import"]
    assert found["state"] == "validated", found
    started = client.post(f"/api/bulk-imports/{found['id']}/start", headers=staff())
    assert started.status_code == 202, started.get_data(as_text=True)
    work(queues)
    result = client.get(f"/api/bulk-imports/{found['id']}/result", headers=staff())
    assert EMAIL in result.get_data(as_text=True)

    # -- the logs ------------------------------------------------------------------------------
    raw, lines = captured.raw_text(), captured.json_text()
    loggers = {record.name for record in captured.raw.records}
    assert {"creditcraft.access", "sqlalchemy.engine.Engine", "rq.worker"} <= loggers
    assert any(record.name.startswith("jobs.") for record in captured.raw.records)
    access = [line for line in captured.lines() if line["logger"] == "creditcraft.access"]
    assert {line.get("shop") for line in access if line["route"].startswith("/api/")} == {
        shop_domain
    }
    job_lines = [line for line in captured.lines() if line["logger"].startswith("jobs.")]
    assert any("job_id" in line for line in job_lines)

    issued_tokens = [token.value for token in connected.tokens.access.values()]
    refresh_tokens = [token.value for token in connected.tokens.refresh.values()]
    assert issued_tokens
    assert refresh_tokens
    never = {
        "the API secret": [settings.shopify_api_secret],
        "the Flask secret key": [settings.secret_key],
        "the token encryption keys": list(settings.token_encryption_keys),
        "an access token": issued_tokens,
        "a refresh token": refresh_tokens,
        "a session token": sessions,
        "the customer's email": [EMAIL, EMAIL.split("@")[0]],
        "the customer's name": [FIRST, LAST],
        "the customer's phone": [PHONE, PHONE[2:]],
    }
    for what, values in never.items():
        for secret in values:
            assert secret not in raw, f"{what} reached a log record"
            assert secret not in lines, f"{what} reached a log line"

    # -- the metrics ---------------------------------------------------------------------------
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "creditcraft_http_request_duration_seconds_count"
    credits = {"route": "/api/customers/<customer_id>/credits", "method": "POST", "status": "2xx"}
    assert grew(requests, **credits) == 1
    assert grew(requests, route="/webhooks", method="POST", status="2xx") == 3
    assert grew(requests, route="/webhooks/compliance", method="POST", status="2xx") == 1
    assert grew(requests, route="/proxy/balance", method="GET", status="2xx") == 2
    deliveries = "creditcraft_webhook_deliveries_total"
    assert grew(deliveries, topic="orders/paid", outcome="recorded") == 1
    assert grew("creditcraft_webhook_jobs_total", topic="orders/paid", outcome="processed") == 1
    assert grew("creditcraft_webhook_processing_lag_seconds_count", topic="orders/paid") == 1
    assert value(after, "creditcraft_db_pool_size") > 0
    assert ("creditcraft_db_pool_connections", (("state", "checked_out"),)) in after
    hits = grew("creditcraft_storefront_cache_lookups_total", level="local", result="hit")
    hits += grew("creditcraft_storefront_cache_lookups_total", level="redis", result="hit")
    assert hits >= 1
    assert grew("creditcraft_native_sync_attempts_total", outcome="done") >= 1
