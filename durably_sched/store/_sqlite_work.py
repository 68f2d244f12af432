"""The SQLite store's worker side: claims, leases, fenced writes and the worker registry."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ._common import dt_to_ms, dumps, ms_to_dt
from ._sqlite_base import RUN_SELECT, WORKER_SELECT, SqliteAccess, fence, insert_logs, now_ms
from .records import Checkpoint, NewLog, Progress, RunRecord, WorkerInfo, WorkerRecord, WriteResult
from .rows import (
    ACTIVE_SQL,
    HELD_SQL,
    LEASED_RUNS,
    leased_by_worker,
    run_from_row,
    worker_from_row,
    worker_values,
)
from .rules import AttemptEnd, EndKind

CLAIM_PAGE_MAX = 256


class SqliteWork(SqliteAccess):
    """Claims (one write: a scan of active runs, checked key by key) and the holder's writes, fenced on
    the generation in the UPDATE's WHERE clause; the registry."""

    async def _claim(
        self, worker_id: str, jobs: list[str], limit: int, lease_seconds: float, run_ids: Sequence[str] | None
    ) -> list[RunRecord]:
        only = list(run_ids) if run_ids is not None else []
        only_clause = f"AND id IN ({','.join('?' * len(only))}) " if only else ""
        lease_ms = int(lease_seconds * 1000)
        marks = ",".join("?" * len(jobs))
        # INDEXED BY: read only active runs, however much history the table holds (the planner
        # would otherwise pick runs_job and walk every run the job ever had).
        scan = (
            "SELECT seq, concurrency_key, worker_id FROM runs INDEXED BY runs_active "
            f"WHERE status IN {ACTIVE_SQL} AND job_name IN ({marks}) {only_clause}"
            "AND (status = 'pending' OR lease_expires_at < ?) AND (not_before IS NULL OR not_before <= ?) "
            "AND seq > ? ORDER BY seq LIMIT ?"
        )
        # Pages as large as the claim (a few more for keyed runs the key rule may skip): a claim of
        # one run reads a few index entries, not a page of 256 of a long backlog.
        page_size = min(CLAIM_PAGE_MAX, limit + 8)

        def claim(conn: sqlite3.Connection) -> list[RunRecord]:
            now = now_ms()
            claimed: list[RunRecord] = []
            keys_decided: set[str] = set()  # taken in this claim, or blocked
            last_seq = 0
            while len(claimed) < limit:
                # Each page is read completely before any update (no update under a live cursor).
                page = conn.execute(scan, [*jobs, *only, now, now, last_seq, page_size]).fetchall()
                if not page:
                    break
                for candidate in page:
                    seq, key = candidate["seq"], candidate["concurrency_key"]
                    last_seq = seq
                    if key is not None:
                        if key in keys_decided:
                            continue
                        keys_decided.add(key)
                        blocked = conn.execute(
                            f"SELECT 1 FROM runs WHERE concurrency_key = ? AND status IN {ACTIVE_SQL} "
                            "AND seq != ? AND (seq < ? OR (status = 'running' AND lease_expires_at >= ?)) "
                            "LIMIT 1",
                            (key, seq, seq, now),
                        ).fetchone()
                        if blocked is not None:
                            continue
                    row = conn.execute(
                        "UPDATE runs SET status = 'running', generation = generation + 1, worker_id = ?, "
                        "lease_expires_at = ?, started_at = COALESCE(started_at, ?), attempt = attempt + 1, "
                        "attempt_started_at = ?, not_before = NULL, updated_at = ? "
                        f"WHERE seq = ? RETURNING {RUN_SELECT}",
                        (worker_id, now + lease_ms, now, now, now, seq),
                    ).fetchone()
                    claimed.append(run_from_row(row, ms_to_dt, candidate["worker_id"]))
                    if len(claimed) >= limit:
                        break
            return claimed

        return await self._write(claim)

    async def _renew_leases(
        self, leases: Sequence[tuple[str, int]], lease_seconds: float, worker: tuple[str, int] | None
    ) -> dict[str, WriteResult]:
        lease_ms = int(lease_seconds * 1000)

        def renew(conn: sqlite3.Connection) -> dict[str, WriteResult]:
            now = now_ms()
            if worker is not None:
                _beat(conn, worker[0], worker[1], now)
            out: dict[str, WriteResult] = {}
            for run_id, generation in leases:
                row = conn.execute(
                    "UPDATE runs SET lease_expires_at = CASE WHEN status = 'running' THEN ? "
                    "ELSE lease_expires_at END WHERE id = ? AND generation = ? "
                    f"AND status IN {HELD_SQL} RETURNING status",
                    (now + lease_ms, run_id, generation),
                ).fetchone()
                out[run_id] = fence(row)
            return out

        return await self._write(renew)

    async def checkpoint(self, cp: Checkpoint) -> WriteResult:
        def write(conn: sqlite3.Connection) -> WriteResult:
            now = now_ms()
            inserted = conn.execute(
                "INSERT INTO steps (run_id, name, idx, output, started_at, completed_at) "
                "SELECT ?, ?, ?, ?, ?, ? FROM runs WHERE id = ? AND generation = ? "
                f"AND status IN {HELD_SQL} ON CONFLICT DO NOTHING",
                (
                    cp.run_id,
                    cp.name,
                    cp.index,
                    cp.output_json,
                    dt_to_ms(cp.started_at),
                    dt_to_ms(cp.completed_at),
                    cp.run_id,
                    cp.generation,
                ),
            ).rowcount
            if inserted != 1:
                return "lost"
            insert_logs(conn, cp.run_id, cp.logs)  # before the count moves: they precede the step
            row = conn.execute(
                "UPDATE runs SET step_count = step_count + 1, updated_at = ? WHERE id = ? RETURNING status",
                (now, cp.run_id),
            ).fetchone()
            return fence(row)

        return await self._write(write)

    async def _fenced_update(
        self,
        run_id: str,
        generation: int,
        assignments: str,
        params: Sequence[Any],
        logs: Sequence[NewLog],
        statuses: str = HELD_SQL,
    ) -> WriteResult:
        def write(conn: sqlite3.Connection) -> WriteResult:
            now = now_ms()
            row = conn.execute(
                f"UPDATE runs SET {assignments}, updated_at = ? WHERE id = ? AND generation = ? "
                f"AND status IN {statuses} RETURNING status",
                (*params, now, run_id, generation),
            ).fetchone()
            if row is not None:
                insert_logs(conn, run_id, logs)
            return fence(row)

        return await self._write(write)

    async def set_progress(
        self, run_id: str, generation: int, progress: Progress, logs: Sequence[NewLog] = ()
    ) -> WriteResult:
        return await self._fenced_update(
            run_id,
            generation,
            "progress_current = ?, progress_total = ?, progress_message = ?",
            (progress.current, progress.total, progress.message),
            logs,
        )

    async def append_logs(self, run_id: str, generation: int, logs: Sequence[NewLog]) -> WriteResult:
        return await self._fenced_update(run_id, generation, "generation = generation", (), logs)

    async def register_worker(self, info: WorkerInfo) -> None:
        def register(conn: sqlite3.Connection) -> None:
            now = now_ms()
            conn.execute(
                f"INSERT INTO workers ({WORKER_SELECT}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, NULL, NULL) "
                "ON CONFLICT (id) DO UPDATE SET host = excluded.host, host_key = excluded.host_key, "
                "pid = excluded.pid, process_start = excluded.process_start, version = excluded.version, "
                "jobs = excluded.jobs, concurrency = excluded.concurrency, "
                "lease_seconds = excluded.lease_seconds, heartbeat_at = excluded.heartbeat_at, "
                "gone_at = NULL, gone_by = NULL",
                (*worker_values(info), now, now),
            )

        await self._write(register)

    async def heartbeat_worker(self, worker_id: str, runs_held: int) -> bool:
        def beat(conn: sqlite3.Connection) -> bool:
            return _beat(conn, worker_id, runs_held, now_ms())

        return await self._write(beat)

    async def deregister_worker(self, worker_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

        await self._write(delete)

    async def list_workers(self) -> list[WorkerRecord]:
        at = now_ms()
        now = ms_to_dt(at)
        assert now is not None
        rows = await self._read(f"SELECT {WORKER_SELECT} FROM workers ORDER BY started_at, id")
        held = leased_by_worker(await self._read(LEASED_RUNS.format(now="?"), (at,)) if rows else [])
        return [worker_from_row(r, now, ms_to_dt, held) for r in rows]

    async def take_over_worker(self, worker_id: str, by: str) -> list[str]:
        def take(conn: sqlite3.Connection) -> list[str]:
            now = now_ms()
            conn.execute(
                "UPDATE workers SET gone_at = COALESCE(gone_at, ?), gone_by = COALESCE(gone_by, ?) "
                "WHERE id = ?",
                (now, by, worker_id),
            )
            rows = conn.execute(
                "UPDATE runs SET lease_expires_at = ? WHERE worker_id = ? AND status = 'running' "
                "AND lease_expires_at >= ? RETURNING id",
                (now - 1, worker_id, now),
            ).fetchall()
            return [r["id"] for r in rows]

        return await self._write(take)

    async def purge_workers(self, older_than: datetime) -> int:
        return await self._write_count("DELETE FROM workers WHERE heartbeat_at < ?", (dt_to_ms(older_than),))

    async def _end_attempt(self, end: AttemptEnd) -> WriteResult:
        now = now_ms()
        values: tuple[Any, ...] = ()
        if end.kind == "completed":
            values = (dumps(end.output), now)
        elif end.kind != "released":
            at = now + max(0, round(end.delay_seconds * 1000)) if end.kind == "retry" else now
            values = (end.error, end.failed_step_name, end.traceback, at)
        return await self._fenced_update(
            end.run_id, end.generation, _ENDINGS[end.kind], values, end.logs, statuses="('running')"
        )


_ENDINGS: dict[EndKind, str] = {
    "completed": "status = 'completed', output = ?, completed_at = ?, lease_expires_at = NULL, "
    "error = NULL, failed_step_name = NULL",
    "failed": "status = 'failed', error = ?, failed_step_name = ?, traceback = ?, completed_at = ?, "
    "lease_expires_at = NULL, failed_attempts = failed_attempts + 1",
    "retry": "status = 'pending', error = ?, failed_step_name = ?, traceback = ?, not_before = ?, "
    "lease_expires_at = NULL, failed_attempts = failed_attempts + 1",
    "released": "status = 'pending', worker_id = NULL, lease_expires_at = NULL",
}
"""The assignments of each way an attempt ends (the values: see ``_end_attempt``)."""


def _beat(conn: sqlite3.Connection, worker_id: str, runs_held: int, now: int) -> bool:
    row = conn.execute(
        "UPDATE workers SET heartbeat_at = ?, runs_held = ? WHERE id = ? RETURNING 1",
        (now, runs_held, worker_id),
    ).fetchone()
    return row is not None
