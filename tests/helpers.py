"""Small helpers shared by the in-process test modules."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from durably_sched import Durably, create_durably


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


@contextlib.asynccontextmanager
async def durably_factory(url: str, **defaults: Any) -> AsyncIterator[Callable[..., Awaitable[Durably]]]:
    """``make(*jobs, start=True, **options)``: migrated instances on ``url`` with quick test timings
    (``defaults`` override them, ``options`` override both); all are closed on exit."""
    made: list[Durably] = []

    async def factory(*jobs: Any, start: bool = True, **options: Any) -> Durably:
        settings = {"polling_interval": 0.05, "heartbeat_interval": 0.2, **defaults, **options}
        durably = create_durably(url, **settings).register(list(jobs))
        await durably.migrate()
        if start:
            await durably.start()
        made.append(durably)
        return durably

    try:
        yield factory
    finally:
        for durably in made:
            await durably.close()
