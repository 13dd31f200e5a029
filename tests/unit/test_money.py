"""ledger.money: integer minor units in, decimal strings out, and nothing rounded on the way.

Pure functions only: no app, no database, no conftest fixtures.
"""

from __future__ import annotations

import dataclasses
import re
from decimal import Decimal
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InvalidAmount, LedgerError, UnknownCurrency
from ledger.money import (
    CURRENCY_EXPONENTS,
    MAX_MINOR_UNITS,
    Money,
    exponent,
    format_amount,
    normalize_currency,
    parse_amount,
)

# No example database: these tests must leave nothing behind in the working tree.
hypothesis_settings = settings(database=None, max_examples=300, deadline=None)

currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))
minor_units = st.integers(min_value=-MAX_MINOR_UNITS, max_value=MAX_MINOR_UNITS)

# BYR is a withdrawn code Shopify still accepts; it keeps its historical exponent of 0.
NOT_TWO_DECIMALS = (
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF "
    "BHD IQD JOD KWD LYD OMR TND CLF UYW BYR"
)
# A sample of Shopify's CurrencyCode enum, including its legacy and non-ISO entries.
SHOPIFY_SAMPLE = (
    "USD EUR GBP CAD AUD NZD CHF SEK NOK DKK PLN CZK HUF RON BGN TRY ILS AED SAR INR IDR MYR "
    "PHP SGD HKD TWD CNY THB VND KRW JPY MXN BRL ARS COP PEN ZAR NGN KES EGP MAD VES VED STN "
    "MRU SSP ANG HRK LTL LVL BYR SLL STD VEF JEP KID"
)


# --- the exponent table -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "expected"),
    [("JPY", 0), ("USD", 2), ("KWD", 3), ("CLF", 4), ("EUR", 2), ("GBP", 2), ("CAD", 2)],
)
def test_exponent_spot_checks(currency: str, expected: int) -> None:
    assert exponent(currency) == expected
    assert CURRENCY_EXPONENTS[currency] == expected


@pytest.mark.parametrize(
    ("expected", "codes"),
    [
        (0, "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"),
        (3, "BHD IQD JOD KWD LYD OMR TND"),
        (4, "CLF UYW"),
    ],
)
def test_non_two_decimal_currencies(expected: int, codes: str) -> None:
    for code in codes.split():
        assert CURRENCY_EXPONENTS[code] == expected, code


def test_active_iso_codes_outside_the_exceptions_have_two_decimals() -> None:
    exceptions = {code for code, exp in CURRENCY_EXPONENTS.items() if exp != 2}
    assert exceptions == set(NOT_TWO_DECIMALS.split())


def test_table_is_the_full_list() -> None:
    assert 170 <= len(CURRENCY_EXPONENTS) <= 200
    assert all(re.fullmatch(r"[A-Z]{3}", code) for code in CURRENCY_EXPONENTS)
    assert set(CURRENCY_EXPONENTS.values()) == {0, 2, 3, 4}


@pytest.mark.parametrize("code", SHOPIFY_SAMPLE.split())
def test_shopify_codes_are_known(code: str) -> None:
    assert code in CURRENCY_EXPONENTS


@pytest.mark.parametrize("code", ["XAU", "XAG", "XPT", "XPD", "XTS", "XXX", "XDR", "XBA", "XSU"])
def test_codes_without_an_exponent_are_excluded(code: str) -> None:
    assert code not in CURRENCY_EXPONENTS
    with pytest.raises(UnknownCurrency):
        normalize_currency(code)


def test_table_is_read_only() -> None:
    assert isinstance(CURRENCY_EXPONENTS, MappingProxyType)
    with pytest.raises(TypeError):
        CURRENCY_EXPONENTS["ABC"] = 2  # type: ignore[index]


# --- normalize_currency ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [("USD", "USD"), ("usd", "USD"), ("UsD", "USD"), ("jpy", "JPY"), ("kwd", "KWD")],
)
def test_normalize_currency_accepts_any_case(code: str, expected: str) -> None:
    assert normalize_currency(code) == expected


@pytest.mark.parametrize(
    "code",
    [
        None,
        840,
        b"USD",
        ["USD"],
        "",
        "US",
        "USDX",
        " USD",
        "USD ",
        "USD\n",
        "U$D",
        "U1D",
        "ÜSD",  # non-ASCII letter
        "ＵＳＤ",  # full-width letters
        "ABC",  # well-formed, but no such currency
        "xts",
    ],
)
def test_normalize_currency_refuses(code: object) -> None:
    with pytest.raises(UnknownCurrency) as caught:
        normalize_currency(code)
    assert caught.value.code == "invalid_currency"
    assert isinstance(caught.value.details["currency"], str)


