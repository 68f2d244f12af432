"""The scheduler loop: turns fire times into runs, exactly once per (schedule, fire time).

Each fire time is handed to the facade as one atomic :class:`Fire` (fire record + run with the
fire-time idempotency key + cursor), so any number of schedulers, restarts and manual slot triggers
collapse to one run per fire time. The scheduler never writes SQL itself.

Time: fire times are computed in the schedule's zone (DST policy in ``cron.py``) and keyed in UTC.
The loop sleeps until the earliest due time (fire time + jitter), in slices of at most
``MAX_SLEEP`` so that a wall-clock jump (suspend/resume, NTP step) is noticed; after any wake-up it
handles every fire time in (cursor, now], so a jump forward catches up per policy and a jump back
re-fires nothing (the cursor and the fire records guard it).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from .._ratelimit import RateLimitedLog
from ..store.base import Fire, FireOutcome, FireResult, NewRun
from .config import ScheduleEntry, SchedulesConfig
from .cron import fire_key, fire_times, jitter_offset

if TYPE_CHECKING:
    from ..durably import Durably

log = logging.getLogger("durably_sched.scheduler")

MAX_SLEEP = 30.0
"""Longest single sleep, so a wall-clock jump is noticed within this many seconds."""
MISFIRE_GRACE = timedelta(seconds=10)
"""A fire time handled less than this late counts as on time: it fires whatever the catch-up policy."""
MISSED_LOOKBACK = timedelta(days=1)
"""Fire times further than this before the catch-up window are not recorded one by one."""


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware, UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def scheduled_run(entry: ScheduleEntry, fire_time: datetime) -> NewRun:
    """The run a fire time makes: fire-time key, labels, and the queue concurrency key."""
    utc = fire_time.astimezone(UTC)
    labels = {**entry.labels, "schedule": entry.name, "scheduled_for": utc.strftime("%Y-%m-%dT%H:%M:%SZ")}
    return NewRun(
        id=str(uuid.uuid4()),
        job_name=entry.job,
        input=dict(entry.input),
        idempotency_key=fire_key(entry.name, utc),
        concurrency_key=f"schedule:{entry.name}" if entry.overlap == "queue" else None,
        labels=labels,
        # The schedule's changes to the job's retry policy; the facade completes them from the job.
        retry_policy=entry.retry.override() if entry.retry is not None else None,
        timeout=entry.timeout.total_seconds() if entry.timeout is not None else None,
    )


def make_fire(
    entry: ScheduleEntry,
    fire_time: datetime,
    *,
    outcome_without_run: FireOutcome | None = None,
    advance_cursor: bool = True,
) -> Fire:
    """The Fire for one fire time: a run, or a record only (``missed``/``disabled``)."""
    utc = fire_time.astimezone(UTC)
    if outcome_without_run is not None:
        return Fire(
            schedule=entry.name,
            fire_time=utc,
            run=None,
            outcome_without_run=outcome_without_run,
            advance_cursor=advance_cursor,
        )
    return Fire(
        schedule=entry.name,
        fire_time=utc,
        run=scheduled_run(entry, utc),
        skip_if_active=entry.overlap == "skip",
        advance_cursor=advance_cursor,
    )


@dataclass
class _State:
    entry: ScheduleEntry
    cursor: datetime
    _due: datetime | None = None  # next fire time after the cursor, plus its jitter (cached)
    failures: int = 0
    """Consecutive failed attempts to handle this schedule's due fire times."""
    retry_at: datetime | None = None
    """After a failure: not handled again before this (the others are not held back)."""

    def due_at(self) -> datetime:
        """When the next fire time after the cursor is due; computed once per cursor move."""
        if self._due is None:
            fire = next(_utc_fire_times(self.entry, self.cursor, None))
            self._due = fire + jitter_offset(self.entry.name, fire, self.entry.jitter)
        if self.retry_at is not None and self.retry_at > self._due:
            return self.retry_at
        return self._due

    def moved(self) -> None:
        self._due = None


