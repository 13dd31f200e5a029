"""GET /metrics: Prometheus text, route patterns as labels, scrape-time figures that never fail
the scrape, and the multiprocess mode (gunicorn workers and RQ work horses) adding up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text, update

from extensions import db
from ledger import operations
from ledger.book import Actor, Mirror
from ledger.money import Money
from models import ReconciliationFinding, ShopifyOutbox
from tests.conftest import auth, settings_changed
from tests.factories import ShopFactory
from tests.ops.conftest import scrape, value

ROOT = Path(__file__).resolve().parents[2]
DURATION = "creditcraft_http_request_duration_seconds_count"


def test_the_page_is_prometheus_text_with_every_family(client):
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.content_type.startswith("text/plain")
    assert answer.headers["Cache-Control"] == "no-store"
    names = {f.name for f in text_string_to_metric_families(answer.get_data(as_text=True))}
    expected = {
        "creditcraft_http_request_duration_seconds",
        "creditcraft_http_requests_in_flight",
        "creditcraft_db_pool_connections",
        "creditcraft_db_pool_size",
        "creditcraft_redis_up",
        "creditcraft_queue_jobs",
        "creditcraft_rq_workers",
        "creditcraft_database_up",
        "creditcraft_native_sync_backlog",
        "creditcraft_webhook_backlog",
        "creditcraft_reconciliation_findings_open",
        "creditcraft_table_rows",
    }
    assert expected <= names


def test_requests_are_labelled_by_route_pattern_never_by_path(client):
    shop = ShopFactory()
    before = scrape(client)
    for customer in (1001, 1002, 1003):
        client.get(f"/api/customers/{customer}?query=secret", headers=auth(shop.domain))
    client.get("/no/such/path/12345")
    client.open("/healthz", method="BREW")  # a 405: no rule matched, and no such method
    after = scrape(client)

    def delta(**labels: str) -> float:
        return value(after, DURATION, **labels) - value(before, DURATION, **labels)

    assert delta(route="/api/customers/<customer_id>", method="GET", status="4xx") == 3
    assert delta(route="<unmatched>", method="GET", status="4xx") == 1
    assert delta(route="<unmatched>", method="other", status="4xx") == 1
    routes = {dict(labels).get("route", "") for (_, labels) in after}
    assert not any("1001" in r or "12345" in r or "secret" in r for r in routes)


def test_queue_depths_and_workers_come_from_redis(client, settings):
    if settings.redis_url is None:
        pytest.skip("needs REDIS_URL")
    samples = scrape(client)
    assert value(samples, "creditcraft_redis_up") == 1
    for queue in ("webhooks", "sync", "default", "bulk"):
        for state in ("queued", "started", "scheduled", "deferred", "failed"):
            assert ("creditcraft_queue_jobs", (("queue", queue), ("state", state))) in samples
    assert ("creditcraft_rq_workers", ()) in samples


def test_backlog_and_findings_are_counted_across_shops(client, session, now):
    before = scrape(client)
    shop = ShopFactory()
    by = Actor(shop.id, now, "staff:1", "goodwill", mirror=Mirror())
    for customer in range(4):
        operations.issue(db.session, by, customer=5000 + customer, amount=Money(100, "USD"))
    rows = db.session.query(ShopifyOutbox.id).filter(ShopifyOutbox.shop_id == shop.id).all()
    ambiguous, in_flight, dead, _pending = (row.id for row in rows)
    db.session.execute(
        update(ShopifyOutbox).where(ShopifyOutbox.id == ambiguous).values(ambiguous=True)
    )
    db.session.execute(
        update(ShopifyOutbox)
        .where(ShopifyOutbox.id == in_flight)
        .values(state="in_flight", claimed_at=now)
    )
    db.session.execute(update(ShopifyOutbox).where(ShopifyOutbox.id == dead).values(state="dead"))
    for number, kind in enumerate(("balance_mismatch", "balance_mismatch", "chain_break")):
        db.session.add(
            ReconciliationFinding(
                shop_id=shop.id,
                kind=kind,
                finding_key=f"ops-test:{number}",
                details={},
                first_seen_at=now,
                last_seen_at=now,
            )
        )
    db.session.commit()

    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    backlog = "creditcraft_native_sync_backlog"
    assert [delta(backlog, state=s) for s in ("pending", "ambiguous", "in_flight", "dead")] == [
        1,
        1,
        1,
        1,
    ]
    findings = "creditcraft_reconciliation_findings_open"
    assert (delta(findings, kind="balance_mismatch"), delta(findings, kind="chain_break")) == (2, 1)
    assert value(after, "creditcraft_database_up") == 1
    assert ("creditcraft_table_rows", (("table", "ledger_entries"),)) in after


def test_the_web_role_gets_the_counts_across_shops_and_still_no_row(app_context, now):
    """Row-level security shows the web role no outbox row without a shop; the aggregate
    function (SECURITY DEFINER, migration 0008) still counts every shop's."""
    shop = ShopFactory()
    by = Actor(shop.id, now, "staff:1", "goodwill", mirror=Mirror())
    operations.issue(db.session, by, customer=5100, amount=Money(100, "USD"))
    db.session.commit()
    db.session.execute(text("SET LOCAL ROLE creditcraft_app"))
    try:
        rows_seen = db.session.execute(text("SELECT count(*) FROM shopify_outbox")).scalar_one()
        counted = dict(
            db.session.execute(
                text(
                    "SELECT label, value FROM creditcraft_ops_counts() "
                    "WHERE metric = 'native_sync_backlog'"
                )
            ).all()
        )
    finally:
        db.session.execute(text("RESET ROLE"))
    assert rows_seen == 0
    assert counted["pending"] >= 1