def test_unknown_currency_details_are_short_and_json_safe() -> None:
    with pytest.raises(UnknownCurrency) as caught:
        normalize_currency("X" * 10_000)
    assert len(caught.value.details["currency"]) < 100
    with pytest.raises(UnknownCurrency) as caught:
        normalize_currency(object())
    assert caught.value.details["currency"].startswith("<object")


def test_exponent_normalizes_and_refuses_unknown() -> None:
    assert exponent("jpy") == 0
    with pytest.raises(UnknownCurrency):
        exponent("ABC")


# --- parse_amount: accepted -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        ("12.50", "USD", 1250),
        ("12.5", "USD", 1250),
        ("12", "USD", 1200),
        ("0.01", "USD", 1),
        ("0.1", "USD", 10),
        ("1.00", "usd", 100),
        ("1200", "JPY", 1200),
        ("1", "JPY", 1),
        ("0.001", "KWD", 1),
        ("1.25", "KWD", 1250),
        ("1.250", "KWD", 1250),
        ("0.0001", "CLF", 1),
        ("1.5", "CLF", 15000),
        ("9999999999999.99", "USD", MAX_MINOR_UNITS),
        ("999999999999999", "JPY", MAX_MINOR_UNITS),
        ("999999999999.999", "KWD", MAX_MINOR_UNITS),
    ],
)
def test_parse_amount_accepts(value: str, currency: str, expected: int) -> None:
    assert parse_amount(value, currency) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("-3.00", -300), ("-3", -300), ("-0.01", -1), ("-9999999999999.99", -MAX_MINOR_UNITS)],
)
def test_parse_amount_accepts_negative_when_allowed(value: str, expected: int) -> None:
    assert parse_amount(value, "USD", allow_negative=True) == expected


@pytest.mark.parametrize("value", ["0", "0.0", "0.00"])
def test_parse_amount_accepts_zero_when_allowed(value: str) -> None:
    assert parse_amount(value, "USD", allow_zero=True) == 0


def test_negative_zero_needs_both_permissions() -> None:
    assert parse_amount("-0", "USD", allow_zero=True, allow_negative=True) == 0
    assert parse_amount("-0.00", "USD", allow_zero=True, allow_negative=True) == 0
    with pytest.raises(InvalidAmount, match="negative"):
        parse_amount("-0", "USD", allow_zero=True)
    with pytest.raises(InvalidAmount, match="greater than zero"):
        parse_amount("-0", "USD", allow_negative=True)


# --- parse_amount: refused ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (12.5, "float"),
        (12.0, "float"),
        (float("nan"), "float"),
        (float("inf"), "float"),
        (12, "not int"),
        (0, "not int"),
        (True, "not bool"),
        (False, "not bool"),
        (Decimal("12.50"), "not Decimal"),
        (None, "not NoneType"),
        (b"12.50", "not bytes"),
        (["12.50"], "not list"),
    ],
)
def test_parse_amount_refuses_non_strings(value: object, message: str) -> None:
    with pytest.raises(InvalidAmount, match=message) as caught:
        parse_amount(value, "USD")
    assert caught.value.code == "invalid_amount"
    assert caught.value.details == {"amount": repr(value), "currency": "USD"}


@pytest.mark.parametrize(
    ("value", "currency", "message"),
    [
        ("", "USD", "empty"),
        ("   ", "USD", "empty"),
        ("\t\n", "USD", "empty"),
        (" 12.50", "USD", "spaces"),
        ("12.50 ", "USD", "spaces"),
        ("12.50\n", "USD", "spaces"),
        ("\u00a012.50", "USD", "spaces"),
        ("+1", "USD", "plus sign"),
        ("+1.00", "USD", "plus sign"),
        ("1,00", "USD", "decimal point"),
        ("1,000.00", "USD", "thousands"),
        (".5", "USD", "both sides"),
        ("-.5", "USD", "both sides"),
        ("5.", "USD", "both sides"),
        ("01", "USD", "leading zeros"),
        ("00.50", "USD", "leading zeros"),
        ("1e3", "USD", "plain decimal"),
        ("1E3", "USD", "plain decimal"),
        ("1.5e2", "USD", "plain decimal"),
        ("NaN", "USD", "plain decimal"),
        ("nan", "USD", "plain decimal"),
        ("Infinity", "USD", "plain decimal"),
        ("-Infinity", "USD", "plain decimal"),
        ("inf", "USD", "plain decimal"),
        ("1_000", "USD", "plain decimal"),
        ("0x10", "USD", "plain decimal"),
        ("1.2.3", "USD", "plain decimal"),
        ("--1", "USD", "plain decimal"),
        ("1-", "USD", "plain decimal"),
        ("12 50", "USD", "plain decimal"),
        ("$12.50", "USD", "plain decimal"),
        ("12.50USD", "USD", "plain decimal"),
        ("١٢", "USD", "plain decimal"),  # Arabic-Indic digits: int() would accept them
        ("１２", "USD", "plain decimal"),  # full-width digits: so would these
        ("1.001", "USD", "at most 2 decimal places; got 3"),
        ("0.000", "USD", "at most 2 decimal places; got 3"),
        ("1.5", "JPY", "no decimal places; got 1"),
        ("1.0", "JPY", "no decimal places; got 1"),
        ("0.0001", "KWD", "at most 3 decimal places; got 4"),
        ("1.00001", "CLF", "at most 4 decimal places; got 5"),
        ("-1", "USD", "negative"),
        ("-0.01", "USD", "negative"),
        ("0", "USD", "greater than zero"),
        ("0.00", "USD", "greater than zero"),
        ("0.0", "USD", "greater than zero"),
        ("0", "JPY", "greater than zero"),
        ("10000000000000.00", "USD", "too large"),
        ("1000000000000000", "JPY", "too large"),
        ("1000000000000", "KWD", "too large"),
        ("1" + "0" * 5000, "USD", "too large"),
    ],
)
def test_parse_amount_refuses(value: str, currency: str, message: str) -> None:
    with pytest.raises(InvalidAmount, match=re.escape(message)) as caught:
        parse_amount(value, currency)
    error = caught.value
    assert error.code == "invalid_amount"
    assert error.details["currency"] == currency
    assert isinstance(error.details["amount"], str)
    assert len(error.details["amount"]) <= 50
    assert error.message.endswith(".")


