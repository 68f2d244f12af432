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
import contextlib
import logging
import time
from typing import Any

from .errors import RunNotFoundError
from .store.base import FINISHED_STATUSES, RunRecord, Store

__all__ = ["Done", "Waiters"]

log = logging.getLogger("durably_sched")

POLL_INTERVAL = 0.05
OUTAGE_LOG_EVERY = 30.0

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
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

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
