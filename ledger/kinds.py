"""The ledger's vocabularies. Plain strings in the database, checked there by constraints."""

from __future__ import annotations

from enum import StrEnum


class EntryKind(StrEnum):
    ISSUE = "issue"
    REDEEM = "redeem"
    REFUND_CREDIT = "refund_credit"
    REDEEM_REVERSAL = "redeem_reversal"
    ADJUST = "adjust"
    REVOKE = "revoke"
    EXPIRE = "expire"
    EXTERNAL = "external"


class LotSource(StrEnum):
    MANUAL = "manual"
    BULK = "bulk"
    REFUND = "refund"
    CASHBACK = "cashback"
    GOODWILL = "goodwill"
    MIGRATION = "migration"
    EXTERNAL = "external"


class LotStatus(StrEnum):
    ACTIVE = "active"
    DEPLETED = "depleted"
    EXPIRED = "expired"
    REVOKED = "revoked"


def sql_in(column: str, values: type[StrEnum]) -> str:
    """A CHECK expression allowing exactly the enum's values (kept in step with the code)."""
    listed = ", ".join(f"'{member.value}'" for member in values)
    return f"{column} IN ({listed})"
