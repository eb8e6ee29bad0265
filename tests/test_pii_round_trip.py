"""Round trip of personal data (issue 19, must show): the value as registered → event → store →
read back (a restarted process) → the masked view and the revealed value, for every kind, on
memory and SQLite, with generated values (CJK names included). After erasure nothing of it is
readable, masked or not, and the store never held it in clear."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, Self

import attrs
import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum import iban as stdnum_iban
from stdnum import luhn

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import CLIENT_PII, Client, ClientKind, Registration, Stage
from fxcrm_core.events import ERASED, Aggregate, DomainEvent, Repository, pii
from fxcrm_core.kernel import AccessDeniedError, FixedClock, ValidationError
from fxcrm_core.privacy import (
    PII_VALUE_TYPES,
    Address,
    BirthDate,
    DocumentNumber,
    Email,
    Iban,
    MasterKeyring,
    Pan,
    PersonName,
    Phone,
    PiiKind,
    PiiReveals,
    PiiValue,
    Reveal,
)

Backend = Literal["memory", "sqlite"]
T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
PORTAL = Actor.system("portal", Role.PORTAL)
OFFICER = Actor.staff("kyc-1", Role.COMPLIANCE)
REP = Actor.staff("rep-1", Role.SALES)
ROLES = (Role.SUPPORT, Role.SALES, Role.COMPLIANCE, Role.IB, "no-such-role")


# -- generated values, as a person would type them ---------------------------------------------
_CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
_LATIN = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyzéñøü-'")
_NAME_CHARS = st.one_of(_CJK, _LATIN, st.just(" "))
names = st.text(_NAME_CHARS, min_size=1, max_size=16).filter(lambda t: bool(t.strip()))
emails = st.from_regex(r"\A[a-zA-Z0-9][a-zA-Z0-9._-]{0,11}@[a-z0-9]{1,10}\.[a-z]{2,4}\Z")
addresses = st.text(
    st.one_of(_CJK, _LATIN, st.sampled_from("0123456789 ,.")), min_size=1, max_size=30
).filter(lambda t: bool(t.strip()))
birth_dates = st.dates(date(1900, 1, 2), date(2000, 12, 31))


@st.composite
def phones(draw: st.DrawFn) -> tuple[str, str]:
    """(region, the number as typed in that region: national or international form)."""
    regions = sorted(r for r in phonenumbers.SUPPORTED_REGIONS if phonenumbers.example_number(r))
    region = draw(st.sampled_from(regions))
    number = phonenumbers.example_number(region)
    assert number is not None
    form = draw(
        st.sampled_from(
            [phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.INTERNATIONAL]
        )
    )
    return region, phonenumbers.format_number(number, form)


@st.composite
def pans(draw: st.DrawFn) -> str:
    body = draw(st.from_regex(r"\A[1-9][0-9]{14}\Z"))
    number = body + luhn.calc_check_digit(body)
    return draw(st.sampled_from([number, " ".join(number[i : i + 4] for i in range(0, 16, 4))]))


@st.composite
def ibans(draw: st.DrawFn) -> str:
    bban = draw(st.from_regex(r"\A[0-9]{18}\Z"))
    number = f"DE{stdnum_iban.calc_check_digits('DE00' + bban)}{bban}"
    return draw(st.sampled_from([number, " ".join(number[i : i + 4] for i in range(0, 22, 4))]))


documents = st.from_regex(r"\A[A-Za-z0-9]{6,12}\Z")


# -- a host's event holding every kind -----------------------------------------------------------
@attrs.frozen
class DossierOpened(DomainEvent):
    __subject__ = "client_id"
    client_id: str
    pan: Pan = pii()  # noqa: RUF009 - an attrs field
    iban: Iban = pii()  # noqa: RUF009 - an attrs field
    email: Email = pii()  # noqa: RUF009 - an attrs field
    phone: Phone = pii()  # noqa: RUF009 - an attrs field
    name: PersonName = pii()  # noqa: RUF009 - an attrs field
    document: DocumentNumber = pii()  # noqa: RUF009 - an attrs field
    address: Address = pii()  # noqa: RUF009 - an attrs field
    birth_date: BirthDate = pii()  # noqa: RUF009 - an attrs field


KIND_FIELDS = {
    PiiKind.PAN: "pan",
    PiiKind.IBAN: "iban",
    PiiKind.EMAIL: "email",
    PiiKind.PHONE: "phone",
    PiiKind.NAME: "name",
    PiiKind.DOCUMENT: "document",
    PiiKind.ADDRESS: "address",
    PiiKind.BIRTH_DATE: "birth_date",
}


@attrs.frozen(kw_only=True)
class Dossier(Aggregate):
    category = "dossier"
    opened: DossierOpened | None = attrs.field(default=None, repr=False)

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, DossierOpened):
            return self.evolve(opened=event)
        raise ValidationError("unexpected event")


def test_every_kind_has_a_field_here() -> None:
    assert set(KIND_FIELDS) == set(PII_VALUE_TYPES)


@contextmanager
def brokers(backend: Backend) -> Iterator[tuple[Broker, Callable[[], Broker]]]:
    """A broker, and how to open the same log again as a restarted process would."""
    options: dict[str, Any] = {
        "keyring": MasterKeyring({"m1": bytes(range(32))}, "m1"),
        "identity_key": b"round trip deduplication key, 32+",
        "events": (DossierOpened,),
    }
    if backend == "memory":
        broker = Broker.in_memory(clock=FixedClock(T0), **options)
        yield broker, lambda: broker
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "broker.sqlite"
        opened: list[Broker] = []

        def again() -> Broker:
            opened.append(
                Broker.sqlite(path, clock=FixedClock(T0), synchronous="NORMAL", **options)
            )
            return opened[-1]

        try:
            yield again(), again
        finally:
            for b in opened:
                b.close()


def _cold(broker: Broker) -> Repository:
    """A repository with no cache: every read folds the stored events afresh."""
    return Repository(broker.store, broker.codec, cache_size=0)


def _raw(broker: Broker) -> list[str]:
    """Every text the stored payloads hold outside their sealed PII (keys and values)."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for key, item in node.items():
                if key != "$pii":
                    found.append(f"key:{key}")  # a field's name, kept apart from values
                    walk(item)
                else:  # the names of the sealed fields, not the ciphertext
                    found.append(item.split("|", 1)[0])

    for stored in broker.store.read_all(limit=100_000):
        walk(json.loads(bytes(stored.data)))
    return found


