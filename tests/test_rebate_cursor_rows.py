"""A batch's (deal ticket, feed cursor) pairs: stored as the JSON arrays the generic codec
wrote before (books already written read the same), read back in one pass."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.commissions import REBATE_EVENTS, RebateEntriesRecorded
from fxcrm_core.events import EventCodec, EventMetadata, EventRegistry
from fxcrm_core.kernel import CodecError


def codec() -> EventCodec:
    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    return EventCodec(registry)


PAIRS = st.lists(st.tuples(st.integers(0, 2**62), st.integers(0, 2**62)), max_size=50)


@given(PAIRS)
def test_cursors_round_trip_the_log_as_arrays_of_two_integers(pairs: list[tuple[int, int]]) -> None:
    c = codec()
    event = RebateEntriesRecorded("mt5", 9, (), tuple(pairs))
    stored = c.encode("rebatefeed-mt5", event, EventMetadata("system:test"))
    assert json.loads(stored.data)["cursors"] == [list(p) for p in pairs]
    decoded = c.decode_event("rebatefeed-mt5", stored.event_type, stored.data)
    assert isinstance(decoded, RebateEntriesRecorded)
    assert decoded == event
    assert decoded.cursors == tuple(pairs)
    assert all(type(t) is int and type(n) is int for t, n in decoded.cursors)


@pytest.mark.parametrize(
    "cursors",
    ["[[1,2,3]]", "[[1]]", '[["x",2]]', "[null]", '{"1":2}', "[[1,null]]"],
)
def test_a_malformed_cursor_row_is_a_typed_error(cursors: str) -> None:
    payload = f'{{"server":"mt5","upto_cursor":1,"entries":[],"cursors":{cursors}}}'.encode()
    with pytest.raises(CodecError):
        codec().decode_event("rebatefeed-mt5", "RebateEntriesRecorded", payload)
