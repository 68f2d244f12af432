"""The scheduler loop: turns fire times into runs, exactly once per (schedule, fire time).

Each fire time is handed to the facade as one :class:`Fire` (fire record + run with the fire-time
idempotency key + cursor); the store decides each atomically, so any number of schedulers,
restarts and manual slot triggers collapse to one run per fire time. The scheduler never writes
SQL itself.

**Sharing and batches.** With :meth:`Scheduler.share`, the schedulers on one database share the
schedules by leased buckets (``ownership.py``): a tick handles only the schedules whose bucket this
scheduler owns under a running lease. The due fire times of a tick go to the facade in batches of
up to :data:`BATCH` (a schedule's fire times never split across two), each batch one transaction of
a few set-based statements (``store/rules.fire_many``), up to :data:`PARALLEL` batches at once. A
batch that fails is handed over again schedule by schedule, so one broken schedule is retried
with its own back-off while the others go on. A schedule's run is checked once, when it loads.

Pauses (``_pauses.py``): every tick starts with one read of the paused and failing schedules. A
fire time at or after a pause began is recorded ``paused``; a resume seen by a tick moves this
scheduler's cursors up to the database's.

Time: fire times are computed in the schedule's zone (DST policy in ``cron.py``) and keyed in UTC;
they fall due by the scheduler's clock, which is the database's when shared on PostgreSQL
(``ownership.DatabaseClock``). The loop sleeps until the earliest due time (fire time + jitter), in
slices of at most ``MAX_SLEEP`` so that a wall-clock jump is noticed; after any wake-up it handles
every fire time in (cursor, now], so a jump forward catches up per policy and a jump back re-fires
nothing (the cursor and the fire records guard it). The loop runs on the service base
(``execution/service.py``): a failing load or tick is logged and retried after a back-off.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from ..clock import Clock as FullClock
from ..clock import SystemClock, Timer
from ..errors import ConfigError, InputValidationError, InvalidArgumentError, UnknownJobError
from ..execution.service import Service
from ..store.base import Fire, FireResult, NewRun, ScheduleState
from ..store.config_errors import ConfigErrorRecord
from ._pauses import PauseWatch
from .config import ScheduleEntry, SchedulesConfig
from .cron import jitter_offset
from .definitions import CHANGE_POLL, DefinitionWatch
from .firing import (
    CHECK_TIME,
    MISFIRE_GRACE,
    MISSED_LOOKBACK,
    ScheduleClock,
    batch_text,
    describe_changes,
    make_fire,
    next_utc_fire,
    outcome_text,
    pause_text,
    scheduled_run,
    whole_second,
)
from .ownership import BEAT, LEASE, DatabaseClock, Ownership, bucket_of

if TYPE_CHECKING:
    from ..ports import SchedulerFacade

log = logging.getLogger("durably_sched.scheduler")

MAX_SLEEP = 30.0
"""Longest single sleep, so a wall-clock jump is noticed within this many seconds."""
BATCH = 1000
"""Fire times per transaction (PostgreSQL locks a skip-overlap schedule per fire; keep it bounded).
With PARALLEL, a serve's share of a 10,000-schedule burst goes out in one round of batches: 500 and
4 took two rounds, and the second was the creation p99 (1.8 s against 0.26 s, 3 serves)."""
PARALLEL = 8
"""Batches of one tick in flight at once (each on a pool connection of its own)."""
LOG_EACH = 100
"""A tick with more due schedules logs one INFO line per batch, each fire time at DEBUG (a line per
fire time cost a fifth of the CPU of a 100,000-schedule burst: docs/design.md, record 47)."""
PREPARE_AHEAD = 0.2
"""A wait at least this long is used first to make the coming fire times' Fires."""


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware, UTC."""
        ...


class _NowOnly:
    """A full clock whose wall time is a given ``now()``-only clock's (tests move it by hand); the
    loop's sleeps are the system's."""

    def __init__(self, wall: Clock) -> None:
        self.wall = wall
        self.system = SystemClock()

    def now(self) -> datetime:
        return self.wall.now()

    def monotonic(self) -> float:
        return self.system.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.system.sleep(seconds)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        return await self.system.wait(event, timeout)

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        return self.system.call_later(delay, callback)


def _full(clock: Clock | None) -> FullClock:
    if clock is None:
        return SystemClock()
    if hasattr(clock, "wait") and hasattr(clock, "monotonic"):
        return clock  # type: ignore[return-value]
    return _NowOnly(clock)


Done = list[tuple[str, datetime, FireResult]]
Batch = list[tuple[ScheduleClock, list[tuple[datetime, Fire]]]]
"""Whole schedules' fire times, about BATCH of them (a schedule's are never split)."""
Listener = Callable[[ScheduleEntry, datetime, FireResult, timedelta], None]


class Scheduler(DefinitionWatch, PauseWatch, Service):
    """Fires the schedules of one :class:`SchedulesConfig` through a Durably instance."""

    def __init__(
        self, durably: SchedulerFacade, config: SchedulesConfig, *, clock: Clock | None = None
    ) -> None:
        super().__init__("scheduler", interval=MAX_SLEEP, clock=_full(clock), backoff_first=1.0,
                         backoff_max=MAX_SLEEP, logger=log)  # fmt: skip
        self.durably = durably
        self.config = config
        self._states: dict[str, ScheduleClock] = {}
        self._paused: dict[str, ScheduleState] = {}  # paused schedules, as the last tick read them
        self._wake = asyncio.Event()
        self._loaded = False
        self._gained = False  # buckets were taken: read their cursors before firing them
        self.ownership: Ownership | None = None
        self._checked: dict[str, tuple[ScheduleEntry, NewRun]] = {}  # by check(): each schedule's run
        self._own: dict[str, tuple[str, ScheduleEntry]] = {}
        self._seq = 0  # the newest schedule change applied (definitions.py)
        self._versions: dict[str, int] = {}
        self.last_tick_monotonic = 0.0
        self.listeners: list[Listener] = []
        self.config_error: ConfigErrorRecord | None = None
        """The last reload of the schedules file failed (set by schedule.reloading); None: it did not."""
        self.check(config)
        durably.use_schedules(config)

    def share(
        self,
        scheduler_id: str,
        *,
        lease_seconds: float = LEASE,
        interval: float = BEAT,
        database_clock: bool = True,
    ) -> Ownership:
        """Share the schedules with the other schedulers on the database (call before start):
        fire only the schedules of the buckets this one leases; with ``database_clock``, fire
        times fall due by the database's clock (see ownership.py)."""
        clock = DatabaseClock(self.clock)
        if database_clock:
            self.clock = clock
        self.ownership = Ownership(
            self.durably,
            scheduler_id,
            schedules=lambda: len(self._states),
            on_change=self._owned_changed,
            clock=clock,
            lease_seconds=lease_seconds,
            interval=interval,
            measure_every=None if not database_clock else 60.0,
        )
        return self.ownership

    def _owned_changed(self, gained: frozenset[int], lost: frozenset[int]) -> None:
        if gained:
            self._gained = True
        self._wake.set()

    def owns(self, name: str) -> bool:
        return self.ownership is None or self.ownership.owns(name)

    # -- configuration --------------------------------------------------------------------------
    def sync_by(self) -> str:
        """Who a sync of the file is, in its versions: this scheduler (the serve's worker id)."""
        if self.ownership is not None:
            return self.ownership.id
        from .pausing import default_actor

        return f"scheduler of {default_actor()}"

    async def load(self) -> None:
        """Sync the file into the database, read the definitions (definitions.py) and the cursors;
        schedules seen for the first time start from now (no surprise backfill).

        Cursors are read in one query and the missing (or changed) ones written in one batch, then
        read again: a schedule another process started first keeps that process's cursor."""
        started = time.monotonic()
        if self._synced is not self.config:
            await self.sync(self.config)
        schedules = await self.definitions()
        cursors = await self.durably.get_cursors()
        now = whole_second(self.clock.now())
        restart: dict[str, datetime] = {}
        for name, entry in schedules.items():
            old = self._states.get(name)
            if name not in cursors or (
                old is not None
                and (
                    old.entry.cron.expression != entry.cron.expression or old.entry.timezone != entry.timezone
                )
            ):
                # New, or a new cron or zone: it starts from now; "missed" fire times were never promised.
                restart[name] = now
        if restart:
            await self.durably.advance_cursors(restart)
            cursors = await self.durably.get_cursors()
        self._states = {
            name: ScheduleClock(
                entry=entry,
                cursor=cursors[name],
                template=self._template(entry),
                version=self._versions.get(name),
            )
            for name, entry in schedules.items()
        }
        paused = {
            name: state for name, state in (await self.durably.get_schedule_states()).items() if state.paused
        }
        for name, state in paused.items():
            if name in self._states and name not in self._paused:
                log.info("schedule %s is paused (%s)", name, pause_text(state), extra={"schedule": name})
        self._paused = paused
        if not self._loaded:
            count = len(self._states)
            log.info(
                "scheduler ready: %d schedule%s loaded in %.2fs (%d new cursor%s)",
                count, "" if count == 1 else "s", time.monotonic() - started,
                len(restart), "" if len(restart) == 1 else "s",
            )  # fmt: skip
        self._loaded = True

    def _template(self, entry: ScheduleEntry) -> NewRun | None:
        """The schedule's run as stored, checked once (None while its job is not registered)."""
        checked = self._checked.get(entry.name)
        if checked is not None and checked[0] is entry:
            return checked[1]  # made by check() for this very entry
        if entry.job not in self.durably.job_names:
            return None
        return self.durably.scheduled_run(entry.name, scheduled_run(entry, CHECK_TIME))

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
        checked: dict[str, tuple[ScheduleEntry, NewRun]] = {}
        for entry in config.schedules.values():
            if entry.job in self.durably.job_names:
                try:
                    run = self.durably.scheduled_run(entry.name, scheduled_run(entry, CHECK_TIME))
                except (InvalidArgumentError, InputValidationError) as exc:
                    raise ConfigError(str(exc), path=config.path) from exc
                checked[entry.name] = (entry, run)
        self._checked = checked

    # -- the loop (a service: start, stop, back-off) ---------------------------------------------
    def start(self) -> None:
        if self.ownership is not None:
            self.ownership.start()
        self.durably.on_schedules_changed(self._wake.set)  # PostgreSQL: a change's NOTIFY wakes it
        super().start()

    async def stop(self) -> None:
        self.durably.on_schedules_changed(self._wake.set, add=False)
        await super().stop()
        if self.ownership is not None:
            await self.ownership.stop()
            await self.ownership.leave()

    async def run(self) -> None:
        ownership = self.ownership
        if (
            ownership is not None
            and ownership.measure_every is not None
            and ownership.database_clock.offset is None
        ):
            # The cursors of new schedules start at the database's now, so measure before loading.
            await ownership.database_clock.measure(self.durably.database_time)
        while True:
            if not self._loaded:
                await self.load()
            await self.apply_changes()
            await self.tick()
            self.healthy()
            await self._sleep(self._prepare_next())

    def on_error(self, exc: Exception) -> None:
        what = "scheduler tick failed" if self._loaded else "scheduler could not read its cursors"
        self._warnings.error("%s (retrying in %.1fs): %s", what, self.backoff(), exc, key=f"{what}: {exc}")

    def seconds_until_next(self) -> float:
        owned = [state for name, state in self._states.items() if self.owns(name)]
        if not owned:
            return MAX_SLEEP
        due = min(state.due_at() for state in owned)
        return max(0.0, min((due - self.clock.now()).total_seconds(), MAX_SLEEP))

    def _prepare_next(self) -> float:
        """Before sleeping until a burst, make its fire times' Fires (fair: nothing is written
        before its time); returns the seconds to sleep from now."""
        wait = self.seconds_until_next()
        if wait >= PREPARE_AHEAD:
            due = self.clock.now() + timedelta(seconds=wait)
            paused = _pause_collector(len(self._states) > LOG_EACH)
            try:
                for name, state in self._states.items():
                    if state.due_at() <= due and self.owns(name):
                        state.prepare()
            finally:
                if paused:
                    gc.enable()
            wait = self.seconds_until_next()
        return wait

    async def _sleep(self, seconds: float) -> None:
        """Sleep until the next due time or a wake-up; meanwhile apply schedule changes as they
        come (read every CHANGE_POLL seconds, or at once when the store notifies)."""
        self._wake.clear()
        until = self.clock.monotonic() + seconds
        while (left := until - self.clock.monotonic()) > 0:
            if await self.clock.wait(self._wake, min(left, CHANGE_POLL)):
                return
            if await self.apply_changes():
                return

    async def tick(self) -> Done:
        """Handle every fire time due by now of the schedules this scheduler owns; returns what was
        done (for tests and tools).

        A schedule whose fire fails (its job was removed from the code, the database rejects the
        write) is retried with its own back-off, and the others go on at their own times. Its fire
        times are not lost: the cursor only moves past fire times that were handled, so they are
        caught up by its policy once the cause goes away.
        """
        self.last_tick_monotonic = time.monotonic()
        if self._gained:
            await self._take_cursors()
        now = self.clock.now()
        # Read after taking "now": a pause that this read misses committed after every fire time
        # handled below was due, so no fire time due after a pause is ever triggered.
        await self._read_pauses()
        due = [state for name, state in self._states.items() if state.due_at() <= now and self.owns(name)]
        done: Done = []
        if not due:
            return done
        each = len(due) <= LOG_EACH
        gate = asyncio.Semaphore(PARALLEL)

        async def one(batch: Batch) -> None:
            async with gate:
                await self._fire_batch(batch, now, done, each)

        sending: list[asyncio.Task[None]] = []
        paused = _pause_collector(not each)
        try:
            batch: Batch = []
            size = 0
            for state in due:
                plan = self._fires(state, now)
                if size and size + len(plan) > BATCH:
                    # Sent while the next batch is made: the database works as this process plans.
                    sending.append(asyncio.ensure_future(one(batch)))
                    await asyncio.sleep(0)
                    batch, size = [], 0
                if plan:
                    batch.append((state, plan))
                    size += len(plan)
            if batch:
                sending.append(asyncio.ensure_future(one(batch)))
            await asyncio.gather(*sending)
        except BaseException:
            for task in sending:
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)
            raise
        finally:
            if paused:
                gc.enable()
        return done

    async def _take_cursors(self) -> None:
        """Buckets were taken over: their schedules' cursors may have moved in the previous owner."""
        self._gained = False
        cursors = await self.durably.get_cursors()
        for name, state in self._states.items():
            cursor = cursors.get(name)
            if cursor is not None and cursor > state.cursor:
                state.cursor = cursor
                state.moved()

    def _fires(self, state: ScheduleClock, now: datetime) -> list[tuple[datetime, Fire]]:
        """A due schedule's fire times in (cursor, now], per its catch-up policy and pause; a
        schedule whose run cannot be made (its job is not registered) fails here, on its own."""
        entry = state.entry
        window_start = now - entry.catchup_window
        due = self._due_fire_times(state, now, window_start)
        if not due:
            return []
        try:
            if state.template is None and entry.job in self.durably.job_names:
                state.template = self._template(entry)
            if state.template is None:
                self.durably.job_by_name(entry.job)  # raises: the job is not registered here
            return [
                (t, state.fire(t, outcome))
                for t, outcome in self._plan_with_pause(entry, due, now, window_start)
            ]
        except (UnknownJobError, InvalidArgumentError, InputValidationError) as exc:
            self._failed(state, now, exc)
            return []

    async def _fire_batch(self, batch: Batch, now: datetime, done: Done, each: bool) -> None:
        """One transaction for the batch; when it fails, each schedule of it on its own. ``each``:
        a line per fire time at INFO, else one line for the batch (and a line per fire time at
        DEBUG)."""
        mine: Done = []
        try:
            results = await self.durably.fire_many(
                [fire for _, plan in batch for _, fire in plan], checked=True
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            for state, plan in batch:
                await self._fire_alone(state, plan, now, mine, each)
        else:
            position = iter(results)
            for state, plan in batch:
                self._handled(state, [(t, next(position)) for t, _ in plan], now, mine, each)
        done.extend(mine)
        if not each and mine:
            log.info("%s", batch_text(mine))

    async def _fire_alone(
        self, state: ScheduleClock, plan: list[tuple[datetime, Fire]], now: datetime, done: Done, each: bool
    ) -> None:
        try:
            results = await self.durably.fire_many([fire for _, fire in plan], checked=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(state, now, exc)
            return
        self._handled(state, list(zip((t for t, _ in plan), results, strict=True)), now, done, each)

    def _handled(
        self,
        state: ScheduleClock,
        results: list[tuple[datetime, FireResult]],
        now: datetime,
        done: Done,
        each: bool,
    ) -> None:
        entry = state.entry
        level = logging.INFO if each else logging.DEBUG
        for fire_time, result in results:
            self._notify(entry, fire_time, result, now - fire_time, level)
            done.append((entry.name, fire_time, result))
        state.cursor = max(state.cursor, results[-1][0])
        state.moved()
        if state.failures:
            log.info(
                "schedule %s: fire times handled again after %d failed attempts",
                entry.name, state.failures, extra={"schedule": entry.name, "job": entry.job},
            )  # fmt: skip
            state.failures = 0
            state.retry_at = None
            state.moved()

    def _failed(self, state: ScheduleClock, now: datetime, exc: Exception) -> None:
        state.failures += 1
        delay = min(0.5 * 2**state.failures, MAX_SLEEP)
        state.retry_at = now + timedelta(seconds=delay)
        state.moved()
        self._warnings.error(
            "schedule %s: could not handle its due fire times (retrying in %.1fs; other "
            "schedules go on): %s",
            state.entry.name, delay, exc,
            key=f"schedule {state.entry.name}: {exc}",
            extra={"schedule": state.entry.name, "job": state.entry.job},
        )  # fmt: skip

    def _due_fire_times(self, state: ScheduleClock, now: datetime, window_start: datetime) -> list[datetime]:
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
        fire_time: datetime | None = start
        while fire_time is not None:
            fire_time = next_utc_fire(entry.cron, entry.timezone, fire_time)
            if fire_time is None or fire_time + jitter_offset(entry.name, fire_time, entry.jitter) > now:
                break
            due.append(fire_time)
        return due

    def _notify(
        self,
        entry: ScheduleEntry,
        fire_time: datetime,
        result: FireResult,
        lateness: timedelta,
        level: int = logging.INFO,
    ) -> None:
        # The run, schedule and fire time are fields of the record (the text log shows them in
        # front of the message, the JSON log as keys): the message says only what happened.
        if log.isEnabledFor(level):
            run = result.run
            log.log(
                level,
                "%s",
                outcome_text(entry, fire_time, result, lateness),
                extra={
                    "schedule": entry.name,
                    "scheduled_for": fire_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
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
    def schedule_names(self) -> list[str]:
        """The schedules it fires (the database's, of both sources), or the file's before it loaded."""
        return list(self._states) if self._loaded else list(self.config.schedules)

    def next_fire_times(self) -> dict[str, datetime]:
        """The next fire time (UTC) this scheduler will handle, per schedule."""
        return {name: state.next_fire() for name, state in self._states.items()}

    def next_due(self) -> list[tuple[datetime, str]]:
        """(due time, schedule) for every schedule, soonest first."""
        heap = [(state.due_at(), name) for name, state in self._states.items()]
        heapq.heapify(heap)
        return [heapq.heappop(heap) for _ in range(len(heap))]


def _pause_collector(large: bool) -> bool:
    """Turn Python's cyclic garbage collector off for a large burst; True when it was turned off
    (the caller turns it on again). A burst allocates millions of short-lived objects (few of them
    in cycles, which wait until it is over): each allocation-triggered collection walks every live
    object, the 100,000 schedules' included, and took ~30 % of the scheduler's CPU (record 47)."""
    if not large or not gc.isenabled():
        return False
    gc.disable()
    return True


__all__ = [
    "BATCH",
    "MISFIRE_GRACE",
    "MISSED_LOOKBACK",
    "Clock",
    "Scheduler",
    "SystemClock",
    "bucket_of",
    "describe_changes",
    "make_fire",
    "scheduled_run",
]
