"""The run-events log (schema v12): one row per transition of a run, the stream's third source.

A run's stream is read from append-only sources, each by its own indexed position: the ``steps``
table (``step:complete``, by index), the ``logs`` table (``log:write``, by id), ``run_events`` (the
transitions: ``run:start``, ``run:retry-scheduled``, ``run:release``, ``run:waiting``,
``run:wake``, ``run:retry``, ``run:complete``, ``run:fail``, ``run:cancel``) and, for the run list,
the ``runs`` table itself by ``seq`` (a run's creation, ``run:trigger``). Checkpoints, log lines and
creations add no row here: they are already rows of their own.

Who writes it: the database, in the very statement that makes the transition (triggers on ``runs``
in both backends, as for attempts), so no writer can forget one and the hot path gets no extra
statement or commit. A row carries the run's attempt and step count at the transition, which is
how a reader puts it between the run's steps (``stream.reader``). Rows are found by their run's
``seq`` (new runs' rows go to the end of the index), and go with their run (delete, retention), by
a trigger too.

Ids increase in commit order within one run on both backends (each transition holds the run's row
lock until it commits). Across runs, PostgreSQL may commit a smaller id after a larger one: a reader
of the whole log re-reads :attr:`RunEventReads.stream_lookback` seconds of it.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from ._callbacks import call_callbacks, keep_callback
from .records import LogRecord, StepRecord
from .rows import log_from_row

__all__ = [
    "RUN_EVENT_COLUMNS",
    "STREAM_COLUMNS",
    "RunEventReads",
    "RunEventRecord",
    "StreamBatch",
    "StreamPosition",
    "run_event_from_row",
    "stream_batches",
]

RUN_EVENT_COLUMNS = "id, run_id, type, attempt, step_count, data, at"
"""(``run_seq`` is how rows are found, not part of the record.)"""


@dataclass(frozen=True, slots=True)
class RunEventRecord:
    """One transition of a run, as the database recorded it."""

    id: int
    run_id: str
    type: str
    """The in-process event name of the transition (``run:start``, ``run:fail``, ...)."""
    attempt: int
    """The run's ``attempt`` after the transition (0 before its first claim)."""
    step_count: int
    """How many steps the run had completed at the transition."""
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    """``run:fail`` / ``run:retry-scheduled``: ``error``, ``failed_step_name``,
    ``failed_attempts``, ``not_before`` (a datetime or None); ``run:waiting``: ``step``, ``kind``,
    ``key``, ``until`` (a datetime or None), ``children``."""

    @property
    def waiting_for(self) -> dict[str, Any]:
        """``run:waiting``: what the run waits for, as ``RunRecord.waiting_for`` says it."""
        keys = ("kind", "until", "key", "children")
        return {key: self.data.get(key) for key in keys}

    @property
    def delay(self) -> float:
        """``run:retry-scheduled``: seconds from the failure to the retry's earliest start."""
        not_before = self.data.get("not_before")
        return max(0.0, (not_before - self.at).total_seconds()) if isinstance(not_before, datetime) else 0.0


_TIME_KEYS = ("not_before", "until")


def _stored_time(value: Any) -> datetime | None:
    """A time inside the JSON data: integer milliseconds (SQLite) or ISO text (PostgreSQL)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def run_event_from_row(row: Mapping[str, Any], time: Callable[[Any], datetime | None]) -> RunEventRecord:
    """A transition from its row; ``time`` turns the stored ``at`` into an aware UTC datetime."""
    raw = row["data"]
    data: dict[str, Any] = (json.loads(raw) if isinstance(raw, str) else raw) or {}
    for key in _TIME_KEYS:
        if key in data:
            data[key] = _stored_time(data[key])
    at = time(row["at"])
    assert at is not None  # NOT NULL column
    return RunEventRecord(
        id=row["id"],
        run_id=row["run_id"],
        type=row["type"],
        attempt=row["attempt"],
        step_count=row["step_count"],
        at=at,
        data=data,
    )


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a reader of one run's stream is: after transition ``event_id``, at step index
    ``step_index`` (the next step it has not seen), after log ``log_id``."""

    event_id: int = 0
    step_index: int = 0
    log_id: int = 0


