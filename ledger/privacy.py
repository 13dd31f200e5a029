"""Privacy: a customer's data export, a customer's redaction, a shop's erasure.

- Export (``customers/data_request``): everything held on the customer — the customer row,
  accounts, lots, ledger entries (archived ones too: retention moves old entries out of the
  hot table, not out of what is held), and the stored webhook payloads about them — kept as a
  data request the merchant downloads (Shopify does not collect it). Audited.
- Redaction (``customers/redact``): personal data scrubbed from the customer row, from every
  stored webhook payload about them and from any export made for them. The ledger stays —
  amounts, dates, lots — keyed to an anonymous customer row, because the money is still owed
  or was spent and must stay traceable.
- Erasure (``shop/redact``, 48 h after uninstall): the shop's data deleted; the shop row stays
  as a tombstone (domain and dates only). It is the one DELETE the ledger's append-only
  trigger lets through, and only for a shop marked erased in the same transaction (besides
  retention's, ledger/archive.py, which deletes only what it copied to the archive). The
  archive and its checkpoints are the shop's data too, and go with the rest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, defer

from ledger.views import account_json, entry_json, iso, lot_json
from models import (
    ApiUsage,
    AuditLog,
    BulkImport,
    BulkImportRow,
    CreditAccount,
    CreditLot,
    Customer,
    DataRequest,
    EntryAllocation,
    EntryAllocationArchive,
    IdempotencyKey,
    IssuancePreset,
    LedgerCheckpoint,
    LedgerEntry,
    LedgerEntryArchive,
    ReconciliationFinding,
    ReconciliationRun,
    Shop,
    ShopifyOutbox,
    ShopifyOutboxArchive,
    WebhookEvent,
)

# Keys whose values are personal data wherever they appear in a Shopify payload.
PII_KEYS = frozenset(
    {
        "email", "contact_email", "phone", "first_name", "last_name", "name", "company",
        "address1", "address2", "city", "zip", "province", "province_code", "country",
        "country_code", "latitude", "longitude", "note", "browser_ip", "client_details",
        "billing_address", "shipping_address", "default_address", "addresses",
        "customer_locale", "landing_site", "referring_site",
    }
)  # fmt: skip


def scrub(value: Any) -> Any:
    """``value`` with every personal field emptied, at any depth (ids and amounts stay)."""
    if isinstance(value, dict):
        return {k: (None if k in PII_KEYS else scrub(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value


# -- export ----------------------------------------------------------------------------------


def export_customer(session: Session, shop_id: int, shopify_customer_id: int) -> dict[str, Any]:
    """Everything CreditCraft holds on one customer of one shop, as a JSON document."""
    customer = session.execute(
        select(Customer).where(
            Customer.shop_id == shop_id, Customer.shopify_customer_id == shopify_customer_id
        )
    ).scalar_one_or_none()
    deliveries = session.scalars(
        select(WebhookEvent)
        .where(
            WebhookEvent.shop_id == shop_id,
            WebhookEvent.shopify_customer_id == shopify_customer_id,
            WebhookEvent.payload.is_not(None),
        )
        .order_by(WebhookEvent.id)
    )
    document: dict[str, Any] = {
        "customer_id": str(shopify_customer_id),
        "customer": None,
        "accounts": [],
        "webhook_payloads": [
            {"topic": d.topic, "received_at": iso(d.received_at), "payload": d.payload}
            for d in deliveries
            if d.topic != "customers/data_request"
        ],
    }
    if customer is None:
        return document
    document["customer"] = {
        "email": customer.email,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "created_at": iso(customer.created_at),
        "deleted_at": iso(customer.deleted_at),
        "redacted_at": iso(customer.redacted_at),
    }
    for account in session.scalars(
        select(CreditAccount)
        .where(CreditAccount.customer_id == customer.id)
        .order_by(CreditAccount.id)
    ):
        lots = session.scalars(
            select(CreditLot)
            .where(CreditLot.account_id == account.id)
            .order_by(CreditLot.created_at)
        )
        document["accounts"].append(
            account_json(account)
            | {
                "lots": [lot_json(lot, account.currency) for lot in lots],
                "entries": [
                    entry_json(entry, account.currency)
                    for entry in _account_entries(session, account.id)
                ],
            }
        )
    return document


def _account_entries(session: Session, account_id: int) -> list[Any]:
    """Every entry of the account in chain order: the archived prefix, then the hot rest (an
    account's archived entries all precede its hot ones)."""
    archived = session.scalars(
        select(LedgerEntryArchive)
        .where(LedgerEntryArchive.account_id == account_id)
        .order_by(LedgerEntryArchive.sequence)
    )
    hot = session.scalars(
        select(LedgerEntry)
        .where(LedgerEntry.account_id == account_id)
        .order_by(LedgerEntry.sequence)
    )
    return [*archived, *hot]


def record_data_request(
    session: Session,
    shop_id: int,
    request_key: str,
    shopify_customer_id: int,
    actor: str,
    now: datetime,
) -> str:
    """Build and keep the export once per request; ``created`` or ``already_recorded``."""
    export = export_customer(session, shop_id, shopify_customer_id)
    dialect = session.get_bind().dialect.name
    upsert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = (
        upsert(DataRequest)
        .values(
            shop_id=shop_id,
            request_key=request_key,
            shopify_customer_id=shopify_customer_id,
            state="ready",
            export=export,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["shop_id", "request_key"])
        .returning(DataRequest.id)
    )
    created = session.execute(stmt).scalar_one_or_none()
    if created is None:
        session.commit()
        return "already_recorded"
    _audit(session, shop_id, actor, "customer.data_request", "data_request", str(created), now,
           {"customer_id": str(shopify_customer_id), "request": request_key})  # fmt: skip
    session.commit()
    return "created"


def data_requests(session: Session, shop_id: int) -> list[dict[str, Any]]:
    """The shop's data requests, newest first (the exports themselves are downloaded one by one)."""
    rows = session.scalars(
        select(DataRequest)
        .options(defer(DataRequest.export))  # a long customer's export is megabytes of JSON
        .where(DataRequest.shop_id == shop_id)
        .order_by(DataRequest.created_at.desc(), DataRequest.id.desc())
    )
    return [_request_json(row) for row in rows]


def download_data_request(
    session: Session, shop_id: int, request_id: int, actor: str, now: datetime
) -> dict[str, Any] | None:
    """The export of one request (None if not this shop's); the download is audited."""
    row = session.execute(
        select(DataRequest)
        .where(DataRequest.shop_id == shop_id, DataRequest.id == request_id)
        .with_for_update()
    ).scalar_one_or_none()
    if row is None:
        return None
    row.state = "downloaded"
    row.downloaded_at = row.downloaded_at or now
    _audit(session, shop_id, actor, "data_request.download", "data_request", str(row.id), now,
           {"customer_id": str(row.shopify_customer_id)})  # fmt: skip
    export = row.export
    session.commit()
    return export


def _request_json(row: DataRequest) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "customer_id": str(row.shopify_customer_id),
        "request": row.request_key,
        "state": row.state,
        "created_at": iso(row.created_at),
        "downloaded_at": iso(row.downloaded_at),
    }


