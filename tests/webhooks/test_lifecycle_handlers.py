"""Handlers that need no Admin API call: customers/*, app/*, and the compliance topics.

Each is called as the job calls it, with a recorded delivery; repeated and out-of-order
deliveries must change nothing twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from ledger import operations
from ledger.book import Actor
from ledger.money import Money
from models import (
    AuditLog,
    CreditAccount,
    Customer,
    DataRequest,
    LedgerEntry,
    Shop,
    WebhookEvent,
)
from tests.factories import CustomerFactory, ShopFactory
from webhooks.topics import Delivery, Ignored, handlers

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def record(session, shop: Shop, topic: str, payload: dict[str, Any], **kw: Any) -> Delivery:
    """A delivery row as the intake writes it, and the Delivery its handler receives."""
    customer = payload.get("id") if topic.startswith("customers/") and "id" in payload else None
    customer = (payload.get("customer") or {}).get("id", customer)
    customer = customer if isinstance(customer, int) else None
    event = WebhookEvent(
        webhook_id=kw.get(
            "webhook_id", f"wh-{topic}-{id(payload)}-{datetime.now(UTC).timestamp()}"
        ),
        shop_id=shop.id,
        shop_domain=shop.domain,
        topic=topic,
        api_version="2026-10",
        triggered_at=kw.get("triggered_at", T0),
        shopify_customer_id=customer,
        payload=payload,
        received_at=kw.get("received_at", T0),
        state="processing",
        attempts=1,
    )
    session.add(event)
    session.commit()
    return Delivery(
        event_id=event.id,
        webhook_id=event.webhook_id,
        topic=topic,
        shop=shop,
        payload=payload,
        api_version="2026-10",
        triggered_at=event.triggered_at,
    )


def handle(session, delivery: Delivery, now: datetime = T0) -> dict[str, Any]:
    return handlers()[delivery.topic](session, delivery, now)


def customer_payload(customer_id: int, updated: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "id": customer_id,
        "email": fields.get("email", "ada@example.com"),
        "first_name": fields.get("first_name", "Ada"),
        "last_name": fields.get("last_name", "Lovelace"),
        "updated_at": updated.isoformat(),
    }


class TestCustomers:
    def test_a_customer_we_hold_credit_for_is_kept_current(self, session, now):
        shop = ShopFactory()
        operations.issue(session, Actor(shop.id, now, "staff:1", "goodwill"), customer=501,
                         amount=Money(100, "USD"))  # fmt: skip
        handle(session, record(session, shop, "customers/create", customer_payload(501, T0)))
        later = customer_payload(501, T0 + timedelta(minutes=5), email="ada@new.example")
        assert (
            handle(session, record(session, shop, "customers/update", later))["result"] == "applied"
        )
        row = session.scalars(select(Customer).where(Customer.shop_id == shop.id)).one()
        assert (row.email, row.shopify_updated_at) == ("ada@new.example", T0 + timedelta(minutes=5))

    def test_a_customer_we_hold_nothing_for_is_not_stored(self, session):
        """Data minimisation; also, a payload replayed under another shop finds no one there."""
        shop = ShopFactory()
        with pytest.raises(Ignored, match="holds nothing"):
            handle(session, record(session, shop, "customers/create", customer_payload(509, T0)))
        with pytest.raises(Ignored, match="holds nothing"):
            handle(session, record(session, shop, "customers/delete", {"id": 509}))
        assert session.scalar(select(func.count()).where(Customer.shop_id == shop.id)) == 0

    def test_an_older_update_arriving_late_changes_nothing(self, session):
        shop = ShopFactory()
        CustomerFactory(shop_id=shop.id, shopify_customer_id=502)
        newer = customer_payload(502, T0 + timedelta(hours=1), email="new@example.com")
        older = customer_payload(502, T0, email="old@example.com")
        handle(session, record(session, shop, "customers/update", newer))
        outcome = handle(session, record(session, shop, "customers/update", older))
        assert outcome["result"] == "stale"
        assert session.scalars(select(Customer.email).where(Customer.shop_id == shop.id)).one() == (
            "new@example.com"
        )

    def test_the_same_delivery_twice_applies_once(self, session):
        shop = ShopFactory()
        CustomerFactory(shop_id=shop.id, shopify_customer_id=503)
        payload = customer_payload(503, T0)
        first = handle(session, record(session, shop, "customers/update", payload))
        second = handle(session, record(session, shop, "customers/update", payload))
        assert (first["result"], second["result"]) == ("applied", "stale")
        assert session.scalar(select(func.count()).where(Customer.shop_id == shop.id)) == 1

    def test_delete_marks_the_customer_and_keeps_the_money(self, session, now):
        shop = ShopFactory()
        by = Actor(shop.id, now, "staff:1", "goodwill")
        operations.issue(session, by, customer=504, amount=Money(1500, "USD"))
        delete = record(session, shop, "customers/delete", {"id": 504}, triggered_at=now)
        assert handle(session, delete, now)["result"] == "applied"
        customer = session.scalars(select(Customer).where(Customer.shop_id == shop.id)).one()
        assert customer.deleted_at == now
        balance = session.scalar(
            select(CreditAccount.balance).where(CreditAccount.shop_id == shop.id)
        )
        assert balance == 1500

    def test_a_payload_without_a_usable_id_is_ignored(self, session):
        shop = ShopFactory()
        with pytest.raises(Ignored):
            handle(session, record(session, shop, "customers/update", {"id": "not-an-id"}))


class TestAppLifecycle:
    def test_uninstall_wipes_tokens_and_schedules_redaction(self, session):
        shop = ShopFactory(
            installed_at=T0 - timedelta(days=3),
            access_token_encrypted="x",
            refresh_token_encrypted="y",
        )
        outcome = handle(session, record(session, shop, "app/uninstalled", {"id": 1}))
        assert outcome == {"result": "applied"}
        session.refresh(shop)
        assert shop.access_token_encrypted is None
        assert shop.refresh_token_encrypted is None
        assert shop.uninstalled_at == T0
        assert shop.redact_due_at == T0 + timedelta(hours=48)

    def test_an_uninstall_triggered_before_a_reinstall_is_stale(self, session):
        shop = ShopFactory(installed_at=T0 + timedelta(minutes=1), access_token_encrypted="x")
        outcome = handle(session, record(session, shop, "app/uninstalled", {"id": 1}))
        assert outcome == {"result": "stale"}
        session.refresh(shop)
        assert shop.is_installed
        assert shop.access_token_encrypted == "x"

    def test_scopes_update_records_the_granted_scopes(self, session):
        shop = ShopFactory(installed_at=T0 - timedelta(days=1))
        payload = {
            "id": 1,
            "previous": ["read_orders"],
            "current": ["read_orders", "read_customers"],
        }
        outcome = handle(session, record(session, shop, "app/scopes_update", payload))
        assert outcome["scopes"] == "read_customers,read_orders"


class TestCompliance:
    def _customer_with_credit(self, session, shop: Shop, now: datetime) -> Customer:
        customer = CustomerFactory(
            shop_id=shop.id, shopify_customer_id=601, email="eve@example.com"
        )
        by = Actor(shop.id, now, "staff:1", "goodwill")
        operations.issue(session, by, customer=601, amount=Money(2500, "USD"))
        return customer

    def test_data_request_builds_one_export_and_audits_it(self, session, now):
        shop = ShopFactory()
        self._customer_with_credit(session, shop, now)
        payload = {
            "shop_id": 1,
            "shop_domain": shop.domain,
            "customer": {"id": 601, "email": "eve@example.com"},
            "data_request": {"id": 9001},
        }
        first = handle(session, record(session, shop, "customers/data_request", payload), now)
        again = handle(session, record(session, shop, "customers/data_request", payload), now)
        assert (first["result"], again["result"]) == ("created", "already_recorded")
        request = session.scalars(select(DataRequest).where(DataRequest.shop_id == shop.id)).one()
        export = request.export
        assert export["customer"]["email"] == "eve@example.com"
        assert export["accounts"][0]["balance"] == "25.00"
        assert len(export["accounts"][0]["entries"]) == 1
        audits = session.scalars(
            select(AuditLog.action).where(
                AuditLog.shop_id == shop.id, AuditLog.action == "customer.data_request"
            )
        ).all()
        assert audits == ["customer.data_request"]

    def test_redact_scrubs_pii_everywhere_and_keeps_the_ledger(self, session, now):
        shop = ShopFactory()
        self._customer_with_credit(session, shop, now)
        order = {
            "id": 77,
            "email": "eve@example.com",
            "customer": {"id": 601, "email": "eve@example.com", "first_name": "Eve"},
            "billing_address": {"address1": "1 Secret Lane"},
            "total_price": "10.00",
        }
        kept = record(session, shop, "orders/paid", order)
        payload = {"shop_domain": shop.domain, "customer": {"id": 601, "email": "eve@example.com"}}
        outcome = handle(session, record(session, shop, "customers/redact", payload), now)
        assert outcome["customers"] == 1
        assert outcome["payloads"] >= 2
        customer = session.scalars(select(Customer).where(Customer.shop_id == shop.id)).one()
        assert (customer.email, customer.first_name, customer.last_name) == (None, None, None)
        assert customer.redacted_at == now
        stored = session.get(WebhookEvent, kept.event_id)
        session.refresh(stored)
        assert "eve@example.com" not in str(stored.payload)
        assert "Secret Lane" not in str(stored.payload)
        assert stored.payload["id"] == 77
        assert stored.payload["total_price"] == "10.00"
        balance = session.scalar(
            select(CreditAccount.balance).where(CreditAccount.shop_id == shop.id)
        )
        assert balance == 2500  # the ledger stays, anonymised

    def test_a_customer_update_after_redaction_brings_nothing_back(self, session, now):
        shop = ShopFactory()
        self._customer_with_credit(session, shop, now)
        payload = {"shop_domain": shop.domain, "customer": {"id": 601}}
        handle(session, record(session, shop, "customers/redact", payload), now)
        late = customer_payload(601, now + timedelta(minutes=1), email="eve@example.com")
        assert (
            handle(session, record(session, shop, "customers/update", late))["result"] == "redacted"
        )

    def test_shop_redact_erases_everything_but_a_tombstone(self, session, now):
        shop = ShopFactory(uninstalled_at=now - timedelta(hours=48))
        self._customer_with_credit(session, shop, now)
        delivery = record(session, shop, "shop/redact", {"shop_id": 1, "shop_domain": shop.domain})
        counts = handle(session, delivery, now)
        assert counts["ledger_entries"] == 1
        assert counts["customers"] == 1
        session.expire_all()
        assert session.scalar(select(func.count()).where(LedgerEntry.shop_id == shop.id)) == 0
        assert session.scalar(select(func.count()).where(Customer.shop_id == shop.id)) == 0
        tombstone = session.get(Shop, shop.id)
        assert tombstone.erased_at == now
        assert tombstone.domain == shop.domain
        assert session.get(WebhookEvent, delivery.event_id) is not None

    def test_shop_redact_for_a_reinstalled_shop_is_ignored(self, session, now):
        shop = ShopFactory()
        with pytest.raises(Ignored):
            handle(session, record(session, shop, "shop/redact", {"shop_domain": shop.domain}), now)

    def test_the_ledger_of_a_shop_not_erased_still_refuses_delete(
        self, session, on_postgresql, now
    ):
        shop = ShopFactory(uninstalled_at=now)
        self._customer_with_credit(session, shop, now)
        with pytest.raises(DBAPIError, match="append-only"):
            session.execute(text("DELETE FROM ledger_entries WHERE shop_id = :s"), {"s": shop.id})
        session.rollback()


class TestDataRequestDownload:
    def test_the_merchant_lists_and_downloads_the_export_and_the_download_is_audited(
        self, app_context, client, now
    ):
        from extensions import db
        from tests.conftest import auth

        shop = ShopFactory()
        CustomerFactory(shop_id=shop.id, shopify_customer_id=611, email="zoe@example.com")
        payload = {"shop_domain": shop.domain, "customer": {"id": 611}, "data_request": {"id": 77}}
        handle(db.session, record(db.session, shop, "customers/data_request", payload), now)
        listed = client.get("/api/data-requests", headers=auth(shop.domain)).get_json()
        (entry,) = listed["data_requests"]
        assert (entry["customer_id"], entry["request"], entry["state"]) == ("611", "77", "ready")
        download = client.get(
            f"/api/data-requests/{entry['id']}", headers=auth(shop.domain, sub="42")
        )
        assert download.status_code == 200
        assert (
            download.headers["Content-Disposition"]
            == 'attachment; filename="customer-611-data.json"'
        )
        assert download.get_json()["customer"]["email"] == "zoe@example.com"
        actors = db.session.scalars(
            select(AuditLog.actor).where(
                AuditLog.shop_id == shop.id, AuditLog.action == "data_request.download"
            )
        ).all()
        assert actors == ["staff:42"]

    def test_another_shops_request_is_a_404(self, app_context, client, now):
        from extensions import db
        from tests.conftest import auth

        shop, other = ShopFactory(), ShopFactory()
        payload = {"shop_domain": shop.domain, "customer": {"id": 612}, "data_request": {"id": 78}}
        handle(db.session, record(db.session, shop, "customers/data_request", payload), now)
        request_id = db.session.scalar(select(DataRequest.id).where(DataRequest.shop_id == shop.id))
        assert (
            client.get(f"/api/data-requests/{request_id}", headers=auth(other.domain)).status_code
            == 404
        )
        assert client.get("/api/data-requests/abc", headers=auth(other.domain)).status_code == 404
