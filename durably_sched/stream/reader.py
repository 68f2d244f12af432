"""The stream reader: one run's stored changes, in order, as the events the emitter names.

A run's stream has three sources (``store.run_events``): its transitions (``run_events``), its
steps and its logs, each read past its own position by :meth:`Store.get_run_streams` in one
statement, so the three agree. Each source is in order by itself; :func:`merge` interleaves them
by what the rows prove, and by time only where nothing else tells:

* a transition recorded at step count *n* came before step *n* completed and after step *n - 1*;
* a log line carries the run's attempt and step count when it was written (schema v12; a line
  written with a step's checkpoint has the count from before it): written at count *n*, it came
  before step *n* completed; it follows its attempt's ``run:start`` and precedes the transition
  that ends that attempt (and whatever follows that end);
* a log line written before v12 has neither: the earlier time first (at equal times a transition
  that starts something goes before it, one that ends something after it).

When a source stopped at the read's limit, the merged list is cut after that source's last row:
what follows it is read, in order, by the next read.

:func:`build_events` turns the rows into events. What a run's stream carries, and what it does not:

=========================================  ==================================================
stored                                     event
=========================================  ==================================================
a ``run:start`` row                        ``run:start`` (attempt, steps it resumes after)
a step row                                 ``step:complete`` (name, index, output, duration)
a log row                                  ``log:write`` (:class:`StoredLogWriteEvent`)
``run:retry-scheduled`` / ``run:fail``     ``step:fail`` first when a step failed, then the
                                           transition (error, failed step, delay)
``run:waiting`` / ``run:wake``             ``run:waiting`` (``waiting_for``) / ``run:woken``
``run:release`` / ``run:retry``            ``run:release`` / ``run:retry``
``run:complete`` / ``run:cancel``          ``run:complete`` (output) / ``run:cancel``
the run row's progress (sampled)           ``run:progress`` (the latest value per read)
the run row is gone                        ``run:delete``
a new runs row (the run list only)         ``run:trigger``
=========================================  ==================================================

Not carried: ``step:start`` (a step's start writes nothing, and writing it would add a statement
per step to the checkpoint path: the in-process emitter has it), ``step:cancel``, ``run:leased``,
``run:lease-renewed``, ``run:coalesced`` and ``worker:error`` (this process's own).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from ..events import (
    Event,
    LogWriteEvent,
    RunCancelEvent,
    RunCompleteEvent,
    RunEvent,
    RunFailEvent,
    RunProgressEvent,
    RunRetryEvent,
    RunRetryScheduledEvent,
    RunScope,
    RunStartEvent,
    RunTriggerEvent,
    RunWaitingEvent,
    StepCompleteEvent,
    StepFailEvent,
    run_scope,
)
from ..record_fields import attributes
from ..store._common import loads
from ..store.base import LogRecord, Progress, RunRecord, StepRecord
from ..store.run_events import RunEventRecord, StreamBatch, StreamPosition

__all__ = [
    "OPENING",
    "TERMINAL_TYPES",
    "RunReleaseEvent",
    "RunWokenEvent",
    "StoredLogWriteEvent",
    "advance",
    "build_events",
    "end_of",
    "merge",
    "step_complete",
    "transition_event",
]

Row = RunEventRecord | StepRecord | LogRecord

OPENING = frozenset({"run:trigger", "run:start", "run:wake", "run:retry"})
"""Transitions that start something: at equal times they go before a log line."""
_LOG_LINE = ("step_name", "level", "message", "data")
"""The fields a stored log line and its ``log:write`` event share."""
TERMINAL_TYPES = ("run:complete", "run:fail", "run:cancel", "run:delete")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReleaseEvent(RunEvent):
    """A running run was given back (graceful stop of its worker): pending again."""

    type: str = "run:release"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunWokenEvent(RunEvent):
    """A waiting run's wait ended (its time came, its event arrived, its children finished): it is
    pending again. (In process, ``run:wake`` counts the runs a worker woke.)"""

    type: str = "run:woken"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredLogWriteEvent(LogWriteEvent):
    """``log:write`` as the stream reads it: with the stored log's id and time."""

    log_id: int = 0
    created_at: datetime | None = None

    def record(self) -> LogRecord:
        """The stored log line this event was read from."""
        assert self.created_at is not None
        return LogRecord(
            id=self.log_id, run_id=self.run_id, **attributes(self, *_LOG_LINE), created_at=self.created_at
        )


