"""Unsubscribe links: a signed token per message; following it records the unsubscribe and
withdraws the marketing consent as the client, once; the relay then cancels queued marketing;
forged or malformed tokens are refused with a typed error that never quotes them; a second
process over the same log answers the same."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Consent, Registration
from fxcrm_core.engagement import (
    Channel,
    EngagementRule,
    MemoryNotifier,
    MessageKind,
    MessageStatus,
    OnEvent,
    OutboxMessage,
)
from fxcrm_core.engagement.unsubscribe import (
    UNSUBSCRIBE_EVENTS,
    Unsubscribe,
    UnsubscribeLinkError,
    UnsubscribeLinks,
    UnsubscribeRecorded,
)
from fxcrm_core.events import EventCodec, EventRegistry, Repository
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import ArgumentTypeError, NotFoundError, ValidationError
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.stores import MemoryEventStore

T0 = datetime(2026, 11, 2, 12, tzinfo=UTC)
SECRET = b"s" * 32
PORTAL = Actor.system("portal", Role.PORTAL)
REP = Actor.staff("rep-1", Role.SALES)
ANA = Registration(
    ClientKind.INDIVIDUAL, "GB", "Ana Lima", "ana.lima@example.com", "07911 123456",
    "x123 4567", owner_id="staff:rep-1",
)  # fmt: skip
PROMO = EngagementRule(
    rule_id="promo",
    trigger=OnEvent.registered(),
    template="promo",
    channel=Channel.SMS,
    kind=MessageKind.MARKETING,
)
NEWS = EngagementRule(
    rule_id="news",
    trigger=OnEvent.registered(after=timedelta(days=1)),
    template="news",
    channel=Channel.EMAIL,
    kind=MessageKind.MARKETING,
)
WELCOME = EngagementRule(
    rule_id="welcome",
    trigger=OnEvent.registered(after=timedelta(days=1)),
    template="welcome",
    channel=Channel.EMAIL,
    kind=MessageKind.SERVICE,
)
OPTIONS: dict[str, object] = {
    "engagement_rules": (PROMO, NEWS, WELCOME),
    "identity_key": b"k" * 32,
}


def _known(broker: Broker) -> Broker:
    # Until the integrator registers UNSUBSCRIBE_EVENTS in engagement.register_events.
    for cls in UNSUBSCRIBE_EVENTS:
        if not broker.registry.knows(cls):
            broker.registry.register(cls)
    return broker


def _memory(clock: FixedClock, notifier: MemoryNotifier) -> Broker:
    broker = Broker.in_memory(
        clock=clock,
        keyring=MasterKeyring.generate(),
        notifier=notifier,
        **OPTIONS,  # type: ignore[arg-type]
    )
    return _known(broker)


def _sqlite(path: Path, clock: FixedClock, notifier: MemoryNotifier) -> Broker:
    broker = Broker.sqlite(
        path,
        clock=clock,
        allow_clear_pii=True,
        notifier=notifier,
        **OPTIONS,  # type: ignore[arg-type]
    )
    return _known(broker)


def _links(broker: Broker, secret: bytes = SECRET) -> UnsubscribeLinks:
    return UnsubscribeLinks(broker.repository, broker.access, clock=broker.clock, secret=secret)


def _bare_links(secret: bytes = SECRET) -> UnsubscribeLinks:
    registry = EventRegistry()
    registry.register_all(UNSUBSCRIBE_EVENTS)
    clock = FixedClock(T0)
    repository = Repository(MemoryEventStore(clock), EventCodec(registry))
    return UnsubscribeLinks(repository, clock=clock, secret=secret)


def _ana(broker: Broker) -> str:
    cid = broker.clients.register(PORTAL, ANA)
    broker.clients.give_consent(REP, cid, Consent.MARKETING)
    return cid


def _status(broker: Broker, key: str) -> MessageStatus:
    state = broker.repository.load(OutboxMessage, key)
    assert state is not None
    return state.status


# -- tokens ----------------------------------------------------------------------------------
KEYS = st.text(string.ascii_letters + string.digits + "-_:é€", min_size=1, max_size=120).filter(
    lambda k: k.strip() == k
)


@settings(max_examples=200, deadline=None)
@given(KEYS)
@example("promo:once:c-1")
def test_a_token_names_its_key_and_is_url_safe(key: str) -> None:
    links = _bare_links()
    token = links.token(key)
    assert links.key_of(token) == key
    assert set(token) <= set(string.ascii_letters + string.digits + "-_.")
    assert links.token(key) == token  # the same link every time it is rendered


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=50).map(lambda b: b.hex()))
@example("")
@example(".")
@example("cHJvbW86b25jZTpjLTE.")
@example("cHJvbW86b25jZTpjLTE.AAAAAAAAAAAAAAAAAAAAAA")
def test_anything_but_a_genuine_token_is_refused_without_quoting_it(token: str) -> None:
    # A genuine token is a 128-bit MAC away: no generated text is one.
    with pytest.raises(UnsubscribeLinkError, match=r"^the unsubscribe link is not valid$"):
        _bare_links().key_of(token)


@settings(max_examples=100, deadline=None)
@given(KEYS, KEYS)
def test_a_token_is_bound_to_its_key_and_the_secret(key: str, other: str) -> None:
    links, stranger = _bare_links(), _bare_links(b"t" * 32)
    mac = links.token(key).partition(".")[2]
    other_body = links.token(other).partition(".")[0]
    with pytest.raises(UnsubscribeLinkError):
        stranger.key_of(links.token(key))
    if other != key:
        with pytest.raises(UnsubscribeLinkError):
            links.key_of(f"{other_body}.{mac}")  # another message's key under this MAC


@pytest.mark.parametrize("token", [None, b"abc.def", 7, "x" * 5000, "a.b.c", "ab=.cd", "ä.b"])
def test_malformed_tokens_are_typed_errors(token: object) -> None:
    with pytest.raises(UnsubscribeLinkError) as caught:
        _bare_links().unsubscribe(token)  # type: ignore[arg-type]
    assert "x" * 10 not in str(caught.value)


def test_the_secret_is_checked() -> None:
    with pytest.raises(ArgumentTypeError):
        _bare_links("not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        _bare_links(b"short")


def test_a_genuine_token_of_no_message_is_not_found() -> None:
    links = _bare_links()
    with pytest.raises(NotFoundError):
        links.unsubscribe(links.token("promo:once:nobody"))


# -- unsubscribing ---------------------------------------------------------------------------
def test_following_the_link_withdraws_consent_once_and_cancels_queued_marketing() -> None:
    clock, notifier = FixedClock(T0), MemoryNotifier()
    broker = _memory(clock, notifier)
    cid = _ana(broker)
    promo, news, welcome = (f"{r}:once:{cid}" for r in ("promo", "news", "welcome"))
    assert broker.send_messages().sent == 1  # the promo; news and welcome are due tomorrow
    links = _links(broker)
    clock.advance(minutes=5)

    assert links.unsubscribe(links.token(promo)) is True

    recorded = links.recorded(promo)
    assert recorded == UnsubscribeRecorded(promo, cid, Channel.SMS, T0 + timedelta(minutes=5))
    assert not broker.clients.get(REP, cid).has_consent(Consent.MARKETING)
    stored = broker.store.read_stream(Unsubscribe.stream_id_for(promo))
    assert broker.codec.decode(stored[0]).metadata.actor == Actor.client(cid).id
    assert _status(broker, news) is MessageStatus.CANCELLED  # the relay's consent policy
    assert _status(broker, welcome) is MessageStatus.QUEUED  # service messages still go

    head = broker.store.last_position()
    assert links.unsubscribe(links.token(promo)) is False  # a second click
    assert broker.store.last_position() == head  # records nothing

    clock.advance(days=1)
    assert broker.send_messages().sent == 1
    assert list(notifier.delivered) == [promo, welcome]


def test_a_client_without_marketing_consent_still_has_its_unsubscribe_recorded() -> None:
    clock, notifier = FixedClock(T0), MemoryNotifier()
    broker = _memory(clock, notifier)
    cid = broker.clients.register(PORTAL, ANA)  # never consented
    links = _links(broker)
    head = broker.store.last_position()
    assert links.unsubscribe(links.token(f"welcome:once:{cid}")) is True
    assert broker.store.last_position() == head + 1  # the unsubscribe alone
    assert links.unsubscribe(links.token(f"welcome:once:{cid}")) is False


def test_each_message_has_its_own_link() -> None:
    clock, notifier = FixedClock(T0), MemoryNotifier()
    broker = _memory(clock, notifier)
    cid = _ana(broker)
    links = _links(broker)
    assert links.unsubscribe(links.token(f"promo:once:{cid}")) is True
    assert links.unsubscribe(links.token(f"news:once:{cid}")) is True  # its own record
    assert links.recorded(f"news:once:{cid}") is not None
    assert links.unsubscribe(links.token(f"news:once:{cid}")) is False


def test_a_restart_or_second_process_answers_the_same(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    clock = FixedClock(T0)
    first = _sqlite(path, clock, MemoryNotifier())
    cid = _ana(first)
    promo = f"promo:once:{cid}"
    token = _links(first).token(promo)
    second = _sqlite(path, clock, MemoryNotifier())
    assert _links(second).token(promo) == token  # the same secret signs the same link
    assert _links(first).unsubscribe(token) is True
    second.run_policies()
    assert _links(second).unsubscribe(token) is False
    assert _links(second).recorded(promo) == _links(first).recorded(promo)
    assert not second.clients.get(REP, cid).has_consent(Consent.MARKETING)
    assert _status(second, f"news:once:{cid}") is MessageStatus.CANCELLED
    with pytest.raises(UnsubscribeLinkError):
        _links(second, b"another secret!!").unsubscribe(token)
    first.close()
    second.close()
