"""Announcements: an audience, a publish window, texts per language with English as the
fallback, one read receipt per client (none outside the audience or the window), and a read
model of unread announcements that two processes answer alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxcrm_core.access import DEFAULT_POLICY, Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration
from fxcrm_core.engagement import Audience, ClientAudience
from fxcrm_core.engagement.announcements import (
    ANNOUNCEMENT_EVENTS,
    AnnouncementsService,
    AnnouncementText,
    with_announcement_grants,
)
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import AccessDeniedError, IllegalTransitionError, ValidationError
from fxcrm_core.privacy import MasterKeyring

T0 = datetime(2026, 11, 2, 12, tzinfo=UTC)
PORTAL = Actor.system("portal", Role.PORTAL)
ADMIN = Actor.staff("boss", Role.ADMIN)
POLICY = with_announcement_grants(DEFAULT_POLICY)
TEXTS = {
    "en": AnnouncementText("Holiday hours", "Markets close early on Friday."),
    "de": AnnouncementText("Feiertag", "Die Märkte schließen am Freitag früher."),
}


def _broker(
    clock: FixedClock, path: Path | None = None, keyring: MasterKeyring | None = None
) -> tuple[Broker, AnnouncementsService]:
    options: dict[str, object] = {
        "identity_key": b"k" * 32,
        "policy": POLICY,
        "keyring": keyring or MasterKeyring.generate(),
    }
    if path is None:
        broker = Broker.in_memory(clock=clock, **options)  # type: ignore[arg-type]
    else:
        broker = Broker.sqlite(path, clock=clock, **options)  # type: ignore[arg-type]
    broker.registry.register_all(ANNOUNCEMENT_EVENTS)  # the integrator: register_events
    audience = ClientAudience(broker.repository, languages={"DE": "de", "AT": "de_AT"})
    service = AnnouncementsService(
        broker.repository, broker.access, broker.projections, audience, clock=clock,
        ids=broker.ids,
    )  # fmt: skip
    return broker, service


def _client(broker: Broker, country: str, n: int) -> str:
    phones = {"GB": "07911 12345{}", "DE": "+49 1512 345678{}", "AT": "+43 664 123456{}"}
    reg = Registration(
        ClientKind.INDIVIDUAL, country, f"Client {country}", f"c{n}{country}@example.com",
        phones[country].format(n), None,
    )  # fmt: skip
    return broker.clients.register(PORTAL, reg)


def test_publish_needs_the_permission_and_an_english_text() -> None:
    _, service = _broker(FixedClock(T0))
    window = {"starts_at": T0, "ends_at": T0 + timedelta(days=1)}
    with pytest.raises(AccessDeniedError):
        service.publish(Actor.staff("rep", Role.SALES), audience=Audience(), texts=TEXTS, **window)
    with pytest.raises(ValidationError):
        service.publish(ADMIN, audience=Audience(), texts={"de": TEXTS["de"]}, **window)
    with pytest.raises(ValidationError):
        service.publish(ADMIN, audience=Audience(), texts=TEXTS, starts_at=T0, ends_at=T0)


def test_texts_fall_back_and_receipts_are_once_inside_audience_and_window() -> None:
    clock = FixedClock(T0)
    broker, service = _broker(clock)
    gb, de, at = _client(broker, "GB", 1), _client(broker, "DE", 2), _client(broker, "AT", 3)
    news = service.publish(
        ADMIN, audience=Audience(countries={"DE", "AT"}), texts=TEXTS,
        starts_at=T0 + timedelta(hours=1), ends_at=T0 + timedelta(days=1),
    )  # fmt: skip
    assert service.unread(Actor.client(de), de) == []  # not yet in its window
    with pytest.raises(IllegalTransitionError):
        service.mark_read(Actor.client(de), de, news)
    clock.advance(timedelta(hours=2))
    assert service.unread(Actor.client(de), de) == [(news, TEXTS["de"])]
    assert service.unread(Actor.client(at), at) == [(news, TEXTS["de"])]  # de_AT -> de
    assert service.unread(Actor.client(gb), gb) == []  # outside the audience
    with pytest.raises(IllegalTransitionError):
        service.mark_read(Actor.client(gb), gb, news)
    with pytest.raises(AccessDeniedError):  # another client's receipt
        service.mark_read(Actor.client(de), at, news)
    assert service.mark_read(Actor.client(de), de, news) is True
    assert service.mark_read(Actor.client(de), de, news) is False  # once
    assert service.unread(Actor.client(de), de) == []
    everyone = service.publish(
        ADMIN, audience=Audience(), texts={"en": TEXTS["en"]}, starts_at=T0,
        ends_at=T0 + timedelta(days=2),
    )  # fmt: skip
    assert service.unread(Actor.client(de), de) == [(everyone, TEXTS["en"])]  # English fallback
    clock.advance(timedelta(days=1))  # news ended
    with pytest.raises(IllegalTransitionError):
        service.mark_read(Actor.client(at), at, news)
    assert service.unread(Actor.client(at), at) == [(everyone, TEXTS["en"])]
    service.withdraw(ADMIN, everyone)
    assert service.unread(Actor.client(at), at) == []
    with pytest.raises(IllegalTransitionError):
        service.mark_read(Actor.client(at), at, everyone)


def test_two_processes_and_a_restart_answer_the_same(tmp_path: Path) -> None:
    clock, keyring = FixedClock(T0), MasterKeyring.generate()
    path = tmp_path / "b.sqlite"
    first, one = _broker(clock, path, keyring)
    de = _client(first, "DE", 2)
    news = one.publish(
        ADMIN, audience=Audience(), texts=TEXTS, starts_at=T0, ends_at=T0 + timedelta(days=1)
    )
    second, two = _broker(clock, path, keyring)  # another process on the same log
    assert two.unread(Actor.client(de), de) == [(news, TEXTS["de"])]
    assert one.unread(Actor.client(de), de) == [(news, TEXTS["de"])]
    assert two.mark_read(Actor.client(de), de, news) is True
    assert one.mark_read(Actor.client(de), de, news) is False  # the other's receipt counts
    assert one.unread(Actor.client(de), de) == []
    receipts = [r for r in first.store.read_all(after_position=0, limit=10_000)
                if r.event_type == "AnnouncementRead"]  # fmt: skip
    assert len(receipts) == 1
    first.close()
    second.close()
    again, three = _broker(clock, path, keyring)
    assert three.unread(Actor.client(de), de) == []
    assert three.get(news).text_for("de").title == "Feiertag"
    again.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.integers(-48, 48),
    length=st.integers(1, 72),
    marks=st.lists(st.integers(-72, 96), max_size=5),
)
def test_a_receipt_exists_only_for_marks_inside_the_window_and_once(
    start: int, length: int, marks: list[int]
) -> None:
    """Law: whatever instants a client marks at, it holds one receipt if and only if some mark
    fell inside the window; an announcement is unread exactly while in its window, unmarked."""
    clock = FixedClock(T0)
    broker, service = _broker(clock)
    de = _client(broker, "DE", 2)
    begins, ends = T0 + timedelta(hours=start), T0 + timedelta(hours=start + length)
    news = service.publish(ADMIN, audience=Audience(), texts=TEXTS, starts_at=begins, ends_at=ends)
    base = clock.now()
    read = False
    for hour in sorted(marks):
        clock.set(base + timedelta(hours=hour + 100))  # forward only
        now = clock.now()
        inside = begins <= now < ends
        assert bool(service.unread(Actor.client(de), de)) == (inside and not read)
        if inside:
            assert service.mark_read(Actor.client(de), de, news) is (not read)
            read = True
        else:
            with pytest.raises(IllegalTransitionError):
                service.mark_read(Actor.client(de), de, news)
    rows = broker.store.read_all(after_position=0, limit=10_000)
    assert sum(r.event_type == "AnnouncementRead" for r in rows) == int(read)
