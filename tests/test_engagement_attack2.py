"""Attacks on the newest engagement parts: complaints, surveys, service records, exports,
announcements and the i18n catalog, as a broker's engineer and as an attacker would.

Every failing test here is a finding (see its docstring): hostile input that escapes as a raw
Python exception, data accepted that a host must not store, an inconsistency a host can slip
into the catalog, memory that grows with every reload, a deadline escalated before it passed.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration, Stage
from fxcrm_core.engagement.complaints import (
    BusinessCalendar,
    ComplaintOpened,
    ComplaintOutcome,
    ComplaintResolved,
)
from fxcrm_core.engagement.records import CallDirection, CallOutcome
from fxcrm_core.engagement.surveys import SurveyAnswered, SurveyKind
from fxcrm_core.events import ERASED
from fxcrm_core.i18n import Catalog, Term
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    FxCrmError,
    NotFoundError,
    SubjectErasedError,
    ValidationError,
)
from fxcrm_core.privacy import MasterKeyring, RetentionPolicy

T0 = datetime(2026, 11, 2, 12, tzinfo=UTC)  # a Monday
PORTAL = Actor.system("portal", Role.PORTAL)
REP1 = Actor.staff("rep-1", Role.SALES)
REP2 = Actor.staff("rep-2", Role.SALES)
SUPPORT = Actor.staff("sup-1", Role.SUPPORT)
DPO = Actor.staff("dpo", Role.COMPLIANCE)
BOSS = Actor.staff("boss", Role.ADMIN)
WITHDRAWAL = "template.withdrawal-paid.body"


def _reg(name: str, email: str, phone: str, doc: str, owner: str) -> Registration:
    return Registration(ClientKind.INDIVIDUAL, "GB", name, email, phone, doc, owner_id=owner)


ANA = _reg("Ana Lima", "ana@example.com", "07911 123456", "x1234567", "staff:rep-1")
BEN = _reg("Ben Cole", "ben@example.com", "07911 123457", "y7654321", "staff:rep-2")


def _broker(
    clock: FixedClock, path: Path | None = None, keyring: MasterKeyring | None = None
) -> Broker:
    ring = keyring or MasterKeyring.generate()
    if path is None:
        return Broker.in_memory(
            clock=clock, identity_key=b"k" * 32, retention=RetentionPolicy(years=0), keyring=ring
        )
    return Broker.sqlite(
        path, clock=clock, identity_key=b"k" * 32, retention=RetentionPolicy(years=0), keyring=ring
    )


# -- passing checks that pin what holds --------------------------------------------------------


def test_erasure_shreds_complaint_texts_and_survey_comments_and_refuses_new_ones() -> None:
    clock = FixedClock(T0)
    broker = _broker(clock)
    ana = broker.clients.register(PORTAL, ANA)
    me = Actor.client(ana)
    complaint = broker.complaints.open(me, ana, "trading", "my card 4111 was robbed")
    broker.complaints.resolve(SUPPORT, complaint.id, ComplaintOutcome.REJECTED, "Dear Ana, no")
    survey = broker.surveys.send(SUPPORT, ana, SurveyKind.NPS, "withdrawal-paid")
    broker.surveys.answer(me, survey.id, 3, "Ana's own words")
    broker.clients.move(REP1, ana, Stage.CLOSED)
    broker.erasure.erase(DPO, ana, reason="erasure request")
    thread = [r.event for r in broker.complaints.thread(DPO, complaint.id)]
    assert [e.text for e in thread if isinstance(e, ComplaintOpened)] == [ERASED]
    assert [e.reply for e in thread if isinstance(e, ComplaintResolved)] == [ERASED]
    rows = broker.store.read_stream(f"survey-{survey.id}")
    answers = [broker.repository.codec.decode(r).event for r in rows]
    assert [e.comment for e in answers if isinstance(e, SurveyAnswered)] == [ERASED]
    with pytest.raises(SubjectErasedError):
        broker.complaints.open(SUPPORT, ana, "trading", "new text about Ana Lima")


def test_two_processes_escalate_a_deadline_once_and_a_restart_agrees(tmp_path: Path) -> None:
    clock, keyring = FixedClock(T0), MasterKeyring.generate()
    path = tmp_path / "b.sqlite"
    first = _broker(clock, path, keyring)
    second = _broker(clock, path, keyring)
    ana = first.clients.register(PORTAL, ANA)
    complaint = first.complaints.open(Actor.client(ana), ana, "payments", "not paid")
    clock.advance(timedelta(days=30))
    both = first.complaints.check_deadlines() + second.complaints.check_deadlines()
    both += second.complaints.check_deadlines() + first.complaints.check_deadlines()
    assert sorted(e.stage.value for e in both) == ["acknowledge", "resolve"]
    first.close()
    second.close()
    again = _broker(clock, path, keyring)
    assert again.complaints.check_deadlines() == []
    assert len(again.complaints.get(SUPPORT, complaint.id).escalated) == 2
    again.close()


def test_a_sales_rep_reads_no_notes_or_tasks_of_another_team() -> None:
    clock = FixedClock(T0)
    broker = _broker(clock)
    ana, ben = broker.clients.register(PORTAL, ANA), broker.clients.register(PORTAL, BEN)
    broker.service_records.add_note(REP2, ben, "Ben's private note")
    broker.service_records.open_task(REP2, ben, title="Call Ben", due_at=T0, owner_id=REP2.id)
    for read in (
        broker.service_records.notes,
        broker.service_records.tasks,
        broker.service_records.calls,
    ):
        with pytest.raises(AccessDeniedError):
            read(REP1, ben)
    with pytest.raises(AccessDeniedError):
        broker.service_records.open_tasks_of(REP1, REP2.id)
    assert broker.service_records.notes(REP1, ana) == []


# -- findings: hostile input escaping as raw Python exceptions ---------------------------------


def test_a_calendar_with_unhashable_holidays_or_weekend_raises_a_typed_error() -> None:
    """BusinessCalendar({"GB": [[...]]}) and weekend=[[5]] call frozenset() on the host's items
    before any type check: a TypeError (unhashable type: 'list') reaches the host."""
    with pytest.raises(FxCrmError):
        BusinessCalendar({"GB": [[date(2026, 12, 25)]]})
    with pytest.raises(FxCrmError):
        BusinessCalendar(weekend=[[5], [6]])


def test_a_deadline_past_the_last_representable_day_is_a_typed_error() -> None:
    """A start on 9999-12-31 (an aware instant to_utc accepts): counting business days and
    the end of the day add a day past date.max, and an OverflowError escapes."""
    late = datetime(9999, 12, 31, 12, tzinfo=UTC)
    with pytest.raises(FxCrmError):
        BusinessCalendar().add_business_days(late, 0, "UTC")
    with pytest.raises(FxCrmError):
        BusinessCalendar().add_business_days(late, 1, "UTC")


def test_a_note_with_a_lone_surrogate_is_refused_typed() -> None:
    """records._free_text relies on checked_text, which refuses categories Cc and Cf but not
    Cs: a lone surrogate is accepted and the field encryption raises UnicodeEncodeError."""
    broker = _broker(FixedClock(T0))
    ana = broker.clients.register(PORTAL, ANA)
    with pytest.raises(FxCrmError):
        broker.service_records.add_note(REP1, ana, "call back \ud800 later")
    with pytest.raises(FxCrmError):
        broker.service_records.open_task(
            REP1, ana, title="call \udfff", due_at=T0, owner_id=REP1.id
        )


def test_an_export_with_unhashable_field_names_is_a_typed_error() -> None:
    """ClientExports._fields does dict.fromkeys(fields) before checking each name is text:
    fields=[["name"]] raises TypeError."""
    broker = _broker(FixedClock(T0))
    ana = broker.clients.register(PORTAL, ANA)
    with pytest.raises(FxCrmError):
        broker.exports.export(DPO, [ana], [["name"]], "quarterly audit")  # type: ignore[list-item]


def test_a_huge_time_zone_name_for_a_message_is_a_typed_error() -> None:
    """formatting.time_zone passes any string to ZoneInfo and catches only
    ZoneInfoNotFoundError and ValueError: a 400-character name raises OSError (file name too
    long) and the message echoes the tzdata path."""
    catalog = Catalog()
    with pytest.raises(FxCrmError):
        catalog.text(WITHDRAWAL, "en", zone="x" * 400, amount="1.00 USD", paid_at=T0)


@pytest.mark.parametrize(
    "amount", [10**5000, Decimal("1E+300"), Decimal("-1E+250")], ids=["int", "big", "neg"]
)
def test_a_huge_number_in_a_message_is_a_typed_error_or_shown(amount: int | Decimal) -> None:
    """format_number: an int over Python's 4300-digit str limit raises ValueError; a Decimal
    with more than 200 digits before the point raises decimal.InvalidOperation (the local
    context's prec=200 with decimal_quantization=False). Neither is an FxCrmError."""
    catalog = Catalog()
    try:
        shown = catalog.text(WITHDRAWAL, "en", amount=amount, paid_at=T0)
    except FxCrmError:
        return
    assert shown


# -- findings: data a host must not store ------------------------------------------------------


def test_an_export_reason_with_control_characters_or_a_megabyte_is_refused() -> None:
    """require_reason (privacy/pii.py) checks only that the reason is non-blank text quoting no
    exported value: a terminal escape, a NUL or 2 MB are kept in clear in the export's
    metadata for ever (after an erasure too), unlike every other reason (checked_text)."""
    broker = _broker(FixedClock(T0))
    ana = broker.clients.register(PORTAL, ANA)
    with pytest.raises(ValidationError):
        broker.exports.export(DPO, [ana], ["id"], "audit \x1b[2J\x00 check")
    with pytest.raises(ValidationError):
        broker.exports.export(DPO, [ana], ["id"], "audit " * 400_000)
    assert not any(
        r.event_type == "ClientsExported" for r in broker.store.read_all(after_position=0)
    )


def test_a_complaint_or_a_survey_needs_a_registered_client() -> None:
    """Complaints.open and Surveys.send never load the client: support records a complaint (a
    regulated SLA clock, escalations at end of day) and a survey for a client id that does not
    exist. ServiceRecords refuses the same (NotFoundError, records._live_client)."""
    broker = _broker(FixedClock(T0))
    with pytest.raises(NotFoundError):
        broker.complaints.open(SUPPORT, "c-nobody", "trading", "a made-up complaint")
    with pytest.raises(NotFoundError):
        broker.surveys.send(SUPPORT, "c-nobody", SurveyKind.CSAT, "made-up")


def test_a_client_does_not_choose_who_handles_its_complaint() -> None:
    """Complaints.open takes owner_id from any actor with complaint.open, the client too: a
    client routes its own complaint to the staff member of its choice (assigning is
    complaint.handle in Complaints.assign)."""
    broker = _broker(FixedClock(T0))
    ana = broker.clients.register(PORTAL, ANA)
    with pytest.raises(AccessDeniedError):
        broker.complaints.open(
            Actor.client(ana), ana, "trading", "please route", owner_id="staff:friend"
        )


def test_deadlines_are_not_escalated_before_they_pass_on_the_clock() -> None:
    """check_deadlines(now) takes any instant: a caller passing a later one records the
    escalations (with that future `at`) before the deadline passed, and the once-per-deadline
    rule then means the real miss is never escalated."""
    clock = FixedClock(T0)
    broker = _broker(clock)
    ana = broker.clients.register(PORTAL, ANA)
    broker.complaints.open(Actor.client(ana), ana, "trading", "nothing yet")
    try:
        early = broker.complaints.check_deadlines(T0 + timedelta(days=60))
    except ValidationError:
        early = []
    assert early == []
    clock.advance(timedelta(days=60))
    stages = {e.stage.value for e in broker.complaints.check_deadlines()}
    assert stages == {"acknowledge", "resolve"}


# -- findings: the catalog ---------------------------------------------------------------------


def test_an_english_override_cannot_change_the_placeholders_a_translation_has() -> None:
    """Catalog._check_consistent compares an English text only with the shipped English:
    for a host msgid the English can be overridden with other placeholders after its Chinese
    text exists, and rendering in zh_CN then fails (ValidationError: no value for 'name')."""
    catalog = Catalog()
    catalog.override("en", "host.greeting", "Hi {name}")
    catalog.override("zh_CN", "host.greeting", "你好 {name}")
    with pytest.raises(ValidationError):
        catalog.override("en", "host.greeting", "Hi {other}")
    assert catalog.text("host.greeting", "zh_CN", name="A") == "你好 A"


def test_a_term_with_literal_braces_is_shown_unescaped() -> None:
    """Catalog._value returns a Term's raw catalog text (and Catalog.term the same): a
    host's "Gold {{VIP}}" (the only way to write a literal brace) shows as "Gold {{VIP}}"."""
    catalog = Catalog()
    catalog.override("en", "tier.gold", "Gold {{VIP}}")
    rendered = catalog.render("tier-up", "en", {"tier": Term("tier.gold")})
    assert rendered.subject == "You reached the Gold {VIP} tier"
    assert catalog.term("tier.", "gold", "en") == "Gold {VIP}"


def test_a_parameter_value_with_braces_is_shown_as_given() -> None:
    catalog = Catalog()
    rendered = catalog.render("tier-up", "en", {"tier": "{0.__class__} {amount!r} %s"})
    assert rendered.subject == "You reached the {0.__class__} {amount!r} %s tier"
    for hostile in ("Hi {0.__class__}", "Hi {name!r}", "Hi {name:>999999}", "Hi {name"):
        with pytest.raises(ValidationError):
            catalog.override("en", "host.hi", hostile)
    for locale in ("../../etc", "zh_TW/../../x", ""):
        with pytest.raises(ValidationError):
            catalog.render("welcome", locale)
    assert catalog.render("welcome", "zh_TW").text_locale == "en"  # not the Simplified text


def test_catalog_texts_and_msgids_refuse_control_and_surrogate_characters() -> None:
    """_msgid checks spaces and braces only (a NUL in a msgid is accepted); _checked and
    _value refuse Cc and Cf but not Cs: a lone surrogate goes into a text and a rendered
    message that no notifier can encode."""
    catalog = Catalog()
    with pytest.raises(ValidationError):
        catalog.override("en", "host.a\x00b", "Hello")
    with pytest.raises(ValidationError):
        catalog.override("en", "host.hello", "Hello \ud800")
    catalog.override("en", "host.hello", "Hello {name}")
    with pytest.raises(ValidationError):
        catalog.text("host.hello", "en", name="\udc80")


def test_reloading_the_host_catalogs_does_not_grow_memory(tmp_path: Path) -> None:
    """Catalog.load_directory appends each catalog to self._host[locale] on every call: a host
    reloading its catalogs (on a signal, say) keeps every earlier copy for ever."""
    po = tmp_path / "en" / "LC_MESSAGES" / "fxcrm.po"
    po.parent.mkdir(parents=True)
    po.write_text('msgid "host.hello"\nmsgstr "Hello {name}"\n', encoding="utf-8")
    catalog = Catalog(tmp_path)
    for _ in range(20):
        catalog.load_directory(tmp_path)
    assert catalog.text("host.hello", "en", name="A") == "Hello A"
    assert max(len(v) for v in catalog._host.values()) == 1


# -- announcements -----------------------------------------------------------------------------


def test_a_receipt_is_refused_outside_the_window_and_for_another_client() -> None:
    from fxcrm_core.engagement.announcements import AnnouncementText
    from fxcrm_core.engagement.rules import Audience
    from fxcrm_core.kernel.errors import IllegalTransitionError

    clock = FixedClock(T0)
    broker = _broker(clock)
    ana, ben = broker.clients.register(PORTAL, ANA), broker.clients.register(PORTAL, BEN)
    key = broker.announcements.publish(
        BOSS, audience=Audience(), starts_at=T0 + timedelta(hours=1),
        ends_at=T0 + timedelta(hours=2), texts={"en": AnnouncementText("Hi", "Body")},
    )  # fmt: skip
    with pytest.raises(IllegalTransitionError):
        broker.announcements.mark_read(Actor.client(ana), ana, key)  # before the window
    clock.advance(timedelta(minutes=90))
    with pytest.raises(AccessDeniedError):
        broker.announcements.mark_read(Actor.client(ana), ben, key)
    assert broker.announcements.mark_read(Actor.client(ana), ana, key) is True
    clock.advance(timedelta(hours=1))
    with pytest.raises(IllegalTransitionError):
        broker.announcements.mark_read(Actor.client(ben), ben, key)  # after the window
    assert broker.store.read_stream(f"announcementreads-{ben}") == []


def test_a_call_note_or_a_call_time_of_the_wrong_type_is_typed() -> None:
    broker = _broker(FixedClock(T0))
    ana = broker.clients.register(PORTAL, ANA)
    bad: list[dict[str, object]] = [
        {"note": None},
        {"note": 5},
        {"at": datetime(2026, 11, 2, 11)},  # noqa: DTZ001 (naive)
        {"duration": timedelta(seconds=-1)},
        {"duration": 60},
    ]
    for extra in bad:
        kwargs: dict[str, object] = {
            "direction": CallDirection.INBOUND,
            "outcome": CallOutcome.ANSWERED,
            "duration": timedelta(minutes=1),
            **extra,
        }
        with pytest.raises(FxCrmError):
            broker.service_records.log_call(REP1, ana, **kwargs)  # type: ignore[arg-type]


def test_a_catalog_directory_of_the_wrong_type_is_a_typed_error() -> None:
    """Catalog(host_dir) and the broker's catalog_dir option go straight to Path(...): an int
    or bytes raises TypeError (catalog.py Catalog.load_directory, broker.py Catalog(...))."""
    for bad in (5, b"/tmp"):
        with pytest.raises(FxCrmError):
            Catalog(bad)  # type: ignore[arg-type]
    with pytest.raises(FxCrmError):
        Broker.in_memory(
            clock=FixedClock(T0),
            identity_key=b"k" * 32,
            keyring=MasterKeyring.generate(),
            catalog_dir=5,  # type: ignore[arg-type]
        )


_ZONES = ["Europe/London", "America/New_York", "Africa/Cairo", "America/Santiago", "Asia/Tokyo"]


@settings(max_examples=150, deadline=None)
@given(
    minutes=st.integers(0, 3 * 366 * 24 * 60),
    n=st.integers(0, 12),
    zone=st.sampled_from(_ZONES),
)
def test_a_deadline_is_the_end_of_the_nth_business_day_in_any_zone(
    minutes: int, n: int, zone: str
) -> None:
    """Law, against a brute-force count: the deadline is after the start, its local day (the
    instant just before it) is a business day, n business days follow the start's day (or the
    next business day), and the deadline is that day's end (the day's last instant + 1 us)."""
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    cal = BusinessCalendar({"GB": [date(2026, 4, 3), date(2026, 12, 25)]}, country="GB")
    due = cal.add_business_days(start, n, zone)
    tz = ZoneInfo(zone)
    last_day = (due - timedelta(microseconds=1)).astimezone(tz).date()
    assert due > start
    assert cal.is_business_day(last_day)
    assert due.astimezone(tz).date() != last_day  # the end of that day, not inside it
    day = start.astimezone(tz).date()
    while not cal.is_business_day(day):
        day += timedelta(days=1)
    counted = 0
    while counted < n:
        day += timedelta(days=1)
        counted += cal.is_business_day(day)
    assert last_day == day
