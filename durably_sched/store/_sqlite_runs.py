"""The SQLite store's run queries and operator actions (cancel, retry, delete, purge)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from . import _runs_query
from ._common import dt_to_ms, ms_to_dt, prefix_upper_bound
from ._sqlite_base import (
    RUN_SELECT,
    SqliteAccess,
    fetch_run,
    now_ms,
    run_record,
)
from .attempts import ATTEMPTS_SQL, AttemptRecord, attempt_from_row
from .records import (
    COUNT_CAP,
    LogRecord,
    RunChanges,
    RunPage,
    RunQuery,
    RunRecord,
    RunStatus,
    StepRecord,
)
from .rows import (
    ACTIVE_SQL,
    FINISHED_SQL,
    LOG_COLUMNS,
    RUN_COLUMNS,
    STEP_COLUMNS,
    columns,
    log_from_row,
    step_from_row,
)


class SqliteRuns(SqliteAccess):
    """Reads of runs, steps and logs, and the operator's writes to runs."""

    async def get_run(self, run_id: str) -> RunRecord | None:
        rows = await self._read(f"SELECT {RUN_SELECT} FROM runs WHERE id = ?", (run_id,))
        return run_record(rows[0]) if rows else None

    async def get_run_statuses(self, run_ids: Sequence[str]) -> dict[str, RunStatus]:
        if not run_ids:
            return {}
        marks = ",".join("?" * len(run_ids))
        rows = await self._read(f"SELECT id, status FROM runs WHERE id IN ({marks})", list(run_ids))
        return {r["id"]: r["status"] for r in rows}

    async def list_runs(self, query: RunQuery) -> list[RunRecord]:
        return (await self.list_runs_page(query)).runs

    async def list_runs_page(self, query: RunQuery) -> RunPage:
        built = _runs_query.page_sql(query, RUN_SELECT, "sqlite", dt_to_ms)
        if built is None:
            return RunPage([], None)
        rows = await self._read(*built)
        return RunPage(
            [run_record(r) for r in rows[: query.limit]], _runs_query.next_cursor(rows, query.limit)
        )

    async def count_runs(self, query: RunQuery, cap: int = COUNT_CAP) -> tuple[int, bool]:
        built = _runs_query.count_sql(query, "sqlite", dt_to_ms, cap)
        if built is None:
            return 0, False
        count = int((await self._read(*built))[0][0])
        return min(count, cap), count > cap

    async def get_runs_by_id(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        if not run_ids:
            return {}
        marks = ",".join("?" * len(run_ids))
        rows = await self._read(f"SELECT {RUN_SELECT} FROM runs WHERE id IN ({marks})", list(run_ids))
        return {r["id"]: run_record(r) for r in rows}

    async def get_steps_since(self, positions: Mapping[str, int]) -> dict[str, list[StepRecord]]:
        if not positions:
            return {}
        sql = " UNION ALL ".join(
            f"SELECT {columns(STEP_COLUMNS)} FROM steps WHERE run_id = ? AND idx >= ?" for _ in positions
        )
        out: dict[str, list[StepRecord]] = {}
        for r in await self._read(sql, [value for item in positions.items() for value in item]):
            out.setdefault(r["run_id"], []).append(step_from_row(r, ms_to_dt))
        for steps in out.values():
            steps.sort(key=lambda step: step.index)
        return out

    async def get_logs_since(
        self, positions: Mapping[str, int], limit: int = 1000
    ) -> dict[str, list[LogRecord]]:
        if not positions:
            return {}
        sql = " UNION ALL ".join(
            f"SELECT * FROM (SELECT {columns(LOG_COLUMNS)} FROM logs WHERE run_id = ? AND id > ? "
            "ORDER BY id LIMIT ?)"
            for _ in positions
        )
        params = [value for run_id, after in positions.items() for value in (run_id, after, limit)]
        out: dict[str, list[LogRecord]] = {}
        for r in await self._read(sql, params):
            out.setdefault(r["run_id"], []).append(log_from_row(r, ms_to_dt))
        for logs in out.values():
            logs.sort(key=lambda entry: entry.id)
        return out

    async def poll_run_changes(
        self, after_seq: int | None, finished_since: datetime | None, active_limit: int = 500
    ) -> RunChanges:
        active = await self._read(
            f"SELECT {RUN_SELECT} FROM runs INDEXED BY runs_active WHERE status IN {ACTIVE_SQL} "
            "ORDER BY seq DESC LIMIT ?",
            (active_limit,),
        )
        created: list[Any] = []
        if after_seq is None:
            rows = await self._read("SELECT max(seq) AS last FROM runs")
            last_seq = int(rows[0]["last"] or 0)
        else:
            created = await self._read(
                f"SELECT seq, {RUN_SELECT} FROM runs WHERE seq > ? ORDER BY seq LIMIT 500", (after_seq,)
            )
            last_seq = int(created[-1]["seq"]) if created else after_seq
        finished: list[Any] = []
        if finished_since is not None:
            finished = await self._read(
                f"SELECT {RUN_SELECT} FROM runs INDEXED BY runs_finished WHERE status IN {FINISHED_SQL} "
                "AND completed_at >= ? ORDER BY completed_at LIMIT 500",
                (dt_to_ms(finished_since),),
            )
        return RunChanges(
            active=[run_record(r) for r in active],
            created=[run_record(r) for r in created],
            finished=[run_record(r) for r in finished],
            last_seq=last_seq,
        )

    async def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        # A range on the id's unique index (BINARY collation = code point order), not LIKE, which
        # is case-insensitive in SQLite and would not use the index.
        upper = prefix_upper_bound(prefix)
        if upper is None:
            sql, params = "SELECT id FROM runs WHERE id >= ? ORDER BY id LIMIT ?", [prefix, limit]
        else:
            sql = "SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"
            params = [prefix, upper, limit]
        rows = await self._read(sql, params)
        return [r["id"] for r in rows if r["id"].startswith(prefix)]

    async def count_runs_by_status(self) -> dict[tuple[str, str], int]:
        rows = await self._read("SELECT job_name, status, count(*) AS n FROM runs GROUP BY job_name, status")
        return {(r["job_name"], r["status"]): r["n"] for r in rows}

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        rows = await self._read(
            f"SELECT {columns(STEP_COLUMNS)} FROM steps WHERE run_id = ? ORDER BY idx", (run_id,)
        )
        return [step_from_row(r, ms_to_dt) for r in rows]

    async def get_attempts(self, run_id: str, after: int = 0) -> list[AttemptRecord]:
        rows = await self._read(ATTEMPTS_SQL.format(run="?", after="?"), (run_id, after))
        return [attempt_from_row(r, ms_to_dt) for r in rows]

    async def get_logs(self, run_id: str, after_id: int = 0, limit: int = 1000) -> list[LogRecord]:
        rows = await self._read(
            f"SELECT {columns(LOG_COLUMNS)} FROM logs WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?",
            (run_id, after_id, limit),
        )
        return [log_from_row(r, ms_to_dt) for r in rows]

    async def last_log_id(self, run_id: str) -> int:
        rows = await self._read("SELECT max(id) AS last FROM logs WHERE run_id = ?", (run_id,))
        return int(rows[0]["last"] or 0)

    async def pending_counts(self) -> dict[str, int]:
        rows = await self._read(
            "SELECT job_name, count(*) AS n FROM runs WHERE status = 'pending' GROUP BY job_name"
        )
        return {r["job_name"]: r["n"] for r in rows}

    async def queue_blocker(self, run_id: str) -> RunRecord | None:
        rows = await self._read(
            f"SELECT {columns(RUN_COLUMNS, 'o.')} FROM runs r JOIN runs o "
            f"ON o.concurrency_key = r.concurrency_key AND o.seq != r.seq AND o.status IN {ACTIVE_SQL} "
            "AND (o.seq < r.seq OR (o.status = 'running' AND o.lease_expires_at >= ?)) "
            "WHERE r.id = ? AND r.concurrency_key IS NOT NULL ORDER BY o.status = 'running' DESC, o.seq "
            "LIMIT 1",
            (now_ms(), run_id),
        )
        return run_record(rows[0]) if rows else None

    async def cancel_run(self, run_id: str) -> RunRecord | None:
        def cancel(conn: sqlite3.Connection) -> RunRecord | None:
            now = now_ms()
            conn.execute(
                f"UPDATE runs SET status = 'cancelled', completed_at = ?, updated_at = ? "
                f"WHERE id = ? AND status IN {ACTIVE_SQL}",
                (now, now, run_id),
            )
            return fetch_run(conn, run_id)

        return await self._write(cancel)

    async def retry_run(self, run_id: str) -> RunRecord | None:
        def retry(conn: sqlite3.Connection) -> RunRecord | None:
            now = now_ms()
            conn.execute(
                "UPDATE runs SET status = 'pending', error = NULL, failed_step_name = NULL, "
                "traceback = NULL, completed_at = NULL, worker_id = NULL, lease_expires_at = NULL, "
                "failed_attempts = 0, not_before = NULL, updated_at = ? "
                "WHERE id = ? AND status IN ('failed', 'cancelled')",
                (now, run_id),
            )
            return fetch_run(conn, run_id)

        return await self._write(retry)

    async def delete_run(self, run_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "DELETE FROM run_labels WHERE seq IN "
                "(SELECT seq FROM runs WHERE id = ? AND status != 'running')",
                (run_id,),
            )
            gone = conn.execute("DELETE FROM runs WHERE id = ? AND status != 'running'", (run_id,)).rowcount
            if gone:
                conn.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM logs WHERE run_id = ?", (run_id,))
            return bool(gone)

        return await self._write(delete, heavy=True)

    async def delete_steps(self, run_id: str) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM steps WHERE run_id = ? AND EXISTS "
                "(SELECT 1 FROM runs WHERE id = ? AND status = 'completed')",
                (run_id, run_id),
            ).rowcount

        return await self._write(delete)

    async def purge_runs(self, older_than: datetime, batch_size: int = 500) -> int:
        cutoff = dt_to_ms(older_than)

        def purge(conn: sqlite3.Connection) -> int:
            ids = [
                r["id"]
                for r in conn.execute(
                    f"SELECT id FROM runs INDEXED BY runs_finished WHERE status IN {FINISHED_SQL} "
                    "AND completed_at < ? ORDER BY completed_at LIMIT ?",
                    (cutoff, batch_size),
                )
            ]
            if not ids:
                return 0
            marks = ",".join("?" * len(ids))
            conn.execute(
                f"DELETE FROM run_labels WHERE seq IN (SELECT seq FROM runs WHERE id IN ({marks}))", ids
            )
            conn.execute(f"DELETE FROM steps WHERE run_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM logs WHERE run_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)
            return len(ids)

        return await self._write(purge, heavy=True)
