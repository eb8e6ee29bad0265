"""An erased client's deduplication claims name nobody: each claim is sealed under a random claim
id's own key, destroyed with the client's; the person may register again; old rows still read."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fxcrm_core.broker import Broker
from fxcrm_core.clients import (
    ClientKind,
    DuplicateClientError,
    IdentityClaim,
    IdentityClaimed,
    IdentityReleased,
    Registration,
    Stage,
    normalise_email,
)
from fxcrm_core.events import ERASED, NewEvent, StreamAppend
from fxcrm_core.events.codec import EventCodec
from fxcrm_core.kernel import FixedClock, StoreError
from fxcrm_core.privacy import MasterKeyring
from tests.system_world import OFFICER, PORTAL, REP, open_broker

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
LATER = datetime(2032, 1, 1, tzinfo=UTC)  # past the AML retention of a client closed at T0
EMAIL = "ana.lima@example.com"
PHONE = "+447911123456"
DOCUMENT = "123456789"


def memory_broker() -> Broker:
    return Broker.in_memory(
        clock=FixedClock(T0), keyring=MasterKeyring.generate(), identity_key=b"i" * 32
    )


def sign_up(b: Broker, email: str = EMAIL, phone: str | None = PHONE) -> str:
    return b.clients.register(
        PORTAL,
        Registration(
            ClientKind.INDIVIDUAL,
            "GB",
            "Ana Lima",
            email,
            phone,
            document_number=DOCUMENT,
            owner_id=REP.id,
        ),
    )


def close_and_wait(b: Broker, client_id: str) -> None:
    b.clients.move(REP, client_id, Stage.CLOSED)
    assert isinstance(b.clock, FixedClock)
    b.clock.set(LATER)


def digests(b: Broker, email: str = EMAIL) -> list[str]:
    keys = b.clients.identities
    return [
        keys.digest("email", normalise_email(email)),
        keys.digest("phone", PHONE),
        keys.digest("document", f"GB:{DOCUMENT}"),
    ]


def claimed(b: Broker, digest: str) -> list[IdentityClaimed]:
    """The claims a reader of the log sees in the digest's stream."""
    stream = IdentityClaim.stream_id_for(digest)
    events = [b.codec.decode(stored).event for stored in b.store.read_stream(stream)]
    return [e for e in events if isinstance(e, IdentityClaimed)]


def test_each_claim_has_a_random_id_of_its_own_and_its_own_key() -> None:
    b = memory_broker()
    cid = sign_up(b)
    claims = [c for d in digests(b) for c in claimed(b, d)]
    assert [c.client_id for c in claims] == [cid] * 3  # readable while the client is
    ids = {c.claim_id for c in claims}
    assert len(ids) == 3
    assert cid not in ids
    for claim_id in ids:
        # Not the time-ordered generator's next id (the client's id plus one): random, v4.
        assert uuid.UUID(claim_id).version == 4
        assert abs(uuid.UUID(claim_id).int - uuid.UUID(cid).int) > 2**64
    # The stored row keeps the client id sealed, not in clear.
    for d in digests(b):
        (row,) = b.store.read_stream(IdentityClaim.stream_id_for(d))
        assert cid.encode() not in row.data


def test_an_erasure_shreds_the_claims_and_the_person_may_register_again() -> None:
    b = memory_broker()
    cid = sign_up(b)
    claim_ids = [c.claim_id for d in digests(b) for c in claimed(b, d)]
    close_and_wait(b, cid)
    assert b.erasure is not None
    assert b.erasure.erase(OFFICER, cid, reason="the client asked").key_destroyed
    assert b.encryption is not None
    assert all(b.encryption.is_erased(claim_id) for claim_id in claim_ids)
    for d in digests(b):
        (claim,) = claimed(b, d)
        assert claim.client_id is ERASED
        assert b.repository.get(IdentityClaim, d).client_id is None
    assert b.clients.find_by_email(OFFICER, EMAIL) is None
    # The same person registers again: a new claim, under a new key, names the new client.
    again = sign_up(b)
    assert again != cid
    assert b.clients.find_by_email(OFFICER, EMAIL) == again
    first, second = claimed(b, digests(b)[0])
    assert (first.client_id, second.client_id) == (ERASED, again)
    assert second.claim_id not in claim_ids
    # ... and deduplication holds against the new client, as before.
    with pytest.raises(DuplicateClientError) as refused:
        b.clients.register(REP, Registration(ClientKind.INDIVIDUAL, "GB", "Ana L", EMAIL))
    assert refused.value.existing_client_id == again


