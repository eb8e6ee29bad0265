"""Field encryption with real AES-GCM ciphertexts: binding, tampering, nonces, rotation, erasure."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import attrs
import pytest

from fxcrm_core.events import (
    ERASED,
    DomainEvent,
    EventCodec,
    EventMetadata,
    Repository,
    UnitOfWork,
    pii,
)
from fxcrm_core.kernel import CodecError, Currency, NotFoundError, SubjectErasedError
from fxcrm_core.privacy import FieldEncryption, KeyStore, MasterKeyring, MemoryKeyStore
from fxcrm_core.stores import MemoryEventStore
from fxcrm_core.stores.sqlite_keys import SqliteKeyStore
from fxcrm_core.testing import KeyStoreContract
from tests.sample_domain import Till, TillOpened, registry

META = EventMetadata("staff:1")


class TestMemoryKeyStore(KeyStoreContract):
    def make_keystore(self, directory: Path) -> KeyStore:
        return MemoryKeyStore()


class TestSqliteKeyStore(KeyStoreContract):
    def make_keystore(self, directory: Path) -> KeyStore:
        return SqliteKeyStore(directory / "keys.sqlite")


def flip(token: str, at: int = -3) -> str:
    fmt, key_id, body = token.split(":", 2)
    raw = bytearray(base64.b64decode(body))
    raw[at] ^= 0x01
    return f"{fmt}:{key_id}:{base64.b64encode(bytes(raw)).decode()}"


@pytest.fixture
def enc() -> FieldEncryption:
    return FieldEncryption(MemoryKeyStore(), MasterKeyring.generate())


def test_round_trip_and_no_plaintext_in_the_token(enc: FieldEncryption) -> None:
    token = enc.encrypt_for("c-1", "email", b"ana.lima@example.com")
    assert "ana" not in token
    assert token.split(":")[1] == enc.keystore.get("c-1").key_id  # type: ignore[union-attr]
    assert enc.decrypt_for("c-1", "email", token) == b"ana.lima@example.com"


def test_a_ciphertext_moved_to_another_subject_or_field_fails(enc: FieldEncryption) -> None:
    token = enc.encrypt_for("c-1", "email", b"ana@example.com")
    enc.encrypt_for("c-2", "email", b"bo@example.com")
    with pytest.raises(CodecError, match="another subject"):
        enc.decrypt_for("c-2", "email", token)
    with pytest.raises(CodecError, match="authentication"):
        enc.decrypt_for("c-1", "phone", token)


def test_a_ciphertext_forged_with_the_other_subjects_key_id_still_fails(
    enc: FieldEncryption,
) -> None:
    token = enc.encrypt_for("c-1", "email", b"ana@example.com")
    other = enc.encrypt_for("c-2", "email", b"bo@example.com")
    forged = f"v1:{other.split(':')[1]}:{token.split(':')[2]}"
    with pytest.raises(CodecError, match="authentication"):
        enc.decrypt_for("c-2", "email", forged)


@pytest.mark.parametrize("at", [0, 5, 11, 12, 20, -1])
def test_tampering_anywhere_is_detected(enc: FieldEncryption, at: int) -> None:
    token = enc.encrypt_for("c-1", "name", b"Ana Lima")
    with pytest.raises(CodecError):
        enc.decrypt_for("c-1", "name", flip(token, at))


@pytest.mark.parametrize("bad", ["", "v1:abc", "v2:k:AAAA", "v1:k:not base64!"])
def test_malformed_tokens_are_codec_errors(enc: FieldEncryption, bad: str) -> None:
    enc.encrypt_for("c-1", "name", b"x")
    with pytest.raises(CodecError):
        enc.decrypt_for("c-1", "name", bad)


def test_100k_encryptions_under_one_key_repeat_no_nonce(enc: FieldEncryption) -> None:
    nonces = set()
    for i in range(100_000):
        raw = base64.b64decode(enc.encrypt_for("c-1", "note", str(i).encode()).split(":")[2])
        nonces.add(raw[:12])
    assert len(nonces) == 100_000


def test_rotation_keeps_every_event_readable_without_the_old_master_key() -> None:
    keys = MemoryKeyStore()
    ring = MasterKeyring.generate("m1")
    enc = FieldEncryption(keys, ring)
    store = MemoryEventStore()
    repo = Repository(store, EventCodec(registry(), field_cipher=enc))
    for n in range(5):
        with UnitOfWork(repo, META) as uow:
            till = Till.blank(f"t{n}")
            uow.record(till, *till.open("USD", f"Holder {n}"))
            uow.commit()
    before = [e.data for e in store.read_all()]
    ring.add("m2", bytes(range(32)))
    assert enc.rotate_master() == 5
    assert {k.master_key_id for k in keys.all_keys()} == {"m2"}
    assert [e.data for e in store.read_all()] == before  # events untouched
    new_ring = MasterKeyring({"m2": bytes(range(32))}, "m2")  # the old master is gone
    fresh = Repository(store, EventCodec(registry(), field_cipher=FieldEncryption(keys, new_ring)))
    assert [fresh.get(Till, f"t{n}").holder for n in range(5)] == [f"Holder {n}" for n in range(5)]
    with pytest.raises(NotFoundError):  # and a keyring without m2 cannot read anything
        FieldEncryption(keys, MasterKeyring.generate("m3")).decrypt_for("t0", "holder", "v1:x:AAAA")


def test_a_wrapped_key_copied_to_another_subject_does_not_open() -> None:
    keys = MemoryKeyStore()
    ring = MasterKeyring.generate()
    enc = FieldEncryption(keys, ring)
    enc.encrypt_for("c-1", "name", b"Ana")
    stolen = keys.get("c-1")
    assert stolen is not None
    keys.put_new(
        type(stolen)("c-2", stolen.key_id, stolen.master_key_id, stolen.wrapped, stolen.created_at)
    )
    with pytest.raises(CodecError, match="wrapped data key"):
        FieldEncryption(keys, ring).encrypt_for("c-2", "name", b"Bo")


def test_erasure_turns_fields_into_the_marker_and_refuses_new_pii(enc: FieldEncryption) -> None:
    store = MemoryEventStore()
    repo = Repository(store, EventCodec(registry(), field_cipher=enc))
    with UnitOfWork(repo, META) as uow:
        till = Till.blank("c-1")
        uow.record(till, *till.open("USD", "Ana Lima"))
        uow.commit()
    assert enc.erase("c-1") is True
    assert enc.erase("c-1") is False
    assert enc.is_erased("c-1")
    assert repo.get(Till, "c-1").holder is ERASED
    with pytest.raises(SubjectErasedError):
        enc.encrypt_for("c-1", "holder", b"Ana Again")


def test_a_missing_key_is_an_error_not_an_erasure(tmp_path: Path) -> None:
    ring = MasterKeyring.generate()
    token = FieldEncryption(SqliteKeyStore(tmp_path / "k.sqlite"), ring).encrypt_for(
        "c-1", "name", b"Ana"
    )
    wrong_store = FieldEncryption(SqliteKeyStore(tmp_path / "other.sqlite"), ring)
    with pytest.raises(CodecError, match="right key store"):
        wrong_store.decrypt_for("c-1", "name", token)


def test_another_process_sees_an_erasure_after_forget(tmp_path: Path) -> None:
    ring = MasterKeyring.generate()
    a = FieldEncryption(SqliteKeyStore(tmp_path / "k.sqlite"), ring)
    b = FieldEncryption(SqliteKeyStore(tmp_path / "k.sqlite"), ring)
    token = a.encrypt_for("c-1", "name", b"Ana")
    assert b.decrypt_for("c-1", "name", token) == b"Ana"
    a.erase("c-1")
    b.forget("c-1")
    assert b.decrypt_for("c-1", "name", token) is None


def test_destroyed_key_bytes_are_gone_from_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    keys = SqliteKeyStore(path)
    enc = FieldEncryption(keys, MasterKeyring.generate())
    enc.encrypt_for("c-1", "name", b"Ana")
    stored = keys.get("c-1")
    assert stored is not None
    keys.db.checkpoint()
    assert stored.wrapped in path.read_bytes()
    enc.erase("c-1")
    keys.close()
    leftovers = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert stored.wrapped not in leftovers


@attrs.frozen
class HolderRenamed(DomainEvent):
    __subject__ = "till_id"
    till_id: str
    holder: str = pii()


def _codec() -> EventCodec:
    reg = registry()
    reg.register(HolderRenamed)
    return EventCodec(reg, field_cipher=FieldEncryption(MemoryKeyStore(), MasterKeyring.generate()))


def test_sealed_pii_opens_only_for_its_subject_event_type_and_fields() -> None:
    codec = _codec()
    usd = Currency.of("USD")
    opened = codec.encode("till-t1", TillOpened("t1", usd, "Ana Lima"), META)
    codec.encode("till-t2", TillOpened("t2", usd, "Bo Chen"), META)  # t2 has a key too
    doc = json.loads(opened.data)
    assert set(doc) == {"till_id", "currency", "$pii"}
    assert doc["$pii"].startswith("holder|v1:")
    assert codec.decode_event("till-t1", "TillOpened", opened.data) == TillOpened(
        "t1", usd, "Ana Lima"
    )
    moved = json.dumps({**doc, "till_id": "t2"}).encode()
    with pytest.raises(CodecError):
        codec.decode_event("till-t2", "TillOpened", moved)
    other_event = json.dumps({"till_id": "t1", "$pii": doc["$pii"]}).encode()
    with pytest.raises(CodecError, match="authentication"):
        codec.decode_event("till-t1", "HolderRenamed", other_event)
    renamed = json.dumps({**doc, "$pii": "holder,x" + doc["$pii"][6:]}).encode()
    with pytest.raises(CodecError, match="authentication"):
        codec.decode_event("till-t1", "TillOpened", renamed)
    with pytest.raises(CodecError, match="malformed"):
        codec.decode_event("till-t1", "TillOpened", json.dumps({**doc, "$pii": 7}).encode())
