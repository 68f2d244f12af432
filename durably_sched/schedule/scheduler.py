"""The scheduler loop: turns fire times into runs, exactly once per (schedule, fire time).

Each fire time is handed to the facade as one atomic :class:`Fire` (fire record + run with the
fire-time idempotency key + cursor), so any number of schedulers, restarts and manual slot triggers
collapse to one run per fire time. The scheduler never writes SQL itself.

Pauses (``pausing.py`` has the rules): every tick starts with one read of the paused and failing
schedules (an index holds only those, so the read does not grow with the number of schedules, and
nothing is read per fire time). A fire time at or after a pause began is recorded ``paused``; a
resume seen by a tick moves this scheduler's cursors up to the database's (the resume moved the
schedule's cursor past the paused span). A schedule with ``pause_after_failures: N`` that has N
failed runs since its last resume is paused by the first scheduler to see it.

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

from .._durations import format_duration
from .._ratelimit import RateLimitedLog
from .._tasks import stop_task
from ..errors import ConfigError, InputValidationError, InvalidArgumentError
from ..events import ScheduleAutoPauseEvent
from ..store.base import Fire, FireOutcome, FireResult, NewRun, ScheduleState
from ..store.config_errors import ConfigErrorRecord
from .config import ScheduleEntry, SchedulesConfig
from .cron import fire_key, fire_times, jitter_offset
from .pausing import AUTO_PAUSE_BY

if TYPE_CHECKING:
    from ..ports import SchedulerFacade

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


_CHECK_TIME = datetime(2000, 1, 1, tzinfo=UTC)
"""The fire time of the run :meth:`Scheduler.check` builds (its key is as long as any other's)."""


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
    replace_paused: bool = False,
) -> Fire:
    """The Fire for one fire time: a run, or a record only (``missed``/``disabled``/``paused``).

    ``replace_paused``: a fire time recorded ``paused`` is handled again (catch-up on resume).
    """
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
        replace_paused=replace_paused,
    )


@dataclass
class _State:
    entry: ScheduleEntry
    cursor: datetime
    _next: datetime | None = None  # next fire time after the cursor (cached)
    _due: datetime | None = None  # ... plus its jitter
    failures: int = 0
    """Consecutive failed attempts to handle this schedule's due fire times."""
    retry_at: datetime | None = None
    """After a failure: not handled again before this (the others are not held back)."""

    def next_fire(self) -> datetime:
        """The next fire time after the cursor; computed once per cursor move."""
        if self._next is None:
            self._next = next(_utc_fire_times(self.entry, self.cursor, None))
        return self._next

    def due_at(self) -> datetime:
        """When the next fire time after the cursor is due (its jitter added)."""
        if self._due is None:
            fire = self.next_fire()
            self._due = fire + jitter_offset(self.entry.name, fire, self.entry.jitter)
        if self.retry_at is not None and self.retry_at > self._due:
            return self.retry_at
        return self._due

    def moved(self) -> None:
        self._next = self._due = None


def _utc_fire_times(entry: ScheduleEntry, after: datetime, until: datetime | None) -> Iterator[datetime]:
    """Fire times as UTC datetimes: arithmetic and comparisons on zoned datetimes ignore ``fold``."""
    for fire_time in fire_times(entry.cron, entry.timezone, after, until):
        yield fire_time.astimezone(UTC)


