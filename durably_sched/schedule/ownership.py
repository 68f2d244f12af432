"""Schedulers share the schedules: leased buckets, and one clock.

**Buckets.** A schedule belongs to one of :data:`BUCKETS` buckets, ``crc32(name) % 256`` (stable
across processes, versions and languages, so a later version that keeps schedules in the database
can store the bucket with the schedule). Each bucket is leased, in the database and by its clock,
by one live scheduler at a time (store ``schedule_buckets``; the rule is ``rules.balance_buckets``).
Every :data:`BEAT` seconds a scheduler's :class:`Ownership` refreshes its registration, renews
its leases (of :data:`LEASE` seconds) and moves toward its fair share of the buckets: it releases
those above its share and takes free or expired ones up to it. So a scheduler that joins gets its
share within two beats of the others; one that stops cleanly frees its buckets at once (the
others take them at their next beat); one that dies (kill -9, a lost host) keeps them until its
leases expire, then the others take them: its schedules fire again within :data:`LEASE` +
:data:`BEAT` seconds plus one tick.

**Stopping in time.** A scheduler fires a bucket's schedules only while its own measure of the
lease runs: the monotonic time the beat was *sent* plus the lease's length as the database
granted it. That ends before the database lets anyone else take the bucket, whatever the hosts'
clocks say. Should two owners still overlap (a paused process resumes), the fire-time key is the
backstop: one run per fire time, the other attempt is deduplicated and writes nothing.

**What an owner fires.** The schedules of its buckets as the database defines them (the newest
version of each, of both sources: ``schedule/definitions.py``). During a rolling deploy each serve
syncs its schedules.yaml when it loads it, and every owner fires the newest version; a schedule
added in the new file fires from its next fire time once a serve running the new file synced it,
and one removed from the new file stops everywhere. Nothing fires twice: the fire-time key holds
across versions.

**One clock.** On PostgreSQL fire times fall due by the database's clock: :class:`DatabaseClock`
is the host's clock minus its offset from the database's, measured at start and every
:data:`MEASURE_EVERY` seconds (the best of three round trips, the database's time taken as read
at the middle of the round trip). An offset above :data:`OFFSET_WARN` seconds is logged, shown in
``workers list`` and exported as ``durably_scheduler_clock_offset_seconds``. SQLite serves one
host: the offset is zero by construction.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import zlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from .._ratelimit import RateLimitedLog
from ..clock import Clock, SystemClock, Timer
from ..execution.service import Service
from ..store.base import BucketLease, SchedulerInfo, SchedulerRecord

__all__ = [
    "BEAT",
    "BUCKETS",
    "LEASE",
    "MEASURE_EVERY",
    "OFFSET_WARN",
    "BucketStore",
    "DatabaseClock",
    "Ownership",
    "bucket_of",
    "scheduler_fields",
]

log = logging.getLogger("durably_sched.scheduler")

BUCKETS = 256
"""Buckets of schedules (the migration creates this many rows): enough for a fair share among tens
of schedulers, few enough that a beat renews them in one statement."""
LEASE = 10.0
"""Seconds a bucket lease lasts: a dead scheduler's schedules wait at most this (plus a beat)."""
BEAT = 1.0
"""Seconds between a scheduler's beats (its registration, renewals and rebalancing)."""
MEASURE_EVERY = 60.0
"""Seconds between measures of the host clock's offset from the database's."""
OFFSET_WARN = 1.0
"""An offset above this many seconds is logged (fire times fall due by the database's clock)."""


def scheduler_fields(record: SchedulerRecord, time: Callable[[datetime], str | None]) -> dict[str, Any]:
    """A row of the scheduler registry as JSON fields (``workers list --json``, the HTTP API and the
    dashboard's Workers page), its times written by ``time``. ``state``: live (its lease of the
    registry is running) or stale; ``buckets`` of ``buckets_total`` owned now; ``clock_offset_seconds``:
    how far its host's clock is ahead of the database's (negative: behind; None: not measured), and
    ``clock_warning`` when that is more than :data:`OFFSET_WARN` seconds either way."""
    offset = record.clock_offset
    return {
        "id": record.id,
        "state": "live" if record.live else "stale",
        "host": record.host,
        "pid": record.pid,
        "buckets": record.buckets,
        "buckets_total": BUCKETS,
        "schedules": record.schedules,
        "clock_offset_seconds": offset,
        "clock_warning": offset is not None and abs(offset) > OFFSET_WARN,
        "started_at": time(record.started_at),
        "heartbeat_at": time(record.heartbeat_at),
        "heartbeat_age": round(max(0.0, (record.read_at - record.heartbeat_at).total_seconds()), 3),
    }


def bucket_of(schedule: str) -> int:
    """The bucket of a schedule: crc32 of its name (UTF-8), modulo :data:`BUCKETS`."""
    return zlib.crc32(schedule.encode("utf-8", "surrogatepass")) % BUCKETS


class BucketStore(Protocol):
    """What ownership needs of the facade (which hands it to the store)."""

    async def balance_buckets(self, info: SchedulerInfo, lease_seconds: float, total: int) -> BucketLease: ...
    async def leave_buckets(self, scheduler_id: str) -> None: ...
    async def database_time(self) -> datetime: ...


