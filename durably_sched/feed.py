"""The run feed: live events of runs, read from the store, so they work across processes and hosts.

``Durably.subscribe(run_id)`` and ``Durably.subscribe_runs()`` (and the web app's server-sent event
streams built on them) get their events here. The in-process emitter (``durably.on(...)``) only
sees runs this process executes; the feed sees every run, wherever it executes, because it reads
what the worker stores.

**One poller per process.** A :class:`RunFeed` polls the store every :data:`POLL_INTERVAL` seconds
while it has subscribers (and not at all without), with one set of queries per tick shared by all
subscribers: 100 dashboard tabs watching runs cost one poller, not 100. Every query reads an index:

* subscribed runs by id (unique index); their new steps (primary key) and logs (``logs_run``),
  read only for runs whose stored state changed since the last tick (status, step count, progress,
  ``updated_at``, which every log write touches), plus once a second as a safety net;
* for run-list subscribers, :meth:`Store.poll_run_changes`: active runs through the partial index
  of active runs (at most :data:`ACTIVE_LIMIT`), new runs by creation order, finished runs through
  ``runs_finished``; a run that left the active set between ticks is read by id (finished or
  deleted).

**Throttled.** A run's state is sampled at most once per tick, so a subscriber sees at most one
progress event per run per 100 ms (the latest value; progress in between is coalesced, as the
TypeScript library's handler does); the run-list stream carries at most one event per run per tick
(the run's latest state). Steps, logs and status changes are never coalesced.

**Bounded.** Each subscriber has a queue of at most :data:`QUEUE_LIMIT` events. A queued progress
event is replaced by a newer one of the same run. When a slow consumer lets the queue fill, the
oldest events are dropped and the consumer receives one :class:`FeedDroppedEvent` saying how many
(a client then re-reads the run); a run-list subscriber that falls behind by more than
:data:`QUEUE_LIMIT` runs gets one ``feed:reset`` instead of the backlog.

What is visible across processes, and the event each change becomes (the in-process names):

=========================================  ==================================================
stored change                              event
=========================================  ==================================================
a new run (run list only)                  ``run:trigger``
pending -> running, or a new attempt       ``run:start`` (``attempt``)
``progress`` changed                       ``run:progress`` (latest value)
a step row written                         ``step:complete`` (name, index, output, duration)
a log row written                          ``log:write``
-> completed / failed / cancelled          ``run:complete`` / ``run:fail`` (error) / ``run:cancel``
failed or cancelled -> pending             ``run:retry``
running -> pending (released on stop)      ``run:release`` (feed only)
-> waiting (a durable wait)                ``run:waiting`` (``waiting_for``)
the run row is gone                        ``run:delete`` (feed only)
=========================================  ==================================================

Not visible: ``step:start`` and ``step:fail`` (a step's start is not stored, and storing it would
add a write per step to the checkpoint path; a failing step shows as ``run:fail`` with its
``failed_step_name``) and ``worker:error``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, Self, TypeVar

from ._tasks import stop_task
from .errors import RunNotFoundError
from .events import (
    Event,
    LogWriteEvent,
    RunCancelEvent,
    RunCompleteEvent,
    RunDeleteEvent,
    RunEvent,
    RunFailEvent,
    RunProgressEvent,
    RunRetryEvent,
    RunStartEvent,
    RunTriggerEvent,
    RunWaitingEvent,
    StepCompleteEvent,
    run_scope,
)
from .store.base import FINISHED_STATUSES, LogRecord, RunRecord, StepRecord, Store

__all__ = [
    "FeedDroppedEvent",
    "RunDeleteEvent",
    "RunFeed",
    "RunListEvent",
    "RunListSubscription",
    "RunReleaseEvent",
    "RunSubscription",
    "StoredLogWriteEvent",
]

log = logging.getLogger("durably_sched.feed")

POLL_INTERVAL = 0.1
QUEUE_LIMIT = 1000
BUSY_FACTOR = 4.0
LOG_PAGE = 500
ACTIVE_LIMIT = 500
SAFETY_POLL_EVERY = 10
"""Ticks between reads of a subscribed run's logs even when its row looks unchanged (``updated_at``
has millisecond resolution on SQLite: two writes in one millisecond look like one)."""
FINISHED_LOOKBACK = timedelta(seconds=5)
"""How far before the newest completion seen the run-list poll looks again (a PostgreSQL transaction
stamps ``completed_at`` when it starts, and may commit later than one that started after it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReleaseEvent(RunEvent):
    """A running run was given back (graceful stop of its worker): pending again."""

    type: str = "run:release"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredLogWriteEvent(LogWriteEvent):
    """``log:write`` as the feed reads it: with the stored log's id and time."""

    log_id: int = 0
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedDroppedEvent(Event):
    """This subscriber was too slow: ``dropped`` older events were discarded."""

    type: str = "feed:dropped"
    dropped: int = 0
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunListEvent:
    """A change in the run list: ``type`` is the event name of the change, ``run`` the run's state
    after it (None for ``run:delete`` and ``feed:reset``)."""

    type: str
    run_id: str | None
    run: RunRecord | None


TERMINAL_TYPES = ("run:complete", "run:fail", "run:cancel", "run:delete")


class _Closed(Exception):
    pass


T = TypeVar("T")


class _Clearable(Protocol):
    def clear(self) -> None: ...


class _Subscription(AsyncIterator[T]):
    """What both subscriptions share: the queue's wake-up, the done flag, waiting and closing."""

    _items: _Clearable

    def __init__(self, feed: RunFeed) -> None:
        self._feed = feed
        self._ready = asyncio.Event()
        self._done = False

    def __aiter__(self) -> Self:
        return self

    async def _idle(self) -> None:
        """Nothing queued: end the iteration when done, else wait for the feed's next put."""
        if self._done:
            self._feed._remove(self)
            raise StopAsyncIteration
        self._ready.clear()
        await self._ready.wait()

    async def close(self) -> None:
        self._done = True
        self._items.clear()
        self._feed._remove(self)
        self._ready.set()

    aclose = close

    def _end(self) -> None:
        self._done = True
        self._ready.set()


class RunSubscription(_Subscription[Event]):
    """Events of one run, until it finishes (``async for``); ``await close()`` to stop early."""

    def __init__(self, feed: RunFeed, run_id: str, since: RunRecord | None, after_log_id: int | None) -> None:
        super().__init__(feed)
        self.run_id = run_id
        self.last: RunRecord | None = since
        self.last_log_id = after_log_id
        self.started = since is not None
        self._items: deque[Event] = deque()
        self._dropped = 0
        self._error: BaseException | None = None

    # -- consumer side ---------------------------------------------------------------------------
    async def __anext__(self) -> Event:
        while True:
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                return FeedDroppedEvent(dropped=dropped, run_id=self.run_id)
            if self._items:
                return self._items.popleft()
            if self._error is not None:
                error, self._error = self._error, None
                self._done = True
                self._feed._remove(self)
                raise error
            await self._idle()

    def ready_now(self) -> list[Event]:
        """The events already queued (after one from ``__anext__``), without waiting: a consumer that
        writes to a network sends them together."""
        out: list[Event] = []
        if self._dropped:
            out.append(FeedDroppedEvent(dropped=self._dropped, run_id=self.run_id))
            self._dropped = 0
        out += self._items
        self._items.clear()
        return out

    # -- feed side -------------------------------------------------------------------------------
    def _put(self, event: Event) -> None:
        if self._done:
            return
        if isinstance(event, RunProgressEvent):
            for i in range(len(self._items) - 1, -1, -1):
                if isinstance(self._items[i], RunProgressEvent):
                    self._items[i] = event  # coalesce: only the latest progress matters
                    self._ready.set()
                    return
        if len(self._items) >= QUEUE_LIMIT:
            self._items.popleft()
            self._dropped += 1
        self._items.append(event)
        if event.type in TERMINAL_TYPES:
            self._done = True
        self._ready.set()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._ready.set()


class RunListSubscription(_Subscription[RunListEvent]):
    """Changes of the run list (``async for``), one event per run per tick; ``await close()``."""

    def __init__(self, feed: RunFeed) -> None:
        super().__init__(feed)
        self._items: OrderedDict[str, RunListEvent] = OrderedDict()
        self._reset = False

    async def __anext__(self) -> RunListEvent:
        while True:
            if self._reset:
                self._reset = False
                return RunListEvent("feed:reset", None, None)
            if self._items:
                return self._items.popitem(last=False)[1]
            await self._idle()

    def ready_now(self) -> list[RunListEvent]:
        """The changes already queued, without waiting (see :meth:`RunSubscription.ready_now`)."""
        out = [RunListEvent("feed:reset", None, None)] if self._reset else []
        self._reset = False
        out += self._items.values()
        self._items.clear()
        return out

    def _put(self, event: RunListEvent) -> None:
        if self._done or event.run_id is None:
            return
        self._items.pop(event.run_id, None)  # coalesce: the run's latest state, moved to the end
        if len(self._items) >= QUEUE_LIMIT:
            self._items.clear()
            self._reset = True
        self._items[event.run_id] = event
        self._ready.set()


@dataclass
class _ListState:
    seq: int | None = None
    known: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    finished_seen: dict[tuple[str, datetime], float] = field(default_factory=dict)
    watermark: datetime | None = None


class RunFeed:
    """The process's shared poller; made by ``Durably`` on first use (``durably.feed``)."""

    def __init__(self, store: Store, *, interval: float = POLL_INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self._runs: dict[str, list[RunSubscription]] = {}
        self._lists: list[RunListSubscription] = []
        self._list_state = _ListState()
        self._task: asyncio.Task[None] | None = None
        self._ticks = 0
        self._closed = False
        self._last_error_log = 0.0
        self.polls = 0
        """Ticks run so far (tests and benchmarks read it)."""

    @property
    def subscribers(self) -> int:
        return sum(len(subs) for subs in self._runs.values()) + len(self._lists)

    def subscribe(
        self, run_id: str, *, since: RunRecord | None = None, after_log_id: int | None = None
    ) -> RunSubscription:
        """Events of ``run_id`` from now on, ending with its terminal event.

        ``since``: a record of the run the caller already shows; changes after it become events
        (default: the run as the first poll finds it; a run already finished yields its terminal
        event at once). ``after_log_id``: deliver logs after this id (default: only new ones).
        """
        self._check_open()
        sub = RunSubscription(self, run_id, since, after_log_id)
        self._runs.setdefault(run_id, []).append(sub)
        self._ensure_running()
        return sub

    def subscribe_runs(self) -> RunListSubscription:
        """Changes of the run list (new runs, status, progress and step counts), from now on."""
        self._check_open()
        sub = RunListSubscription(self)
        self._lists.append(sub)
        self._ensure_running()
        return sub

    async def close(self) -> None:
        """End every subscription and stop polling."""
        self._closed = True
        for subs in list(self._runs.values()):
            for sub in subs:
                sub._end()
        for lst in list(self._lists):
            lst._end()
        self._runs.clear()
        self._lists.clear()
        task, self._task = self._task, None
        await stop_task(task)

    def end_all(self) -> None:
        """End every current subscription (their iterators finish) without closing the feed."""
        for subs in list(self._runs.values()):
            for sub in subs:
                sub._end()
        for lst in list(self._lists):
            lst._end()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the run feed is closed")

    def _remove(self, sub: _Subscription[Any]) -> None:
        if isinstance(sub, RunSubscription):
            subs = self._runs.get(sub.run_id, [])
            if sub in subs:
                subs.remove(sub)
            if not subs:
                self._runs.pop(sub.run_id, None)
        elif isinstance(sub, RunListSubscription) and sub in self._lists:
            self._lists.remove(sub)
            if not self._lists:
                self._list_state = _ListState()

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="durably-run-feed")

    async def _loop(self) -> None:
        while self._runs or self._lists:
            started = time.monotonic()
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - self._last_error_log > 30:
                    self._last_error_log = time.monotonic()
                    log.warning("run feed could not read the store (retrying): %s", exc)
            self.polls += 1
            # A tick that took long (a busy database or loop) is followed by a longer pause, so the
            # feed never takes more than about 1 / (1 + BUSY_FACTOR) of the time from the worker.
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(self.interval - elapsed, elapsed * BUSY_FACTOR))

    # -- one tick --------------------------------------------------------------------------------
    async def _tick(self) -> None:
        self._ticks += 1
        seen: dict[str, RunRecord] = {}
        if self._lists:
            seen = await self._tick_list()
        if self._runs:
            await self._tick_runs(seen)

    async def _tick_runs(self, seen: dict[str, RunRecord]) -> None:
        """``seen``: rows the run-list poll of this tick already read (not read again)."""
        ids = list(self._runs)
        missing = [run_id for run_id in ids if run_id not in seen]
        records = {run_id: seen[run_id] for run_id in ids if run_id in seen}
        if missing:
            records.update(await self.store.get_runs_by_id(missing))
        safety = self._ticks % SAFETY_POLL_EVERY == 0
        work: list[tuple[RunRecord, list[RunSubscription]]] = []
        for run_id in ids:
            subs = [s for s in self._runs.get(run_id, []) if not s._done]
            if not subs:
                continue
            record = records.get(run_id)
            if record is None:
                for sub in subs:
                    if sub.last is None:
                        sub._fail(RunNotFoundError(f"no run with id '{run_id}'"))
                    else:
                        sub._put(
                            RunDeleteEvent(run_id=run_id, job_name=sub.last.job_name, labels=sub.last.labels)
                        )
                continue
            for sub in subs:
                if sub.last is None:  # first look: the baseline
                    sub.last = record
                    if sub.last_log_id is None:
                        sub.last_log_id = await self._last_log_id(run_id)
                    if record.is_finished:
                        sub._put(_status_event(record, record))
            changed = [
                s for s in subs if not s._done and (safety or _signature(s.last) != _signature(record))
            ]
            if changed:
                work.append((record, changed))
        if not work:
            return
        # One query for the new steps and one for the new logs of every changed run.
        step_positions: dict[str, int] = {}
        log_positions: dict[str, int] = {}
        for record, changed in work:
            behind = [
                s.last.step_count
                for s in changed
                if s.last is not None and record.step_count > s.last.step_count
            ]
            if behind:
                step_positions[record.id] = min(behind)
            log_positions[record.id] = min(s.last_log_id or 0 for s in changed)
        steps, logs = await asyncio.gather(
            self.store.get_steps_since(step_positions), self._logs_since(log_positions)
        )
        for record, changed in work:
            for sub in changed:
                for event in _run_events(sub, record, steps.get(record.id, []), logs.get(record.id, [])):
                    sub._put(event)

    async def _logs_since(self, positions: dict[str, int]) -> dict[str, list[LogRecord]]:
        """New logs of many runs; a run with more than a page is read on (up to the queue's size)."""
        found = await self.store.get_logs_since(positions, limit=LOG_PAGE)
        more = {run_id: logs[-1].id for run_id, logs in found.items() if len(logs) >= LOG_PAGE}
        while more:
            page = await self.store.get_logs_since(more, limit=LOG_PAGE)
            for run_id, logs in page.items():
                found[run_id] += logs
            more = {
                run_id: logs[-1].id
                for run_id, logs in page.items()
                if len(logs) >= LOG_PAGE and len(found[run_id]) < QUEUE_LIMIT
            }
        return found

    async def _last_log_id(self, run_id: str) -> int:
        last = 0
        while True:
            page = await self.store.get_logs(run_id, after_id=last, limit=1000)
            if not page:
                return last
            last = page[-1].id

    async def _tick_list(self) -> dict[str, RunRecord]:
        state = self._list_state
        since = None if state.watermark is None else state.watermark - FINISHED_LOOKBACK
        changes = await self.store.poll_run_changes(
            state.seq, since if state.seq is not None else None, ACTIVE_LIMIT
        )
        first = state.seq is None
        state.seq = changes.last_seq
        events: list[RunListEvent] = []
        seen_now: dict[str, RunRecord] = {}
        for record in changes.created:
            seen_now[record.id] = record
            events.append(RunListEvent(_list_type(None, record), record.id, record))
        active_ids = set()
        for record in changes.active:
            active_ids.add(record.id)
            old = state.known.get(record.id)
            sig = _signature(record)
            if old is not None and old != sig and record.id not in seen_now:
                events.append(RunListEvent(_list_type(old, record), record.id, record))
            state.known[record.id] = sig
        for record in changes.finished:
            completed = record.completed_at
            assert completed is not None
            key = (record.id, completed)
            if state.watermark is None or completed > state.watermark:
                state.watermark = completed
            if key in state.finished_seen:
                continue
            state.finished_seen[key] = time.monotonic()
            if record.id not in seen_now:
                events.append(RunListEvent(_list_type(state.known.get(record.id), record), record.id, record))
            seen_now[record.id] = record
        gone = [run_id for run_id in state.known if run_id not in active_ids]
        missing = [run_id for run_id in gone if run_id not in seen_now]
        found = await self.store.get_runs_by_id(missing) if missing else {}
        for run_id in gone:
            old = state.known.pop(run_id)
            current = seen_now.get(run_id) or found.get(run_id)
            if current is None:
                events.append(RunListEvent("run:delete", run_id, None))
                continue
            if current.completed_at is not None:
                done_key = (current.id, current.completed_at)
                if done_key in state.finished_seen and run_id not in seen_now:
                    continue
                state.finished_seen[done_key] = time.monotonic()
                if state.watermark is None or current.completed_at > state.watermark:
                    state.watermark = current.completed_at
            if run_id not in seen_now:
                events.append(RunListEvent(_list_type(old, current), run_id, current))
        if state.watermark is None and first:
            state.watermark = max((r.updated_at for r in changes.active), default=None)
        cutoff = time.monotonic() - 4 * FINISHED_LOOKBACK.total_seconds()
        for key in [k for k, at in state.finished_seen.items() if at < cutoff]:
            del state.finished_seen[key]
        read = {r.id: r for r in (*changes.active, *changes.created, *changes.finished)}
        read.update(found)
        if first:
            return read  # the baseline: changes from now on
        for sub in list(self._lists):
            for event in events:
                sub._put(event)
        return read


