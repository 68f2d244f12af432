"""One deadline for both timeouts: a run's attempt and a single step.

At the deadline the token is set first (so the code in flight, and a sync step's thread, see why
they are stopped: reason ``timeout``), then the task is cancelled at once through an
``asyncio.timeout`` scope, which turns the cancellation into ``TimeoutError`` at the scope's end.
Whoever entered the deadline asks :attr:`Deadline.fired` to tell a timeout from other failures.
The timer runs on the given :class:`~durably_sched.clock.Clock`, so a test moves time.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from ..cancel import CancelToken
from ..clock import Clock, Timer

__all__ = ["Deadline"]


class Deadline:
    """``async with Deadline(seconds, token, clock):`` -- see the module docstring."""

    __slots__ = ("_scope", "_timer", "clock", "fired", "seconds", "token")

    def __init__(self, seconds: float, token: CancelToken, clock: Clock) -> None:
        self.seconds = seconds
        self.token = token
        self.clock = clock
        self.fired = False
        self._scope: asyncio.Timeout | None = None
        self._timer: Timer | None = None

    async def __aenter__(self) -> Deadline:
        self._scope = scope = asyncio.timeout(None)
        await scope.__aenter__()
        self._timer = self.clock.call_later(self.seconds, self._expire)
        return self

    def _expire(self) -> None:
        self.fired = True
        self.token.cancel("timeout")  # first, so that what is in flight sees why
        if self._scope is not None:
            self._scope.reschedule(asyncio.get_running_loop().time())

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._scope is not None
        await self._scope.__aexit__(exc_type, exc, tb)
