"""Small helpers shared by the in-process test modules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait for a condition (a value or an awaitable) with a deadline; never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.01)


class FakeClock:
    """A scheduler clock that only moves when a test moves it."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    def advance(self, **delta: float) -> None:
        self.t += timedelta(**delta)
