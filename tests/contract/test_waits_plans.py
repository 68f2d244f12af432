"""10,000 sleeping runs cost nothing while they sleep (issue 24), on both backends: a worker's poll
is one statement (SQLite: one indexed read; PostgreSQL: one indexed statement), whose plan reads the
``runs_waking`` index, never the runs table; an event's wake-up reads ``runs_waiting_key``."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from durably_sched.store import _pg_waits, _sqlite_waits
from durably_sched.store.base import Store
from durably_sched.store.postgres import PostgresStore
from durably_sched.store.sqlite import SqliteStore
from tests.backends import Backend, PostgresBackend

SLEEPERS = 10_000


async def _sleepers(backend: Backend, store: Store) -> None:
    """10,000 runs sleeping for an hour (and 2,000 finished ones), written directly."""
    if isinstance(store, SqliteStore):
        now = int(time.time() * 1000)

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO runs (id, job_name, status, input, created_at, updated_at, wait_kind, "
                "wait_step, wake_at, wait_key) VALUES (?, 'j', ?, '{}', ?, ?, ?, 'w', ?, ?)",
                [
                    (f"r{i}", "waiting" if i < SLEEPERS else "completed", now, now,
                     "sleep" if i % 2 else "event", now + 3_600_000, None if i % 2 else f"k{i}")
                    for i in range(SLEEPERS + 2000)
                ],
            )  # fmt: skip
            conn.execute("ANALYZE")

        await store._write(insert)
        return
    assert isinstance(backend, PostgresBackend)
    conn = await backend.admin()
    await conn.execute(
        "INSERT INTO runs (id, job_name, status, input, wait_kind, wait_step, wake_at, wait_key) "
        "SELECT 'r' || i, 'j', CASE WHEN i < $1 THEN 'waiting' ELSE 'completed' END, '{}', "
        "CASE WHEN i % 2 = 1 THEN 'sleep' ELSE 'event' END, 'w', now() + interval '1 hour', "
        "CASE WHEN i % 2 = 1 THEN NULL ELSE 'k' || i END FROM generate_series(0, $1 + 1999) AS i",
        SLEEPERS,
    )
    await conn.execute("ANALYZE runs")


class Counting:
    """Counts the statements a store sends (SQLite: reads and writes; PostgreSQL: operations)."""

    def __init__(self, store: Store) -> None:
        self.calls: list[str] = []
        for name in ("_read", "_write", "_run"):
            original = getattr(store, name, None)
            if original is not None:
                setattr(store, name, self._wrap(name, original))

    def _wrap(self, name: str, original: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return original(*args, **kwargs)

        return counted


async def test_a_poll_over_10000_sleepers_is_one_statement_and_wakes_none(
    backend: Backend, store: Store
) -> None:
    await _sleepers(backend, store)
    counting = Counting(store)
    result = await store.wake_due()
    assert result.woken == 0 and result.next_in is not None and 3500 < result.next_in <= 3600
    assert counting.calls in (["_read"], ["_run"])  # one statement; SQLite's is a read (no write lock)


async def test_the_poll_and_the_event_wake_up_read_their_partial_indexes(
    backend: Backend, store: Store
) -> None:
    await _sleepers(backend, store)
    if isinstance(store, SqliteStore):
        plans = {}
        reader = sqlite3.connect(store.path)
        try:
            for name, sql, params in (
                ("poll", _sqlite_waits._NEXT_DUE, ()),
                ("wake", _sqlite_waits._WAKE, (0, 0, 1000)),
                ("event", _sqlite_waits._WAKE_EVENT, (None, 1, 0, "k2")),
            ):
                plans[name] = " | ".join(
                    str(r[3]) for r in reader.execute("EXPLAIN QUERY PLAN " + sql, params)
                )
        finally:
            reader.close()
        assert "USING INDEX runs_waking" in plans["poll"] and "SCAN runs" not in plans["poll"], plans
        assert "USING INDEX runs_waking" in plans["wake"], plans
        assert "USING INDEX runs_waiting_key" in plans["event"], plans
        return
    assert isinstance(store, PostgresStore) and isinstance(backend, PostgresBackend)
    conn = await backend.admin()
    # EXPLAIN without ANALYZE plans a statement without running it.
    wake = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + _pg_waits._WAKE_DUE, 1000))
    event = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + _pg_waits._SEND, "k2", None))
    assert "runs_waking" in wake and "Seq Scan on runs" not in wake, wake
    assert "runs_waiting_key" in event and "Seq Scan on runs" not in event, event