def _assert_never_in_clear(stored: list[str], texts: list[str]) -> None:
    for text in texts:
        if len(text) >= 8:
            assert not any(text in s for s in stored)
        elif len(text) >= 3:  # a short one occurs inside keys and ids by chance ("kin", "kind")
            assert text not in stored


def _assert_shown_as_the_policy_says(broker: Broker, value: PiiValue, clear: str) -> None:
    for role in ROLES:
        level = broker.masking.reveal_for({role}, value.kind)
        shown = broker.masking.show({role}, value.kind, value.reveal())
        assert shown == value.masked(level)
        if level is not Reveal.FULL or value.kind is PiiKind.PAN:
            assert shown != clear


# -- every kind, through a host's event ----------------------------------------------------------
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pan=pans(),
    iban=ibans(),
    email=emails,
    phone=phones(),
    name=names,
    document=documents,
    address=addresses,
    born=birth_dates,
)
def test_every_kind_round_trips_and_is_gone_after_erasure(
    backend: Backend,
    pan: str,
    iban: str,
    email: str,
    phone: tuple[str, str],
    name: str,
    document: str,
    address: str,
    born: date,
) -> None:
    region, typed_phone = phone
    event = DossierOpened(
        "c-1",
        Pan.parse(pan),
        Iban.parse(iban),
        Email.parse(email),
        Phone.parse(typed_phone, region=region),
        PersonName.parse(name),
        DocumentNumber.parse(document),
        Address.parse(address),
        BirthDate.of(born),
    )
    typed: dict[PiiKind, PiiValue] = {k: getattr(event, f) for k, f in KIND_FIELDS.items()}
    with brokers(backend) as (broker, reopen):
        with broker.unit_of_work(OFFICER) as uow:
            uow.record(Dossier.blank("c-1"), event)
            uow.commit()
        clear = [v.reveal() for v in typed.values()]
        _assert_never_in_clear(_raw(broker), clear)
        other = reopen()
        read = _cold(other).get(Dossier, "c-1").opened
        assert read is not None
        reveals = PiiReveals(other.repository, other.access)
        for kind, value in typed.items():
            stored = getattr(read, KIND_FIELDS[kind])
            assert type(stored) is PII_VALUE_TYPES[kind]
            assert stored == value
            _assert_shown_as_the_policy_says(other, stored, value.reveal())
            assert reveals.reveal(OFFICER, stored, subject_id="c-1", reason="check") == (
                value.reveal()
            )
        assert broker.encryption is not None
        assert other.encryption is not None
        broker.encryption.erase("c-1")
        other.encryption.forget("c-1")
        for b in (broker, other):
            gone = _cold(b).get(Dossier, "c-1").opened
            assert gone is not None
            for kind in typed:
                value = getattr(gone, KIND_FIELDS[kind])
                assert value.erased
                assert value.reveal() is ERASED
                for role in ROLES:
                    assert b.masking.show({role}, kind, value.reveal()) == ERASED
        _assert_never_in_clear(_raw(broker), clear)


