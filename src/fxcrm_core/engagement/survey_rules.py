"""Surveys sent by rules: when the relay records a message sent whose template is a survey's
(``csat-after-withdrawal`` -> CSAT, say), the survey is recorded as sent in the same commit as
the policy's position, once per message (its id is ``msg:<outbox key>``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fxcrm_core.engagement.outbox import MessageSent, OutboxMessage
from fxcrm_core.engagement.surveys import Survey, SurveyKind, Surveys, SurveySent
from fxcrm_core.events import RecordedEvent, UnitOfWork
from fxcrm_core.kernel.errors import ArgumentTypeError, ValidationError
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc

__all__ = ["SURVEY_RULES_POLICY", "SurveyOnSend"]

#: The policy's name (its position stream is ``policy-<name>``: keep it stable).
SURVEY_RULES_POLICY = "engagement-surveys"


class SurveyOnSend:
    """A policy handler for ``MessageSent``: a message whose template is in ``templates`` sent
    the survey of that kind, its reason the template's name (at most 64 characters)."""

    def __init__(self, surveys: Surveys, templates: Mapping[str, SurveyKind]) -> None:
        if not isinstance(surveys, Surveys):
            raise ArgumentTypeError("a survey policy needs the Surveys service")
        if isinstance(templates, str | bytes) or not isinstance(templates, Mapping):
            raise ArgumentTypeError("survey templates map template names to SurveyKind values")
        kinds: dict[str, SurveyKind] = {}
        for name, kind in templates.items():
            if not isinstance(kind, SurveyKind):
                raise ArgumentTypeError("survey templates map template names to SurveyKind values")
            clean = checked_text(name, "survey template", 64)
            if clean != name:
                raise ValidationError("a survey template is named as its messages name it")
            kinds[clean] = kind
        self.surveys = surveys
        self.templates: Mapping[str, SurveyKind] = kinds

    def on_message_sent(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """Record the survey the sent message carried into ``uow``; nothing for other
        templates, and nothing when that message's survey is recorded already (a replay)."""
        event = recorded.event
        if isinstance(event, MessageSent):
            self.on_sent(event, uow)

    def on_sent(self, event: MessageSent, uow: UnitOfWork) -> None:
        """The same, from the relay's own unit of work: the survey is recorded in the commit
        that records the message sent (the broker's wiring)."""
        if not self.templates:
            return
        message = uow.load(OutboxMessage, event.key)
        queued = None if message is None else message.queued
        if queued is None:
            raise ValidationError("a message was sent that was never queued")
        kind = self.templates.get(queued.template)
        if kind is None:
            return
        survey_id = f"msg:{queued.key}"  # the id Surveys.send gives a message's survey
        known = uow.load(Survey, survey_id)
        if known is not None and known.version > 0:
            return
        if uow.staged_on(Survey.stream_id_for(survey_id)):
            return
        sent = SurveySent(
            survey_id, queued.client_id, kind, queued.template, to_utc(event.at, "at"), queued.key
        )
        uow.record(Survey.blank(survey_id), sent)
