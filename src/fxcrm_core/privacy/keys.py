"""Envelope encryption keys: one data key per data subject, wrapped by a master key.

Data keys never leave this module unwrapped except inside an AES-GCM object in memory. The
``KeyStore`` port keeps wrapped keys; destroying a subject's key (crypto-shredding) leaves a
tombstone, so the subject can never silently get a new key.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fxcrm_core.kernel.errors import CodecError, NotFoundError, ValidationError

__all__ = [
    "SECRET_PREFIX",
    "KeyStore",
    "MasterKeyring",
    "MemoryKeyStore",
    "WrappedKey",
    "is_reserved_subject",
    "secret_subject",
]

_NONCE = 12
# Subject ids under this prefix hold the SDK's own named secrets (the audit chain's key): wrapped
# like data keys, but never a subject's data key and never erased.
SECRET_PREFIX = "fxcrm.secret/"  # noqa: S105 (a prefix of ids, not a secret)
_SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def secret_subject(name: str) -> str:
    """The key store's subject id of the named secret ``name`` (lowercase letters, digits, -)."""
    if not isinstance(name, str) or not _SECRET_NAME.fullmatch(name):
        raise ValidationError("a secret's name is 1-64 lowercase letters, digits or '-'")
    return SECRET_PREFIX + name


def is_reserved_subject(subject_id: str) -> bool:
    """True for the subject ids of named secrets (no data subject may use them)."""
    return subject_id.startswith(SECRET_PREFIX)


@attrs.frozen(slots=True)
class WrappedKey:
    """A subject's data key as stored: wrapped by master key ``master_key_id``.

    A destroyed key keeps its row as a tombstone: ``wrapped`` is empty, ``destroyed_at`` set.
    """

    subject_id: str
    key_id: str
    master_key_id: str
    wrapped: bytes = attrs.field(repr=False)
    created_at: datetime
    destroyed_at: datetime | None = None

    @property
    def destroyed(self) -> bool:
        return self.destroyed_at is not None


@runtime_checkable
class KeyStore(Protocol):
    """Keeps wrapped data keys. Adapters: memory, SQLite, or the host's own (a KMS, Vault)."""

    def get(self, subject_id: str) -> WrappedKey | None:
        """The subject's key (possibly a tombstone), or None if it never had one."""
        ...

    def put_new(self, key: WrappedKey) -> WrappedKey:
        """Store a new key unless the subject has one; returns whichever key is stored."""
        ...

    def destroy(self, subject_id: str, at: datetime) -> bool:
        """Irreversibly drop the key bytes; True if this call destroyed it."""
        ...

    def rewrap(self, keys: Iterable[WrappedKey]) -> None:
        """Replace the wrapping of existing live keys (master-key rotation), all or nothing."""
        ...

    def all_keys(self) -> list[WrappedKey]: ...


class MasterKeyring:
    """Master keys by id, and which one wraps new data keys. The host loads them from its KMS.

    >>> ring = MasterKeyring.generate("m1")
    >>> ring.current_id
    'm1'
    """

    def __init__(self, keys: Mapping[str, bytes], current_id: str) -> None:
        if current_id not in keys:
            raise ValidationError("the current master key id must be one of the keys")
        for key in keys.values():
            if len(key) != 32:
                raise ValidationError("master keys must be 32 bytes (AES-256)")
        self._keys = dict(keys)
        self.current_id = current_id

    @classmethod
    def generate(cls, key_id: str = "master-1") -> MasterKeyring:
        return cls({key_id: AESGCM.generate_key(bit_length=256)}, key_id)

    def add(self, key_id: str, key: bytes, *, make_current: bool = True) -> None:
        if len(key) != 32:
            raise ValidationError("master keys must be 32 bytes (AES-256)")
        self._keys[key_id] = key
        if make_current:
            self.current_id = key_id

    def wrap(self, subject_id: str, key_id: str, data_key: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(_NONCE)
        aes = AESGCM(self._keys[self.current_id])
        return self.current_id, nonce + aes.encrypt(nonce, data_key, _wrap_ad(subject_id, key_id))

    def unwrap(self, key: WrappedKey) -> bytes:
        master = self._keys.get(key.master_key_id)
        if master is None:
            raise NotFoundError("the master key that wrapped this data key is not loaded")
        try:
            return AESGCM(master).decrypt(
                key.wrapped[:_NONCE], key.wrapped[_NONCE:], _wrap_ad(key.subject_id, key.key_id)
            )
        except InvalidTag:
            raise CodecError("a wrapped data key failed authentication") from None

    def __repr__(self) -> str:
        return f"MasterKeyring(ids={sorted(self._keys)}, current={self.current_id!r})"


def _wrap_ad(subject_id: str, key_id: str) -> bytes:
    # Binds a wrapped key to its subject: a wrapped key copied to another subject won't open.
    return f"fxcrm-wrap/v1\0{subject_id}\0{key_id}".encode()


def new_key_id() -> str:
    return secrets.token_hex(8)


class MemoryKeyStore:
    """A KeyStore in a dict (tests, demos)."""

    def __init__(self) -> None:
        self._keys: dict[str, WrappedKey] = {}

    def get(self, subject_id: str) -> WrappedKey | None:
        return self._keys.get(subject_id)

    def put_new(self, key: WrappedKey) -> WrappedKey:
        return self._keys.setdefault(key.subject_id, key)

    def destroy(self, subject_id: str, at: datetime) -> bool:
        key = self._keys.get(subject_id)
        if key is not None and key.destroyed:
            return False
        key_id = key.key_id if key else ""
        master = key.master_key_id if key else ""
        created = key.created_at if key else at
        self._keys[subject_id] = WrappedKey(subject_id, key_id, master, b"", created, at)
        return True

    def rewrap(self, keys: Iterable[WrappedKey]) -> None:
        batch = list(keys)
        for k in batch:
            current = self._keys.get(k.subject_id)
            if current is None or current.destroyed or current.key_id != k.key_id:
                raise ValidationError("rewrap applies to existing live keys only")
        for k in batch:
            self._keys[k.subject_id] = k

    def all_keys(self) -> list[WrappedKey]:
        return list(self._keys.values())
