"""Liveness and readiness of a durably-sched process, independent of any HTTP transport.

:class:`Health` answers the two questions an orchestrator asks; the web app (``durably_sched.web``)
serves them as ``/healthz`` and ``/readyz``, and anything else (a CLI, another web framework) can
ask them too.

* **Liveness** proves that the event loop running the worker and the scheduler is not stuck. A
  :class:`LoopLagWatcher` task measures how late the loop wakes it up; liveness fails when that lag
  exceeds :data:`MAX_LOOP_LAG` (a job function that blocks the loop, a stuck C call), which a
  liveness probe turns into a restart. The answer must come from the same loop, which is why the
  HTTP server runs on serve's own loop rather than in a thread.
* **Readiness** checks what the process needs to do useful work, each check named:

  * ``database``: ``store.ping()`` answers within :data:`CHECK_TIMEOUT`;
  * ``schema``: ``store.check_schema()`` (the database was migrated to this version);
  * ``scheduler`` (when one runs here): its loop is running and ticked within ``MAX_SLEEP + 15`` s
    (it ticks at least every ``MAX_SLEEP`` seconds);
  * ``worker`` (when one runs here): its claim loop is running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric

from ..schedule.scheduler import MAX_SLEEP

if TYPE_CHECKING:
    from ..ports import OpsFacade
    from ..schedule.scheduler import Scheduler

__all__ = ["CHECK_TIMEOUT", "MAX_LOOP_LAG", "Health", "LoopLagWatcher", "scheduler_check"]

CHECK_TIMEOUT = 2.0
"""Seconds each readiness check of the database may take."""
SCHEDULER_TICK_SLACK = 15.0
"""Seconds beyond ``MAX_SLEEP`` a scheduler tick may be overdue before the process is not ready."""
LAG_INTERVAL = 0.5
MAX_LOOP_LAG = 5.0
"""Event-loop lag, in seconds, above which liveness fails."""


class LoopLagWatcher:
    """A task that wakes every :data:`LAG_INTERVAL` seconds and records how late it was woken."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._next_tick = 0.0
        self.last_lag = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start watching the running loop (idempotent)."""
        if self.running:
            return
        loop = asyncio.get_running_loop()
        self._next_tick = loop.time() + LAG_INTERVAL
        self._task = loop.create_task(self._watch(), name="durably-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            interval = LAG_INTERVAL
            self._next_tick = loop.time() + interval
            await asyncio.sleep(interval)
            self.last_lag = max(0.0, loop.time() - self._next_tick)

    def lag(self) -> float:
        """Seconds the loop was late at the last tick, or is late now for the next one (the larger)."""
        overdue = asyncio.get_running_loop().time() - self._next_tick
        return max(self.last_lag, overdue, 0.0)

    def collect(self) -> Iterable[Metric]:
        """``durably_event_loop_lag_seconds``: register the watcher on a metrics registry."""
        gauge = GaugeMetricFamily(
            "durably_event_loop_lag_seconds",
            "How late the event loop ran a 0.5 s timer at its last tick (/healthz fails above 5 s).",
        )
        gauge.add_metric([], self.last_lag)
        yield gauge


class Health:
    """Liveness and readiness of one process.

    ``scheduler`` is the scheduler running in this process (or a function returning it, for apps
    whose scheduler starts later, in a lifespan). ``worker``: whether readiness requires the worker
    to be running; by default it does once the worker has been seen running, so a process started
    without a worker is not held unready.
    """

    def __init__(
        self,
        durably: OpsFacade,
        scheduler: Scheduler | Callable[[], Scheduler | None] | None = None,
        *,
        worker: bool | None = None,
    ) -> None:
        self.durably = durably
        self._scheduler = scheduler
        self._worker_expected = worker
        self._worker_seen = False
        self.watcher = LoopLagWatcher()

    @property
    def scheduler(self) -> Scheduler | None:
        source = self._scheduler
        if source is None or not callable(source):
            return source
        found: Scheduler | None = source()
        return found

    def liveness(self) -> tuple[bool, str]:
        """(alive, reason). Starts the loop-lag watcher on first use if nobody started it."""
        if not self.watcher.running:
            if self.watcher._task is None:
                self.watcher.start()  # first probe of an app whose owner did not start it
            else:
                return False, "event-loop watcher is not running"
        lag = self.watcher.lag()
        if lag > MAX_LOOP_LAG:
            return False, f"event loop lag {lag:.1f}s (limit {MAX_LOOP_LAG:.0f}s)"
        return True, "ok"

    async def readiness(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """(ready, {check name: {"status": "ok" | "fail", "detail": ...}})."""
        durably = self.durably
        database, schema = await asyncio.gather(_probe(durably.ping), _probe(durably.check_schema))
        checks: dict[str, dict[str, Any]] = {"database": database, "schema": schema}
        scheduler = self.scheduler
        if scheduler is not None:
            checks["scheduler"] = scheduler_check(scheduler)
        worker = self.durably.worker
        if worker.running:
            self._worker_seen = True
        expected = self._worker_expected if self._worker_expected is not None else self._worker_seen
        if expected:
            checks["worker"] = _ok() if worker.running else _fail("the worker's claim loop is not running")
        return all(c["status"] == "ok" for c in checks.values()), checks


def scheduler_check(scheduler: Scheduler) -> dict[str, Any]:
    limit = MAX_SLEEP + SCHEDULER_TICK_SLACK
    if not scheduler.running:
        return _fail("the scheduler loop is not running")
    if scheduler.last_tick_monotonic <= 0:
        return _fail("the scheduler has not ticked yet")
    age = time.monotonic() - scheduler.last_tick_monotonic
    if age > limit:
        return _fail(f"last tick {age:.0f}s ago (limit {limit:.0f}s)")
    return _ok(f"last tick {age:.1f}s ago")


def _ok(detail: str | None = None) -> dict[str, Any]:
    return {"status": "ok"} if detail is None else {"status": "ok", "detail": detail}


def _fail(detail: str) -> dict[str, Any]:
    return {"status": "fail", "detail": detail}


async def _probe(check: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except TimeoutError:
        return _fail(f"no answer within {CHECK_TIMEOUT:.0f}s")
    except Exception as exc:
        return _fail(str(exc) or type(exc).__name__)
    return _ok()
