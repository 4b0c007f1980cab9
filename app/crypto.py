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
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class UnreadableTokens(Exception):
    """No configured key opens this blob: it was sealed with a key that has been retired."""


def parse_keys(raw: str) -> list[bytes]:
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
