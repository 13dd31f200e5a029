"""Fixtures for the webhook intake and job tests: signed deliveries, the real queue, a worker.

Deliveries are signed by the fake Shopify (tests/fake_shopify), exactly as Shopify signs them.
The ``webhooks`` queue is the real one on the test Redis, emptied around each test that uses it.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker
from sqlalchemy import select
from werkzeug.test import TestResponse

from config import Settings
from extensions import db
from jobs.webhooks import webhook_queue
from models import Shop, WebhookEvent
from tests.fake_shopify import FakeShopify
from webhooks.topics import COMPLIANCE_TOPICS


@dataclass
class Deliveries:
    """Signs deliveries like Shopify and posts them to the app through the test client."""

    client: FlaskClient
    fake: FakeShopify

    def signed(
        self, shop_domain: str, topic: str, payload: dict[str, Any] | bytes, **kw: Any
    ) -> tuple[bytes, dict[str, str]]:
        return self.fake.signed_webhook(shop_domain, topic, payload, **kw)

    def post(
        self,
        shop_domain: str,
        topic: str,
        payload: dict[str, Any] | bytes,
        *,
        path: str | None = None,
        drop: tuple[str, ...] = (),
        override: dict[str, str] | None = None,
        **kw: Any,
    ) -> TestResponse:
        """Sign and post; ``drop`` removes headers and ``override`` replaces them after signing."""
        body, headers = self.signed(shop_domain, topic, payload, **kw)
        return self.send(body, headers, path=path or endpoint(topic), drop=drop, override=override)

    def send(
        self,
        body: bytes,
        headers: dict[str, str],
        *,
        path: str = "/webhooks",
        drop: tuple[str, ...] = (),
        override: dict[str, str] | None = None,
    ) -> TestResponse:
        sent = {k: v for k, v in headers.items() if k not in drop} | (override or {})
        return self.client.post(path, data=body, headers=sent)


def endpoint(topic: str) -> str:
    return "/webhooks/compliance" if topic in COMPLIANCE_TOPICS else "/webhooks"


@pytest.fixture
def deliveries(client: FlaskClient, shopify: FakeShopify) -> Deliveries:
    return Deliveries(client, shopify)


@pytest.fixture
def jobs(settings: Settings) -> Iterator[Queue]:
    """The real ``webhooks`` queue on the test Redis, empty at the start and the end."""
    if settings.redis_url is None:
        pytest.skip("needs REDIS_URL (make test provides it)")
    queue = webhook_queue(settings.redis_url)
    queue.empty()
    yield queue
    queue.empty()


@pytest.fixture
def clean_queue(settings: Settings) -> Iterator[None]:
    """Leave no job behind in the ``webhooks`` queue (a no-op without Redis)."""
    if settings.redis_url is None:
        yield
        return
    queue = webhook_queue(settings.redis_url)
    queue.empty()
    yield
    queue.empty()


def run_worker(queue: Queue) -> None:
    """An RQ worker in this process and thread, until the queue is empty (burst mode).

    It runs jobs in the caller's app context, so a test's rolled-back session sees them.
    The worker installs SIGINT/SIGTERM handlers; pytest's are put back afterwards.
    """
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        SimpleWorker([queue], connection=queue.connection).work(burst=True)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def event_for(webhook_id: str) -> WebhookEvent | None:
    """The recorded delivery with ``webhook_id``, read fresh."""
    db.session.expire_all()
    return db.session.execute(
        select(WebhookEvent).where(WebhookEvent.webhook_id == webhook_id)
    ).scalar_one_or_none()


def make_event(
    shop: Shop | None,
    topic: str,
    payload: dict[str, Any] | None,
    *,
    received_at: datetime,
    shop_domain: str | None = None,
    **fields: Any,
) -> WebhookEvent:
    """A delivery row as the intake records it (for job tests that start after the intake)."""
    import uuid

    event = WebhookEvent(
        webhook_id=fields.pop("webhook_id", str(uuid.uuid4())),
        shop_id=shop.id if shop else None,
        shop_domain=shop_domain or (shop.domain if shop else "unknown.myshopify.com"),
        topic=topic,
        api_version="2026-10",
        triggered_at=fields.pop("triggered_at", received_at),
        payload=payload,
        received_at=received_at,
        state=fields.pop("state", "received"),
        attempts=fields.pop("attempts", 0),
        **fields,
    )
    db.session.add(event)
    db.session.commit()
    return event


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
