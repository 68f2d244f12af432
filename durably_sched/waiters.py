"""Waiting for runs to finish: in process without a round trip, across processes by polling.

A waiter is a future per (run, caller). The worker of this process resolves it the moment a run it
executed finishes, handing over the in-memory output (``completed here``). A run executed by another
process is seen by one poller shared by every waiter of this process: it reads the statuses of all
runs still awaited in one query every :data:`POLL_INTERVAL`, and resolves the waiters of finished
ones without a value (the caller then reads the final record). The poller runs only while someone
waits, and a database outage is logged once (then at most every :data:`OUTAGE_LOG_EVERY` seconds)
rather than on every poll.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._tasks import stop_task
from .errors import RunNotFoundError
from .store.base import FINISHED_STATUSES, LogRecord, Progress, RunRecord, Store

__all__ = ["Done", "LogCallback", "ProgressCallback", "Waiters", "follow_run_updates"]

log = logging.getLogger("durably_sched")

POLL_INTERVAL = 0.05
OUTAGE_LOG_EVERY = 30.0
FOLLOW_INTERVAL = 0.1
"""How often :func:`follow_run_updates` reads a run and its new log lines."""
LOG_PAGE = 1000

ProgressCallback = Callable[[Progress], Awaitable[None] | None]
LogCallback = Callable[[LogRecord], Awaitable[None] | None]

Done = tuple[bool, Any]
"""(finished in this process, its output) — or (False, None): finished elsewhere, read the record."""


class Waiters:
    """The waiters of one Durably instance."""

    def __init__(self, store: Store, poll_interval: float = POLL_INTERVAL) -> None:
        self._store = store
        self._poll_interval = poll_interval
        self._waiters: dict[str, list[asyncio.Future[Done]]] = {}
        self._poller: asyncio.Task[None] | None = None

    def add(self, run_id: str) -> asyncio.Future[Done]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Done] = loop.create_future()
        self._waiters.setdefault(run_id, []).append(future)
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._poll(), name="durably-waiters")
        return future

    def remove(self, run_id: str, future: asyncio.Future[Done]) -> None:
        futures = self._waiters.get(run_id)
        if futures and future in futures:
            futures.remove(future)
            if not futures:
                del self._waiters[run_id]

    def resolve(self, run_id: str, done: Done | None = None) -> None:
        """Wake every waiter of ``run_id`` (``done`` None: finished, read the record)."""
        for future in self._waiters.get(run_id, ()):
            if not future.done():
                future.set_result(done if done is not None else (False, None))

    async def close(self) -> None:
        poller, self._poller = self._poller, None
        await stop_task(poller)

    async def _poll(self) -> None:
        failing_since: float | None = None
        last_logged = 0.0
        while self._waiters:
            await asyncio.sleep(self._poll_interval)
            ids = [run_id for run_id, futures in self._waiters.items() if any(not f.done() for f in futures)]
            if not ids:
                continue
            try:
                statuses = await self._store.get_run_statuses(ids)
            except Exception as exc:
                now = time.monotonic()
                if failing_since is None or now - last_logged >= OUTAGE_LOG_EVERY:
                    log.warning("could not poll run statuses (still trying): %s", exc)
                    last_logged = now
                failing_since = failing_since or now
                continue
            if failing_since is not None:
                log.info("polling run statuses works again (after %.0fs)", time.monotonic() - failing_since)
                failing_since = None
            for run_id in ids:
                if statuses.get(run_id) in FINISHED_STATUSES:
                    self.resolve(run_id)

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
    store: Store,
    run_id: str,
    *,
    on_progress: ProgressCallback | None,
    on_log: LogCallback | None,
    after_log_id: int = 0,
    progress: Progress | None = None,
    woken: asyncio.Future[Any] | None = None,
    interval: float = FOLLOW_INTERVAL,
) -> RunRecord:
    """Feed ``wait_for_run``'s callbacks until the run finishes; returns its final record.

    ``on_log`` gets every log line stored after ``after_log_id``, in order, once each;
    ``on_progress`` every stored progress that differs from the one before (``progress``: the value
    already known). Polls the store -- the run, then its new log lines -- every ``interval``, or at
    once when ``woken`` (this process's waiter of the run) resolves, so a run finished here is not
    waited for. Reading the logs after the run means a finished run's last lines (stored with its
    completion) are delivered before the function returns. This is the one function to swap for
    the store-fed run subscription once it exists.
    """
    while True:
        record = await store.get_run(run_id)
        if record is None:
            raise RunNotFoundError(f"run {run_id} was deleted while waiting for it")
        if on_log is not None:
            while True:
                page = await store.get_logs(run_id, after_log_id, LOG_PAGE)
                for entry in page:
                    after_log_id = entry.id
                    await _call(on_log, entry)
                if len(page) < LOG_PAGE:
                    break
        if record.progress is not None and record.progress != progress:
            progress = record.progress
            if on_progress is not None:
                await _call(on_progress, progress)
        if record.is_finished:
            return record
        if woken is not None and not woken.done():
            await asyncio.wait([woken], timeout=interval)
        else:
            await asyncio.sleep(interval)


async def _call(callback: Callable[[Any], Any], value: Any) -> None:
    result = callback(value)
    if inspect.isawaitable(result):
        await result
