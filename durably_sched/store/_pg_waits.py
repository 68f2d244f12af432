"""The PostgreSQL store's durable waits (see :mod:`.waits`), by the database's clock.

A suspend locks its run's row first (a finishing child's trigger locks its parent's row too, see
migration 0009), and an event's key is serialised by a transaction advisory lock taken by both the
sender and a waiter checking for an event already sent, so no wake-up is lost between a check and
a suspend. Every write that makes a run claimable notifies the listeners (``pg_notify``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ._common import dumps
from ._pg_base import PostgresAccess, aware, log_arrays
from ._pg_reads import fetch_records
from ._pg_sql import LOCK_NAMESPACE, NOTIFY, RUN_SELECT
from .records import NewLog, RunRecord
from .rows import FINISHED_SQL, run_from_row
from .waits import NewWait, Suspension, WaitStore, WakeResult

EVENT_LOCK_NAMESPACE = LOCK_NAMESPACE + 4  # (.., hashtext(event key))

_LOCK_KEY = "SELECT pg_advisory_xact_lock($1, hashtext($2))"
_LOCK_RUN = "SELECT seq, status, generation, event_seq FROM runs WHERE id = $1 FOR UPDATE"
_SUSPEND = """
UPDATE runs SET status = 'waiting', wait_kind = $3, wait_step = $4, wait_key = $5,
    wake_at = CASE WHEN $6::float8 IS NULL THEN $7::timestamptz
        ELSE now() + make_interval(secs => $6::float8) END,
    wait_children = $8, wait_outcome = NULL, wait_data = NULL, worker_id = NULL,
    lease_expires_at = NULL, updated_at = now()
WHERE id = $1 AND generation = $2 AND status = 'running'
"""
_DUE = "SELECT coalesce($1::timestamptz <= now(), $2::float8 <= 0, false)"
_INSERT_LOGS = """
INSERT INTO logs (run_id, step_name, level, message, data, created_at, attempt, step_count)
SELECT $1, l.step_name, l.level, l.message, l.data, l.created_at, r.attempt, r.step_count FROM
unnest($2::text[], $3::text[], $4::text[], $5::json[], $6::timestamptz[])
    WITH ORDINALITY AS l(step_name, level, message, data, created_at, ord)
CROSS JOIN runs r WHERE r.id = $1
ORDER BY l.ord
"""
_WAKE_DUE = f"""
WITH due AS (
    SELECT id FROM runs WHERE status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= now()
    ORDER BY wake_at LIMIT $1 FOR UPDATE SKIP LOCKED
), woken AS (
    UPDATE runs r SET status = 'pending',
        wait_outcome = CASE r.wait_kind WHEN 'sleep' THEN 'due' ELSE 'timeout' END, updated_at = now()
    FROM due WHERE r.id = due.id AND r.status = 'waiting'
    RETURNING {NOTIFY}
)
SELECT (SELECT count(*) FROM woken) AS woken,
    (SELECT extract(epoch FROM wake_at - now()) FROM runs
     WHERE status = 'waiting' AND wake_at IS NOT NULL AND wake_at > now()
     ORDER BY wake_at LIMIT 1) AS next_in