def _utc_fire_times(entry: ScheduleEntry, after: datetime, until: datetime | None) -> Iterator[datetime]:
    """Fire times as UTC datetimes: arithmetic and comparisons on zoned datetimes ignore ``fold``."""
    for fire_time in fire_times(entry.cron, entry.timezone, after, until):
        yield fire_time.astimezone(UTC)


class Scheduler:
    """Fires the schedules of one :class:`SchedulesConfig` through a Durably instance."""

    def __init__(self, durably: Durably, config: SchedulesConfig, *, clock: Clock | None = None) -> None:
        self.durably = durably
        self.clock: Clock = clock or SystemClock()
        self.config = config
        self._states: dict[str, _State] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loaded = False
        self.last_tick_monotonic = 0.0
        self._warnings = RateLimitedLog(log)
        self.listeners: list[Callable[[ScheduleEntry, datetime, FireResult, timedelta], None]] = []

    # -- configuration --------------------------------------------------------------------------
    async def load(self) -> None:
        """Read cursors; schedules seen for the first time start from now (no surprise backfill)."""
        cursors = await self.durably.store.get_cursors()
        now = self.clock.now()
        states: dict[str, _State] = {}
        for name, entry in self.config.schedules.items():
            cursor = cursors.get(name)
            old = self._states.get(name)
            if cursor is None:
                cursor = await self.durably.store.advance_cursor(name, _whole_second(now))
            elif old is not None and (
                old.entry.cron.expression != entry.cron.expression or old.entry.timezone != entry.timezone
            ):
                # A new cron or zone starts from now: its "missed" fire times were never promised.
                cursor = await self.durably.store.advance_cursor(name, _whole_second(now))
            states[name] = _State(entry=entry, cursor=cursor)
        self._states = states
        self._loaded = True

    async def reload(self, config: SchedulesConfig) -> None:
        """Apply a new configuration without a restart."""
        self.config = config
        await self.load()
        self._wake.set()
        log.info("schedules reloaded: %d schedules from %s", len(config.schedules), config.path)

    # -- the loop ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="durably-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if not self._loaded:
                    await self.load()
                await self.tick()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(0.5 * 2**failures, MAX_SLEEP)
                what = "scheduler tick failed" if self._loaded else "scheduler could not read its cursors"
                self._warnings.error("%s (retrying in %.1fs): %s", what, delay, exc, key=f"{what}: {exc}")
                await self._sleep(delay)
                continue
            await self._sleep(self.seconds_until_next())

    def seconds_until_next(self) -> float:
        if not self._states:
            return MAX_SLEEP
        due = min(state.due_at() for state in self._states.values())
        return max(0.0, min((due - self.clock.now()).total_seconds(), MAX_SLEEP))

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def tick(self) -> list[tuple[str, datetime, FireResult]]:
        """Handle every fire time due by now; returns what was done (for tests and tools).

        Each schedule is handled on its own: one whose fire fails (its job was removed from the
        code, the database rejects the write) is retried with its own backoff, and the others go on
        at their own times. Its fire times are not lost: the cursor only moves past fire times
        that were handled, so they are caught up by its policy once the cause goes away.
        """
        self.last_tick_monotonic = time.monotonic()
        now = self.clock.now()
        work = [state for state in self._states.values() if state.due_at() <= now]
        if not work:
            return []
        results = await asyncio.gather(*(self._handle_one(state, now) for state in work))
        return [item for batch in results for item in batch]

    async def _handle_one(self, state: _State, now: datetime) -> list[tuple[str, datetime, FireResult]]:
        done: list[tuple[str, datetime, FireResult]] = []
        try:
            await self._handle(state, now, done)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state.failures += 1
            delay = min(0.5 * 2**state.failures, MAX_SLEEP)
            state.retry_at = now + timedelta(seconds=delay)
            state.moved()
            self._warnings.error(
                "schedule %s: could not handle its due fire times (retrying in %.1fs; other "
                "schedules go on): %s",
                state.entry.name,
                delay,
                exc,
                key=f"schedule {state.entry.name}: {exc}",
                extra={"schedule": state.entry.name, "job": state.entry.job},
            )
            return done
        if state.failures:
            log.info(
                "schedule %s: fire times handled again after %d failed attempts",
                state.entry.name,
                state.failures,
                extra={"schedule": state.entry.name, "job": state.entry.job},
            )
            state.failures = 0
            state.retry_at = None
            state.moved()
        return done

    async def _handle(
        self, state: _State, now: datetime, done: list[tuple[str, datetime, FireResult]]
    ) -> None:
        """All fire times of one schedule in (cursor, now], in order, per the catch-up policy.

        What was handled is appended to ``done`` as it happens (so a failure half-way keeps it).
        """
        entry = state.entry
        window_start = now - entry.catchup_window
        due = self._due_fire_times(state, now, window_start)
        if not due:
            return
        plan = _plan(entry, due, now, window_start)
        try:
            for fire_time, outcome in plan:
                fire = make_fire(entry, fire_time, outcome_without_run=outcome)
                result = await self.durably.fire(fire)
                state.cursor = fire_time
                lateness = now - fire_time
                self._notify(entry, fire_time, result, lateness)
                done.append((entry.name, fire_time, result))
        finally:
            state.moved()

    def _due_fire_times(self, state: _State, now: datetime, window_start: datetime) -> list[datetime]:
        entry = state.entry
        start = state.cursor
        floor = window_start - MISSED_LOOKBACK
        if start < floor:
            log.warning(
                "schedule %s: fire times between %s and %s are older than the catch-up window "
                "plus one day; they are not recorded one by one",
                entry.name,
                start.isoformat(),
                floor.isoformat(),
            )
            start = floor
        due: list[datetime] = []
        for fire_time in _utc_fire_times(entry, start, now):
            if fire_time + jitter_offset(entry.name, fire_time, entry.jitter) > now:
                break
            due.append(fire_time)
        return due

    def _notify(
        self, entry: ScheduleEntry, fire_time: datetime, result: FireResult, lateness: timedelta
    ) -> None:
        run = result.run
        scheduled_for = fire_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        log.info(
            "schedule %s fire time %s: %s%s",
            entry.name,
            scheduled_for,
            result.outcome,
            f" (run {run.id})" if run is not None else "",
            extra={
                "schedule": entry.name,
                "scheduled_for": scheduled_for,
                "run_id": run.id if run else None,
                "job": entry.job,
            },
        )
        for listener in self.listeners:
            try:
                listener(entry, fire_time, result, lateness)
            except Exception as exc:  # a metrics bug must not stop the scheduler
                log.error("scheduler listener failed: %r", exc)

    # -- queries for tools ----------------------------------------------------------------------
    def next_due(self) -> list[tuple[datetime, str]]:
        """(due time, schedule) for every schedule, soonest first."""
        heap = [(state.due_at(), name) for name, state in self._states.items()]
        heapq.heapify(heap)
        return [heapq.heappop(heap) for _ in range(len(heap))]


def _plan(
    entry: ScheduleEntry, due: list[datetime], now: datetime, window_start: datetime
) -> list[tuple[datetime, FireOutcome | None]]:
    """Decide per fire time: fire it (None) or record an outcome without a run."""
    if not entry.enabled:
        return [(t, "disabled") for t in due]
    on_time = [t for t in due if now - t <= MISFIRE_GRACE]
    in_window = [t for t in due if t >= window_start and t not in on_time]
    chosen: set[datetime] = set(on_time)
    if entry.catchup == "all":
        chosen.update(in_window)
    elif entry.catchup == "latest" and not on_time and in_window:
        chosen.add(in_window[-1])
    return [(t, None if t in chosen else "missed") for t in due]


def _whole_second(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(microsecond=0)


__all__ = ["Clock", "Scheduler", "SystemClock", "make_fire", "scheduled_run"]
