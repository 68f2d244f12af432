"""The SQLite store's durable waits (see :mod:`.waits`): every write one function in the writer's
``BEGIN IMMEDIATE`` transaction, so a wake-up cannot slip between a check and a suspend."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ._common import dt_to_ms, dumps
from ._sqlite_base import RUN_SELECT, SqliteAccess, insert_logs, now_ms, run_record
from .records import NewLog, RunRecord
from .rows import FINISHED_SQL
from .waits import NewWait, Suspension, WaitStore, WakeResult

_SUSPEND = (
    "UPDATE runs SET status = 'waiting', wait_kind = ?, wait_step = ?, wait_key = ?, wake_at = ?, "
    "wait_children = ?, wait_outcome = NULL, wait_data = NULL, worker_id = NULL, "
    "lease_expires_at = NULL, updated_at = ? WHERE id = ? AND generation = ? AND status = 'running' "
    "RETURNING status"
)
HELD = ("running", "cancelled")
_CLEAR = (
    "wait_kind = NULL, wait_step = NULL, wait_key = NULL, wake_at = NULL, wait_children = NULL, "
    "wait_outcome = NULL, wait_data = NULL"
)


class SqliteWaits(SqliteAccess, WaitStore):
    async def suspend_run(
        self, run_id: str, generation: int, wait: NewWait, logs: Sequence[NewLog] = ()
    ) -> Suspension:
        def write(conn: sqlite3.Connection) -> Suspension:
            now = now_ms()
            run = conn.execute(
                "SELECT seq, status, generation, event_seq FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            if (
                run is None
                or run["generation"] != generation
                or run["status"] not in ("running", "cancelled")
            ):
                return Suspension("lost")
            if run["status"] == "cancelled":
                return Suspension("cancelled")
            insert_logs(conn, run_id, logs)
            until = _until(wait, now)
            children = 0
            if wait.kind == "sleep" and until is not None and until <= now:
                return Suspension("ready")
            if wait.kind == "event":
                event = conn.execute(
                    "SELECT seq, data FROM events WHERE key = ? AND seq > ? AND run_seq >= ? "
                    "ORDER BY seq DESC LIMIT 1",
                    (wait.key, run["event_seq"], run["seq"]),
                ).fetchone()
                if event is not None:
                    conn.execute("UPDATE runs SET event_seq = ? WHERE id = ?", (event["seq"], run_id))
                    return Suspension("ready", _loads(event["data"]))
            if wait.kind == "children":
                children = _adopt(conn, run_id, wait.children)
                if children == 0:
                    return Suspension("ready")
            conn.execute(
                _SUSPEND,
                (wait.kind, wait.step, wait.key, until, children or None, now, run_id, generation),
            )
            return Suspension("waiting", waiting_children=children)

        return await self._write(write)

    async def wake_due(self, limit: int = 1000) -> WakeResult:
        now = now_ms()
        first = await self._read(_NEXT_DUE)
        due = first[0][0] if first else None
        if due is None or due > now:
            return WakeResult(0, None if due is None else (due - now) / 1000)

        def wake(conn: sqlite3.Connection) -> WakeResult:
            at = now_ms()
            woken = conn.execute(_WAKE, (at, at, limit)).rowcount
            row = conn.execute(_NEXT_DUE).fetchone()
            nxt = row[0] if row is not None else None
            return WakeResult(woken, None if nxt is None else max(0.0, (nxt - at) / 1000))

        return await self._write(wake)

    async def send_event(self, key: str, data: Any = None) -> int:
        text = None if data is None else dumps(data)

        def write(conn: sqlite3.Connection) -> int:
            now = now_ms()
            seq = conn.execute(
                "INSERT INTO events (key, data, created_at, run_seq, woken) "
                "VALUES (?, ?, ?, (SELECT coalesce(max(seq), 0) FROM runs), 0) RETURNING seq",
                (key, text, now),
            ).fetchone()[0]
            woken = conn.execute(_WAKE_EVENT, (text, seq, now, key)).rowcount
            conn.execute("UPDATE events SET woken = ? WHERE seq = ?", (woken, seq))
            return woken

        return await self._write(write)

    async def clear_wait(self, run_id: str, generation: int) -> None:
        await self._write_count(
            f"UPDATE runs SET {_CLEAR} WHERE id = ? AND generation = ? AND status = 'running'",
            (run_id, generation),
        )

    async def list_children(self, run_id: str) -> list[RunRecord]:
        rows = await self._read(
            f"SELECT {RUN_SELECT} FROM runs WHERE parent_run_id = ? ORDER BY seq", (run_id,)
        )
        return [run_record(r) for r in rows]

    async def purge_events(self, older_than: datetime, batch_size: int = 500) -> int:
        return await self._write_count(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events INDEXED BY events_created "
            "WHERE created_at < ? ORDER BY created_at LIMIT ?)",
            (dt_to_ms(older_than), batch_size),
        )

    async def count_waiting(self) -> dict[tuple[str, str], int]:
        rows = await self._read(
            "SELECT job_name, wait_kind, count(*) AS n FROM runs WHERE status = 'waiting' "
            "GROUP BY job_name, wait_kind"
        )
        return {(r["job_name"], r["wait_kind"] or "sleep"): r["n"] for r in rows}


_WAKE = (
    "UPDATE runs SET status = 'pending', wait_outcome = CASE wait_kind WHEN 'sleep' THEN 'due' "
    "ELSE 'timeout' END, updated_at = ? WHERE seq IN (SELECT seq FROM runs INDEXED BY "
    "runs_waking WHERE status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ? "
    "ORDER BY wake_at LIMIT ?)"
)
"""Due sleepers and timeouts -> pending: (now, now, limit)."""
_WAKE_EVENT = (
    "UPDATE runs SET status = 'pending', wait_outcome = 'event', wait_data = ?, event_seq = ?, "
    "updated_at = ? WHERE seq IN (SELECT seq FROM runs INDEXED BY runs_waiting_key "
    "WHERE status = 'waiting' AND wait_key = ? AND wait_key IS NOT NULL) AND wait_kind = 'event'"
)
"""An event's waiters -> pending with its data: (data, event seq, now, key)."""
_NEXT_DUE = (
    "SELECT wake_at FROM runs INDEXED BY runs_waking WHERE status = 'waiting' AND wake_at IS NOT NULL "
    "ORDER BY wake_at LIMIT 1"
)


def _until(wait: NewWait, now: int) -> int | None:
    if wait.until is not None:
        return dt_to_ms(wait.until)
    if wait.seconds is not None:
        return now + max(0, round(wait.seconds * 1000))
    return None


def _adopt(conn: sqlite3.Connection, run_id: str, children: Sequence[str]) -> int:
    """Link the children to the run; how many of its children are unfinished."""
    if children:
        marks = ",".join("?" * len(children))
        conn.execute(
            f"UPDATE runs SET parent_run_id = ? WHERE id IN ({marks}) AND parent_run_id IS NULL",
            (run_id, *children),
        )
    row = conn.execute(
        f"SELECT count(*) FROM runs WHERE parent_run_id = ? AND status NOT IN {FINISHED_SQL}", (run_id,)
    ).fetchone()
    return int(row[0])


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