def test_the_erasure_logs_no_claim_id(caplog: pytest.LogCaptureFixture) -> None:
    b = memory_broker()
    cid = sign_up(b)
    claim_ids = [c.claim_id for d in digests(b) for c in claimed(b, d)]
    close_and_wait(b, cid)
    assert b.erasure is not None
    with caplog.at_level(logging.DEBUG, logger="fxcrm_core"):
        b.erasure.erase(OFFICER, cid, reason="the client asked")
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "data keys destroyed" in logged
    assert not any(claim_id in logged for claim_id in claim_ids)


def test_a_second_process_reads_the_claims_as_erased(tmp_path: Path) -> None:
    a, other = open_broker(tmp_path / "fx.db"), open_broker(tmp_path / "fx.db")
    cid = sign_up(a)
    # The other process has read (and cached the keys of) the claims before the erasure.
    assert other.clients.find_by_email(OFFICER, EMAIL) == cid
    assert [c.client_id for d in digests(other) for c in claimed(other, d)] == [cid] * 3
    close_and_wait(a, cid)
    assert a.erasure is not None
    a.erasure.erase(OFFICER, cid, reason="the client asked")
    # Its first load sees the erasure (the broker's erasure watch): the release through the
    # log, and every cached key dropped, the claims' with the client's.
    assert other.clients.find_by_email(OFFICER, EMAIL) is None
    for d in digests(other):
        assert [c.client_id for c in claimed(other, d)] == [ERASED]
    # A third process, started after the erasure, never saw the keys.
    third = open_broker(tmp_path / "fx.db")
    for d in digests(third):
        assert [c.client_id for c in claimed(third, d)] == [ERASED]
        assert third.repository.get(IdentityClaim, d).client_id is None


def test_a_crash_between_record_and_shred_is_finished_by_erasing_again(tmp_path: Path) -> None:
    path = tmp_path / "fx.db"
    a = open_broker(path)
    cid = sign_up(a)
    claim_ids = [c.claim_id for d in digests(a) for c in claimed(a, d)]
    close_and_wait(a, cid)
    assert a.erasure is not None
    assert a.encryption is not None

    def down(subject_id: str, at: datetime) -> bool:
        raise StoreError("the key store is down")

    a.encryption.keystore.destroy = down  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        a.erasure.erase(OFFICER, cid, reason="the client asked")
    # Recorded (released), nothing destroyed: a new process finds the claims from the log.
    fresh = open_broker(path, at=LATER)
    assert fresh.encryption is not None
    assert not any(fresh.encryption.is_erased(c) for c in [cid, *claim_ids])
    assert fresh.clients.find_by_email(OFFICER, EMAIL) is None
    assert fresh.erasure is not None
    assert fresh.erasure.erase(OFFICER, cid, reason="the client asked").key_destroyed
    assert all(fresh.encryption.is_erased(c) for c in [cid, *claim_ids])
    for d in digests(fresh):
        assert [c.client_id for c in claimed(fresh, d)] == [ERASED]


def test_version_1_claims_and_releases_still_read_and_are_released() -> None:
    """A version-1 claim (client id in clear, no claim id) still deduplicates, and an erasure
    releases it; it has no key to shred, so its row keeps the id (documented limit)."""
    b = memory_broker()
    cid = sign_up(b, phone=None)
    old = b.clients.identities.digest("email", normalise_email("ana.old@example.com"))
    stream = IdentityClaim.stream_id_for(old)
    meta = b.codec.encode_metadata(b.codec.decode_metadata(b'{"a":"portal"}'))
    row = NewEvent("IdentityClaimed", f'{{"client_id":"{cid}","kind":"email"}}'.encode(), meta)
    b.store.append(StreamAppend(stream, 0, (row,)))
    (v1,) = claimed(b, old)
    assert (v1.claim_id, v1.client_id, v1.kind) == ("", cid, "email")
    assert b.clients.find_by_email(OFFICER, "ana.old@example.com") == cid
    with pytest.raises(DuplicateClientError):
        sign_up(b, email="ana.old@example.com", phone=None)
    close_and_wait(b, cid)
    assert b.erasure is not None
    b.erasure.erase(OFFICER, cid, reason="the client asked")
    events = [b.codec.decode(s).event for s in b.store.read_stream(stream)]
    assert events[1:] == [IdentityReleased("")]
    assert b.repository.get(IdentityClaim, old).client_id is None
    assert sign_up(b, email="ana.old@example.com", phone=None) != cid
    # A version-1 release (it named the client in clear) reads without it.
    codec: EventCodec = b.codec
    assert codec.decode_event(stream, "IdentityReleased", b'{"client_id":"c-1"}') == (
        IdentityReleased("")
    )