def _signature(record: RunRecord | None) -> tuple[Any, ...]:
    if record is None:
        return ()
    return (record.status, record.attempt, record.step_count, record.progress, record.updated_at)


def _list_type(old: tuple[Any, ...] | None, record: RunRecord) -> str:
    """The event name of the most significant change of a run-list row."""
    if old is None and record.status == "pending" and record.attempt == 0:
        return "run:trigger"
    old_status = old[0] if old else None
    if (
        record.status in FINISHED_STATUSES
        or old_status != record.status
        or (old and old[1] != record.attempt)
    ):
        return _status_type(old_status, record)
    if old and old[2] != record.step_count:
        return "step:complete"
    return "run:progress"


_STATUS_TYPES = {"completed": "run:complete", "failed": "run:fail", "cancelled": "run:cancel",
                 "running": "run:start", "waiting": "run:waiting"}  # fmt: skip
"""The event a run's row in this status stands for (a pending row: see :func:`_status_type`)."""


def _status_type(old_status: str | None, record: RunRecord) -> str:
    kind = _STATUS_TYPES.get(record.status)
    if kind is not None:
        return kind
    if old_status == "running":
        return "run:release"
    if old_status in FINISHED_STATUSES:
        return "run:retry"
    return "run:trigger"


def _duration(record: RunRecord) -> float:
    if record.started_at is None or record.completed_at is None:
        return 0.0
    return max(0.0, (record.completed_at - record.started_at).total_seconds())


