"""Money as integer minor units, spoken on the wire as decimal strings.

Every amount the ledger stores or adds up is an ``int`` counting the currency's smallest unit
(cents for USD, yen for JPY, fils for KWD), because integer addition is exact and associative:
a balance is the sum of its entries however the sum is grouped, which a hash-chained,
append-only ledger relies on when it recomputes balances to check them. Floats cannot promise
that (``0.1 + 0.2 != 0.3``), and ``Decimal`` carries a context (precision, rounding) that can
silently round a value somebody forgot to quantize.

Amounts cross the API boundary as strings such as ``"12.50"`` for the same reason. A JSON number
is a float to most parsers, so ``12.5`` may already have been rounded before it reaches us; a
string is exactly what the client typed. This module is the only place that turns one into the
other, with a strict regex and integer arithmetic, and it refuses rather than guesses: a value
with more decimals than the currency has, a float, an exponent or a thousands separator is an
error, never a rounding. The string shape matches Shopify's ``MoneyV2`` (``{"amount": "12.50",
"currency": "USD"}``), so what we send Shopify is what we stored.

No floats appear anywhere in this module, and it imports only the standard library: ``ledger``
is the framework-free domain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ledger.errors import InvalidAmount, UnknownCurrency

__all__ = [
    "CURRENCY_EXPONENTS",
    "MAX_MINOR_UNITS",
    "Money",
    "exponent",
    "format_amount",
    "normalize_currency",
    "parse_amount",
]

# ISO 4217 (List One) codes with a defined minor unit, grouped by that minor unit (the
# exponent). Codes whose minor unit is "N.A." -- precious metals (XAU, XAG, XPD, XPT), bond-market
# units (XBA..XBD), XDR, XSU, XUA and the test/no-currency codes XTS and XXX -- are left out:
# they have no exponent, so an amount in them has no meaning here. Fund codes that do have an
# exponent (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW) stay, as ISO lists them.
_ISO_BY_EXPONENT: dict[int, str] = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    2: """
        AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP
        BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR
        FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW
        KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN
        NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD
        SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS
        VED VES WST XCD XCG YER ZAR ZMW ZWG
    """,
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}

# Shopify's CurrencyCode enum still accepts some codes ISO has withdrawn (replaced currencies)
# and a few local issues that ISO never coded. A shop or an old order can still report one, and
# refusing it would strand that shop's credit, so each keeps the exponent it had (or, for the
# non-ISO ones, the exponent of the currency it is pegged to at par). XXX is in Shopify's enum
# too, but it means "no currency", so it stays out.
_SHOPIFY_EXTRA_BY_EXPONENT: dict[int, str] = {
    0: "BYR",
    2: "HRK LTL LVL SLL STD VEF JEP KID",
}


def _build_table() -> Mapping[str, int]:
    table: dict[str, int] = {}
    for source in (_ISO_BY_EXPONENT, _SHOPIFY_EXTRA_BY_EXPONENT):
        for exp, codes in source.items():
            for code in codes.split():
                # A code listed twice with two exponents would make amounts ambiguous.
                assert table.get(code, exp) == exp, code
                table[code] = exp
    # Read-only, so no caller can teach the process a currency for the rest of its life.
    return MappingProxyType(dict(sorted(table.items())))


CURRENCY_EXPONENTS: Mapping[str, int] = _build_table()

# 15 nines: about a trillion dollars in cents. Well past any store credit, yet small enough that
# the value stays exact as a double in JavaScript clients and fits a signed 64-bit column with
# room for sums of many entries.
MAX_MINOR_UNITS = 999_999_999_999_999
_MAX_INTEGER_DIGITS = 15

_CURRENCY_RE = re.compile(r"[A-Za-z]{3}")
# ASCII digits only ([0-9], not \d, which also matches other scripts' digits); no leading "+",
# no exponent, no grouping, no leading zeros, and digits on both sides of a dot.
_AMOUNT_RE = re.compile(r"(?P<sign>-)?(?P<whole>0|[1-9][0-9]*)(?:\.(?P<frac>[0-9]+))?")

# Rejected input is echoed back in error details and stored with the idempotency key, so it is
# cut short: a megabyte of garbage should not become a megabyte of error log.
_ECHO_LIMIT = 40


def _echo(value: object) -> str:
    """A short, JSON-safe rendering of untrusted input for error details."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _ECHO_LIMIT:
        return text[:_ECHO_LIMIT] + "..."
    return text


def normalize_currency(code: object) -> str:
    """Return the upper-case ISO 4217 code for ``code``, or raise ``UnknownCurrency``."""
    if not isinstance(code, str) or _CURRENCY_RE.fullmatch(code) is None:
        raise UnknownCurrency(
            "Currency must be a three-letter ISO 4217 code such as USD.", currency=_echo(code)
        )
    upper = code.upper()
    if upper not in CURRENCY_EXPONENTS:
        raise UnknownCurrency(f"Currency {upper} is not supported.", currency=upper)
    return upper


def exponent(currency: str) -> int:
    """The number of decimal places ``currency`` has (2 for USD, 0 for JPY, 3 for KWD)."""
    return CURRENCY_EXPONENTS[normalize_currency(currency)]


