"""Domain errors. Each carries a stable snake_case ``code`` the API puts on the wire.

Errors are data as much as exceptions: a rejection is stored with its idempotency key and
replayed as the same error, so every error can be rebuilt from ``(code, message, details)``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LedgerError(Exception):
    """Base of every rule the ledger refuses to break."""

    code: ClassVar[str] = "ledger_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> LedgerError:
        """Rebuild a stored error (an idempotent replay raises what the first attempt raised)."""
        cls = _BY_CODE.get(data["code"], LedgerError)
        return cls(data["message"], **data.get("details", {}))


class InvalidAmount(LedgerError):
    code = "invalid_amount"


class UnknownCurrency(LedgerError):
    code = "invalid_currency"


class CurrencyMismatch(LedgerError):
    code = "currency_mismatch"


class InsufficientFunds(LedgerError):
    code = "insufficient_funds"


class AccountNotFound(LedgerError):
    code = "account_not_found"


class LotNotFound(LedgerError):
    code = "lot_not_found"


class LotNotActive(LedgerError):
    code = "lot_not_active"


class EntryNotFound(LedgerError):
    code = "entry_not_found"


class NothingToReverse(LedgerError):
    code = "nothing_to_reverse"


class InvalidExpiry(LedgerError):
    code = "invalid_expiry"


class IdempotencyConflict(LedgerError):
    """The key was used before for a different request."""

    code = "idempotency_conflict"


# -- the merchant's settings, presets and reconciliation findings ----------------------------


class InvalidField(LedgerError):
    """A setting or preset field of the wrong type or out of range (``details.field``)."""

    code = "invalid_field"


class PresetNotFound(LedgerError):
    code = "preset_not_found"


class PresetNameTaken(LedgerError):
    code = "preset_name_taken"


class PresetLimitReached(LedgerError):
    code = "preset_limit_reached"


class FindingNotFound(LedgerError):
    code = "finding_not_found"


class RunNotFound(LedgerError):
    code = "run_not_found"


class FindingResolved(LedgerError):
    """The finding is resolved already: nothing to resolve or repair."""

    code = "finding_resolved"


class NotRepairable(LedgerError):
    """Nothing can repair this kind of finding (a broken chain, tampering): a person looks."""

    code = "not_repairable"


_BY_CODE: dict[str, type[LedgerError]] = {
    cls.code: cls
    for cls in (
        InvalidAmount,
        UnknownCurrency,
        CurrencyMismatch,
        InsufficientFunds,
        AccountNotFound,
        LotNotFound,
        LotNotActive,
        EntryNotFound,
        NothingToReverse,
        InvalidExpiry,
        IdempotencyConflict,
    )
}