class DatabaseClock:
    """A clock whose ``now()`` is the database's: the host's wall time minus the measured offset.
    Monotonic time, sleeps and timers are the host's (they measure durations only)."""

    def __init__(self, base: Clock | None = None) -> None:
        self.base: Clock = base or SystemClock()
        self.offset: float | None = None
        """Seconds the host's clock is ahead of the database's (None: not measured yet)."""

    def now(self) -> datetime:
        return self.base.now() - timedelta(seconds=self.offset or 0.0)

    def monotonic(self) -> float:
        return self.base.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.base.sleep(seconds)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        return await self.base.wait(event, timeout)

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        return self.base.call_later(delay, callback)

    async def measure(self, read: Callable[[], Awaitable[datetime]], samples: int = 3) -> float:
        """Measure the offset (the sample with the shortest round trip wins); returns it."""
        best: tuple[float, float] | None = None  # (round trip, offset)
        for _ in range(samples):
            sent, started = self.base.now(), self.base.monotonic()
            database = await read()
            trip = self.base.monotonic() - started
            offset = (sent + timedelta(seconds=trip / 2) - database).total_seconds()
            if best is None or trip < best[0]:
                best = (trip, offset)
        assert best is not None
        self.offset = best[1]
        return self.offset


class Ownership(Service):
    """One scheduler's bucket leases (see the module docstring)."""

    def __init__(
        self,
        store: BucketStore,
        scheduler_id: str,
        *,
        schedules: Callable[[], int],
        on_change: Callable[[frozenset[int], frozenset[int]], None],
        clock: DatabaseClock | None = None,
        lease_seconds: float = LEASE,
        interval: float = BEAT,
        measure_every: float | None = MEASURE_EVERY,
    ) -> None:
        self.database_clock = clock or DatabaseClock()
        super().__init__("scheduler ownership", interval=interval, clock=self.database_clock.base, logger=log)
        self.store = store
        self.id = scheduler_id
        self.lease_seconds = lease_seconds
        self.measure_every = measure_every
        self._schedules = schedules
        self._on_change = on_change
        self.owned: frozenset[int] = frozenset()
        self.live = 0
        """Live schedulers at the last beat (this one included)."""
        self._valid_until = 0.0  # monotonic: the leases of ``owned`` run until then
        self._buckets: dict[str, int] = {}  # bucket_of, by schedule name (a name's never changes)
        self._measured_at: float | None = None
        self._offset_log = RateLimitedLog(log, every=600.0)

    def owns(self, schedule: str) -> bool:
        """Whether this scheduler may fire the schedule now (its bucket's lease runs)."""
        bucket = self._buckets.get(schedule)
        if bucket is None:
            bucket = self._buckets[schedule] = bucket_of(schedule)  # asked per schedule and tick
        return bucket in self.owned and self.clock.monotonic() < self._valid_until

    @property
    def valid_for(self) -> float:
        """Seconds the current leases still run by this process's measure (0 when none)."""
        return max(0.0, self._valid_until - self.clock.monotonic()) if self.owned else 0.0

    async def run_once(self) -> None:
        await self.measure_clock()
        await self.beat()

    async def measure_clock(self) -> None:
        """Measure the host clock's offset, at most every ``measure_every`` seconds (None: never)."""
        now = self.clock.monotonic()
        if self.measure_every is None:
            return
        if self._measured_at is not None and now - self._measured_at < self.measure_every:
            return
        self._measured_at = now
        offset = await self.database_clock.measure(self.store.database_time)
        if abs(offset) > OFFSET_WARN:
            way = "ahead of" if offset > 0 else "behind"
            self._offset_log.warning(
                "this host's clock is %.1fs %s the database's: fire times fall due by the database's "
                "clock (fix the host's time sync)",
                abs(offset),
                way,
                key=f"clock offset {round(offset)}",
            )

    async def beat(self) -> BucketLease:
        sent = self.clock.monotonic()
        info = SchedulerInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            schedules=self._schedules(),
            clock_offset=self.database_clock.offset,
        )
        lease = await self.store.balance_buckets(info, self.lease_seconds, BUCKETS)
        granted = (lease.until - lease.database_time).total_seconds() if lease.until is not None else 0.0
        self._valid_until = sent + granted
        before, self.owned, self.live = self.owned, lease.buckets, lease.live
        if lease.buckets != before:
            gained, lost = lease.buckets - before, before - lease.buckets
            log.info(
                "scheduler %s owns %d of %d schedule buckets (%d live schedulers; +%d -%d)",
                self.id, len(lease.buckets), BUCKETS, lease.live, len(gained), len(lost),
            )  # fmt: skip
            self._on_change(gained, lost)
        return lease

    async def leave(self) -> None:
        """Free every bucket at once (a clean stop): the others take them at their next beat."""
        self.owned, self._valid_until = frozenset(), 0.0
        try:
            await self.store.leave_buckets(self.id)
        except Exception as exc:
            log.warning("scheduler %s could not free its buckets (they expire in %gs): %s", self.id,
                        self.lease_seconds, exc)  # fmt: skip
