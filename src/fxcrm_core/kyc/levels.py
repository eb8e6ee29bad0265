"""A client's verification level as recorded: each change is an event (what the level became,
from what), kept by a policy that recomputes the level after every KYC decision."""

from __future__ import annotations

from typing import Self

import attrs

from fxcrm_core.events import Aggregate, DomainEvent
from fxcrm_core.kernel.errors import ValidationError

__all__ = ["LEVEL_EVENTS", "KycLevelChanged", "KycStatus"]


@attrs.frozen
class KycLevelChanged(DomainEvent):
    client_id: str
    previous: int
    level: int


LEVEL_EVENTS = (KycLevelChanged,)


@attrs.frozen(kw_only=True)
class KycStatus(Aggregate):
    """The level a client was last recorded at (one stream per client)."""

    category = "kyclevel"
    level: int = 0

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, KycLevelChanged):
            return self.evolve(level=event.level)
        raise ValidationError(f"KycStatus cannot apply {type(event).__name__}")

    def record(self, level: int) -> list[DomainEvent]:
        return [] if level == self.level else [KycLevelChanged(self.id, self.level, level)]
