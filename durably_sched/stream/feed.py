"""The run feed: live events of runs, read from the store, so they work across processes and hosts.

``Durably.subscribe(run_id)`` and ``Durably.subscribe_runs()`` (and the web app's server-sent event
streams built on them), the waiters of ``trigger_and_wait`` / ``wait_for_run`` and the CLI's
``--wait`` / ``runs watch`` all read here. The in-process emitter (``durably.on(...)``) only sees
runs this process executes; the feed sees every run, wherever it executes, because it reads the
run stream the database records (``store.run_events``; the order and the events: ``reader``).

**One poller per process.** A :class:`RunFeed` reads the store every :data:`POLL_INTERVAL` seconds
while it has subscribers (and not at all without), with one set of reads per tick shared by all:

* subscribed runs: one statement for the new transitions, steps and logs of all of them (each
  past its position, by index), then their rows (by id) for the sampled progress and the output;
* the run list: the whole transition log past one cursor (by id), then the rows of the runs it
  names; it also samples the active runs' progress and step counts through the partial index of
  active runs (at most :data:`ACTIVE_LIMIT`);
* the waiters: the newest transition of each awaited run (one query by the index of each run's
  transitions): a terminal one wakes its waiters.

On PostgreSQL every transition's NOTIFY wakes the poller at once (at most every
:data:`MIN_GAP` seconds); the interval stays the fallback and paces steps, logs and progress.

**Throttled.** A subscriber sees at most one progress event per run per tick (the latest value;
progress in between is coalesced); the run-list stream carries at most one event per run per tick
(the run's latest state). Steps, logs and transitions are never coalesced.

**Bounded.** Each subscriber has a queue of at most :data:`QUEUE_LIMIT` events. A queued progress
event is replaced by a newer one of the same run. When a slow consumer lets the queue fill, the
oldest events are dropped and the consumer receives one :class:`FeedDroppedEvent` saying how many
(a client then re-reads the run); a run-list subscriber that falls behind by more than
:data:`QUEUE_LIMIT` runs gets one ``feed:reset`` instead of the backlog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar

from .._tasks import stop_task
from ..errors import RunNotFoundError
from ..events import Event, RunDeleteEvent, RunScope, run_scope
from ..store.base import FINISHED_STATUSES, Progress, RunRecord, Store
from ..store.run_events import RunEventRecord, StreamBatch, StreamPosition
from .reader import (
    TERMINAL_TYPES,
    advance,
    build_events,
    end_of,
    merge,
    transition_event,
)

__all__ = ["FeedDroppedEvent", "RunFeed", "RunListEvent", "RunListSubscription", "RunSubscription"]

log = logging.getLogger("durably_sched.feed")

POLL_INTERVAL = 0.1
MIN_GAP = 0.02
"""Least time between two ticks when notifications wake the poller."""
QUEUE_LIMIT = 1000
WATCH_DELAY = 0.05
"""Age of a waiter's watch before the feed reads its run (see ``RunFeed._tick_watchers``)."""
BUSY_FACTOR = 4.0
READ_LIMIT = 500
"""Rows of each source read per run per tick (more: the next tick reads on)."""
ACTIVE_LIMIT = 500
NO_STEPS, NO_LOGS = 2**31 - 1, 2**62
"""Positions past every step and log: those sources are not read."""


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


_LIST_TYPES = {"run:wake": "run:woken"}
"""Transition names as the run list and the run streams carry them, where they differ."""


class _Clearable(Protocol):
    def clear(self) -> None: ...


