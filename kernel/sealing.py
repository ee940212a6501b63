"""A small secret kept a short while where others could read it (a database row), encrypted.

AES-256-GCM with a key derived (HKDF-SHA256) from the app's secret key and a purpose, so a
sealed value of one purpose never opens as another's; `bound_to` ties it to the record it
belongs to (GCM's associated data): moved to another record, it no longer opens.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12


def _key(secret: str, purpose: str) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=f"encours sealing: {purpose}".encode()).derive(secret.encode())
    return AESGCM(derived)


def seal(secret: str, purpose: str, text: str, *, bound_to: str = "") -> bytes:
    """`text` encrypted and authenticated: a random nonce, then the ciphertext and its tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _key(secret, purpose).encrypt(nonce, text.encode(), bound_to.encode())


def unseal(secret: str, purpose: str, sealed: bytes, *, bound_to: str = "") -> str | None:
    """The text `seal` was given; None when it was sealed with another secret, purpose or
    binding, or was altered."""
    if len(sealed) <= NONCE_BYTES:
        return None
    try:
        plain = _key(secret, purpose).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], bound_to.encode())
    except InvalidTag:
        return None
    return plain.decode()
