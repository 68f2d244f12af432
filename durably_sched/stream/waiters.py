"""Waiting for runs to finish: in process without a round trip, across processes through the feed.

A waiter is a future per (run, caller). The worker of this process resolves it the moment a run it
executed finishes, handing over the in-memory output (``completed here``). A run executed by another
process is seen by the run feed (``stream.feed``), whose one poller per process reads the newest
transition of every awaited run in one query per tick and calls back when it ends the run (or the
run is gone); the waiter is then resolved without a value and the caller reads the final record.

:func:`follow_run_updates` (``wait_for_run(on_progress=..., on_log=...)``) reads the same run
stream through a feed subscription.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import RunNotFoundError
from ..events import RunProgressEvent
from ..store.base import LogRecord, Progress, RunRecord, Store
from .feed import RunFeed
from .reader import StoredLogWriteEvent

__all__ = ["Done", "LogCallback", "ProgressCallback", "Waiters", "follow_run_updates"]

ProgressCallback = Callable[[Progress], Awaitable[None] | None]
LogCallback = Callable[[LogRecord], Awaitable[None] | None]

Done = tuple[bool, Any]
"""(finished in this process, its output) — or (False, None): finished elsewhere, read the record."""


class Waiters:
    """The waiters of one Durably instance; ``feed`` gives the run feed (made on first use)."""

    def __init__(self, store: Store, feed: Callable[[], RunFeed]) -> None:
        self._store = store
        self._feed = feed
        self._waiters: dict[str, list[asyncio.Future[Done]]] = {}
        self._unwatch: dict[str, Callable[[], None]] = {}

    def add(self, run_id: str) -> asyncio.Future[Done]:
        future: asyncio.Future[Done] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(run_id, []).append(future)
        if run_id not in self._unwatch:
            self._unwatch[run_id] = self._feed().watch_end(run_id, lambda: self._ended(run_id))
        return future

    def _ended(self, run_id: str) -> None:
        self._unwatch.pop(run_id, None)
        self.resolve(run_id)

    def remove(self, run_id: str, future: asyncio.Future[Done]) -> None:
        futures = self._waiters.get(run_id)
        if futures and future in futures:
            futures.remove(future)
            if not futures:
                del self._waiters[run_id]
                unwatch = self._unwatch.pop(run_id, None)
                if unwatch is not None:
                    unwatch()

    def resolve(self, run_id: str, done: Done | None = None) -> None:
        """Wake every waiter of ``run_id`` (``done`` None: finished, read the record)."""
        for future in self._waiters.get(run_id, ()):
            if not future.done():
                future.set_result(done if done is not None else (False, None))

    async def close(self) -> None:
        for unwatch in self._unwatch.values():
            unwatch()
        self._unwatch.clear()

    async def wait(
        self, run_id: str, waiter: asyncio.Future[Done], timeout: float | None
    ) -> tuple[Done, RunRecord | None]:
        """Wait for a run to finish: (in-process completion, None) or (_, final record).

        Takes ownership of ``waiter`` (removes it, and any replacement, when done).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    done = await asyncio.wait_for(asyncio.shield(waiter), remaining)
                except TimeoutError:
                    raise TimeoutError(f"run {run_id} did not finish within {timeout}s") from None
                if done[0]:
                    return done, None
                record = await self._store.get_run(run_id)
                if record is None:
                    raise RunNotFoundError(f"run {run_id} was deleted while waiting for it")
                if record.is_finished:
                    return done, record
                self.remove(run_id, waiter)  # woken early (e.g. retried): wait again
                waiter = self.add(run_id)
        finally:
            self.remove(run_id, waiter)


async def follow_run_updates(
    feed: RunFeed,
    record: RunRecord,
    *,
    on_progress: ProgressCallback | None,
    on_log: LogCallback | None,
    after_log_id: int = 0,
) -> RunRecord:
    """Feed ``wait_for_run``'s callbacks until the run finishes; returns its final record.

    ``record``: the run as the caller read it (progress from then on is reported when it
    changes); ``on_log`` gets every log line stored after ``after_log_id``, in order, once each.
    Reads the run's stream through a subscription of ``feed``, so a finished run's last lines
    (stored with its completion) are delivered before the function returns.
    """
    subscription = feed.subscribe(record.id, since=record, after_log_id=after_log_id)
    try:
        async for event in subscription:
            if isinstance(event, StoredLogWriteEvent) and on_log is not None:
                await _call(on_log, event.record())
            elif isinstance(event, RunProgressEvent) and on_progress is not None:
                await _call(on_progress, event.progress)
            elif event.type == "run:delete":
                raise RunNotFoundError(f"run {record.id} was deleted while waiting for it")
    finally:
        await subscription.close()
    final = await feed.store.get_run(record.id)
    if final is None:
        raise RunNotFoundError(f"run {record.id} was deleted while waiting for it")
    return final


async def _call(callback: Callable[[Any], Any], value: Any) -> None:
    result = callback(value)
    if inspect.isawaitable(result):
        await result