T = TypeVar("T")


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
        self.since = since
        self.after_log_id = after_log_id
        self.position: StreamPosition | None = None
        """Where this subscriber is in the run's stream (None until the feed's first read)."""
        self.progress: Progress | None = since.progress if since is not None else None
        self.scope: RunScope | None = None
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
        if event.type == "run:progress":
            for i in range(len(self._items) - 1, -1, -1):
                if self._items[i].type == "run:progress":
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
class _LogCursor:
    """The feed's place in the whole transition log. Where ids may commit out of order
    (``store.stream_lookback``), ids skipped over are re-read until they appear or time out."""

    after: int | None = None
    holes: dict[int, float] = field(default_factory=dict)

    async def read(self, store: Store) -> list[RunEventRecord]:
        if self.after is None:
            self.after = await store.last_run_event_id()
            return []
        start = min((*self.holes, self.after + 1)) - 1
        rows = await store.get_run_events_after(start, READ_LIMIT * 4)
        lookback = store.stream_lookback
        new = [row for row in rows if row.id > self.after or row.id in self.holes]
        for row in new:
            self.holes.pop(row.id, None)
        top = max((row.id for row in rows), default=self.after)
        if lookback > 0 and top > self.after:
            seen = {row.id for row in rows}
            now = time.monotonic()
            for missing in range(self.after + 1, top):
                if missing not in seen:
                    self.holes[missing] = now
            for hole, since in list(self.holes.items()):
                if now - since > lookback:
                    del self.holes[hole]  # rolled back (or never used): stop looking
        self.after = max(self.after, top)
        return new


@dataclass
class _ListState:
    cursor: _LogCursor = field(default_factory=_LogCursor)
    seq: int | None = None
    """The newest run seen (the runs table's creation order: new runs come from there)."""
    active: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    watchers: dict[str, list[Callable[[], None]]] = field(default_factory=dict)
    watched_since: dict[str, float] = field(default_factory=dict)


