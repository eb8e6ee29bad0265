"""The contract of the Notifier port: subclass :class:`NotifierContract` and implement
:meth:`~NotifierContract.make_notifier`, :meth:`~NotifierContract.consumed` (what the consumer
side acted on, once per key) and :meth:`~NotifierContract.fail_next` (make the next sends fail,
for the error tests; leave it raising ``pytest.skip`` if an adapter cannot)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxcrm_core.engagement.notifier import (
    Channel,
    DeliveryError,
    Envelope,
    MessageKind,
    Notifier,
    Receipt,
)
from fxcrm_core.kernel.errors import FxCrmError

__all__ = ["NotifierContract", "envelope"]

T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
_SECRET = "s3cret-param-value"


def envelope(key: str = "welcome:once:c-1", attempt: int = 1, **changes: Any) -> Envelope:
    """A plain envelope for the suites (its parameter value must never show in an error)."""
    base = Envelope(
        key, key.rsplit(":", 1)[-1], Channel.EMAIL, "welcome", (("first_name", _SECRET),), "en",
        MessageKind.MARKETING, attempt,
    )  # fmt: skip
    return attrs.evolve(base, **changes) if changes else base


class NotifierContract:
    """Every ``test_*`` here runs on the adapter :meth:`make_notifier` builds."""

    #: The failures the adapter can give: retryable (True) and for good (False). A wire whose
    #: every failure is retryable (a message broker) names (True,) only.
    failure_kinds: tuple[bool, ...] = (True, False)

    def make_notifier(self) -> Notifier:
        raise NotImplementedError

    def consumed(self, notifier: Notifier) -> Sequence[str] | Mapping[str, Envelope]:
        """The keys the consumer acted on: a list with one entry per act (a key acted on twice
        shows twice), or the consumer's own mapping of key -> the envelope acted on."""
        raise NotImplementedError

    def fail_next(self, notifier: Notifier, count: int, *, retryable: bool) -> None:
        """Make the next ``count`` sends fail with :class:`DeliveryError`."""
        pytest.skip("this adapter cannot be made to fail on demand")

    # -- helpers ----------------------------------------------------------------------------
    def _acted(self, notifier: Notifier) -> list[str]:
        return sorted(self.consumed(notifier))

    @pytest.fixture
    def notifier(self) -> Notifier:
        return self.make_notifier()

    # -- the contract -----------------------------------------------------------------------
    def test_send_returns_a_receipt_for_the_key(self, notifier: Notifier) -> None:
        receipt = notifier.send(envelope(), T0)
        assert isinstance(receipt, Receipt)
        assert receipt.key == "welcome:once:c-1"
        assert isinstance(receipt.reference, str)
        assert receipt.reference
        assert receipt.at.tzinfo is not None
        assert self._acted(notifier) == ["welcome:once:c-1"]

    def test_the_same_key_twice_is_acted_on_once(self, notifier: Notifier) -> None:
        first = notifier.send(envelope(attempt=1), T0)
        again = notifier.send(envelope(attempt=2), T0 + timedelta(minutes=5))
        assert first.key == again.key == "welcome:once:c-1"
        assert self._acted(notifier) == ["welcome:once:c-1"]

    def test_distinct_keys_are_each_acted_on(self, notifier: Notifier) -> None:
        keys = [f"welcome:once:c-{n}" for n in range(5)]
        for key in keys:
            assert notifier.send(envelope(key), T0).key == key
        assert self._acted(notifier) == sorted(keys)

    def test_every_channel_and_kind_is_accepted(self, notifier: Notifier) -> None:
        keys = []
        for n, channel in enumerate(Channel):
            for kind in MessageKind:
                key = f"r:p:c-{n}-{kind.value}"
                keys.append(key)
                notifier.send(envelope(key, channel=channel, kind=kind), T0)
        assert self._acted(notifier) == sorted(keys)

    def test_failures_are_delivery_errors_without_the_parameters(self, notifier: Notifier) -> None:
        for retryable in self.failure_kinds:
            self.fail_next(notifier, 1, retryable=retryable)
            with pytest.raises(DeliveryError) as caught:
                notifier.send(envelope(), T0)
            assert isinstance(caught.value, FxCrmError)
            assert caught.value.retryable is retryable
            assert _SECRET not in str(caught.value)
            assert _SECRET not in repr(caught.value)
            assert self._acted(notifier) == []

    def test_a_retry_after_a_failure_is_acted_on_once(self, notifier: Notifier) -> None:
        self.fail_next(notifier, 2, retryable=True)
        for attempt in (1, 2):
            with pytest.raises(DeliveryError):
                notifier.send(envelope(attempt=attempt), T0)
        notifier.send(envelope(attempt=3), T0)
        notifier.send(envelope(attempt=4), T0)  # a relay that crashed before recording it
        assert self._acted(notifier) == ["welcome:once:c-1"]

    def test_racing_senders_of_one_key_act_once(self, notifier: Notifier) -> None:
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def send() -> None:
            try:
                start.wait()
                notifier.send(envelope(), T0)
            except BaseException as exc:  # collected for the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert self._acted(notifier) == ["welcome:once:c-1"]

    @settings(
        max_examples=25,
        # One law run by each adapter's subclass (the executor differs by design).
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(st.lists(st.integers(0, 5), max_size=20))
    def test_acted_on_is_the_set_of_keys_sent(self, sends: list[int]) -> None:
        notifier = self.make_notifier()
        for n in sends:
            notifier.send(envelope(f"r:p:c-{n}"), T0)
        assert self._acted(notifier) == sorted({f"r:p:c-{n}" for n in sends})