# -- the client's kinds, through registration and the service's reads ---------------------------
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, email=emails, phone=phones(), address=addresses, born=birth_dates)
def test_a_registration_round_trips_to_masked_views_and_reveals(
    backend: Backend,
    name: str,
    email: str,
    phone: tuple[str, str],
    address: str,
    born: date,
) -> None:
    region, typed_phone = phone
    expected: dict[str, PiiValue] = {
        "name": PersonName.parse(name),
        "email": Email.parse(email),
        "phone": Phone.parse(typed_phone, region=region),
        "birth_date": BirthDate.of(born),
        "address": Address.parse(address),
    }
    with brokers(backend) as (broker, reopen):
        cid = broker.clients.register(
            PORTAL,
            Registration(ClientKind.INDIVIDUAL, region, name, email, typed_phone, owner_id=REP.id),
        )
        broker.clients.update_profile(REP, cid, birth_date=born, address=address)
        clear = [v.reveal() for v in expected.values()]
        _assert_never_in_clear(_raw(broker), clear)
        other = reopen()
        stored = _cold(other).get(Client, cid)
        for field, value in expected.items():
            assert getattr(stored, field) == value
            assert type(getattr(stored, field)) is type(value)
        for role in ROLES:
            actor = Actor.staff(f"who-{role}", role)
            if not other.access.allows(actor, "client.read", client_id=cid):
                assert role not in (Role.SUPPORT, Role.COMPLIANCE)
                with pytest.raises(AccessDeniedError):
                    other.clients.get(actor, cid)
                continue
            view = other.clients.get(actor, cid)
            for field, value in expected.items():
                shown = getattr(view, field)
                assert shown == other.masking.show({role}, CLIENT_PII[field], value.reveal())
                _assert_shown_as_the_policy_says(other, value, value.reveal())
        for field, value in expected.items():
            assert other.clients.reveal(OFFICER, cid, field, "round trip") == value.reveal()
        # The same person typed another way is found through the one set of normalisers.
        assert other.clients.find_by_email(OFFICER, email.upper()) in (cid, None)
        assert other.clients.find_by_email(OFFICER, email) == cid
        # The erasure service's way: the client closed, past the AML retention, then erased.
        broker.clients.move(REP, cid, Stage.CLOSED)
        assert isinstance(broker.clock, FixedClock)
        broker.clock.set(datetime(2032, 1, 1, tzinfo=UTC))
        assert broker.erasure is not None
        broker.erasure.erase(OFFICER, cid, reason="the client asked")
        for b in (broker, other):
            gone = b.repository.get(Client, cid)  # it reads the erasures another process made
            for field in expected:
                value = getattr(gone, field)
                assert value.erased
                assert value.reveal() is ERASED
            for role in (Role.SUPPORT, Role.COMPLIANCE):
                view = b.clients.get(Actor.staff(f"who-{role}", role), cid)
                assert all(getattr(view, f) == ERASED for f in expected)
            for field in expected:
                with pytest.raises(ValidationError, match=r"no \w+ to reveal"):
                    b.clients.reveal(OFFICER, cid, field, "after erasure")
        _assert_never_in_clear(_raw(broker), clear)


# -- payout instruments, through the withdrawals service ----------------------------------------
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pan=pans(), iban=ibans(), wallet=emails)
def test_an_instrument_round_trips_to_masked_views_and_reveals(
    backend: Backend, pan: str, iban: str, wallet: str
) -> None:
    from fxcrm_core.payments import InstrumentKind, PayoutInstrument

    values = {
        InstrumentKind.CARD: Pan.parse(pan),
        InstrumentKind.IBAN: Iban.parse(iban),
        InstrumentKind.EWALLET: Email.parse(wallet),
    }
    finance = Actor.staff("fin", Role.FINANCE)
    with brokers(backend) as (broker, reopen):
        cid = broker.clients.register(
            PORTAL, Registration(ClientKind.INDIVIDUAL, "GB", "Ana Lima", "ana@example.com")
        )
        me = Actor.client(cid)
        typed = {
            kind: broker.withdrawals.add_instrument(me, cid, kind, " " + value.reveal() + " ")
            for kind, value in values.items()
        }
        clear = [v.reveal() for v in values.values()]
        _assert_never_in_clear(_raw(broker), clear)
        other = reopen()
        for kind, instrument_id in typed.items():
            value = values[kind]
            held = _cold(other).get(PayoutInstrument, instrument_id).value
            assert held == value
            assert type(held) is type(value)
            for actor in (me, finance, OFFICER):
                level = min(other.masking.reveal_for(actor.roles, value.kind), Reveal.PARTIAL)
                assert other.withdrawals.instrument(actor, instrument_id).masked == value.masked(
                    level
                )
            assert other.withdrawals.reveal_instrument(OFFICER, instrument_id, "check") == (
                value.reveal()
            )
        assert broker.encryption is not None
        assert other.encryption is not None
        broker.encryption.erase(cid)
        other.encryption.forget(cid)
        for b in (broker, other):
            b.repository.forget()
            for instrument_id in typed.values():
                assert b.withdrawals.instrument(finance, instrument_id).masked == ERASED
                assert _cold(b).get(PayoutInstrument, instrument_id).erased
        _assert_never_in_clear(_raw(broker), clear)
