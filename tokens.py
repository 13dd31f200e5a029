"""Encryption of the shops' Shopify tokens at rest (Fernet, keys newest first for rotation)."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from config import ConfigError


class TokenBox:
    """Encrypts with the newest key; decrypts with any; ``rotate`` re-encrypts with the newest."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError("config: TOKEN_ENCRYPTION_KEYS holds no key")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError:
            raise ConfigError(
                "config: TOKEN_ENCRYPTION_KEYS must be Fernet keys (32 url-safe base64 bytes)"
            ) from None

    def encrypt(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        return self._fernet.decrypt(ciphertext.encode()).decode()

    def rotate(self, ciphertext: str) -> str:
        return self._fernet.rotate(ciphertext.encode()).decode()


__all__ = ["InvalidToken", "TokenBox"]