class Scheduler:
    """Fires the schedules of one :class:`SchedulesConfig` through a Durably instance."""

    def __init__(
        self, durably: SchedulerFacade, config: SchedulesConfig, *, clock: Clock | None = None
    ) -> None:
        self.durably = durably
        self.clock: Clock = clock or SystemClock()
        self.config = config
        self._states: dict[str, _State] = {}
        self._paused: dict[str, ScheduleState] = {}  # paused schedules, as the last tick read them
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loaded = False
        self.last_tick_monotonic = 0.0
        self._warnings = RateLimitedLog(log)
        self.listeners: list[Callable[[ScheduleEntry, datetime, FireResult, timedelta], None]] = []
        self.config_error: ConfigErrorRecord | None = None
        """The last reload of the schedules file failed (set by schedule.reloading); None: it did not."""
        self.check(config)
        durably.use_schedules(config)

    # -- configuration --------------------------------------------------------------------------
    async def load(self) -> None:
        """Read cursors; schedules seen for the first time start from now (no surprise backfill)."""
        cursors = await self.durably.get_cursors()
        now = self.clock.now()
        states: dict[str, _State] = {}
        for name, entry in self.config.schedules.items():
            cursor = cursors.get(name)
            old = self._states.get(name)
            if cursor is None:
                cursor = await self.durably.advance_cursor(name, _whole_second(now))
            elif old is not None and (
                old.entry.cron.expression != entry.cron.expression or old.entry.timezone != entry.timezone
            ):
                # A new cron or zone starts from now: its "missed" fire times were never promised.
                cursor = await self.durably.advance_cursor(name, _whole_second(now))
            states[name] = _State(entry=entry, cursor=cursor)
        self._states = states
        paused = {
            name: state for name, state in (await self.durably.get_schedule_states()).items() if state.paused
        }
        for name, state in paused.items():
            if name in states and name not in self._paused:
                log.info("schedule %s is paused (%s)", name, _pause_text(state), extra={"schedule": name})
        self._paused = paused
        self._loaded = True

    async def reload(self, config: SchedulesConfig) -> None:
        """Apply a new configuration without a restart; logs which schedules changed.

        All or nothing: a configuration that :meth:`check` refuses changes nothing, and when reading
        the cursors fails, the previous configuration stays in force."""
        self.check(config)
        changes = describe_changes(self.config, config)
        previous, self.config = self.config, config
        try:
            await self.load()
        except BaseException:
            self.config = previous
            raise
        self.durably.use_schedules(config)
        self._wake.set()
        log.info("schedules reloaded from %s: %s", config.path, changes)

    def check(self, config: SchedulesConfig) -> None:
        """Refuse schedules whose runs the facade would refuse at every fire time (an input, labels
        or a key past a limit), once, when they load: ConfigError naming the file and the schedule
        (its cause is the facade's error). Schedules of jobs not registered here are left to their
        fire times."""
        for entry in config.schedules.values():
            if entry.job in self.durably.job_names:
                try:
                    self.durably.scheduled_run(entry.name, scheduled_run(entry, _CHECK_TIME))
                except (InvalidArgumentError, InputValidationError) as exc:
                    raise ConfigError(str(exc), path=config.path) from exc

    # -- the loop ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="durably-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

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
        # Read after taking "now": a pause that this read misses committed after every fire time
        # handled below was due, so no fire time due after a pause is ever triggered.
        await self._read_pauses()
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
        plan = self._plan_with_pause(entry, due, now, window_start)
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

    # -- pauses ---------------------------------------------------------------------------------
    async def _read_pauses(self) -> None:
        """One read per tick: what changed among paused schedules, and automatic pauses due."""
        durably = self.durably
        found = await durably.schedule_states_needing_attention()
        paused = {name: state for name, state in found.items() if state.paused}
        for name in paused.keys() - self._paused.keys():
            if name in self._states:
                log.info("schedule %s paused (%s)", name, _pause_text(paused[name]), extra={"schedule": name})
        # Resumed since the last tick, or resumed and paused again (another pause began): either way
        # a resume moved the cursor.
        resumed = [
            name
            for name, before in self._paused.items()
            if name in self._states and (name not in paused or paused[name].paused_at != before.paused_at)
        ]
        self._paused = paused
        if resumed:
            # The resume moved each cursor past the paused span: never fire that span from here.
            cursors = await durably.get_cursors()
            for name in resumed:
                state = self._states[name]
                cursor = cursors.get(name)
                if cursor is not None and cursor > state.cursor:
                    state.cursor = cursor
                    state.moved()
                if name in paused:
                    text = _pause_text(paused[name])
                    log.info(
                        "schedule %s resumed and paused again (%s)", name, text, extra={"schedule": name}
                    )
                else:
                    log.info(
                        "schedule %s resumed: it fires again from its next fire time",
                        name,
                        extra={"schedule": name},
                    )
        for name, row in found.items():
            entry = self._states[name].entry if name in self._states else None
            limit = entry.pause_after_failures if entry is not None else None
            if entry is None or limit is None or row.paused or row.failures_since_resume < limit:
                continue
            await self._auto_pause(entry, row, limit)

    async def _auto_pause(self, entry: ScheduleEntry, state: ScheduleState, limit: int) -> None:
        durably = self.durably
        failures = state.failures_since_resume
        reason = f"{failures} consecutive failed runs"
        if state.last_failed_run_id is not None:
            last = await durably.find_run(state.last_failed_run_id)
            error = (last.error or "").splitlines()[0][:200] if last is not None and last.error else ""
            reason += f"; the last, run {state.last_failed_run_id}, failed" + (f": {error}" if error else "")
        change = await durably.auto_pause_schedule(
            entry.name, reason=reason, by=AUTO_PAUSE_BY, min_failures=limit
        )
        if change.state.paused:
            self._paused[entry.name] = change.state
        if not change.changed:
            return  # another scheduler paused it first, or a run completed meanwhile
        log.warning(
            "schedule %s paused automatically (pause_after_failures: %d): %s; "
            "resume it with `durably-sched schedules resume %s`",
            entry.name,
            limit,
            reason,
            entry.name,
            extra={"schedule": entry.name, "job": entry.job},
        )
        events = self.durably.events
        if events.wants("schedule:auto-pause"):
            events.emit(
                ScheduleAutoPauseEvent(
                    schedule=entry.name,
                    by=AUTO_PAUSE_BY,
                    reason=reason,
                    failures=failures,
                    last_failed_run_id=state.last_failed_run_id,
                )
            )

    def _plan_with_pause(
        self, entry: ScheduleEntry, due: list[datetime], now: datetime, window_start: datetime
    ) -> list[tuple[datetime, FireOutcome | None]]:
        """The catch-up plan, with fire times at or after a pause in force recorded ``paused``."""
        pause = self._paused.get(entry.name)
        if pause is None or pause.paused_at is None or not entry.enabled:
            return _plan(entry, due, now, window_start)
        began = pause.paused_at
        before = [t for t in due if t < began]
        return [*_plan(entry, before, now, window_start), *((t, "paused") for t in due if t >= began)]

    def paused(self, name: str) -> ScheduleState | None:
        """The pause in force for a schedule, as this scheduler's last tick read it."""
        return self._paused.get(name)

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
        # The run, schedule and fire time are fields of the record (the text log shows them in
        # front of the message, the JSON log as keys): the message says only what happened.
        log.info(
            "%s",
            _outcome_text(entry, fire_time, result, lateness),
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
    def next_fire_times(self) -> dict[str, datetime]:
        """The next fire time (UTC) this scheduler will handle, per schedule."""
        return {name: state.next_fire() for name, state in self._states.items()}

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


def _outcome_text(entry: ScheduleEntry, fire_time: datetime, result: FireResult, lateness: timedelta) -> str:
    """What a fire time came to, in a few words: ``fired: run triggered (2h03m late, catch-up)``,
    in the words of its fire record's outcome. A jittered start is late by its jitter on purpose:
    only the lateness beyond it counts as a catch-up."""
    outcome = result.outcome
    if outcome == "triggered":
        jitter = jitter_offset(entry.name, fire_time, entry.jitter)
        late = lateness - jitter
        if late > MISFIRE_GRACE:
            return f"fired: run triggered ({format_duration(_whole(late))} late, catch-up)"
        if jitter > timedelta(0):
            return f"fired: run triggered (jitter: {format_duration(_whole(jitter))} after its fire time)"
        return "fired: run triggered"
    if outcome == "deduplicated":
        status = f" ({result.run.status})" if result.run is not None else ""
        return f"fired: deduplicated, this fire time already has its run{status}"
    if outcome == "skipped":
        return "fired: skipped, a run of the schedule is still active (overlap: skip)"
    if outcome == "disabled":
        return "not run: the schedule is disabled"
    if outcome == "paused":
        return "not run: the schedule is paused (recorded paused; `schedules resume --catchup` runs it)"
    if lateness > entry.catchup_window:
        return f"missed: older than the catch-up window ({format_duration(entry.catchup_window)})"
    return f"missed: catch-up {entry.catchup} does not run it"


def _whole(delta: timedelta) -> timedelta:
    return timedelta(seconds=round(delta.total_seconds()))


_COMPARED = frozenset(ScheduleEntry.model_fields) - {"name", "line"}


def describe_changes(old: SchedulesConfig, new: SchedulesConfig) -> str:
    """``added a, b; removed c; changed d (cron, input); 4 schedules`` (moved lines are no change)."""
    before, after = old.schedules, new.schedules
    added = [name for name in after if name not in before]
    removed = [name for name in before if name not in after]
    changed = []
    for name, entry in after.items():
        previous = before.get(name)
        if previous is None:
            continue
        fields = [
            f
            for f in ScheduleEntry.model_fields
            if f in _COMPARED and getattr(previous, f) != getattr(entry, f)
        ]
        if fields:
            changed.append(f"{name} ({', '.join(fields)})")
    parts = [
        f"{verb} {', '.join(names)}"
        for verb, names in (("added", added), ("removed", removed), ("changed", changed))
        if names
    ]
    count = len(after)
    total = f"{count} schedule{'' if count == 1 else 's'}"
    return f"{'; '.join(parts)}; {total}" if parts else f"no schedule changed; {total}"


def _pause_text(state: ScheduleState) -> str:
    since = state.paused_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if state.paused_at else "?"
    reason = f": {state.pause_reason}" if state.pause_reason else ""
    return f"since {since} by {state.paused_by or '?'}{reason}; its fire times are recorded as paused"


def _whole_second(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(microsecond=0)


__all__ = ["Clock", "Scheduler", "SystemClock", "describe_changes", "make_fire", "scheduled_run"]
