"""Every delivery of an order's life sent twice and processed at once, by real threads.

The data is committed for real (each worker has its own connection, as RQ workers do): a shop
installed through token exchange, 50.00 of credit, then a spend of 30.00 at checkout, a refund
of 5.00 to store credit and the cancellation — three events, each delivered twice (a retry
with the same webhook id, recorded once, and a second subscription's copy with its own id),
and the six recorded deliveries each processed by two workers at the same moment.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from blueprints.settings import current_settings
from config import DEFAULT_SCOPES
from jobs.webhooks import process_webhook
from ledger import operations
from ledger.book import Actor
from ledger.money import Money
from ledger.verify import verify_account
from models import CreditAccount, LedgerEntry, WebhookEvent
from shop_access import install_with_session_token
from tests.conftest import settings_changed
from tests.webhooks.conftest import closed_port

CUSTOMER, ORDER, REFUND = 7_777_001, 880_001, 990_001

pytestmark = pytest.mark.concurrency


def test_duplicated_deliveries_processed_concurrently_land_once(
    app, engine, shopify, on_postgresql
):
    if not on_postgresql:
        pytest.skip("real concurrent connections need PostgreSQL")
    domain = f"conc-{uuid.uuid4().hex[:10]}.myshopify.com"
    shopify.scopes = tuple(DEFAULT_SCOPES.split(","))
    fake_shop = shopify.add_shop(domain, restore_rate=1000.0)
    fake_shop.add_customer(CUSTOMER)
    # Redis unreachable: deliveries are recorded and answered, and nothing is enqueued, so the
    # only workers are this test's threads.
    dead_redis = f"redis://127.0.0.1:{closed_port()}/0"
    with settings_changed(app, shopify_admin_origin=shopify.origin_template, redis_url=dead_redis):
        shop_id = _installed_with_credit(app, engine, domain, shopify)
        fake_shop.credit(CUSTOMER, "50.00", "USD")  # the mirrored credit (native sync's job)
        fake_shop.place_order(ORDER, CUSTOMER, "USD", store_credit="30.00", other="20.00")
        paid = fake_shop.order_payload(ORDER)
        fake_shop.refund(ORDER, REFUND, to_store_credit="5.00")
        refund = fake_shop.refund_payload(REFUND)
        fake_shop.cancel_order(ORDER)
        cancelled = fake_shop.order_payload(ORDER)
        events = _deliver_each_twice(
            app,
            shopify,
            domain,
            [("orders/paid", paid), ("refunds/create", refund), ("orders/cancelled", cancelled)],
        )
        assert len(events) == 6
        results = _process_concurrently(app, events * 2)
    assert sorted(set(results)) in (["processed", "skipped"], ["processed"]), results
    with Session(engine) as check:
        kinds = check.execute(
            select(LedgerEntry.kind, LedgerEntry.amount)
            .where(LedgerEntry.shop_id == shop_id)
            .order_by(LedgerEntry.sequence)
        ).all()
        assert sorted(kinds) == sorted(
            [("issue", 5000), ("redeem", -3000), ("redeem_reversal", 3000), ("refund_credit", 500)]
        )
        account = check.execute(
            select(CreditAccount).where(CreditAccount.shop_id == shop_id)
        ).scalar_one()
        assert account.balance == 5500
        assert verify_account(check, account.id) == []
        states = check.scalars(select(WebhookEvent.state).where(WebhookEvent.id.in_(events))).all()
        assert set(states) == {"processed"}
    assert fake_shop.balance(CUSTOMER, "USD") == "55.00"


def _installed_with_credit(app: Any, engine: Any, domain: str, shopify: Any) -> int:
    with app.app_context(), Session(engine) as setup:
        now = datetime.now(UTC)
        shop = install_with_session_token(
            setup, current_settings(), domain, shopify.session_token(domain), now
        )
        by = Actor(shop.id, now, "staff:1", "goodwill", f"conc-{uuid.uuid4()}")
        operations.issue(setup, by, customer=CUSTOMER, amount=Money(5000, "USD"))
        return shop.id


def _deliver_each_twice(
    app: Any, shopify: Any, domain: str, deliveries: list[tuple[str, dict]]
) -> list[int]:
    events: list[int] = []
    with app.app_context():
        client = app.test_client()
        for topic, payload in deliveries:
            for webhook_id in (str(uuid.uuid4()), str(uuid.uuid4())):
                for _ in range(2):  # a retry of the same delivery: recorded once
                    body, headers = shopify.signed_webhook(
                        domain, topic, payload, webhook_id=webhook_id
                    )
                    assert client.post("/webhooks", data=body, headers=headers).status_code == 200
                with Session(app.extensions["sqlalchemy"].engine) as look:
                    events.append(
                        look.scalar(
                            select(WebhookEvent.id).where(WebhookEvent.webhook_id == webhook_id)
                        )
                    )
    return events


def _process_concurrently(app: Any, event_ids: list[int]) -> list[str]:
    barrier = threading.Barrier(len(event_ids))
    results: list[str] = [""] * len(event_ids)

    def work(index: int, event_id: int) -> None:
        from extensions import db

        with app.app_context():
            try:
                db.session.connection()
                barrier.wait(timeout=30)
                results[index] = process_webhook(event_id)
            except BaseException as error:  # reported by the assertion on results
                results[index] = repr(error)
            finally:
                db.session.remove()

    threads = [
        threading.Thread(target=work, args=(i, e), daemon=True) for i, e in enumerate(event_ids)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results
