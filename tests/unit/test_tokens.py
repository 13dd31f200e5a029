"""Shop tokens at rest: Fernet, newest key first, old keys still read, rotation re-encrypts."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from tokens import InvalidToken, TokenBox

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def test_a_token_round_trips_and_is_not_stored_in_clear():
    box = TokenBox([NEW])
    sealed = box.encrypt("shpat_secret")
    assert "shpat_secret" not in sealed
    assert box.decrypt(sealed) == "shpat_secret"


def test_after_a_key_rotation_old_tokens_still_open_and_rotate_to_the_new_key():
    sealed_under_old = TokenBox([OLD]).encrypt("shpat_secret")
    both = TokenBox([NEW, OLD])

    rotated = both.rotate(sealed_under_old)

    assert both.decrypt(sealed_under_old) == "shpat_secret"
    assert TokenBox([NEW]).decrypt(rotated) == "shpat_secret"
    with pytest.raises(InvalidToken):
        TokenBox([NEW]).decrypt(sealed_under_old)