class RunFeed:
    """The process's shared poller; made by ``Durably`` on first use (``durably.feed``)."""

    def __init__(self, store: Store, *, interval: float = POLL_INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self._runs: dict[str, list[RunSubscription]] = {}
        self._lists: list[RunListSubscription] = []
        self._state = _ListState()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._listening = False
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
        (default: the run as the first read finds it; a run already finished yields its terminal
        event at once). ``after_log_id``: deliver logs after this id (default: only new ones).
        """
        self._check_open()
        sub = RunSubscription(self, run_id, since, after_log_id)
        self._runs.setdefault(run_id, []).append(sub)
        self._ensure_running()
        return sub

    def subscribe_runs(self) -> RunListSubscription:
        """Changes of the run list (new runs, transitions, progress and step counts), from now on."""
        self._check_open()
        sub = RunListSubscription(self)
        self._lists.append(sub)
        self._ensure_running()
        return sub

    def watch_end(self, run_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (once) when ``run_id`` is finished or gone, as the feed sees it;
        returns the function that stops watching. What the waiters use across processes."""
        self._check_open()
        self._state.watchers.setdefault(run_id, []).append(callback)
        self._state.watched_since.setdefault(run_id, time.monotonic())
        self._ensure_running()

        def stop() -> None:
            callbacks = self._state.watchers.get(run_id, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self._state.watchers.pop(run_id, None)
                self._state.watched_since.pop(run_id, None)

        return stop

    async def close(self) -> None:
        """End every subscription and stop polling."""
        self._closed = True
        self.end_all()
        self._runs.clear()
        self._lists.clear()
        self._state.watchers.clear()
        self._state.watched_since.clear()
        task, self._task = self._task, None
        await stop_task(task)
        self._listen(False)

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
                self._state.active.clear()  # the next list subscriber starts from its own now
                self._state.cursor = _LogCursor()
                self._state.seq = None

    def _busy(self) -> bool:
        return bool(self._runs or self._lists or self._state.watchers)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="durably-run-feed")

    def _listen(self, on: bool) -> None:
        """Be woken by other processes' transitions (PostgreSQL's NOTIFY) while polling."""
        if on != self._listening:
            self._listening = on
            self.store.on_run_events(self._wake.set, add=on)

    async def _loop(self) -> None:
        try:
            while self._busy():
                self._listen(bool(self._runs or self._lists))  # waiters alone: the poll suffices
                started = time.monotonic()
                self._wake.clear()
                try:
                    await self._tick()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if time.monotonic() - self._last_error_log > 30:
                        self._last_error_log = time.monotonic()
                        log.warning("run feed could not read the store (retrying): %s", exc)
                self.polls += 1
                await self._pause(time.monotonic() - started)
        finally:
            self._listen(False)

    async def _pause(self, elapsed: float) -> None:
        # A tick that took long (a busy database or loop) is followed by a longer pause, so the
        # feed never takes more than about 1 / (1 + BUSY_FACTOR) of the time from the worker.
        least = max(MIN_GAP - elapsed, elapsed * BUSY_FACTOR)
        await asyncio.sleep(least)
        rest = self.interval - elapsed - least
        if rest > 0 and not self._wake.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), rest)
            except TimeoutError:
                pass

    # -- one tick --------------------------------------------------------------------------------
    async def _tick(self) -> None:
        seen: dict[str, RunRecord] = {}
        if self._state.watchers:
            await self._tick_watchers()
        if self._lists:
            seen = await self._tick_log()
        if self._runs:
            await self._tick_runs(seen)

    async def _tick_watchers(self) -> None:
        """Wake the watchers of runs whose newest transition ends them, or that are gone (or
        finished before their database recorded transitions). A watch younger than
        :data:`WATCH_DELAY` is not read yet: a run executed here usually ends before, and its
        waiter is woken in process without any read."""
        watchers, since = self._state.watchers, self._state.watched_since
        young = time.monotonic() - WATCH_DELAY
        ids = [run_id for run_id in watchers if since.get(run_id, 0.0) <= young]
        if not ids:
            return
        latest = await self.store.latest_run_events(ids)
        ended = [run_id for run_id in ids if latest.get(run_id) in TERMINAL_TYPES]
        unknown = [run_id for run_id in ids if run_id not in latest]
        if unknown:
            statuses = await self.store.get_run_statuses(unknown)
            ended += [r for r in unknown if statuses.get(r) in FINISHED_STATUSES or r not in statuses]
        for run_id in ended:
            since.pop(run_id, None)
            for callback in watchers.pop(run_id, []):
                callback()

    async def _tick_runs(self, seen: dict[str, RunRecord]) -> None:
        fresh = {run_id for run_id, subs in self._runs.items() if any(s.position is None for s in subs)}
        if fresh:
            await self._baselines(fresh)
        positions: dict[str, StreamPosition] = {}
        for run_id, subs in self._runs.items():
            at = [s.position for s in subs if s.position is not None and not s._done]
            if at:
                positions[run_id] = StreamPosition(
                    min(p.event_id for p in at), min(p.step_index for p in at), min(p.log_id for p in at)
                )
        batches = await self.store.get_run_streams(positions, READ_LIMIT)
        ids = list(self._runs)
        # The run list's records were read before these batches: good for the progress of a batch
        # of steps and logs, but a batch with a transition needs the run as read after it (a run
        # that completed in between would end its stream with the output of a running run).
        records = {
            run_id: seen[run_id]
            for run_id in ids
            if run_id in seen and not (run_id in batches and batches[run_id].events)
        }
        missing = [run_id for run_id in ids if run_id not in records]
        if missing:
            records.update(await self.store.get_runs_by_id(missing))
        for run_id in ids:
            self._deliver(run_id, records.get(run_id), batches.get(run_id) or StreamBatch(limit=READ_LIMIT))

    async def _baselines(self, fresh: set[str]) -> None:
        """Positions of new subscribers: their ``since`` record's, else the run as it is now (read
        after its transitions, so a transition in between comes as an event, not lost)."""
        found = await self.store.get_run_streams({r: StreamPosition(0, NO_STEPS, NO_LOGS) for r in fresh})
        records = await self.store.get_runs_by_id(list(fresh))
        for run_id in fresh:
            events = (found.get(run_id) or StreamBatch()).events
            record = records.get(run_id)
            for sub in self._runs.get(run_id, []):
                if sub.position is not None:
                    continue
                base = sub.since or record
                if base is None:
                    if not events:
                        sub._fail(RunNotFoundError(f"no run with id '{run_id}'"))
                    continue  # deleted since: the next read says so
                upto = [e.id for e in events if sub.since is None or e.at <= base.updated_at]
                log_id = sub.after_log_id
                if log_id is None:
                    log_id = await self.store.last_log_id(run_id)
                sub.position = StreamPosition(max(upto, default=0), base.step_count, log_id)
                sub.progress = base.progress
                sub.scope = run_scope(base)
                if sub.since is None and base.is_finished:
                    end = events[-1] if events and events[-1].type in TERMINAL_TYPES else end_of(base)
                    for event in transition_event(end, base, sub.scope)[-1:]:  # the end only
                        sub._put(event)

    def _deliver(self, run_id: str, record: RunRecord | None, batch: StreamBatch) -> None:
        subs = [s for s in self._runs.get(run_id, []) if not s._done and s.position is not None]
        if record is None:
            for sub in subs:
                scope = sub.scope or {"run_id": run_id, "job_name": "", "labels": {}}
                sub._put(RunDeleteEvent(**scope))
            return
        # Subscribers at one position share the events built for them (the web app encodes each
        # event once for all its clients).
        groups: dict[tuple[StreamPosition, Progress | None], list[RunSubscription]] = {}
        for sub in subs:
            assert sub.position is not None
            groups.setdefault((sub.position, sub.progress), []).append(sub)
        for (position, progress), members in groups.items():
            rows = merge(_past(batch, position))
            events = build_events(rows, record, progress, members[0].scope)
            after = advance(position, rows)
            for sub in members:
                sub.position = after
                sub.progress = record.progress if record.progress is not None else sub.progress
                for event in events:
                    sub._put(event)

    async def _tick_log(self) -> dict[str, RunRecord]:
        """The run list's changes: the whole transition log past the cursor, the active runs."""
        state = self._state
        rows = await state.cursor.read(self.store)
        changes = await self.store.poll_run_changes(state.seq, None, ACTIVE_LIMIT)
        state.seq = changes.last_seq
        records = {r.id: r for r in changes.active}
        active_ids = set(records)
        records.update({r.id: r for r in changes.created})
        gone = {run_id for run_id in state.active if run_id not in records}  # finished or deleted
        wanted = [run_id for run_id in {row.run_id for row in rows} | gone if run_id not in records]
        if wanted:
            records.update(await self.store.get_runs_by_id(wanted))
        created = [RunListEvent("run:trigger", r.id, records[r.id]) for r in changes.created]
        self._list_changes(created, rows, records, active_ids)
        return records

    def _list_changes(
        self,
        created: list[RunListEvent],
        rows: list[RunEventRecord],
        records: dict[str, RunRecord],
        active_ids: set[str],
    ) -> None:
        """New runs (the runs table by seq), then each transition, then sampled progress and step
        counts of active runs; a subscriber keeps each run's latest (its state after all of them)."""
        state = self._state
        events = list(created)
        for row in rows:
            kind = _LIST_TYPES.get(row.type, row.type)
            events.append(RunListEvent(kind, row.run_id, records.get(row.run_id)))
        moved = {row.run_id for row in rows} | {event.run_id for event in created}
        active: dict[str, tuple[Any, ...]] = {}
        for run_id in active_ids:
            record = records[run_id]
            sample = (record.step_count, record.progress)
            active[run_id] = sample
            old = state.active.get(run_id)
            if old is not None and old != sample and run_id not in moved:
                kind = "step:complete" if old[0] != record.step_count else "run:progress"
                events.append(RunListEvent(kind, run_id, record))
        for run_id in state.active:
            if run_id not in moved and run_id not in records:
                events.append(RunListEvent("run:delete", run_id, None))  # gone without a transition
        state.active = active
        subs = list(self._lists)
        for event in events:
            if event.run is None and event.type != "run:delete":
                event = RunListEvent("run:delete", event.run_id, None)
            for sub in subs:
                sub._put(event)


def _past(batch: StreamBatch, position: StreamPosition) -> StreamBatch:
    """The rows of ``batch`` past ``position`` (a read serves subscribers at several positions)."""
    return StreamBatch(
        [e for e in batch.events if e.id > position.event_id],
        [s for s in batch.steps if s.index >= position.step_index],
        [entry for entry in batch.logs if entry.id > position.log_id],
        batch.limit,
        batch.log_places,
    )