def _time(row: Row) -> datetime:
    if isinstance(row, RunEventRecord):
        return row.at
    if isinstance(row, StepRecord):
        return row.completed_at
    return row.created_at


class _Order:
    """Which of two rows of different sources of one read happened first (the module's rules)."""

    def __init__(self, batch: StreamBatch) -> None:
        self.places = batch.log_places

    def before(self, a: Row, b: Row) -> bool:
        if isinstance(a, StepRecord):
            return not self.before(b, a)
        if isinstance(a, RunEventRecord):
            if isinstance(b, StepRecord):
                return a.step_count <= b.index
            assert isinstance(b, LogRecord)
            return not self._log_first(b, a)
        assert isinstance(a, LogRecord)
        if isinstance(b, RunEventRecord):
            return self._log_first(a, b)
        assert isinstance(b, StepRecord)
        place = self.places.get(a.id)
        if place is not None:
            return place[1] <= b.index  # written at step count n: before step n completed
        return a.created_at < b.completed_at

    def _log_first(self, log: LogRecord, event: RunEventRecord) -> bool:
        place = self.places.get(log.id)
        if place is None:  # a line written before schema v12: by time
            if event.at != log.created_at:
                return log.created_at < event.at
            return event.type not in OPENING
        attempt = place[0]
        if event.type == "run:trigger":
            return False
        if event.type == "run:start":
            return attempt < event.attempt  # an attempt's lines follow its start
        return attempt <= event.attempt  # ... and precede its end (and what follows the end)


def merge(batch: StreamBatch) -> list[Row]:
    """The rows of ``batch`` in the order they happened (see the module's rules), cut after the
    last row of a source that stopped at the read's limit."""
    sources: list[list[Row]] = [list(batch.events), list(batch.steps), list(batch.logs)]
    found = [source for source in sources if source]
    if len(found) <= 1:  # one source (most reads of a busy run: its new steps): already in order
        return found[0] if found else []
    order = _Order(batch)
    heads = [0, 0, 0]
    out: list[Row] = []
    while True:
        live = [i for i in range(3) if heads[i] < len(sources[i])]
        if not live:
            break
        rows = {i: sources[i][heads[i]] for i in live}
        pick = next(
            (i for i in live if not any(order.before(rows[j], rows[i]) for j in live if j != i)),
            min(live, key=lambda i: _time(rows[i])),  # no row is first (it cannot be): the earliest
        )
        out.append(rows[pick])
        heads[pick] += 1
    return _cut(out, batch)


def _cut(rows: list[Row], batch: StreamBatch) -> list[Row]:
    sources: tuple[list[Row], ...] = (list(batch.events), list(batch.steps), list(batch.logs))
    lasts = [source[-1] for source, cut in zip(sources, batch.truncated, strict=True) if cut and source]
    if not lasts:
        return rows
    end = min(rows.index(row) for row in lasts)
    return rows[: end + 1]


def advance(position: StreamPosition, rows: list[Row]) -> StreamPosition:
    """The position after ``rows`` (of one run, in order)."""
    event_id, step_index, log_id = position.event_id, position.step_index, position.log_id
    for row in rows:
        if isinstance(row, RunEventRecord):
            event_id = max(event_id, row.id)
        elif isinstance(row, StepRecord):
            step_index = max(step_index, row.index + 1)
        else:
            log_id = max(log_id, row.id)
    return StreamPosition(event_id, step_index, log_id)


def build_events(
    rows: list[Row], record: RunRecord, progress: Progress | None, scope: RunScope | None = None
) -> list[Event]:
    """The events of ``rows`` (merged) for a subscriber; ``record`` is the run as read after them
    (its progress is sampled, its output completes ``run:complete``); ``progress``: the value the
    subscriber has already seen. A progress change goes before a terminal event, else last."""
    common = scope or run_scope(record)
    out: list[Event] = []
    for row in rows:
        if isinstance(row, RunEventRecord):
            out += transition_event(row, record, common)
        elif isinstance(row, StepRecord):
            out.append(step_complete(common, row))
        else:
            out.append(
                StoredLogWriteEvent(
                    **common, **attributes(row, *_LOG_LINE), log_id=row.id, created_at=row.created_at
                )
            )
    if record.progress is not None and record.progress != progress:
        event = RunProgressEvent(**common, progress=record.progress)
        if out and out[-1].type in TERMINAL_TYPES:
            out.insert(len(out) - 1, event)
        else:
            out.append(event)
    return out


