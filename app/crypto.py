"""Tokens at rest: AES-256-GCM with a list of keys, so keys can be rotated without signing anyone out.

New writes use the first key; reads try each key in turn (a wrong key fails its tag check at once).
The record's own Redis key is bound in as associated data, so a sealed blob copied into another
session's record does not open there.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12


class UnreadableTokens(Exception):
    """No configured key opens this blob: it was sealed with a key that has been retired."""


def parse_encryption_keys(raw: str) -> list[bytes]:
    """Comma-separated base64url keys of 32 bytes each; raises ValueError with a reason."""
    keys = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            key = base64.urlsafe_b64decode(item + "=" * (-len(item) % 4))
        except (binascii.Error, ValueError):
            raise ValueError("each key must be base64url") from None
        if len(key) != 32:
            raise ValueError(f"each key must decode to 32 bytes, one decodes to {len(key)}")
        keys.append(key)
    if not keys:
        raise ValueError("no key given")
    return keys


def generate_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


class TokenCipher:
    def __init__(self, keys: list[bytes]) -> None:
        self._ciphers = [AESGCM(key) for key in keys]

    def seal(self, plaintext: bytes, bound_to: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._ciphers[0].encrypt(nonce, plaintext, bound_to)

    def open(self, blob: bytes, bound_to: bytes) -> bytes:
        nonce, ciphertext = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        for cipher in self._ciphers:
            try:
                return cipher.decrypt(nonce, ciphertext, bound_to)
            except InvalidTag:
                continue
        raise UnreadableTokens()


class CookieSealer:
    """Small values sealed into cookies (AES-256-GCM), so state a browser carries between two
    requests needs no server-side storage and cannot be read or altered by anyone but us.

    The key is derived from BFF_SECRET_KEY (HKDF, one label per use), so every instance sharing
    that secret opens what another sealed. `bound_to` (the cookie's name) is authenticated
    too: a value moved to another cookie does not open."""

    def __init__(self, secret: str, label: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(secret.encode())
        self._cipher = AESGCM(key)

    def seal(self, plaintext: bytes, bound_to: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        blob = nonce + self._cipher.encrypt(nonce, plaintext, bound_to.encode())
        return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()

    def open(self, value: str, bound_to: str) -> bytes | None:
        """The plaintext, or None for anything we did not seal under this name."""
        try:
            blob = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            return self._cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], bound_to.encode())
        except (InvalidTag, ValueError, binascii.Error):
            return None
