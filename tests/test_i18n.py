"""i18n: the shipped catalogs are complete and consistent, the fallback chain and host texts
obey their laws, money and dates are what Babel itself renders, and a second process renders
the same message from the same log."""

from __future__ import annotations

import ast
import string
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import babel.dates
import babel.numbers
import pytest
from babel.messages.pofile import read_po
from hypothesis import given, settings
from hypothesis import strategies as st

import fxcrm_core.i18n
from fxcrm_core.access import Actor, Role
from fxcrm_core.activity.statement import FlowKind
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration
from fxcrm_core.commissions.engine import EntryKind
from fxcrm_core.engagement import (
    Channel,
    Courtesy,
    EngagementRule,
    MemoryNotifier,
    MessageKind,
    OnEvent,
    OutboxMessage,
)
from fxcrm_core.i18n import Catalog, Term, locale_chain
from fxcrm_core.kernel import Currency, FixedClock, Money, errors
from fxcrm_core.kyc.documents import DocumentType
from fxcrm_core.loyalty.segments import Segment
from fxcrm_core.payments.deposits import LimitExceededError
from fxcrm_core.payments.wires import DuplicateBankLineError, DuplicateWireReferenceError

PACKAGE = Path(fxcrm_core.i18n.__file__).parent
EN = PACKAGE / "locale" / "en" / "LC_MESSAGES" / "fxcrm.po"
ZH = PACKAGE / "locale" / "zh_CN" / "LC_MESSAGES" / "fxcrm.po"
TEMPLATES = (
    "welcome",
    "news",
    "tier-up",
    "win-back",
    "birthday",
    "kyc-expiring",
    "withdrawal-paid",
)
CATALOG = Catalog()


def _po(path: Path) -> dict[str, tuple[str, bool]]:
    with path.open("rb") as f:
        return {str(m.id): (str(m.string), m.fuzzy) for m in read_po(f) if m.id and m.id != ""}


def _names(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


# -- completeness ----------------------------------------------------------------------------
def test_every_english_msgid_has_a_chinese_text_with_the_same_placeholders() -> None:
    en, zh = _po(EN), _po(ZH)
    assert set(en) == set(zh)
    for msgid, (text, fuzzy) in en.items():
        assert text.strip(), msgid
        assert not fuzzy, msgid
        zh_text, zh_fuzzy = zh[msgid]
        assert zh_text.strip(), f"no zh_CN text for {msgid}"
        assert not zh_fuzzy, f"the zh_CN text of {msgid} is fuzzy"
        assert _names(zh_text) == _names(text), f"placeholders differ for {msgid}"


def test_the_shipped_set_covers_templates_terms_labels_and_errors() -> None:
    known = CATALOG.msgids()
    for tid in TEMPLATES:
        assert {f"template.{tid}.subject", f"template.{tid}.body"} <= known
    assert {f"segment.{s.value}" for s in Segment} <= known
    assert {f"tier.{t}" for t in ("bronze", "silver", "gold")} <= known
    assert {f"flow.{k.value}" for k in FlowKind} <= known
    assert {f"rebate.{k.value}" for k in EntryKind} <= known
    assert {f"document.{d.value}" for d in DocumentType} <= known
    kernel = [
        c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.FxCrmError)
    ]
    payments = [LimitExceededError, DuplicateWireReferenceError, DuplicateBankLineError]
    for cls in (*kernel, *payments):
        assert f"error.{cls.__name__}" in known, cls.__name__
        for locale in ("en", "zh_CN"):
            assert CATALOG.error_text(cls(), locale) == CATALOG.text(
                f"error.{cls.__name__}", locale
            )


def test_the_po_files_are_package_data_and_the_package_imports_only_the_kernel() -> None:
    assert EN.is_file()
    assert ZH.is_file()
    for module in PACKAGE.glob("*.py"):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fxcrm_core"):
                assert (node.module or "").startswith(("fxcrm_core.kernel", "fxcrm_core.i18n"))


# -- formats: what Babel itself renders ------------------------------------------------------
@pytest.mark.parametrize("locale", ["en", "zh_CN"])
@pytest.mark.parametrize(("amount", "code"), [("1234.50", "USD"), ("1234567", "JPY")])
def test_money_and_dates_are_what_babel_renders(locale: str, amount: str, code: str) -> None:
    paid_at = datetime(2026, 1, 2, 23, 30, tzinfo=UTC)
    zone = ZoneInfo("Asia/Shanghai")  # already 3 January there
    rendered = CATALOG.render(
        "withdrawal-paid", locale, {"amount": Money.of(amount, code), "paid_at": paid_at}, zone=zone
    )
    money = babel.numbers.format_currency(Decimal(amount), code, locale=locale)
    when = babel.dates.format_datetime(paid_at, "medium", tzinfo=zone, locale=locale)
    template = CATALOG.lookup("template.withdrawal-paid.body", locale)
    assert template is not None
    assert rendered.body == template[0].format(amount=money, paid_at=when)
    assert money in rendered.subject
    day = date(2027, 1, 31)
    expiring = CATALOG.render(
        "kyc-expiring", locale, {"document_type": Term("document.passport"), "expires_on": day}
    )
    assert babel.dates.format_date(day, "long", locale=locale) in expiring.subject
    assert CATALOG.text("document.passport", locale) in expiring.body


