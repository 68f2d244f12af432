"""The SQLite store's writer: one connection per process, group commit, on the loop when it is free.

Every write is a small synchronous function of a ``sqlite3.Connection``. Writes queued while the
previous batch was committing run together in one ``BEGIN IMMEDIATE`` transaction, each inside its
own savepoint (one failing write does not fail the others), so runs executing at the same time share
commits.

Where a batch runs:

* **on the event loop**, when the durability level does not fsync on commit (WAL with
  ``synchronous=NORMAL`` or ``OFF``) and the write lock is free at once: a commit is then a few
  microseconds of memory work, cheaper than a hop to another thread;
* **on the writer thread** otherwise: when another process holds the write lock (waiting for it must
  not block the loop), with ``synchronous=FULL`` (every commit fsyncs), and for *heavy* writes
  (migrations, purges and deletes, which may touch many thousands of rows) that would stall the loop
  for many milliseconds. WAL checkpoints (which fsync) also run there, every :data:`CHECKPOINT_EVERY`
  commits.

The thread is a one-worker ``ThreadPoolExecutor`` owned by the writer; the same connection is used
from both places, never at the same time (the loop waits for each thread batch before it starts the
next batch). This replaces aiosqlite for the writer: aiosqlite's public API hops to its thread once
per statement, and running a whole batch in one hop needed its private ``_execute``/``_conn``; a
stdlib executor does the same with public APIs only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from .._tasks import stop_task
from ..errors import DatabaseLockedError, InvalidArgumentError, StoreError
from ._common import NOT_UNICODE

__all__ = ["CHECKPOINT_EVERY", "WriteFn", "Writer", "is_busy", "switch_to_wal"]

log = logging.getLogger("durably_sched.store.sqlite")

WriteFn = Callable[[sqlite3.Connection], Any]
T = TypeVar("T")
CHECKPOINT_EVERY = 200
"""With inline writes the connection's auto-checkpoint is off; the writer checkpoints (PASSIVE) on
its thread after this many commits instead, so the WAL stays small without fsyncs on the loop."""


def is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def switch_to_wal(conn: sqlite3.Connection, busy_timeout: float) -> str:
    """``PRAGMA journal_mode = WAL``, retried: when several processes open a new file at once,
    SQLite answers "database is locked" at once instead of calling the busy handler. Blocking:
    call it off the event loop."""
    deadline = time.monotonic() + busy_timeout
    delay = 0.005
    while True:
        try:
            row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return str(row[0]).lower() if row is not None else ""
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)


@dataclass(slots=True)
class _Write:
    fn: WriteFn
    heavy: bool
    future: asyncio.Future[Any]


class Writer:
    """The group-commit writer of one :class:`~durably_sched.store.sqlite.SqliteStore`."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str,
        busy_timeout: float,
        classify: Callable[[BaseException], StoreError],
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self._classify = classify
        # Without fsync on commit (WAL + NORMAL/OFF) a commit is cheaper on the loop than a hop.
        self.inline = synchronous in ("OFF", "NORMAL")
        self.connection: sqlite3.Connection | None = None
        """The raw connection (for tests that trace statements); None until opened."""
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[_Write] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Open the connection on the writer thread (WAL, pragmas) and start the write loop.

        Raises ``sqlite3.Error`` / StoreError as the caller's connect() explains them.
        """
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="durably-sqlite-writer")
        try:
            self.connection = await self._on_thread(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="durably-sqlite-writer")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=self.busy_timeout, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            mode = switch_to_wal(conn, self.busy_timeout)
            if mode != "wal":
                raise StoreError(f"cannot switch {self.path} to WAL mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            # From here on the writer waits for locks in its own retry loop (on the thread), never
            # inside SQLite, so an inline attempt on the event loop never blocks on another process.
            conn.execute("PRAGMA busy_timeout = 0")
            if self.inline:
                conn.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints run on the thread
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        for write in self._pending:
            if not write.future.done():
                write.future.set_exception(StoreError("store closed"))
        self._pending.clear()
        conn, self.connection = self.connection, None
        executor, self._executor = self._executor, None
        if executor is not None:
            if conn is not None:
                # Queued behind a batch still running on the thread, if any.
                with contextlib.suppress(Exception):
                    await asyncio.get_running_loop().run_in_executor(executor, conn.close)
            executor.shutdown(wait=False)

    async def _on_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- writes ---------------------------------------------------------------------------------
    async def write(self, fn: Callable[[sqlite3.Connection], T], *, heavy: bool = False) -> T:
        """Run ``fn(conn)`` in the next group commit and return its result (or raise its error).

        ``heavy``: the write may touch many rows; its batch runs on the writer thread.
        """
        if self._task is None:
            raise StoreError("store is not connected")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Write(fn, heavy, future))
        self._wake.set()
        result: T = await future
        return result

    async def _loop(self) -> None:
        conn = self.connection
        assert conn is not None
        commits = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            fns = [w.fn for w in batch]
            committed = False
            try:
                results = None
                if self.inline and not any(w.heavy for w in batch):
                    results = self._run_batch(conn, fns, wait=False)
                if results is None:
                    # Locked by another process, FULL durability or a heavy write: on the thread,
                    # where waiting for the lock and long transactions do not block the loop.
                    results = await self._on_thread(self._run_batch, conn, fns)
                committed = True
            except asyncio.CancelledError:
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(StoreError("store closed"))
                raise
            except BaseException as exc:  # the transaction as a whole failed
                results = [(False, self._classify(exc))] * len(batch)
            for w, (ok, value) in zip(batch, results, strict=True):
                if w.future.done():
                    continue
                if ok:
                    w.future.set_result(value)
                elif isinstance(value, sqlite3.Error):  # disk full, read-only file, corruption...
                    w.future.set_exception(self._classify(value))
                elif isinstance(value, UnicodeEncodeError):  # a text argument with no UTF-8 form
                    w.future.set_exception(InvalidArgumentError(f"writing {self.path}: {NOT_UNICODE}"))
                else:
                    w.future.set_exception(value)
            if committed:
                commits += 1
                if self.inline and commits % CHECKPOINT_EVERY == 0:
                    # After the results: a checkpoint that fails (disk full) fails no committed write.
                    try:
                        await self._on_thread(_checkpoint, conn)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        log.debug("WAL checkpoint of %s failed: %s", self.path, exc)

    def _run_batch(
        self, conn: sqlite3.Connection, fns: list[WriteFn], wait: bool = True
    ) -> list[tuple[bool, Any]] | None:
        """One IMMEDIATE transaction, one savepoint per write.

        ``wait=False`` (on the event loop): returns None at once if another connection holds the
        write lock. ``wait=True`` (on the thread): retries with backoff up to the busy timeout.
        """
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.002
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if not wait and is_busy(exc):
                    return None
                if not is_busy(exc) or time.monotonic() >= deadline:
                    if is_busy(exc):
                        raise DatabaseLockedError(
                            f"database {self.path} stayed locked for {self.busy_timeout:g}s: another "
                            "process holds its write lock"
                        ) from None
                    raise
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.1)
        results: list[tuple[bool, Any]] = []
        try:
            if len(fns) == 1:
                try:
                    results.append((True, fns[0](conn)))
                except Exception as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    return [(False, exc)]
            else:
                for fn in fns:
                    conn.execute("SAVEPOINT w")
                    try:
                        value = fn(conn)
                    except Exception as exc:
                        if not conn.in_transaction:
                            # SQLite rolled the whole transaction back (an I/O error, say): the
                            # writes before this one are undone too, so all of them fail with it.
                            return [(False, exc)] * len(fns)
                        conn.execute("ROLLBACK TO w")
                        conn.execute("RELEASE w")
                        results.append((False, exc))
                    else:
                        conn.execute("RELEASE w")
                        results.append((True, value))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return results


def read_error(exc: BaseException, classify: Callable[[BaseException], StoreError], path: str) -> Exception:
    """What a failed read raises: InvalidArgumentError for a text argument with no UTF-8 form (the
    caller's input, not the database), else the StoreError that names the cause."""
    if isinstance(exc, UnicodeEncodeError):
        return InvalidArgumentError(f"reading {path}: {NOT_UNICODE}")
    error = classify(exc)
    return type(error)(f"reading {path} failed: {error}")


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