"""
_SEND = f"""
WITH ev AS (
    INSERT INTO events (key, data, run_seq, woken)
    VALUES ($1, $2::json, (SELECT coalesce(max(seq), 0) FROM runs), 0) RETURNING seq
), woken AS (
    UPDATE runs SET status = 'pending', wait_outcome = 'event', wait_data = $2::json,
        event_seq = (SELECT seq FROM ev), updated_at = now()
    WHERE status = 'waiting' AND wait_key = $1 AND wait_kind = 'event'
    RETURNING {NOTIFY}
)
SELECT (SELECT seq FROM ev) AS seq, (SELECT count(*) FROM woken) AS woken
"""


class PostgresWaits(PostgresAccess, WaitStore):
    async def suspend_run(
        self, run_id: str, generation: int, wait: NewWait, logs: Sequence[NewLog] = ()
    ) -> Suspension:
        async def write(conn: Any, replay: bool) -> Suspension:
            async with conn.transaction():
                run = await conn.fetchrow(_LOCK_RUN, run_id)
                if run is None or run["generation"] != generation:
                    return Suspension("lost")
                if run["status"] == "waiting" and replay:
                    return Suspension("waiting")  # our first try committed
                if run["status"] != "running":
                    return Suspension("cancelled" if run["status"] == "cancelled" else "lost")
                if logs:
                    await conn.execute(_INSERT_LOGS, run_id, *log_arrays(logs))
                return await _suspend(conn, run, run_id, generation, wait)

        return await self._run("suspend_run", write)

    async def wake_due(self, limit: int = 1000) -> WakeResult:
        async def wake(conn: Any, replay: bool) -> WakeResult:
            row = await conn.fetchrow(_WAKE_DUE, limit)
            nxt = row["next_in"]
            return WakeResult(int(row["woken"]), None if nxt is None else max(0.0, float(nxt)))

        return await self._run("wake_due", wake)

    async def send_event(self, key: str, data: Any = None) -> int:
        text = None if data is None else dumps(data)

        async def write(conn: Any, replay: bool) -> int:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))", EVENT_LOCK_NAMESPACE, key
                )
                row = await conn.fetchrow(_SEND, key, text)
                await conn.execute("UPDATE events SET woken = $2 WHERE seq = $1", row["seq"], row["woken"])
                return int(row["woken"])

        return await self._run("send_event", write)

    async def clear_wait(self, run_id: str, generation: int) -> None:
        async def write(conn: Any, replay: bool) -> None:
            await conn.execute(
                "UPDATE runs SET wait_kind = NULL, wait_step = NULL, wait_key = NULL, wake_at = NULL, "
                "wait_children = NULL, wait_outcome = NULL, wait_data = NULL "
                "WHERE id = $1 AND generation = $2 AND status = 'running'",
                run_id,
                generation,
            )

        await self._run("clear_wait", write)

    async def list_children(self, run_id: str) -> list[RunRecord]:
        sql = f"SELECT {RUN_SELECT} FROM runs WHERE parent_run_id = $1 ORDER BY seq"
        return await fetch_records(self, "list_children", run_from_row, sql, run_id)

    async def purge_events(self, older_than: datetime, batch_size: int = 500) -> int:
        async def purge(conn: Any, replay: bool) -> int:
            deleted = await conn.fetch(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE created_at < $1 "
                "ORDER BY created_at LIMIT $2) RETURNING seq",
                aware(older_than),
                batch_size,
            )
            return len(deleted)

        return await self._run("purge_events", purge)

    async def count_waiting(self) -> dict[tuple[str, str], int]:
        async def read(conn: Any, replay: bool) -> dict[tuple[str, str], int]:
            rows = await conn.fetch(
                "SELECT job_name, wait_kind, count(*) AS n FROM runs WHERE status = 'waiting' "
                "GROUP BY job_name, wait_kind"
            )
            return {(r["job_name"], r["wait_kind"] or "sleep"): int(r["n"]) for r in rows}

        return await self._run("count_waiting", read)


async def _suspend(conn: Any, run: Any, run_id: str, generation: int, wait: NewWait) -> Suspension:
    """Inside the suspend's transaction, the run's row locked: ready, or stored as waiting."""
    children = 0
    until = None if wait.until is None else aware(wait.until)
    if wait.kind == "sleep" and await conn.fetchval(_DUE, until, wait.seconds):
        return Suspension("ready")
    if wait.kind == "event":
        await conn.execute(_LOCK_KEY, EVENT_LOCK_NAMESPACE, wait.key)
        event = await conn.fetchrow(
            "SELECT seq, data FROM events WHERE key = $1 AND seq > $2 AND run_seq >= $3 "
            "ORDER BY seq DESC LIMIT 1",
            wait.key,
            run["event_seq"],
            run["seq"],
        )
        if event is not None:
            await conn.execute("UPDATE runs SET event_seq = $2 WHERE id = $1", run_id, event["seq"])
            return Suspension("ready", None if event["data"] is None else _loads(event["data"]))
    if wait.kind == "children":
        if wait.children:
            await conn.execute(
                "UPDATE runs SET parent_run_id = $1 WHERE id = ANY($2::text[]) AND parent_run_id IS NULL",
                run_id,
                list(wait.children),
            )
        children = int(
            await conn.fetchval(
                f"SELECT count(*) FROM runs WHERE parent_run_id = $1 AND status NOT IN {FINISHED_SQL}",
                run_id,
            )
        )
        if children == 0:
            return Suspension("ready")
    await conn.execute(
        _SUSPEND, run_id, generation, wait.kind, wait.step, wait.key, wait.seconds, until, children or None
    )
    return Suspension("waiting", waiting_children=children)


def _loads(text: str) -> Any:
    return json.loads(text)


__all__ = ["PostgresWaits"]
