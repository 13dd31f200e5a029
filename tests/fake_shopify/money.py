"""Money as the fake Shopify handles it: ``Decimal`` amounts, decimal strings on the wire.

Every amount is kept at its currency's minor-unit exponent (2 for USD, 0 for JPY, 3 for KWD);
an input finer than that, or a float, is refused. Output follows Shopify: GraphQL ``Decimal``s
drop trailing zeros but keep one decimal ("61.1", "10.0", "-9.99", as in Shopify's examples),
REST payloads carry exactly the currency's decimals ("61.10").
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# ISO 4217 currencies whose minor unit is not the cent (everything else has two decimals).
_ZERO_DECIMALS = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"}
    | {"RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"}
)
_THREE_DECIMALS = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})


class MoneyError(ValueError):
    """An amount that is not a decimal number, or finer than its currency's minor unit."""


def exponent(currency: str) -> int:
    if currency in _ZERO_DECIMALS:
        return 0
    if currency in _THREE_DECIMALS:
        return 3
    return 2


def parse_amount(value: object, currency: str) -> Decimal:
    """A wire amount ("12.5", "12.50", 12) as a Decimal at the currency's exponent.

    Floats are refused: money never travels as a binary float.
    """
    if isinstance(value, (bool, float)):
        raise MoneyError(f"amount {value!r} must be a decimal string, not a float")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as error:
        raise MoneyError(f"amount {value!r} is not a decimal number") from error
    if not amount.is_finite():
        raise MoneyError(f"amount {value!r} is not a finite number")
    quantum = Decimal(1).scaleb(-exponent(currency))
    if amount != amount.quantize(quantum):
        raise MoneyError(
            f"amount {value!r} has more decimals than {currency} allows ({exponent(currency)})"
        )
    return amount.quantize(quantum)


def format_amount(amount: Decimal, currency: str) -> str:
    """The REST form: exactly the currency's number of decimals ("12.50")."""
    return str(amount.quantize(Decimal(1).scaleb(-exponent(currency))))


def graphql_decimal(amount: Decimal) -> str:
    """The GraphQL ``Decimal`` form: "61.1", "10.0", "-9.99"."""
    text = format(amount.normalize(), "f")
    return text if "." in text else f"{text}.0"


def money(amount: Decimal, currency: str) -> dict[str, str]:
    """A GraphQL ``MoneyV2``."""
    return {"amount": graphql_decimal(amount), "currencyCode": currency}
