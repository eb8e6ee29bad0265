"""Field-level encryption of PII in stored events: AES-256-GCM under each subject's own key.

Each ciphertext carries its data key id and is bound (associated data) to its subject and its
context (the event type and field names it holds), so a ciphertext copied into another
subject's event, or another event or field, fails to decrypt. Once a subject's key is
destroyed, its fields read as ``ERASED``: nothing else in the log changes.
"""

from __future__ import annotations

import binascii
import logging
import os
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import CodecError, SubjectErasedError, ValidationError
from fxcrm_core.privacy.keys import (
    KeyStore,
    MasterKeyring,
    WrappedKey,
    is_reserved_subject,
    new_key_id,
    secret_subject,
)

__all__ = ["FieldEncryption"]

log = logging.getLogger("fxcrm_core.privacy")
_NONCE = 12
_FORMAT = "v1"
_MISSING = object()
_LABEL = re.compile(r"[A-Za-z0-9_-]{0,64}")


class FieldEncryption:
    """The codec's FieldCipher: one AES-GCM data key per subject, wrapped by the master keyring.

    Unwrapped keys are cached per process (``cache_size`` subjects). :meth:`erase` destroys a key
    and empties the cache here; other processes should call :meth:`forget` (or restart) after an
    erasure.
    """

    def __init__(
        self,
        keystore: KeyStore,
        keyring: MasterKeyring,
        *,
        clock: Clock | None = None,
        cache_size: int = 10_000,
    ) -> None:
        self.keystore = keystore
        self.keyring = keyring
        self._clock = clock or SystemClock()
        self._cache: OrderedDict[str, object] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # -- FieldCipher ---------------------------------------------------------------------
    def encrypt_for(self, subject_id: str, context: str, plaintext: bytes) -> str:
        entry = self._key(subject_id, create=True)
        if entry is None:
            raise SubjectErasedError("the data subject was erased: its personal data is not stored")
        key_id, aes = entry
        nonce = os.urandom(_NONCE)
        sealed = aes.encrypt(nonce, plaintext, _ad(subject_id, context, key_id))
        return f"{_FORMAT}:{key_id}:{binascii.b2a_base64(nonce + sealed, newline=False).decode()}"

    def decrypt_for(self, subject_id: str, context: str, token: str) -> bytes | None:
        try:
            fmt, key_id, body = token.split(":", 2)
            raw = binascii.a2b_base64(body, strict_mode=True)
        except (ValueError, binascii.Error):
            raise CodecError("malformed encrypted field") from None
        if fmt != _FORMAT:
            raise CodecError("unknown encrypted field format")
        entry = self._key(subject_id, create=False)
        if entry is None:
            return None  # erased (or never had a key): reads as the ERASED marker
        current_id, aes = entry
        if key_id != current_id:
            raise CodecError("encrypted field was made under another subject's key")
        try:
            return aes.decrypt(raw[:_NONCE], raw[_NONCE:], _ad(subject_id, context, key_id))
        except InvalidTag:
            raise CodecError(
                "encrypted field failed authentication (tampered, or moved to another subject, "
                "event or field)"
            ) from None

    # -- lifecycle -----------------------------------------------------------------------
    def erase(self, subject_id: str) -> bool:
        """Destroy the subject's data key (crypto-shredding); True if this call destroyed it.

        The SDK's named secrets are no data subject's and are refused (ValidationError)."""
        if is_reserved_subject(subject_id):
            raise ValidationError("this id names one of the SDK's secrets, not a data subject")
        destroyed = self.keystore.destroy(subject_id, self._clock.now())
        self.forget(subject_id)
        log.info("data key destroyed", extra={"subject_id": subject_id})
        return destroyed

    def shred(self, subject_ids: Iterable[str]) -> int:
        """Destroy the data keys of subjects that go with an erased one (its identity claims);
        the number this call destroyed. Logged as a count only: a line per id would link
        them, in the logs, to the subject erased beside them."""
        ids = list(subject_ids)
        if any(is_reserved_subject(s) for s in ids):
            raise ValidationError("this id names one of the SDK's secrets, not a data subject")
        now = self._clock.now()
        destroyed = 0
        for subject_id in ids:
            destroyed += self.keystore.destroy(subject_id, now)
        self.forget()
        log.info("data keys destroyed", extra={"count": destroyed})
        return destroyed

    def is_erased(self, subject_id: str) -> bool:
        key = self.keystore.get(subject_id)
        return key is not None and key.destroyed

    def forget(self, subject_id: str | None = None) -> None:
        """Drop cached keys, e.g. after another process erased ``subject_id``: all of them,
        even when one subject is named. The keys shredded with it (its identity claims, each
        sealed under a key of its own) cannot be told apart here, and an erasure names only
        its subject; erasures are rare, and the cache refills on demand."""
        with self._lock:
            self._cache.clear()

    def rotate_master(self) -> int:
        """Re-wrap every live data key under the keyring's current master key.

        Events are not touched: they are encrypted under data keys, which do not change.
        Returns the number of keys re-wrapped.
        """
        rewrapped: list[WrappedKey] = []
        for key in self.keystore.all_keys():
            if key.destroyed or key.master_key_id == self.keyring.current_id:
                continue
            plain = self.keyring.unwrap(key)
            master_id, wrapped = self.keyring.wrap(key.subject_id, key.key_id, plain)
            rewrapped.append(
                WrappedKey(key.subject_id, key.key_id, master_id, wrapped, key.created_at)
            )
        self.keystore.rewrap(rewrapped)
        log.info("master key rotated", extra={"rewrapped": len(rewrapped)})
        return len(rewrapped)

    # -- named secrets -------------------------------------------------------------------
    def named_secret(self, name: str, *, label: str = "") -> tuple[bytes, str]:
        """A 32-byte secret of the SDK's own (the audit chain's key, say), made on first use and
        kept wrapped under the master keyring like a data key, under a reserved subject id that
        erasure refuses. ``label`` (up to 64 of ``A-Za-z0-9_-``) is stored with a new secret,
        authenticated by its wrapping; returns the stored secret and its label."""
        subject = secret_subject(name)
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            raise ValidationError("a secret's label is up to 64 of A-Z, a-z, 0-9, '_' and '-'")
        stored = self.keystore.get(subject)
        if stored is None:
            key_id = f"{new_key_id()}.{label}"
            master_id, wrapped = self.keyring.wrap(subject, key_id, secrets.token_bytes(32))
            fresh = WrappedKey(subject, key_id, master_id, wrapped, self._clock.now())
            stored = self.keystore.put_new(fresh)  # a racing process may have made it first
        if stored.destroyed:
            raise CodecError("the SDK's secret was destroyed in the key store; it cannot be remade")
        value = self.keyring.unwrap(stored)
        return value, stored.key_id.partition(".")[2]

    # -- keys ----------------------------------------------------------------------------
    def _key(self, subject_id: str, *, create: bool) -> tuple[str, AESGCM] | None:
        # Hot path without the lock: a dict read is atomic, and entries are only ever
        # replaced whole. Eviction is first-in-first-out; an evicted key is simply reloaded.
        entry = self._cache.get(subject_id, _MISSING)
        if entry is not _MISSING:
            return entry  # type: ignore[return-value]
        if is_reserved_subject(subject_id):
            raise ValidationError("this id names one of the SDK's secrets, not a data subject")
        stored = self.keystore.get(subject_id)
        if stored is None:
            if not create:
                # Erasure leaves a tombstone, so "no record" is not "erased": most likely the
                # wrong key store is configured. Reading it as erased would hide that.
                raise CodecError("no data key for this subject: is this the right key store?")
            stored = self._create(subject_id)
        entry = None
        if stored is not None and not stored.destroyed:
            entry = (stored.key_id, AESGCM(self.keyring.unwrap(stored)))
        if stored is not None:  # never cache "no key yet": one may be created later
            with self._lock:
                self._cache[subject_id] = entry
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return entry

    def _create(self, subject_id: str) -> WrappedKey:
        key_id = new_key_id()
        master_id, wrapped = self.keyring.wrap(
            subject_id, key_id, AESGCM.generate_key(bit_length=256)
        )
        key = WrappedKey(subject_id, key_id, master_id, wrapped, self._clock.now())
        log.debug("data key created", extra={"subject_id": subject_id})
        # A racing writer may have created one first: put_new returns whichever is stored.
        return self.keystore.put_new(key)


def _ad(subject_id: str, context: str, key_id: str) -> bytes:
    return f"fxcrm-pii/{_FORMAT}\0{subject_id}\0{context}\0{key_id}".encode()
