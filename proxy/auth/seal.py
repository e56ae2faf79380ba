"""Sealed cookie values: encrypted and authenticated with AES-256-GCM (cryptography's AEAD).

A value is ``<key id>.<base64url(nonce | ciphertext+tag)>``. GCM's tag is the signature: a single
flipped bit, a value sealed for another purpose (the purpose is the associated data) or by a key
this proxy does not hold opens to nothing. Several keys make rotation possible without signing
everyone out: the first seals, all of them open; the key id says which one to try.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proxy.settings import SettingError

__all__ = ["Sealer", "read_keys"]

NONCE_BYTES = 12


def read_keys(key: str, path: str) -> tuple[bytes, ...]:
    """The cookie keys file: one key a line, 64 hex digits (32 random bytes); # comments."""
    try:
        lines = Path(path).expanduser().read_text().splitlines()
    except OSError as exc:
        raise SettingError(key, f"cannot read {path}: {exc.strerror}") from None
    keys = []
    for number, line in enumerate(lines, 1):
        value = line.split("#", 1)[0].strip()
        if not value:
            continue
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise SettingError(key, f"{path}:{number}: expected 64 hex digits (32 random bytes)")
        keys.append(raw)
    if not keys:
        raise SettingError(key, f"{path} holds no key (make one: openssl rand -hex 32)")
    return tuple(keys)


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"dumont cookie key" + key).hexdigest()[:8]


class Sealer:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a Sealer needs at least one key")
        self.sealing_id = _key_id(keys[0])
        self.sealing = AESGCM(keys[0])
        self.opening = {_key_id(k): AESGCM(k) for k in keys}

    def seal(self, purpose: bytes, payload: dict[str, Any]) -> str:
        nonce = os.urandom(NONCE_BYTES)
        plain = json.dumps(payload, separators=(",", ":")).encode()
        sealed = nonce + self.sealing.encrypt(nonce, plain, purpose)
        return f"{self.sealing_id}.{base64.urlsafe_b64encode(sealed).decode().rstrip('=')}"

    def open(self, purpose: bytes, value: str) -> dict[str, Any] | None:
        """The payload, or None for anything this proxy did not seal for ``purpose``."""
        key_id, _, body = value.partition(".")
        aead = self.opening.get(key_id)
        if aead is None or len(body) > 8192:
            return None
        try:
            sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], purpose)
            payload = json.loads(plain)
        except (binascii.Error, ValueError, InvalidTag):
            return None
        return payload if isinstance(payload, dict) else None
