"""Webhook HMAC verification (the intake route comes with the Shopify edges issue)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from webhooks.verify import is_authentic, sign

BODY = b'{"id": 820982911946154508, "email": "jon@example.com"}'


def test_sign_is_base64_hmac_sha256_of_the_raw_body():
    expected = base64.b64encode(hmac.new(b"secret", BODY, hashlib.sha256).digest()).decode()
    assert sign(BODY, "secret") == expected


@pytest.mark.parametrize(
    ("header", "secrets", "ok"),
    [
        (sign(BODY, "current"), ["current", None], True),
        (sign(BODY, "previous"), ["current", "previous"], True),
        (sign(BODY, "previous"), ["current", None], False),
        (sign(BODY + b" ", "current"), ["current"], False),
        ("", ["current"], False),
        (None, ["current"], False),
        ("not base64 at all", ["current"], False),
        (sign(BODY, "current"), [], False),
    ],
)
def test_is_authentic(header, secrets, ok):
    assert is_authentic(BODY, header, secrets) is ok
