"""Every model, imported here so Alembic and the app see the whole schema."""

from ledger.chain import GENESIS_HASH
from models.archive import (
    EntryAllocationArchive,
    LedgerCheckpoint,
    LedgerEntryArchive,
    ShopifyOutboxArchive,
)
from models.base import Base
from models.bulk import BulkImport, BulkImportRow
from models.credit import CreditAccount, CreditLot
from models.customer import Customer
from models.ledger_entry import EntryAllocation, LedgerEntry
from models.outbox import ShopifyOutbox
from models.preset import IssuancePreset
from models.privacy import DataRequest
from models.reconciliation import ReconciliationFinding, ReconciliationRun
from models.records import AuditLog, IdempotencyKey
from models.shop import Shop
from models.usage import ApiUsage
from models.webhook_event import WebhookEvent

__all__ = [
    "GENESIS_HASH",
    "ApiUsage",
    "AuditLog",
    "Base",
    "BulkImport",
    "BulkImportRow",
    "CreditAccount",
    "CreditLot",
    "Customer",
    "DataRequest",
    "EntryAllocation",
    "EntryAllocationArchive",
    "IdempotencyKey",
    "IssuancePreset",
    "LedgerCheckpoint",
    "LedgerEntry",
    "LedgerEntryArchive",
    "ReconciliationFinding",
    "ReconciliationRun",
    "Shop",
    "ShopifyOutbox",
    "ShopifyOutboxArchive",
    "WebhookEvent",
]
