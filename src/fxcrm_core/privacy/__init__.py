"""Privacy: field encryption of PII with per-subject keys, crypto-shredding erasure, masking.

Depends on ``kernel`` and ``events`` only.
"""

from fxcrm_core.privacy.encryption import FieldEncryption
from fxcrm_core.privacy.keys import KeyStore, MasterKeyring, MemoryKeyStore, WrappedKey

__all__ = ["FieldEncryption", "KeyStore", "MasterKeyring", "MemoryKeyStore", "WrappedKey"]
