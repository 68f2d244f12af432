"""One small base for the long-running maintenance tasks of a process.

A service is a task owned by the object that starts it: ``start()`` (on the running loop, a no-op
when it runs), ``await stop()`` (cancels it and waits for it; a cancellation of ``stop`` itself
still propagates), ``running``. Its body is supervised: an exception escaping the body is logged
(rate-limited, with what failed) and the body is started again after a back-off that doubles
from ``backoff_first`` up to ``backoff_max`` seconds, so a service is never silently dead. The
back-off starts over once the body reports itself healthy again (:meth:`Service.healthy`).

Two ways to write one:

* **periodic** (the default body): override :meth:`Service.run_once`, one pass; it runs
  ``first_after`` seconds after the start, then every ``interval`` seconds. A pass that raises is
  logged and retried after the back-off (``on_error`` says how it is logged).
* **a loop of its own** (a scheduler, a feed): override :meth:`Service.run`, which should not
  return while the service runs; call ``self.healthy()`` when it made progress.

Every wait goes through the service's :class:`~durably_sched.clock.Clock`, so a test with a
:class:`~durably_sched.clock.ManualClock` moves a service's time instead of sleeping::

    class Sweep(Service):
        def __init__(self) -> None:
            super().__init__("sweep", interval=60.0)

        async def run_once(self) -> None:
            await purge_old_rows()

    sweep = Sweep(); sweep.start(); ...; await sweep.stop()
"""

from __future__ import annotations

import asyncio
import logging

from .._ratelimit import RateLimitedLog
from ..clock import Clock, SystemClock

__all__ = ["Service"]

log = logging.getLogger("durably_sched.service")


class Service:
    """A supervised background task (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        interval: float,
        first_after: float = 0.0,
        clock: Clock | None = None,
        backoff_first: float = 1.0,
        backoff_max: float = 60.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"{name}: interval must be positive")
        self.name = name
        self.interval = interval
        self.first_after = first_after
        self.clock: Clock = clock or SystemClock()
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.failures = 0
        """Failures in a row (0 once the body reported itself healthy)."""
        self.restarts = 0
        """How many times the supervisor started the body again after it failed."""
        self._log = logger or log
        self._warnings = RateLimitedLog(self._log)
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"durably-{self.name}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # a cancellation of stop() itself still propagates

    def healthy(self) -> None:
        """The body made progress: the next failure backs off from ``backoff_first`` again."""
        if self.failures:
            self._warnings.recovered(self.name)
            self._log.info("%s works again", self.name)
        self.failures = 0

    async def run_once(self) -> object:
        """One pass of a periodic service (override this, or :meth:`run`); its value is ignored."""
        raise NotImplementedError(f"{type(self).__name__} overrides neither run_once() nor run()")

    async def run(self) -> None:
        """The body: by default ``run_once`` every ``interval`` seconds, at a fixed rate (a pass
        that takes longer than the interval is followed by the next at once, none skipped twice)."""
        clock = self.clock
        due = clock.monotonic()
        while True:
            await self.run_once()
            self.healthy()
            due = max(due + self.interval, clock.monotonic())
            await clock.sleep(due - clock.monotonic())

    def on_error(self, exc: Exception) -> None:
        """How a failure of the body is reported (override to change the level or add an event)."""
        self._warnings.error(
            "%s failed (again in %.1fs): %s", self.name, self.backoff(), exc, key=f"{self.name}: {exc}"
        )

    def backoff(self) -> float:
        """The wait before the body starts again after ``failures`` failures in a row."""
        return float(min(self.backoff_first * 2.0 ** max(0, self.failures - 1), self.backoff_max))

    async def _supervise(self) -> None:
        if self.first_after > 0:
            await self.clock.sleep(self.first_after)
        while True:
            try:
                await self.run()
                self._log.warning("%s ended on its own; starting it again", self.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                try:
                    self.on_error(exc)
                except Exception:  # a broken reporter must not kill the service either
                    self._log.exception("%s: reporting a failure failed", self.name)
            self.restarts += 1
            await self.clock.sleep(self.backoff())
