"""Every model, imported here so Alembic and the app see the whole schema."""

from ledger.chain import GENESIS_HASH
from models.base import Base
from models.credit import CreditAccount, CreditLot
from models.customer import Customer
from models.ledger_entry import EntryAllocation, LedgerEntry
from models.records import AuditLog, IdempotencyKey
from models.shop import Shop

__all__ = [
    "GENESIS_HASH",
    "AuditLog",
    "Base",
    "CreditAccount",
    "CreditLot",
    "Customer",
    "EntryAllocation",
    "IdempotencyKey",
    "LedgerEntry",
    "Shop",
]
