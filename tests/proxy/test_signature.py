"""App Proxy signatures: Shopify's published vectors (shopify-platform.md §10 #6-#8), and
every way ``storefront.signature.verify`` refuses a query."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from storefront.signature import (
    FRESHNESS_SECONDS,
    ProxyRequestRejected,
    parse_query,
    sign,
    signing_message,
    verify,
)
from tests.proxy.helpers import proxy_signature

VECTOR_QUERY = (
    b"extra=1&extra=2&shop=shop-name.myshopify.com&logged_in_customer_id=1"
    b"&path_prefix=%2Fapps%2Fawesome_reviews&timestamp=1317327555"
)
VECTOR_6_MESSAGE = (
    "extra=1,2logged_in_customer_id=1path_prefix=/apps/awesome_reviews"
    "shop=shop-name.myshopify.comtimestamp=1317327555"
)
VECTOR_6 = "4c68c8624d737112c91818c11017d24d334b524cb5c2b8ba08daa056f7395ddb"
VECTOR_7 = "e072b6d7e6622d85912a5214b860d3100dc1e73d9bc29f43796ac8c9ff8093cb"
VECTOR_8 = "75b176b8aca9c125857524a897df4c3aac1fd06f5cc6d7711188bf0aab6ce6cb"
T = 1317327555
SECRET = "hush"


def test_vector_6_logged_in():
    params = parse_query(VECTOR_QUERY)
    assert signing_message(params) == VECTOR_6_MESSAGE
    assert sign(params, SECRET) == VECTOR_6


def test_vector_7_anonymous():
    params = parse_query(
        VECTOR_QUERY.replace(b"logged_in_customer_id=1", b"logged_in_customer_id=")
    )
    assert signing_message(params) == VECTOR_6_MESSAGE.replace("customer_id=1", "customer_id=")
    assert sign(params, SECRET) == VECTOR_7


def test_vector_8_repeated_app_parameter():
    params = parse_query(b"extra=first&shop=shop.myshopify.com&extra=second&timestamp=1700000000")
    message = "extra=first,secondshop=shop.myshopify.comtimestamp=1700000000"
    assert signing_message(params) == message
    assert sign(params, "my super secret key") == VECTOR_8


def test_the_test_signer_agrees_with_the_vectors():
    pairs = [
        ("extra", "1"),
        ("extra", "2"),
        ("shop", "shop-name.myshopify.com"),
        ("logged_in_customer_id", "1"),
        ("path_prefix", "/apps/awesome_reviews"),
        ("timestamp", str(T)),
    ]
    assert proxy_signature(pairs, SECRET) == VECTOR_6


def signed(query: bytes, secret: str = SECRET) -> bytes:
    return query + b"&signature=" + sign(parse_query(query), secret).encode()


def test_a_signed_vector_verifies_within_the_window():
    for skew in (-FRESHNESS_SECONDS, 0, FRESHNESS_SECONDS):
        verified = verify(signed(VECTOR_QUERY), [SECRET, None], now=T + skew)
        assert verified.first("shop") == "shop-name.myshopify.com"
        assert verified.params["extra"] == ["1", "2"]
        assert verified.timestamp == T


def test_the_published_signature_itself_verifies():
    verified = verify(VECTOR_QUERY + b"&signature=" + VECTOR_6.encode(), ["hush"], now=T)
    assert verified.first("logged_in_customer_id") == "1"


def rejected(query: bytes, *, secrets: list[str | None] | None = None, now: float = T) -> tuple:
    with pytest.raises(ProxyRequestRejected) as caught:
        verify(query, [SECRET] if secrets is None else secrets, now=now)
    return caught.value.status, caught.value.code


@pytest.mark.parametrize("skew", [-FRESHNESS_SECONDS - 1, FRESHNESS_SECONDS + 1, -86400])
def test_stale_either_way_is_401(skew):
    assert rejected(signed(VECTOR_QUERY), now=T - skew) == (401, "stale_request")


def test_forged_parameter_is_401():
    query = signed(VECTOR_QUERY).replace(b"logged_in_customer_id=1", b"logged_in_customer_id=2")
    assert rejected(query) == (401, "invalid_signature")


def test_an_added_parameter_breaks_the_signature():
    assert rejected(signed(VECTOR_QUERY) + b"&extra=3") == (401, "invalid_signature")


def test_missing_signature_is_401():
    assert rejected(VECTOR_QUERY) == (401, "invalid_signature")


@pytest.mark.parametrize("value", [b"", b"zz", VECTOR_6.upper().encode(), VECTOR_6[:-1].encode()])
def test_malformed_signature_is_401(value):
    assert rejected(VECTOR_QUERY + b"&signature=" + value) == (401, "invalid_signature")


def test_wrong_secret_is_401():
    assert rejected(signed(VECTOR_QUERY, "not-the-secret")) == (401, "invalid_signature")


def test_previous_secret_is_accepted_during_a_rotation():
    query = signed(VECTOR_QUERY, "old-secret")
    assert verify(query, ["new-secret", "old-secret"], now=T).timestamp == T
    assert rejected(query, secrets=["new-secret", None]) == (401, "invalid_signature")


def test_no_secret_configured_verifies_nothing():
    assert rejected(signed(VECTOR_QUERY), secrets=[None, ""]) == (401, "invalid_signature")


@pytest.mark.parametrize(
    "name", ["shop", "timestamp", "signature", "logged_in_customer_id", "path_prefix", "hmac"]
)
def test_repeated_single_valued_parameter_is_400_even_when_signed(name):
    pairs = [
        ("shop", "shop-name.myshopify.com"),
        ("logged_in_customer_id", "1"),
        ("path_prefix", "/apps/credit"),
        ("timestamp", str(T)),
        ("hmac", "x"),
    ]
    if name != "signature":
        pairs.append((name, dict(pairs)[name]))  # shop=a&shop=a: validly signed as "shop=a,a"
    signature = proxy_signature(pairs, SECRET)
    query = urlencode(pairs).encode() + b"&signature=" + signature.encode()
    if name == "signature":
        query += b"&signature=" + signature.encode()
    assert rejected(query) == (400, "repeated_parameter")


@pytest.mark.parametrize("timestamp", ["", "1.5", "abc", "-5", "1e9", " 1317327555", "0x10"])
def test_non_integer_timestamp_is_401(timestamp):
    query = urlencode([("shop", "s.myshopify.com"), ("timestamp", timestamp)]).encode()
    assert rejected(signed(query)) == (401, "invalid_timestamp")


def test_missing_timestamp_is_401():
    assert rejected(signed(b"shop=s.myshopify.com")) == (401, "invalid_timestamp")


def test_values_are_signed_decoded():
    # "+" is a space and %2F a slash in the signed string, exactly as Shopify signs them.
    params = parse_query(b"a=x+y&path_prefix=%2Fapps%2Fcredit&b=")
    assert params == {"a": ["x y"], "path_prefix": ["/apps/credit"], "b": [""]}
    assert signing_message(params) == "a=x yb=path_prefix=/apps/credit"


def test_strings_sort_by_code_point_not_by_key():
    # "a-b=..." sorts before "a=..." ('-' < '='), where sorting by key would put "a" first.
    assert signing_message({"a": ["1"], "a-b": ["2"]}) == "a-b=2a=1"


@pytest.mark.parametrize("raw", [b"shop=%ff%fe", b"\xff=1", b"&".join([b"k=v"] * 65)])
def test_malformed_query_is_400(raw):
    assert rejected(raw)[0] == 400


@pytest.mark.parametrize(
    "raw",
    [
        b"a=1&b=&c&=d&a=2",
        b"x=%2Fapps%2Fcredit&y=a+b%2Bc&%7Bk%7D=%E2%82%AC",
        b"&&a=1&&",
        b"k=v=w&e%3Dq=1",
        b"",
    ],
)
def test_parsing_matches_the_standard_library(raw):
    from urllib.parse import parse_qsl

    expected: dict[str, list[str]] = {}
    for key, value in parse_qsl(raw.decode(), keep_blank_values=True):
        expected.setdefault(key, []).append(value)
    assert parse_query(raw) == expected
