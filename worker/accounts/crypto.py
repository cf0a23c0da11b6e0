"""Secrets at rest: a Fernet key ring (``secret_keys``; the first key encrypts, every key decrypts).

A stored secret is a Fernet token (authenticated encryption, AES-CBC + HMAC-SHA256). Rotating the key:
put a new key first in ``CALLTRACK_SECRET_KEYS``, run ``ctl accounts rekey`` (every secret is
re-encrypted with the new key), then drop the old key.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from worker.errors import SecretKeyError


class KeyRing:
    """Encrypts and decrypts the registry's secrets; never logs or echoes one."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        self._fernet = MultiFernet([Fernet(k.get_secret_value().encode()) for k in keys]) if keys else None

    @property
    def ready(self) -> bool:
        return self._fernet is not None

    def _ring(self) -> MultiFernet:
        if self._fernet is None:
            raise SecretKeyError("CALLTRACK_SECRET_KEYS is not set: the account registry cannot store or read secrets")
        return self._fernet

    def encrypt(self, secret: SecretStr) -> str:
        return self._ring().encrypt(secret.get_secret_value().encode()).decode()

    def decrypt(self, stored: str) -> SecretStr:
        try:
            return SecretStr(self._ring().decrypt(stored.encode()).decode())
        except InvalidToken:
            raise SecretKeyError("a stored secret opens with no key of CALLTRACK_SECRET_KEYS") from None

    def rotate(self, stored: str) -> str:
        """The same secret encrypted with the first key."""
        try:
            return self._ring().rotate(stored.encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a stored secret opens with no key of CALLTRACK_SECRET_KEYS") from None
