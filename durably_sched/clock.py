"""The clock that execution reads: wall time, monotonic time, sleeps and timers.

Everything in execution where time decides something takes a :class:`Clock`: the run and step
deadlines (``execution.deadline``), lease renewal and the registry's purge (``execution.leases``),
the claim loop's poll and its back-off after a failing claim, a failed release's retries, the
services' intervals and back-off (``execution.service``). Durations that are only *measured*
(a step's duration in its event) keep reading ``time.perf_counter``.

:class:`SystemClock` is the real one (the event loop's monotonic time and ``datetime.now(UTC)``).
:class:`ManualClock` is for tests: time stands still until :meth:`ManualClock.advance` moves it,
which fires the timers and ends the sleeps that fall due, in time order, so a lease, timeout or
retry test moves time instead of sleeping. The scheduler's clock (``schedule.scheduler.Clock``,
``now()`` only) is satisfied by both.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "Timer"]


class Timer(Protocol):
    """What :meth:`Clock.call_later` returns: ``cancel()`` it before it fires to drop it."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall time, aware, UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (differences only)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of this clock's monotonic time."""
        ...

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait for ``event`` at most ``timeout`` seconds of this clock; True if it was set."""
        ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Call ``callback`` on the event loop after ``delay`` seconds of this clock."""
        ...


class SystemClock:
    """The real clock: the running loop's ``time()`` and timers, ``datetime.now(UTC)``."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return event.is_set()

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


class _ManualTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock for tests: it moves only when :meth:`advance` (or :meth:`set`) moves it.

    Both its wall and its monotonic time move together. Timers and sleeps that fall due fire in
    the order of their due times, and ``advance`` lets the event loop run after each, so what a
    fired timer starts (a cancelled task, a heartbeat) has happened when ``advance`` returns.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._wall = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 0.0
        self._due: list[tuple[float, int, _ManualTimer]] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        timer = _ManualTimer(callback)
        heapq.heappush(self._due, (self._mono + max(0.0, delay), next(self._order), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        done = asyncio.Event()
        timer = self.call_later(seconds, done.set)
        try:
            await done.wait()
        finally:
            timer.cancel()

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        waiter = asyncio.ensure_future(event.wait())
        timer = self.call_later(timeout, waiter.cancel)
        try:
            await asyncio.wait([waiter])  # ends when the event is set or the timer cancels it
        finally:
            timer.cancel()
            waiter.cancel()
        return event.is_set()

    @property
    def pending(self) -> int:
        """Timers and sleeps not yet due (cancelled ones left out)."""
        return sum(1 for _, _, timer in self._due if not timer.cancelled)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing what falls due on the way."""
        if seconds < 0:
            raise ValueError("a ManualClock does not go back")
        await _settle()  # what is ready runs first (a task just created sets its timers)
        target = self._mono + seconds
        while self._due and self._due[0][0] <= target:
            due, _, timer = heapq.heappop(self._due)
            self._move_to(due)
            if not timer.cancelled:
                timer.callback()
            await _settle()
        self._move_to(target)
        await _settle()

    async def set(self, when: datetime) -> None:
        """Move the wall time to ``when`` (forward only), the monotonic time with it."""
        await self.advance((when - self._wall).total_seconds())

    def _move_to(self, mono: float) -> None:
        self._wall += timedelta(seconds=mono - self._mono)
        self._mono = mono


async def _settle(rounds: int = 5) -> None:
    """Let the event loop run what is ready (a few passes: a woken task may wake another)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