def test_outbox_pairs_become_typed_parameters() -> None:
    pairs = [("document_type", "passport"), ("expires_on", "2027-01-31"), ("tier", "platinum")]
    params = CATALOG.message_params(pairs)
    assert params == {
        "document_type": Term("document.passport"),
        "expires_on": date(2027, 1, 31),
        "tier": "platinum",  # a host's own tier, no text: shown as given
    }
    assert CATALOG.message_params([("amount", "12.50 USD"), ("paid_at", "nope")]) == {
        "amount": Money.of("12.50", "USD"),
        "paid_at": "nope",
    }
    zh = CATALOG.render("tier-up", "zh_CN", CATALOG.message_params([("tier", "gold")]))
    assert "黄金" in zh.subject


# -- laws ------------------------------------------------------------------------------------
LOCALES = ["en", "en_GB", "zh_CN", "zh-CN", "zh", "zh_SG", "zh_TW", "zh_HK", "fr", "de_CH", "ja"]
MSGIDS = sorted(CATALOG.msgids())


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(LOCALES), st.sampled_from(MSGIDS))
def test_a_text_comes_from_the_first_catalog_of_the_chain(locale: str, msgid: str) -> None:
    chain = locale_chain(locale)
    assert chain[-1] == "en"
    found = CATALOG.lookup(msgid, locale)
    assert found is not None
    first = next(step for step in chain if step in ("en", "zh_Hans_CN"))
    assert found[1] == first
    expected = _po(ZH if first == "zh_Hans_CN" else EN)[msgid][0]
    assert found[0] == expected


def test_the_documented_chain() -> None:
    assert locale_chain("zh_CN") == ("zh_Hans_CN", "zh_Hans", "zh", "en")
    assert "zh_Hans_CN" in locale_chain("zh")
    assert "zh_Hans_CN" not in locale_chain("zh_TW")
    assert CATALOG.text("tier.gold", "zh_TW") == "Gold"  # not Simplified for Traditional


TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs")), min_size=1, max_size=30
).filter(str.strip)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(LOCALES), TEXT, st.sampled_from(LOCALES))
def test_an_override_wins_where_its_locale_is_reached_first(
    where: str, text: str, other: str
) -> None:
    catalog = Catalog()
    before = catalog.text("tier.gold", other)
    catalog.override(where, "tier.gold", text.replace("{", "{{").replace("}", "}}"))
    assert catalog.text("tier.gold", where) == text
    chain = locale_chain(other)
    target = locale_chain(where)[0]
    shipped = ("en", "zh_Hans_CN")  # the steps with a text of their own before the override
    reached = target in chain and not any(s in shipped for s in chain[: chain.index(target)])
    assert catalog.text("tier.gold", other) == (text if reached else before)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["en", "zh_CN"]), TEXT)
def test_a_parameter_is_shown_verbatim_never_reinterpreted(locale: str, value: str) -> None:
    rendered = CATALOG.render("tier-up", locale, [("tier", value)])
    template = CATALOG.lookup("template.tier-up.subject", locale)
    assert template is not None
    assert rendered.subject == template[0].replace("{tier}", value)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["USD", "JPY", "EUR", "KWD"]),
    st.integers(min_value=0, max_value=10**12),
    st.sampled_from(["en", "zh_CN", "de_CH", "ja"]),
)
def test_money_is_the_kernels_locale_format(code: str, minor: int, locale: str) -> None:
    money = Money.of(Decimal(minor).scaleb(-Currency.of(code).minor_units), code)
    rendered = CATALOG.render(
        "withdrawal-paid", locale, {"amount": money, "paid_at": datetime(2026, 1, 1, tzinfo=UTC)}
    )
    assert money.format(locale) in rendered.body


# -- host texts ------------------------------------------------------------------------------
def _write(root: Path, locale: str, texts: dict[str, str]) -> None:
    path = root / locale / "LC_MESSAGES"
    path.mkdir(parents=True, exist_ok=True)
    body = "".join(f'msgid "{k}"\nmsgstr "{v}"\n\n' for k, v in texts.items())
    (path / "fxcrm.po").write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n' + body,
        encoding="utf-8",
    )


def test_a_host_adds_a_language_and_a_template(tmp_path: Path) -> None:
    _write(tmp_path, "en", {"template.promo.subject": "{bonus} bonus", "template.promo.body": "Hi"})
    _write(tmp_path, "fr", {"template.promo.subject": "Bonus de {bonus}", "tier.gold": "Or"})
    catalog = Catalog(tmp_path)
    again = Catalog(tmp_path)  # a restart reads the same files: the same texts
    for c in (catalog, again):
        assert c.text("tier.gold", "fr_CA") == "Or"
        promo = c.render("promo", "fr", {"bonus": Money.of(50, "EUR")})
        assert promo.subject == f"Bonus de {Money.of(50, 'EUR').format('fr')}"
        assert promo.body == "Hi"  # the English body: fr has no text for it