@dataclass(slots=True)
class StreamBatch:
    """What one read found past a :class:`StreamPosition`: each source in its own order, and
    whether the read stopped at its limit (more rows wait in that source)."""

    events: list[RunEventRecord] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    limit: int = 0
    log_places: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Log id -> (the run's attempt, its step count) when the line was written (lines written
    before schema v12 have none)."""

    @property
    def truncated(self) -> tuple[bool, bool, bool]:
        """(events, steps, logs): which sources may hold more rows than this batch."""
        return (len(self.events) >= self.limit, len(self.steps) >= self.limit, len(self.logs) >= self.limit)


STREAM_COLUMNS = "src, run_id, pos, name, attempt, step_count, data, t1, t2, level, message"
"""The one row shape of :meth:`RunEventReads.get_run_streams`' statement, for all three sources:
``src`` is ``e`` (run_events: pos = id, name = type, data, t1 = at), ``s`` (steps: pos = idx, name,
data = output, t1 = started_at, t2 = completed_at) or ``l`` (logs: pos = id, name = step_name,
attempt, step_count, data, t1 = created_at, level, message)."""


def stream_batches(
    rows: Sequence[Sequence[Any]], time: Callable[[Any], datetime | None], limit: int
) -> dict[str, StreamBatch]:
    """The rows of one stream read (:data:`STREAM_COLUMNS`, by position), as a batch per run, each
    source in its order. Steps are most of a busy stream's rows (benchmark 9a), so a step's record
    is made straight from its columns."""
    out: dict[str, StreamBatch] = {}
    for row in rows:
        src, run_id, pos, name, attempt, step_count, data, t1, t2, level, message = row
        batch = out.get(run_id)
        if batch is None:
            batch = out[run_id] = StreamBatch(limit=limit)
        if src == "s":
            started, completed = time(t1), time(t2)
            assert started is not None and completed is not None  # NOT NULL columns
            batch.steps.append(StepRecord(run_id, pos, name, data, started, completed))
            continue
        common = {"id": pos, "run_id": run_id, "attempt": attempt, "step_count": step_count, "data": data}
        if src == "e":
            batch.events.append(run_event_from_row({**common, "type": name, "at": t1}, time))
            continue
        line = {"step_name": name, "created_at": t1, "level": level, "message": message}
        entry = log_from_row({**common, **line}, time)
        batch.logs.append(entry)
        if attempt is not None and step_count is not None:
            batch.log_places[entry.id] = (attempt, step_count)
    for batch in out.values():
        batch.events.sort(key=lambda e: e.id)
        batch.steps.sort(key=lambda s: s.index)
        batch.logs.sort(key=lambda entry: entry.id)
    return out


class RunEventReads(abc.ABC):
    """The store contract's part about the run-events log (written by the database, read here)."""

    stream_lookback: ClassVar[float] = 0.0
    """Seconds of the whole log a reader re-reads, because a smaller id may commit after a larger
    one (0: ids commit in order, as with SQLite's one writer)."""

    @abc.abstractmethod
    async def get_run_events_since(
        self, positions: Mapping[str, int], limit: int = 1000
    ) -> dict[str, list[RunEventRecord]]:
        """For many runs in one query: up to ``limit`` transitions of each run after the id given
        ({run id: event id}), in id order. Runs without such rows are left out."""

    @abc.abstractmethod
    async def get_run_streams(
        self, positions: Mapping[str, StreamPosition], limit: int = 1000
    ) -> dict[str, StreamBatch]:
        """For many runs in one statement (one snapshot of the database, so the three sources agree):
        the transitions, steps and logs of each run past its position, up to ``limit`` of each
        source per run. Runs with nothing new are left out."""

    @abc.abstractmethod
    async def get_run_events_after(self, after_id: int, limit: int = 1000) -> list[RunEventRecord]:
        """Up to ``limit`` transitions of any run with an id above ``after_id``, in id order."""

    @abc.abstractmethod
    async def latest_run_events(self, run_ids: Sequence[str]) -> dict[str, str]:
        """{run id: the type of its newest transition} for these runs, in one query by the index
        of each run's transitions (what a waiter asks: has it ended?). Runs without any are left out."""

    @abc.abstractmethod
    async def last_run_event_id(self, run_ids: Sequence[str] | None = None) -> int:
        """The newest transition's id (of these runs; of all runs for None), 0 when there is none:
        where "from now on" starts."""

    def on_run_events(self, callback: Callable[[], None], *, add: bool = True) -> None:
        """Add (or remove) a callback run on the event loop when a transition may have been
        written by another process. PostgreSQL calls it on the transition's NOTIFY; other backends
        never do (readers poll by id)."""
        keep_callback(self, "_run_event_callbacks", callback, add)

    def run_events_written(self) -> None:
        """Run the callbacks of :meth:`on_run_events`."""
        call_callbacks(self, "_run_event_callbacks")