def _refuse(message: str, value: object, currency: str) -> InvalidAmount:
    return InvalidAmount(message, amount=_echo(value), currency=currency)


def _malformed_reason(value: str) -> str:
    # The regex only says yes or no; a client fixing its request deserves to know which rule.
    if value.startswith("+"):
        return "Amount must not carry a plus sign."
    if "," in value:
        return "Amount must use '.' as the decimal point and no thousands separators."
    if value.startswith((".", "-.")) or value.endswith("."):
        return "Amount needs digits on both sides of the decimal point, such as 0.50 or 5.00."
    if re.fullmatch(r"-?0[0-9]+(\.[0-9]+)?", value):
        return "Amount must not have leading zeros."
    return "Amount must be a plain decimal number such as 12.50 (digits, optional '-' and '.')."


def parse_amount(
    value: object,
    currency: str,
    *,
    allow_zero: bool = False,
    allow_negative: bool = False,
) -> int:
    """Parse a decimal string such as ``"12.50"`` into minor units of ``currency`` (1250 USD).

    Only ``str`` is accepted: a number in JSON may have been rounded through a float before
    we see it. Fewer decimals than the currency has are fine (``"12.5"`` USD is 1250); more are
    refused, never rounded. Zero and negative amounts are refused unless allowed, because most
    callers (issuing, redeeming) mean a positive movement and the sign is the entry's kind.
    """
    code = normalize_currency(currency)
    exp = CURRENCY_EXPONENTS[code]

    if isinstance(value, float):
        raise _refuse(
            "Amount must be a decimal string such as 12.50, not a number: floats lose cents.",
            value,
            code,
        )
    if not isinstance(value, str):
        # int, bool and Decimal too: JSON carries amounts as strings, so anything else means
        # the client (or our own code) built the request wrong, and we say so rather than cope.
        raise _refuse(
            f"Amount must be a decimal string such as 12.50, not {type(value).__name__}.",
            value,
            code,
        )
    if value.strip() == "":
        raise _refuse("Amount is empty.", value, code)
    if value != value.strip():
        raise _refuse("Amount must not have leading or trailing spaces.", value, code)

    match = _AMOUNT_RE.fullmatch(value)
    if match is None:
        raise _refuse(_malformed_reason(value), value, code)

    negative = match["sign"] is not None
    whole: str = match["whole"]
    frac: str = match["frac"] or ""

    if negative and not allow_negative:
        raise _refuse("Amount must not be negative.", value, code)
    if len(frac) > exp:
        places = "no decimal places" if exp == 0 else f"at most {exp} decimal places"
        raise _refuse(f"{code} amounts have {places}; got {len(frac)}.", value, code)
    # Checked before int() so an absurdly long digit string never reaches the conversion.
    if len(whole) > _MAX_INTEGER_DIGITS:
        raise _refuse("Amount is too large.", value, code)

    # int ** int is typed as Any (a negative power would be a float); exp is never negative.
    scale: int = 10**exp
    magnitude = int(whole) * scale + (int(frac.ljust(exp, "0")) if exp else 0)
    if magnitude > MAX_MINOR_UNITS:
        raise _refuse("Amount is too large.", value, code)
    if magnitude == 0 and not allow_zero:
        raise _refuse("Amount must be greater than zero.", value, code)
    return -magnitude if negative else magnitude


def format_amount(minor: int, currency: str) -> str:
    """Render minor units as the decimal string ``parse_amount`` reads (1250 USD -> "12.50").

    Unlike parsing, formatting does not cap the magnitude: a balance summed from many capped
    entries must still be displayable.
    """
    code = normalize_currency(currency)
    # bool is an int subclass, and True silently becoming "0.01" is the kind of bug this stops.
    if type(minor) is not int:
        raise InvalidAmount(
            f"Minor units must be an int, not {type(minor).__name__}.",
            amount=_echo(minor),
            currency=code,
        )
    exp = CURRENCY_EXPONENTS[code]
    sign = "-" if minor < 0 else ""
    if exp == 0:
        return f"{sign}{abs(minor)}"
    scale: int = 10**exp
    whole, frac = divmod(abs(minor), scale)
    return f"{sign}{whole}.{frac:0{exp}d}"


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount: ``minor`` units of ``currency`` (an upper-case ISO 4217 code)."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.minor) is not int:
            raise InvalidAmount(
                f"Minor units must be an int, not {type(self.minor).__name__}.",
                amount=_echo(self.minor),
                currency=_echo(self.currency),
            )
        # Normalized here so two equal amounts always compare and hash equal ("usd" == "USD").
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    @classmethod
    def parse(
        cls,
        value: object,
        currency: object,
        *,
        allow_zero: bool = False,
        allow_negative: bool = False,
    ) -> Money:
        """Build from API input: a decimal string and a currency code, both validated."""
        code = normalize_currency(currency)
        minor = parse_amount(value, code, allow_zero=allow_zero, allow_negative=allow_negative)
        return cls(minor, code)

    def __str__(self) -> str:
        return f"{format_amount(self.minor, self.currency)} {self.currency}"

    def to_json(self) -> dict[str, str]:
        """Shopify's ``MoneyV2`` shape: the amount as a decimal string, never a number."""
        return {"amount": format_amount(self.minor, self.currency), "currency": self.currency}
