"""A streamed event's JSON written field by field (``_json.streamed_event_json``, the hot path of busy
streams) is the very text the general path writes: the dict of ``streamed_event`` encoded whole,
with ``default=str`` when it holds a value JSON does not know. Generated events of every class the
run feed delivers, with any values in their fields (large, long, odd strings, NaN, unknown types)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from durably_sched.events import (
    Event,
    LogWriteEvent,
    RunCancelEvent,
    RunCompleteEvent,
    RunDeleteEvent,
    RunFailEvent,
    RunProgressEvent,
    RunRetryEvent,
    RunRetryScheduledEvent,
    RunStartEvent,
    RunTriggerEvent,
    RunWaitingEvent,
    StepCompleteEvent,
)
from durably_sched.store.base import Progress
from durably_sched.stream import FeedDroppedEvent, RunReleaseEvent, RunWokenEvent, StoredLogWriteEvent
from durably_sched.web import _json
from durably_sched.web._sse import sse, sse_frame

TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["\u2028", "\ud800", '\x00\n\r"\\', "é" * 3000, "x" * 5000]),
)
LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(), TEXT,
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.0, 1e300, 2**63]),
    st.builds(Decimal, st.integers()), st.just(datetime(2026, 1, 1, tzinfo=UTC)),
)  # fmt: skip
VALUE = st.recursive(
    LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
) | st.just({"big": "y" * 5000})
KINDS = [
    LogWriteEvent, RunCancelEvent, RunCompleteEvent, RunDeleteEvent, RunFailEvent, RunProgressEvent,
    RunRetryEvent, RunStartEvent, RunTriggerEvent, RunWaitingEvent, StepCompleteEvent,
    FeedDroppedEvent, RunReleaseEvent, StoredLogWriteEvent, RunRetryScheduledEvent, RunWokenEvent,
]  # fmt: skip
LABELS = st.dictionaries(st.text(max_size=6), st.text(max_size=8), max_size=3) | st.just({"k": "v" * 5000})


def _field_value(name: str, draw: Any) -> Any:
    if name == "labels":
        return draw(LABELS)
    if name == "progress":
        return Progress(draw(st.integers(0, 9)), draw(st.none() | st.integers(1, 9)), draw(st.none() | TEXT))
    if name in ("message", "error", "traceback", "step_name"):
        return draw(TEXT | VALUE)
    if name in ("created_at", "timestamp"):
        return draw(st.sampled_from([datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC), 1.5, 17]))
    return draw(LEAF | VALUE)


@st.composite
def events(draw: Any) -> Event:
    kind = draw(st.sampled_from(KINDS))
    fields = {f.name: _field_value(f.name, draw) for f in dataclasses.fields(kind) if f.name != "type"}
    return kind(**fields)  # type: ignore[no-any-return]


@settings(max_examples=400, deadline=None)
@given(events())
def test_the_fast_text_is_the_general_text(event: Event) -> None:
    assert sse_frame(event.type, _json.streamed_event_json(event)) == sse(
        event.type, _json.streamed_event(event)
    )


def test_events_sharing_labels_share_their_text_until_the_dict_changes() -> None:
    labels = {"schedule": "nightly"}
    first = StepCompleteEvent(run_id="r", job_name="j", labels=labels, step_name="a", output=1)
    assert '"labels":{"schedule":"nightly"}' in _json.streamed_event_json(first)
    labels["schedule"] = "hourly"  # the same dict, changed in place
    second = StepCompleteEvent(run_id="r", job_name="j", labels=labels, step_name="b", output=2)
    assert '"labels":{"schedule":"hourly"}' in _json.streamed_event_json(second)