@pytest.mark.parametrize("value", ["-10000000000000.00", "-1" + "0" * 100])
def test_parse_amount_refuses_absurd_negative_magnitudes(value: str) -> None:
    with pytest.raises(InvalidAmount, match="too large"):
        parse_amount(value, "USD", allow_negative=True)


def test_parse_amount_checks_the_currency_first() -> None:
    with pytest.raises(UnknownCurrency):
        parse_amount(12.5, "ABC")
    with pytest.raises(UnknownCurrency):
        parse_amount("12.50", "")


def test_parse_amount_details_carry_the_normalized_currency() -> None:
    with pytest.raises(InvalidAmount) as caught:
        parse_amount("1.001", "usd")
    assert caught.value.details == {"amount": "1.001", "currency": "USD"}


def test_invalid_amount_survives_a_replay() -> None:
    with pytest.raises(InvalidAmount) as caught:
        parse_amount("1.001", "USD")
    replayed = LedgerError.from_dict(caught.value.to_dict())
    assert type(replayed) is InvalidAmount
    assert replayed.to_dict() == caught.value.to_dict()


# --- format_amount --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [
        (1250, "USD", "12.50"),
        (-300, "USD", "-3.00"),
        (1, "USD", "0.01"),
        (-1, "USD", "-0.01"),
        (0, "USD", "0.00"),
        (1200, "JPY", "1200"),
        (-1200, "JPY", "-1200"),
        (0, "JPY", "0"),
        (1250, "KWD", "1.250"),
        (1, "KWD", "0.001"),
        (1, "CLF", "0.0001"),
        (1250, "usd", "12.50"),
        (MAX_MINOR_UNITS, "USD", "9999999999999.99"),
        # Not capped: a balance summed from many entries must still render.
        (10**20, "USD", "1000000000000000000.00"),
    ],
)
def test_format_amount(minor: int, currency: str, expected: str) -> None:
    assert format_amount(minor, currency) == expected


@pytest.mark.parametrize("minor", [True, False, 12.5, 1250.0, Decimal(1250), "1250", None])
def test_format_amount_refuses_non_int(minor: object) -> None:
    with pytest.raises(InvalidAmount, match="must be an int") as caught:
        format_amount(minor, "USD")  # type: ignore[arg-type]
    assert caught.value.code == "invalid_amount"


def test_format_amount_refuses_unknown_currency() -> None:
    with pytest.raises(UnknownCurrency) as caught:
        format_amount(100, "ABC")
    assert caught.value.code == "invalid_currency"


# --- Money ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "currency", "minor", "text", "json_amount", "code"),
    [
        ("12.50", "USD", 1250, "12.50 USD", "12.50", "USD"),
        ("12.5", "usd", 1250, "12.50 USD", "12.50", "USD"),
        ("1200", "jpy", 1200, "1200 JPY", "1200", "JPY"),
        ("1.25", "KWD", 1250, "1.250 KWD", "1.250", "KWD"),
    ],
)
def test_money_parse_str_and_json(
    value: str, currency: str, minor: int, text: str, json_amount: str, code: str
) -> None:
    money = Money.parse(value, currency)
    assert money == Money(minor, code)
    assert str(money) == text
    assert money.to_json() == {"amount": json_amount, "currency": code}