# -- redaction -------------------------------------------------------------------------------


def redact_customer(
    session: Session, shop_id: int, shopify_customer_id: int, actor: str, now: datetime
) -> dict[str, int]:
    """Scrub one customer's personal data everywhere it is stored; the ledger stays."""
    customers = _rows(
        session,
        update(Customer)
        .where(Customer.shop_id == shop_id, Customer.shopify_customer_id == shopify_customer_id)
        .values(email=None, first_name=None, last_name=None, redacted_at=now, updated_at=now),
    )
    payloads = 0
    for delivery in session.scalars(
        select(WebhookEvent)
        .where(
            WebhookEvent.shop_id == shop_id,
            WebhookEvent.shopify_customer_id == shopify_customer_id,
            WebhookEvent.payload.is_not(None),
        )
        .with_for_update()
    ):
        delivery.payload = scrub(delivery.payload)
        payloads += 1
    exports = _rows(
        session,
        update(DataRequest)
        .where(
            DataRequest.shop_id == shop_id,
            DataRequest.shopify_customer_id == shopify_customer_id,
        )
        .values(export={"redacted": True, "customer_id": str(shopify_customer_id)}),
    )
    counts = {"customers": customers, "payloads": payloads, "exports": exports}
    _audit(session, shop_id, actor, "customer.redact", "customer", str(shopify_customer_id), now,
           counts)  # fmt: skip
    session.commit()
    return counts


# -- erasure ---------------------------------------------------------------------------------


def erase_shop(
    session: Session,
    shop: Shop,
    keep_delivery: int | None,
    now: datetime,
    *,
    actor: str = "webhook:shop/redact",
) -> dict[str, int]:
    """Delete every row the shop owns (but the delivery asking for it); keep a tombstone.

    ``actor`` is who the audit row names: the shop/redact delivery, or the job that erases a
    shop whose redaction fell due without one.
    """
    shop.erased_at = now  # first: the append-only trigger reads it in this transaction
    session.flush()
    counts: dict[str, int] = {}
    for model in (
        ShopifyOutbox,
        EntryAllocation,
        LedgerEntry,
        ShopifyOutboxArchive,
        EntryAllocationArchive,
        LedgerEntryArchive,
        LedgerCheckpoint,
        ReconciliationFinding,
        ReconciliationRun,
        BulkImportRow,
        BulkImport,
        CreditLot,
        CreditAccount,
        DataRequest,
        Customer,
        IdempotencyKey,
        IssuancePreset,
        AuditLog,
        ApiUsage,
    ):
        counts[model.__tablename__] = _rows(session, delete(model).where(model.shop_id == shop.id))
    counts["webhook_events"] = _rows(
        session,
        delete(WebhookEvent).where(
            WebhookEvent.shop_id == shop.id, WebhookEvent.id != keep_delivery
        ),
    )
    shop.name = None
    shop.scopes = None
    shop.access_token_encrypted = shop.refresh_token_encrypted = None
    shop.access_token_expires_at = shop.refresh_token_expires_at = None
    _audit(session, shop.id, actor, "shop.erase", "shop", str(shop.id), now, counts)
    session.commit()
    return counts


def _audit(
    session: Session,
    shop_id: int,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    now: datetime,
    details: dict[str, Any],
) -> None:
    session.execute(
        insert(AuditLog).values(
            shop_id=shop_id,
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            outcome="success",
            details=details,
            created_at=now,
        )
    )


def _rows(session: Session, statement: Any) -> int:
    """Run an UPDATE or DELETE; how many rows it touched."""
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return result.rowcount