_STEP_COMPLETE_FIELDS = (
    "type", "timestamp", "run_id", "job_name", "labels", "step_name", "step_index", "output", "duration"
)  # fmt: skip
if tuple(f.name for f in fields(StepCompleteEvent)) != _STEP_COMPLETE_FIELDS:  # pragma: no cover
    raise RuntimeError("StepCompleteEvent's fields changed: update stream.reader.step_complete")
_SET_STEP_COMPLETE = tuple(getattr(StepCompleteEvent, name).__set__ for name in _STEP_COMPLETE_FIELDS)
_new = object.__new__


def step_complete(scope: RunScope, row: StepRecord) -> StepCompleteEvent:
    """``StepCompleteEvent(**scope, step_name=..., step_index=..., output=..., duration=...)`` of
    a stored step, made by setting its slots: a stream carries one per step of every watched run
    (benchmark 9a), and the frozen dataclass's keyword ``__init__`` cost four times as much. The
    event class has no ``__post_init__``; the check above fails at import if its fields change."""
    event = _new(StepCompleteEvent)
    kind, timestamp, run_id, job_name, labels, name, index, output, duration = _SET_STEP_COMPLETE
    kind(event, "step:complete")
    timestamp(event, time.time())
    run_id(event, scope["run_id"])
    job_name(event, scope["job_name"])
    labels(event, scope["labels"])
    name(event, row.name)
    index(event, row.index)
    output(event, loads(row.output_json))
    duration(event, row.duration)
    return event


def end_of(record: RunRecord) -> RunEventRecord:
    """The terminal transition a finished run's row stands for (a run finished before its
    database recorded transitions has none stored)."""
    kind = {"completed": "run:complete", "failed": "run:fail"}.get(record.status, "run:cancel")
    data = {"error": record.error, "failed_step_name": record.failed_step_name}
    at = record.completed_at or record.updated_at
    return RunEventRecord(
        0,
        record.id,
        kind,
        record.attempt,
        record.step_count,
        at,
        {**data, "failed_attempts": record.failed_attempts},
    )


def transition_event(row: RunEventRecord, record: RunRecord, common: RunScope) -> list[Event]:
    """The event(s) of one transition: a failure of a step also gives its ``step:fail`` first."""
    kind = row.type
    if kind in ("run:fail", "run:retry-scheduled"):
        return _failure(row, record, common)
    if kind == "run:start":
        return [RunStartEvent(**common, attempt=row.attempt, resumed_steps=row.step_count)]
    if kind == "run:complete":
        output = record.output if record.status == "completed" else None
        return [RunCompleteEvent(**common, output=output, duration=_duration(record))]
    if kind == "run:waiting":
        step = str(row.data.get("step") or "")
        return [RunWaitingEvent(**common, step_name=step, waiting_for=row.waiting_for)]
    if kind == "run:trigger":
        return [RunTriggerEvent(**common, input=record.input)]
    simple: dict[str, Callable[..., Event]] = {
        "run:cancel": RunCancelEvent,
        "run:retry": RunRetryEvent,
        "run:release": RunReleaseEvent,
        "run:wake": RunWokenEvent,
    }
    made = simple.get(kind)
    return [made(**common) if made is not None else RunEvent(**common, type=kind)]


def _failure(row: RunEventRecord, record: RunRecord, common: RunScope) -> list[Event]:
    data: dict[str, Any] = row.data
    error = str(data.get("error") or "")
    step = data.get("failed_step_name")
    failed = int(data.get("failed_attempts") or 1)
    out: list[Event] = []
    if step:
        out.append(StepFailEvent(**common, step_name=step, step_index=row.step_count, error=error))
    if row.type == "run:fail":
        duration = _duration(record) if record.status == "failed" else 0.0
        out.append(
            RunFailEvent(
                **common, error=error, failed_step_name=step, duration=duration, failed_attempts=failed
            )
        )
    else:
        out.append(
            RunRetryScheduledEvent(
                **common, error=error, failed_step_name=step, failed_attempts=failed, delay=row.delay
            )
        )
    return out


def _duration(record: RunRecord) -> float:
    if record.started_at is None or record.completed_at is None:
        return 0.0
    return max(0.0, (record.completed_at - record.started_at).total_seconds())
