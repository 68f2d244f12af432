"""Retention: purge finished runs and old fire records in the background, in small batches.

Every ``interval`` seconds (first right at :meth:`Retention.start`):

1. **Runs**: finished runs (completed, failed, cancelled) that finished more than ``older_than`` ago
   are deleted with their steps, logs and attempts (the database deletes a run's attempts with
   it), ``batch_size`` at a time, yielding to the event loop between batches, until a batch comes
   back short. Pending, running and waiting runs are never touched. Events (``send_event``) sent
   before the same cutoff go too.
2. **Fire records**: the per-(schedule, fire time) records are deleted only when their fire time is
   older than the *fire-record horizon*::

       max(older_than, longest catchup_window of the current schedules + MISSED_LOOKBACK) + 1 day

Why that horizon is enough for "exactly once per fire time" to survive purging:

* ``Store.fire`` treats an existing fire record as the authority: the fire time is ``deduplicated``
  and no run is created, even when the run it made has been purged. So a purged scheduled run
  cannot come back while its fire record lives.
* The scheduler never hands ``fire()`` a fire time older than ``now - catchup_window -
  MISSED_LOOKBACK`` (``Scheduler._due_fire_times`` starts no earlier than that, whatever the
  cursor says). A record older than the longest such window of the current schedules can
  therefore never be consulted by a scheduler again; it only mattered while a catch-up could reach
  its fire time. (Independently, a schedule's cursor only moves forward and is never purged, so a
  scheduler does not even look at fire times at or before it.)
* ``max(older_than, ...)``: a fire record lives at least as long as runs do, so the history of a
  schedule (``schedules history``) never loses a record before its run.
* The margin of one day covers clock differences between the hosts that run schedulers and this
  one, and the time between a fire time and the moment its run finished.
* A manual backfill of a slot older than the horizon is an explicit operator action and may
  create a run for it; that is what it is for.

Instances are expected to run the same schedules file: the horizon uses the schedules of this
process at the time of each pass (``schedules()`` returns the current configuration, so a reload
is taken into account) and the API schedules in the database (schedules as data: their longest
catch-up window, read at each pass). Without schedules (a worker-only process, ``schedules()`` returns None)
fire records are left to a process that runs the scheduler.

Failures are logged and retried at the next interval; they never stop the process.

One code path for every way of asking for it: ``create_durably(retain_runs="30d")`` makes the
Durably own a :class:`Retention` (``durably.retention``), which runs in the background from
``start()`` to ``stop()``, and once more whenever ``process_until_idle()`` reaches idle (unless a
pass finished less than ``interval`` ago; a pass in flight is waited for, never doubled).
``serve --retention`` is that same option, with the schedules of the serve process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from .._durations import format_duration, parse_duration
from ..clock import Clock
from ..execution.service import Service
from ..schedule.scheduler import MISSED_LOOKBACK

if TYPE_CHECKING:
    from ..schedule.config import SchedulesConfig
    from ..store.base import Store


class HasStore(Protocol):
    """What a :class:`Retention` needs of the facade: its store (``Durably`` is one)."""

    @property
    def store(self) -> Store: ...


__all__ = ["FIRE_RECORD_MARGIN", "PurgeResult", "Retention", "fire_record_horizon"]

log = logging.getLogger("durably_sched.ops.retention")

FIRE_RECORD_MARGIN = timedelta(days=1)


def fire_record_horizon(
    older_than: timedelta, config: SchedulesConfig, stored: timedelta = timedelta(0)
) -> timedelta:
    """How old a fire time must be before its record may be deleted (see the module docstring);
    ``stored``: the longest catch-up window of the API schedules in the database."""
    longest = max((entry.catchup_window for entry in config.schedules.values()), default=stored)
    longest = max(longest, stored)
    return max(older_than, longest + MISSED_LOOKBACK) + FIRE_RECORD_MARGIN


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What one pass deleted; None where that part was skipped or failed."""

    runs: int | None
    fire_records: int | None
    events: int | None = None
    """Events (``send_event``) sent before the same cutoff as runs."""