def test_inconsistent_host_texts_are_refused_typed(tmp_path: Path) -> None:
    catalog = Catalog()
    with pytest.raises(errors.ValidationError, match="placeholders"):
        catalog.override("zh_CN", "template.tier-up.subject", "升级")
    with pytest.raises(errors.ValidationError, match="placeholders"):
        catalog.override("en", "template.tier-up.subject", "Up to {level}")
    with pytest.raises(errors.ValidationError, match="English text first"):
        catalog.override("fr", "template.new.subject", "Nouveau")
    with pytest.raises(errors.ValidationError, match="control character"):
        catalog.override("en", "template.welcome.subject", "Hi\nBcc: x@example.com")
    with pytest.raises(errors.ValidationError, match="placeholder"):
        catalog.override("en", "template.x.body", "{amount.__class__}")
    _write(tmp_path, "de", {"template.tier-up.subject": "Stufe"})
    with pytest.raises(errors.ValidationError):
        catalog.load_directory(tmp_path)
    assert catalog.text("template.tier-up.subject", "de", tier="x") == "You reached the x tier"
    with pytest.raises(errors.ValidationError, match="'tier'"):
        catalog.render("tier-up", "en")
    with pytest.raises(errors.NotFoundError):
        catalog.render("nope", "en")
    with pytest.raises(errors.ValidationError):
        catalog.text("tier.gold", "not a locale!")
    with pytest.raises(errors.FloatNotAllowedError):
        catalog.render("tier-up", "en", {"tier": 1.5})
    with pytest.raises(errors.NaiveDatetimeError):
        catalog.text("statement.period", "en", start=datetime(2026, 1, 1), end="x")  # noqa: DTZ001
    with pytest.raises(errors.ValidationError, match="control"):
        catalog.render("tier-up", "en", {"tier": "gold\r\n"})
    with pytest.raises(errors.ArgumentTypeError):
        catalog.error_text(ValueError("x"), "en")


def test_an_error_code_wins_when_its_parameters_are_given() -> None:
    refusal = LimitExceededError("withdrawals are limited to 500.00 USD a day")
    refusal.code = "refusal.withdrawal.daily_limit"  # type: ignore[attr-defined]
    limit = Money.of(500, "USD")
    assert CATALOG.error_text(refusal, "zh_CN", limit=limit) == "每日出金限额为US$500.00。"
    assert CATALOG.error_text(refusal, "zh_CN") == CATALOG.text("error.LimitExceededError", "zh_CN")


# -- one log, two processes ------------------------------------------------------------------
def test_two_processes_render_the_same_message_from_one_log(tmp_path: Path) -> None:
    clock = FixedClock(datetime(2026, 11, 2, 12, tzinfo=UTC))
    rule = EngagementRule(
        rule_id="welcome",
        trigger=OnEvent.registered(),
        template="welcome",
        channel=Channel.EMAIL,
        kind=MessageKind.SERVICE,
    )

    def broker(notifier: MemoryNotifier) -> Broker:
        return Broker.sqlite(
            tmp_path / "b.sqlite",
            clock=clock,
            allow_clear_pii=True,
            engagement_rules=(rule,),
            notifier=notifier,
            courtesy=Courtesy(quiet_start=None, quiet_end=None, caps=()),
            client_zones={"GB": "Europe/London"},
            client_languages={"GB": "zh_CN"},
            identity_key=b"k" * 32,
        )

    first_notifier, second_notifier = MemoryNotifier(), MemoryNotifier()
    first = broker(first_notifier)
    first.clients.register(
        Actor.system("portal", Role.PORTAL),
        Registration(
            ClientKind.INDIVIDUAL, "GB", "Ana Lima", "ana@example.com", "07911 123456",
            "x1234567", owner_id="staff:rep-1",
        ),
    )  # fmt: skip
    assert first.send_messages().sent == 1
    second = broker(second_notifier)  # another process over the same file
    assert second.send_messages().handled == 0  # already sent: read from the log
    (envelope,) = first_notifier.wire
    assert envelope.locale == "zh_CN"
    sent = Catalog().render(envelope.template, envelope.locale, envelope.params)
    assert sent.subject == "欢迎开立新账户"
    for process in (first, second, broker(MemoryNotifier())):  # and after a restart
        (key,) = {r.stream_id for r in process.store.read_all(after_position=0, limit=10_000)
                  if r.stream_id.startswith("outbox-")}  # fmt: skip
        message = process.repository.load(OutboxMessage, key.removeprefix("outbox-"))
        assert message is not None
        assert message.queued is not None
        queued = message.queued
        assert Catalog().render(queued.template, queued.locale, queued.params) == sent