def test_redis_down_is_a_gauge_not_a_failed_scrape(client, app_context):
    with settings_changed(app_context, redis_url="redis://127.0.0.1:1/0"):
        samples = scrape(client)
    assert value(samples, "creditcraft_redis_up") == 0
    assert not any(name == "creditcraft_queue_jobs" for name, _ in samples)
    assert value(samples, "creditcraft_database_up") == 1


def test_database_down_is_a_gauge_not_a_failed_scrape(own_app):
    broken = own_app(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none", redis_url=None)
    answer = broken.test_client().get("/metrics")
    assert answer.status_code == 200
    text = answer.get_data(as_text=True)
    assert "creditcraft_database_up 0.0" in text
    assert "creditcraft_redis_up 0.0" in text  # not configured
    assert "creditcraft_native_sync_backlog" not in text


def test_pool_gauges_follow_the_engine(client, engine):
    samples = scrape(client)
    assert value(samples, "creditcraft_db_pool_size") == engine.pool.size() > 0
    connections = "creditcraft_db_pool_connections"
    states = {dict(labels)["state"] for name, labels in samples if name == connections}
    assert states == {"checked_out", "checked_in", "overflow"}


# -- multiprocess mode -------------------------------------------------------------------------


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - a local server
        return answer.status, answer.read().decode()


def _wait_until_serving(server: subprocess.Popen, log: Path) -> int:
    """gunicorn's port, once a worker answers /readyz (not a route the test counts)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"gunicorn exited: {log.read_text()}")
        found = re.search(r"Listening at: http://127\.0\.0\.1:([0-9]+)", _read(log))
        if found:
            try:
                _get(f"http://127.0.0.1:{found[1]}/readyz")
                return int(found[1])
            except OSError:
                pass  # a worker is still loading the app
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not start: {_read(log)}")


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_gunicorn_workers_add_up_in_one_page(tmp_path, database_url):
    """Each process writes its own files; whichever worker answers the scrape adds them up."""
    metrics_dir, log = tmp_path / "prom", tmp_path / "error.log"
    env = os.environ | {
        "CREDITCRAFT_ENV": "development",
        "DATABASE_URL": database_url,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "GUNICORN_BIND": "127.0.0.1:0",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "2",
        "GUNICORN_ERROR_LOG": str(log),
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    server = subprocess.Popen(
        # --preload: the app loads once, in the master, and is forked into both workers.
        [gunicorn, "-c", "gunicorn.conf.py", "--preload", "app:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = _wait_until_serving(server, log)
        # The kernel may hand every connection to one worker: send batches of concurrent
        # requests until both workers have served some (each writes its own histogram file).
        sent = 0
        with ThreadPoolExecutor(max_workers=4) as pool:
            while sent < 400 and len(list(metrics_dir.glob("histogram_*.db"))) < 2:
                urls = [f"http://127.0.0.1:{port}/healthz"] * 20
                assert {status for status, _ in pool.map(_get, urls)} == {200}
                sent += len(urls)
        status, text = _get(f"http://127.0.0.1:{port}/metrics")
        serving = list(metrics_dir.glob("histogram_*.db"))
    finally:
        server.send_signal(signal.SIGINT)  # a quick shutdown: nothing is in flight
        server.wait(timeout=30)
    assert status == 200
    assert len(serving) >= 2  # both workers served, each into its own files
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    healthz = (DURATION, (("method", "GET"), ("route", "/healthz"), ("status", "2xx")))
    assert samples[healthz] == sent  # one page adds up what both workers counted
    assert samples[("creditcraft_http_requests_in_flight", ())] == 1  # the scrape itself


def test_work_horses_count_into_their_workers_files_and_its_port_serves_them(tmp_path, settings):
    """Each job runs in a forked horse: two jobs leave one set of files (named after their
    worker, not one per horse), adding up to two, and WORKER_METRICS_PORT serves the sum."""
    if settings.redis_url is None:
        pytest.skip("needs REDIS_URL")
    metrics_dir = tmp_path / "prom"
    script = textwrap.dedent(
        f"""
        import os, socket, urllib.request, uuid
        from redis import Redis
        from rq import Queue
        from config import load_settings
        from observability.worker import ObservedWorker, serve_worker_metrics
        connection = Redis.from_url({settings.redis_url!r})
        queue = Queue("ops-test-" + uuid.uuid4().hex, connection=connection)
        for _ in range(2):
            queue.enqueue("os.getpid")
        ObservedWorker([queue], connection=connection).work(burst=True)
        queue.delete()
        connection.close()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        serve_worker_metrics(load_settings({{
            "CREDITCRAFT_ENV": "test",
            "WORKER_METRICS_PORT": str(port),
            "PROMETHEUS_MULTIPROC_DIR": os.environ["PROMETHEUS_MULTIPROC_DIR"],
        }}))
        with urllib.request.urlopen(f"http://127.0.0.1:{{port}}/metrics", timeout=5) as page:
            print("<page>" + page.read().decode() + "</page>")
        print("worker", os.getpid())
        """
    )
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    worker_pid = done.stdout.split()[-1]
    files = sorted(path.name for path in metrics_dir.glob("histogram_*.db"))
    assert files == [f"histogram_rqhorse-{worker_pid}.db"]
    counts = [
        sample.value
        for family in text_string_to_metric_families(
            done.stdout.split("<page>")[1].split("</page>")[0]
        )
        if family.name == "creditcraft_job_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_count") and sample.labels["outcome"] == "ok"
    ]
    assert counts == [2]


def test_lag_is_never_negative():
    from observability import metrics

    label = "ops_test/lag"
    metrics.webhook_job(label, "processed", -5.0)
    buckets = {
        s.labels["le"]: s.value
        for family in metrics.WEBHOOK_LAG.collect()
        for s in family.samples
        if s.name.endswith("_bucket") and s.labels["topic"] == label
    }
    assert buckets["0.1"] == 1


def test_untrusted_topics_never_become_labels():
    from observability import metrics

    assert metrics.webhook_topic("orders/paid") == "orders/paid"
    assert metrics.webhook_topic("orders/paid; DROP") == "invalid"
    assert metrics.webhook_topic("x" * 200 + "/y") == "invalid"
    assert metrics.webhook_topic(None) == "invalid"