class Retention(Service):
    """The background purge of one process, a service (``execution.service``): ``start()`` on the
    loop, ``await stop()`` on shutdown; a pass every ``interval`` seconds, the first at the start."""

    def __init__(
        self,
        durably: HasStore,
        older_than: timedelta,
        schedules: Callable[[], SchedulesConfig | None] = lambda: None,
        *,
        interval: float = 600.0,
        batch_size: int = 500,
        clock: Clock | None = None,
    ) -> None:
        if older_than <= timedelta(0):
            raise ValueError("retention: older_than must be a positive duration")
        if interval <= 0:
            raise ValueError("retention: interval must be positive")
        if batch_size < 1:
            raise ValueError("retention: batch_size must be at least 1")
        super().__init__("retention", interval=interval, clock=clock, logger=log)
        self.durably = durably
        self.older_than = older_than
        self.schedules = schedules
        self.batch_size = batch_size
        self._lock = asyncio.Lock()
        self.last_pass_at: float | None = None
        """The clock's monotonic time when the last pass ended (None before the first)."""

    async def run_if_due(self) -> PurgeResult | None:
        """A pass unless one ended less than ``interval`` ago (None then). A pass already under way
        is waited for instead of starting a second one."""
        if self._lock.locked():
            async with self._lock:
                return None
        if self.last_pass_at is not None and self.clock.monotonic() - self.last_pass_at < self.interval:
            return None
        return await self.run_once()

    async def run_once(self) -> PurgeResult:
        """One pass (the service's): purge runs, then fire records. Errors are logged, not raised."""
        async with self._lock:
            try:
                return await self._pass()
            finally:
                self.last_pass_at = self.clock.monotonic()

    async def _pass(self) -> PurgeResult:
        now = self.clock.now()
        store = self.durably.store
        runs: int | None = None
        records: int | None = None
        cutoff = now - self.older_than
        try:
            runs = await self._in_batches(store.purge_runs, cutoff)
        except Exception as exc:
            log.error("retention: could not purge finished runs (next try in %.0fs): %s", self.interval, exc)
        else:
            if runs:
                log.info("retention: purged %d finished runs that finished before %s", runs, _iso(cutoff))
        events = await self._purge_events(cutoff)
        try:
            config = self.schedules()
            if config is None:
                log.debug("retention: no schedules in this process; fire records are left alone")
            else:
                horizon = fire_record_horizon(self.older_than, config, await self._stored_window())
                records = await self._in_batches(store.purge_fire_records, now - horizon)
                if records:
                    log.info(
                        "retention: purged %d fire records of fire times before %s (kept %s)",
                        records, _iso(now - horizon), format_duration(horizon),
                    )  # fmt: skip
        except Exception as exc:
            log.error("retention: could not purge fire records (next try in %.0fs): %s", self.interval, exc)
        return PurgeResult(runs, records, events)

    async def _stored_window(self) -> timedelta:
        """The longest catch-up window of the API schedules (schedules as data), read page by page."""
        from ..store.schedule_defs import ScheduleDefQuery

        longest, after = timedelta(0), None
        while True:
            page = await self.durably.store.list_schedule_defs(
                ScheduleDefQuery(source="api", limit=1000, after=after)
            )
            for row in page.items:
                longest = max(longest, parse_duration(row.definition.get("catchup_window") or 0))
            if page.next_cursor is None or not page.items:
                return longest
            after = page.items[-1].name

    async def _purge_events(self, cutoff: datetime) -> int | None:
        """Events sent before the runs' cutoff: a run created before then that has not reached its
        wait yet no longer receives them (docs/waiting.md)."""
        try:
            events = await self._in_batches(self.durably.store.purge_events, cutoff)
        except Exception as exc:
            log.error("retention: could not purge events (next try in %.0fs): %s", self.interval, exc)
            return None
        if events:
            log.info("retention: purged %d events sent before %s", events, _iso(cutoff))
        return events

    async def _in_batches(self, purge: Callable[[datetime, int], Awaitable[int]], cutoff: datetime) -> int:
        total = 0
        while True:
            deleted = await purge(cutoff, self.batch_size)
            total += deleted
            if deleted < self.batch_size:
                return total
            await asyncio.sleep(0)  # let runs, probes and the scheduler in between batches


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")
