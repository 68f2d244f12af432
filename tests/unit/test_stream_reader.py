"""The stream reader's order (durably_sched/stream/reader.py): a run's transitions, steps and log
lines, read from three tables, come out in the order they happened, from what the rows record (the
step count and attempt at each write), not from their clocks: here every row has the same time,
as fast steps on SQLite's millisecond clock do. What relies on it: ``subscribe()`` of a run executing
in another process shows the same story its own emitter tells."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from durably_sched.store.base import LogRecord, StepRecord
from durably_sched.store.run_events import RunEventRecord, StreamBatch
from durably_sched.stream.reader import merge

AT = datetime(2026, 12, 6, 12, tzinfo=UTC)
RUN = "r1"


def event(id: int, type: str, attempt: int, count: int) -> RunEventRecord:
    return RunEventRecord(id, RUN, type, attempt, count, AT)


def step(index: int, name: str) -> StepRecord:
    return StepRecord(RUN, index, name, "null", AT, AT)


def line(id: int, message: str, step_name: str | None = None) -> LogRecord:
    return LogRecord(id, RUN, step_name, "info", message, {}, AT)


def names(rows: list[Any]) -> list[str]:
    out = []
    for row in rows:
        if isinstance(row, RunEventRecord):
            out.append(f"{row.type}#{row.attempt}")
        elif isinstance(row, StepRecord):
            out.append(f"step {row.name}")
        else:
            out.append(f"log {row.message}")
    return out


def test_a_retried_and_woken_run_reads_in_the_order_it_happened() -> None:
    batch = StreamBatch(
        events=[
            event(1, "run:trigger", 0, 0),
            event(2, "run:start", 1, 0),
            event(3, "run:retry-scheduled", 1, 1),  # step "render" failed after "fetch"
            event(4, "run:start", 2, 1),
            event(5, "run:waiting", 2, 2),
            event(6, "run:wake", 2, 2),
            event(7, "run:start", 3, 2),
            event(8, "run:complete", 3, 3),
        ],
        steps=[step(0, "fetch"), step(1, "render"), step(2, "publish")],
        logs=[
            line(10, "fetched"),  # after "fetch", written with the failure (attempt 1, count 1)
            line(11, "rendering", "render"),  # in the failing step
            line(12, "fetched"),  # attempt 2 replays "fetch", logs again before "render" completes
            line(13, "fetched"),  # attempt 3, before "publish"
            line(14, "done"),  # written with the completion
        ],
        limit=100,
        log_places={10: (1, 1), 11: (1, 1), 12: (2, 1), 13: (3, 2), 14: (3, 3)},
    )
    assert names(merge(batch)) == [
        "run:trigger#0",
        "run:start#1",
        "step fetch",
        "log fetched",
        "log rendering",
        "run:retry-scheduled#1",
        "run:start#2",
        "log fetched",
        "step render",
        "run:waiting#2",
        "run:wake#2",
        "run:start#3",
        "log fetched",
        "step publish",
        "log done",
        "run:complete#3",
    ]


def test_a_source_cut_at_its_limit_cuts_the_read_after_its_last_row() -> None:
    """More steps wait in the table than the read took: nothing that follows the last step read is
    handed out yet (the next read continues from there, in order)."""
    batch = StreamBatch(
        events=[event(1, "run:start", 1, 0), event(2, "run:complete", 1, 3)],
        steps=[step(0, "a"), step(1, "b")],
        logs=[line(5, "after b", None)],
        limit=2,
        log_places={5: (1, 2)},
    )
    assert names(merge(batch)) == ["run:start#1", "step a", "step b"]


def test_lines_written_before_the_upgrade_are_placed_by_their_time() -> None:
    later = AT + timedelta(milliseconds=5)
    batch = StreamBatch(
        events=[event(1, "run:start", 1, 0), RunEventRecord(2, RUN, "run:complete", 1, 1, later)],
        steps=[StepRecord(RUN, 0, "a", "null", AT, AT + timedelta(milliseconds=2))],
        logs=[LogRecord(7, RUN, None, "info", "old", {}, AT + timedelta(milliseconds=1))],
        limit=100,
    )
    assert names(merge(batch)) == ["run:start#1", "log old", "step a", "run:complete#1"]


def test_a_stored_steps_event_is_the_one_its_class_makes_from_the_same_fields() -> None:
    """``step_complete`` sets the event's slots directly (the stream's hottest event): the result is
    the event ``StepCompleteEvent(...)`` makes, field for field, and as frozen."""
    import dataclasses

    import pytest

    from durably_sched.events import RunScope, StepCompleteEvent
    from durably_sched.stream.reader import step_complete

    scope: RunScope = {"run_id": RUN, "job_name": "report", "labels": {"team": "ops"}}
    row = StepRecord(RUN, 4, "fetch", '{"rows": [1, 2], "note": "é"}', AT, AT + timedelta(seconds=1.5))
    made = step_complete(scope, row)
    expected = StepCompleteEvent(
        **scope, step_name="fetch", step_index=4, output={"rows": [1, 2], "note": "é"}, duration=1.5
    )
    assert type(made) is StepCompleteEvent
    assert dataclasses.replace(made, timestamp=0.0) == dataclasses.replace(expected, timestamp=0.0)
    assert abs(made.timestamp - expected.timestamp) < 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.step_name = "other"  # type: ignore[misc]