def _status_event(old: RunRecord, record: RunRecord) -> Event:
    common = run_scope(record)
    kind = _status_type(old.status if old is not record else None, record)
    if kind == "run:complete":
        return RunCompleteEvent(**common, output=record.output, duration=_duration(record))
    if kind == "run:fail":
        return RunFailEvent(
            **common,
            error=record.error or "",
            failed_step_name=record.failed_step_name,
            duration=_duration(record),
        )
    if kind == "run:cancel":
        return RunCancelEvent(**common)
    if kind == "run:start":
        return RunStartEvent(
            **common, attempt=record.attempt, resumed_steps=old.step_count if old is not record else 0
        )
    if kind == "run:release":
        return RunReleaseEvent(**common)
    if kind == "run:waiting":
        return _waiting_event(record)
    if kind == "run:retry":
        return RunRetryEvent(**common)
    return RunTriggerEvent(**common, input=record.input)


def _waiting_event(record: RunRecord) -> RunWaitingEvent:
    step = record.wait.step if record.wait is not None else ""
    return RunWaitingEvent(**run_scope(record), step_name=step, waiting_for=record.waiting_for or {})


def _run_events(
    sub: RunSubscription, record: RunRecord, steps: list[StepRecord], logs: list[LogRecord]
) -> list[Event]:
    """What changed between the subscriber's last view of the run and ``record``, in order."""
    old = sub.last
    assert old is not None
    common = run_scope(record)
    out: list[Event] = []
    terminal: Event | None = None
    # A tick samples the row: a run may have been retried, claimed and finished since the last one,
    # so each transition the row proves is reported, in order.
    if old.is_finished and (not record.is_finished or record.attempt > old.attempt):
        out.append(RunRetryEvent(**common))
    if record.attempt > old.attempt:
        out.append(RunStartEvent(**common, attempt=record.attempt, resumed_steps=old.step_count))
    if record.is_finished:
        if (
            old.status != record.status
            or record.attempt > old.attempt
            or old.completed_at != record.completed_at
        ):
            terminal = _status_event(old, record)
    elif record.status == "waiting" and (old.status != "waiting" or old.wait != record.wait):
        out.append(_waiting_event(record))
    elif record.status == "pending" and old.status == "running" and record.attempt == old.attempt:
        out.append(RunReleaseEvent(**common))
    timed: list[tuple[datetime, int, Event]] = []
    if record.step_count > old.step_count:
        for step in steps:
            if old.step_count <= step.index < record.step_count:  # newer ones: next tick, with their row
                timed.append(
                    (
                        step.completed_at,
                        0,
                        StepCompleteEvent(
                            **common,
                            step_name=step.name,
                            step_index=step.index,
                            output=json.loads(step.output_json),
                            duration=step.duration,
                        ),
                    )
                )
    last_log = sub.last_log_id or 0
    for entry in logs:
        if entry.id > last_log:
            timed.append(
                (
                    entry.created_at,
                    1,
                    LogWriteEvent(
                        **common,
                        step_name=entry.step_name,
                        level=entry.level,
                        message=entry.message,
                        data=entry.data,
                    ),
                )
            )
            sub.last_log_id = entry.id
    timed.sort(key=lambda item: (item[0], item[1]))
    out += [event for _, _, event in timed]
    if record.progress is not None and record.progress != old.progress:
        out.append(RunProgressEvent(**common, progress=record.progress))
    if terminal is not None:
        out.append(terminal)
    sub.last = record
    return out
