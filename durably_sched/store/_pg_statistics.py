"""Fresh planner statistics for ``runs`` after a burst of new runs (PostgreSQL).

The claim reads the oldest claimable runs through the partial index ``runs_active`` in ``seq``
order and stops after the few it takes, whatever the backlog. PostgreSQL picks that plan only when
its statistics know the table holds many active runs. On a table analyzed while it was small (a new
database, or the first burst of a busy minute) it estimates one matching row and instead reads
*every* pending run of the job through ``runs_job_status``, checks each one's concurrency key, and
sorts: measured here at 36 ms a claim with 17,000 pending scheduled runs (5 ms after ``ANALYZE``,
0.2-0.4 ms once the dead index entries were skipped), which held a serve to ~50 runs/s. Autovacuum
would analyze the table eventually, but only after its nap (a minute by default) and a change of a
tenth of the table.

So a store that has just inserted a burst of runs (:data:`BURST` or more in one fire batch) analyzes
``runs`` itself, in the background on a pooled connection, at most once per :data:`MIN_INTERVAL`
seconds per process, once the burst is over: :data:`QUIET` seconds after its last batch (a burst of
100,000 schedules is a hundred batches; analyzing after the first competed with the other 99 for
the server and counted a hundredth of the burst). ``ANALYZE`` samples a fixed number of rows (tens
of milliseconds at 10^5 runs) and takes a lock that blocks neither reads nor writes of rows. A
failure is logged at debug level and forgotten: the statistics are an optimisation, never a
correctness rule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .._tasks import stop_task

__all__ = ["BURST", "MIN_INTERVAL", "QUIET", "RunStatistics"]

log = logging.getLogger("durably_sched.store.postgres")

BURST = 500
"""Runs inserted by one fire batch that make the store analyze ``runs``."""
MIN_INTERVAL = 30.0
"""At most one ``ANALYZE runs`` per process in this many seconds."""
QUIET = 0.2
"""The burst is over when no batch of it came for this many seconds."""


class RunStatistics:
    """``inserted(n)`` after a batch of new runs; ``await close()`` with the store."""

    def __init__(self, run: Callable[[Callable[[Any, bool], Awaitable[None]]], Awaitable[None]]) -> None:
        self._run = run
        self._task: asyncio.Task[None] | None = None
        self._last = -MIN_INTERVAL
        self._seen = 0.0  # when the last batch of the burst came (monotonic)
        self.analyzed = 0
        """How many times this store analyzed ``runs`` (for tests)."""

    def inserted(self, count: int) -> None:
        now = time.monotonic()
        if count < BURST:
            return
        self._seen = now
        if self._task is not None and not self._task.done():
            return  # waiting for the end of this burst
        if now - self._last < MIN_INTERVAL:
            return
        self._last = now
        self._task = asyncio.get_running_loop().create_task(self._analyze(), name="durably-analyze-runs")

    async def _analyze(self) -> None:
        async def analyze(conn: Any, _replay: bool) -> None:
            await conn.execute("ANALYZE runs")

        left = QUIET
        while left > 0:  # until the burst is over
            await asyncio.sleep(left)
            left = self._seen + QUIET - time.monotonic()
        self._last = time.monotonic()
        try:
            await self._run(analyze)
            self.analyzed += 1
        except Exception as exc:  # statistics are an optimisation: never fail a fire for them
            log.debug("ANALYZE runs after a burst failed: %s", exc)

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None
