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
from functools import partial
from typing import Any

import asyncpg

from ..execution.service import Service
from ._pg_errors import describe
from ._pg_sql import CHANNEL, CONNECT_TIMEOUT, LISTENER_CHECK_INTERVAL, RUN_EVENTS_CHANNEL, SCHEDULES_CHANNEL

__all__ = ["Listener"]

log = logging.getLogger("durably_sched.store.postgres")


class ListenerLost(ConnectionError):
    """The LISTEN connection ended (the server closed it, or a probe found it dead)."""


class Listener(Service):
    """``start(loop)`` once the loop runs; ``await stop()`` on close. ``callback`` runs on ``loop``.

    A service (``execution.service``): :meth:`run` holds one connection until it is lost or fails,
    and the supervisor connects again after a back-off from 0.1 s, doubling up to 5 s (with jitter,
    so the processes of a restarted server do not all come back at once)."""

    def __init__(
        self,
        dsn: str,
        server_settings: dict[str, str],
        where: str,
        callback: Callable[[], Callable[[], None] | None],
        schedules: Callable[[], None] | None = None,
        run_events: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            "notification listener",
            interval=LISTENER_CHECK_INTERVAL,
            backoff_first=0.1,
            backoff_max=5.0,
            logger=log,
        )
        self._connect = partial(
            asyncpg.connect, dsn, server_settings=server_settings, timeout=CONNECT_TIMEOUT
        )
        self._where = where
        self._callback = callback  # returns the current wake-up function (it may be replaced)
        self._schedules = schedules  # a schedule changed (SCHEDULES_CHANNEL, _pg_schedule_defs.py)
        self._run_events = run_events  # a run's transition was written (RUN_EVENTS_CHANNEL)
        self._want_run_events = False  # LISTEN on it only while a run feed reads (every
        # transition of every process notifies: a process that does not read pays nothing)
        self._conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not self.running:
            self._loop = loop or asyncio.get_running_loop()
            super().start()

    def _notified(self, *_: Any) -> None:
        # asyncpg calls listeners on the connection's loop; hop through call_soon_threadsafe anyway
        # so the callback always runs on the store's loop.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake)

    def _schedule_notified(self, *_: Any) -> None:
        self._call_on_loop(self._schedules)

    def want_run_events(self, on: bool) -> None:
        """LISTEN to run transitions (or stop) from now on, on the live connection if there is one."""
        if on == self._want_run_events:
            return
        self._want_run_events = on
        conn, loop = self._conn, self._loop
        if conn is not None and loop is not None and not loop.is_closed():
            task = loop.create_task(self._switch_run_events(conn, on))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _switch_run_events(self, conn: Any, on: bool) -> None:
        try:
            if on:
                await conn.add_listener(RUN_EVENTS_CHANNEL, self._run_events_notified)
                self._call_on_loop(self._run_events)  # as after a connect: look once now
            else:
                await conn.remove_listener(RUN_EVENTS_CHANNEL, self._run_events_notified)
        except Exception as exc:  # the connection is going: the next one listens as wanted
            log.debug("could not switch the run events LISTEN: %s", exc)

    def _run_events_notified(self, *_: Any) -> None:
        self._call_on_loop(self._run_events)

    def _call_on_loop(self, callback: Callable[[], None] | None) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed() and callback is not None:
            loop.call_soon_threadsafe(callback)

    def wake(self) -> None:
        callback = self._callback()
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("wake-up callback failed")

    async def run(self) -> None:
        """Keep one LISTEN connection open until it is lost (then raise :class:`ListenerLost`)."""
        conn: Any = await self._connect()
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._notified)
            if self._schedules is not None:
                await conn.add_listener(SCHEDULES_CHANNEL, self._schedule_notified)
                self._schedules()
            if self._run_events is not None and self._want_run_events:
                await conn.add_listener(RUN_EVENTS_CHANNEL, self._run_events_notified)
                self._run_events()
            self._conn = conn
            self.healthy()
            self.wake()  # notifications sent while we were not listening are gone
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), self.interval)
                except TimeoutError:
                    # A half-open TCP connection never reports termination: probe it.
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), 10.0)
        finally:
            self._conn = None
            if not conn.is_closed():
                conn.terminate()
        raise ListenerLost("lost its connection")

    def on_error(self, exc: Exception) -> None:
        self._warnings.warning(
            "notification listener on %s failed (%s); reconnecting in ~%.1fs",
            self._where,
            describe(exc),
            self.backoff(),
            key=f"listener {describe(exc)}",
        )

    def backoff(self) -> float:
        return super().backoff() * (0.75 + random.random() / 2)
