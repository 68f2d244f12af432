"""PostgreSQL store: the LISTEN connection that wakes idle workers when another process made work.

Every write that makes a run claimable sends ``pg_notify(CHANNEL, job_name)`` in its own
transaction (delivered on commit). One dedicated connection, outside the pool (a pool connection
must never carry session state such as LISTEN), calls the wake-up callback for each notification.
It reconnects by itself with backoff, probes an idle connection so a half-open TCP connection is
noticed, and after every (re)connect calls the callback once, since notifications sent while
nobody listened are gone. Polling stays the fallback, so a lost listener costs latency, never work.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import asyncpg

from .._ratelimit import RateLimitedLog
from .._tasks import stop_task
from ._pg_errors import describe
from ._pg_sql import CHANNEL, CONNECT_TIMEOUT, LISTENER_CHECK_INTERVAL, SCHEDULES_CHANNEL

__all__ = ["Listener"]

log = logging.getLogger("durably_sched.store.postgres")


class Listener:
    """``start()`` once the loop runs; ``await stop()`` on close. ``callback`` runs on ``loop``."""

    def __init__(
        self,
        dsn: str,
        server_settings: dict[str, str],
        where: str,
        callback: Callable[[], Callable[[], None] | None],
        schedules: Callable[[], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._server_settings = server_settings
        self._where = where
        self._callback = callback  # returns the current wake-up function (it may be replaced)
        self._schedules = schedules  # a schedule changed (SCHEDULES_CHANNEL, _pg_schedule_defs.py)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._warnings = RateLimitedLog(log)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.running:
            self._loop = loop
            self._task = loop.create_task(self._listen_forever(), name="durably-pg-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    def _notified(self, *_: Any) -> None:
        # asyncpg calls listeners on the connection's loop; hop through call_soon_threadsafe anyway
        # so the callback always runs on the store's loop.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake)

    def _schedule_notified(self, *_: Any) -> None:
        loop, schedules = self._loop, self._schedules
        if loop is not None and not loop.is_closed() and schedules is not None:
            loop.call_soon_threadsafe(schedules)

    def wake(self) -> None:
        callback = self._callback()
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("wake-up callback failed")

    async def _listen_forever(self) -> None:
        """Keep one LISTEN connection open; reconnect with backoff whenever it is lost."""
        delay = 0.1
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings=self._server_settings, timeout=CONNECT_TIMEOUT
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._notified)
                if self._schedules is not None:
                    await conn.add_listener(SCHEDULES_CHANNEL, self._schedule_notified)
                    self._schedules()
                delay = 0.1
                self.wake()  # notifications sent while we were not listening are gone
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), LISTENER_CHECK_INTERVAL)
                    except TimeoutError:
                        # A half-open TCP connection never reports termination: probe it.
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), 10.0)
                log.warning("notification listener lost its connection to %s; reconnecting", self._where)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._warnings.warning(
                    "notification listener on %s failed (%s); retrying in %.1fs",
                    self._where,
                    describe(exc),
                    delay,
                    key=f"listener {describe(exc)}",
                )
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(delay * (0.75 + random.random() / 2))
            delay = min(delay * 2, 5.0)