def test_money_parse_passes_permissions_through() -> None:
    assert Money.parse("-3.00", "USD", allow_negative=True).to_json() == {
        "amount": "-3.00",
        "currency": "USD",
    }
    assert str(Money.parse("0", "USD", allow_zero=True)) == "0.00 USD"
    with pytest.raises(InvalidAmount):
        Money.parse("-3.00", "USD")
    with pytest.raises(InvalidAmount):
        Money.parse("0", "USD")


@pytest.mark.parametrize("currency", [None, 840, "US", "ABC"])
def test_money_parse_refuses_bad_currency(currency: object) -> None:
    with pytest.raises(UnknownCurrency):
        Money.parse("12.50", currency)


def test_money_parse_refuses_floats() -> None:
    with pytest.raises(InvalidAmount, match="float"):
        Money.parse(12.5, "USD")


def test_money_is_frozen_and_slotted() -> None:
    money = Money(1250, "USD")
    with pytest.raises(dataclasses.FrozenInstanceError):
        money.minor = 1  # type: ignore[misc]
    assert not hasattr(money, "__dict__")
    assert hash(money) == hash(Money(1250, "usd"))


@pytest.mark.parametrize("minor", [True, 12.5, "1250", Decimal(1250)])
def test_money_refuses_non_int_minor(minor: object) -> None:
    with pytest.raises(InvalidAmount):
        Money(minor, "USD")  # type: ignore[arg-type]


def test_money_refuses_unknown_currency() -> None:
    with pytest.raises(UnknownCurrency):
        Money(100, "ABC")


def test_error_codes() -> None:
    assert InvalidAmount.code == "invalid_amount"
    assert UnknownCurrency.code == "invalid_currency"


# --- properties -----------------------------------------------------------------------------


@hypothesis_settings
@given(minor=minor_units, currency=currencies)
def test_format_then_parse_round_trips(minor: int, currency: str) -> None:
    text = format_amount(minor, currency)
    assert parse_amount(text, currency, allow_zero=True, allow_negative=True) == minor
    assert parse_amount(text, currency.lower(), allow_zero=True, allow_negative=True) == minor


@hypothesis_settings
@given(minor=minor_units, currency=currencies)
def test_formatted_amount_has_exactly_the_currency_exponent(minor: int, currency: str) -> None:
    text = format_amount(minor, currency)
    exp = CURRENCY_EXPONENTS[currency]
    _, dot, frac = text.partition(".")
    assert len(frac) == exp
    assert dot == ("." if exp else "")


@hypothesis_settings
@given(minor=minor_units, currency=currencies)
def test_money_json_round_trips(minor: int, currency: str) -> None:
    money = Money(minor, currency)
    wire = money.to_json()
    assert Money.parse(wire["amount"], wire["currency"], allow_zero=True, allow_negative=True) == (
        money
    )


@hypothesis_settings
@given(
    whole=st.integers(min_value=0, max_value=10**12),
    frac=st.integers(min_value=0, max_value=99),
)
def test_parse_matches_exact_decimal_arithmetic(whole: int, frac: int) -> None:
    text = f"{whole}.{frac:02d}"
    expected = int(Decimal(text) * 100)
    assert parse_amount(text, "USD", allow_zero=True) == expected


@hypothesis_settings
@given(value=st.text(max_size=30), currency=currencies)
def test_parse_amount_only_ever_raises_invalid_amount(value: str, currency: str) -> None:
    try:
        minor = parse_amount(value, currency, allow_zero=True, allow_negative=True)
    except InvalidAmount:
        return  # refusing is fine; any other exception (ValueError, TypeError) fails the test
    assert Decimal(value).scaleb(CURRENCY_EXPONENTS[currency]) == minor


@hypothesis_settings
@given(
    value=st.from_regex(r"-?[0-9]{1,17}(\.[0-9]{0,6})?", fullmatch=True),
    currency=currencies,
)
def test_parse_amount_agrees_with_an_independent_oracle(value: str, currency: str) -> None:
    exp = CURRENCY_EXPONENTS[currency]
    whole, dot, frac = value.removeprefix("-").partition(".")
    should_accept = (
        not (dot and not frac)
        and not (len(whole) > 1 and whole.startswith("0"))
        and len(frac) <= exp
        and abs(Decimal(value).scaleb(exp)) <= MAX_MINOR_UNITS
    )
    try:
        minor = parse_amount(value, currency, allow_zero=True, allow_negative=True)
    except InvalidAmount:
        assert not should_accept
    else:
        assert should_accept
        assert Decimal(value).scaleb(exp) == minor


@hypothesis_settings
@given(value=st.floats(allow_nan=True, allow_infinity=True), currency=currencies)
def test_parse_amount_refuses_every_float(value: float, currency: str) -> None:
    with pytest.raises(InvalidAmount, match="float"):
        parse_amount(value, currency, allow_zero=True, allow_negative=True)
