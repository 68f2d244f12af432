"""The SQLite store's run queries and operator actions (cancel, retry, delete, purge)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from . import _runs_query
from . import run_events as ev
from ._common import dt_to_ms, ms_to_dt, prefix_upper_bound
from ._sqlite_base import (
    LOG_SELECT,
    RUN_SELECT,
    STEP_SELECT,
    SqliteAccess,
    fetch_run,
    log_record,
    now_ms,
    run_record,
    step_record,
)
from .attempts import ATTEMPTS_SQL, AttemptRecord, attempt_from_row
from .records import COUNT_CAP, LogRecord, RunChanges, RunPage, RunQuery, RunRecord, RunStatus, StepRecord
from .rows import (
    ACTIVE_SQL,
    FINISHED_SQL,
    RUN_COLUMNS,
    by_run,
    columns,
)
from .waits import WAITING_OR_ACTIVE_SQL


class SqliteRuns(SqliteAccess):
    """Reads on the reader connection (never blocked by the writer in WAL mode); the operator's
    writes to runs through the writer."""

    async def get_run(self, run_id: str) -> RunRecord | None:
        rows = await self._read(f"SELECT {RUN_SELECT} FROM runs WHERE id = ?", (run_id,))
        return run_record(rows[0]) if rows else None

    async def get_run_statuses(self, run_ids: Sequence[str]) -> dict[str, RunStatus]:
        if not run_ids:
            return {}
        marks = ",".join("?" * len(run_ids))
        rows = await self._read(f"SELECT id, status FROM runs WHERE id IN ({marks})", list(run_ids))
        return {r["id"]: r["status"] for r in rows}

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

    async def get_run_events_since(
        self, positions: Mapping[str, int], limit: int = 1000
    ) -> dict[str, list[ev.RunEventRecord]]:
        if not positions:
            return {}
        sql = " UNION ALL ".join(
            f"SELECT * FROM (SELECT {ev.RUN_EVENT_COLUMNS} FROM run_events WHERE {_OF_RUN} AND id > ? "
            "ORDER BY id LIMIT ?)"
            for _ in positions
        )
        params = [v for run_id, after in positions.items() for v in (run_id, run_id, after, limit)]
        out = by_run(await self._read(sql, params), _run_event)
        for events in out.values():
            events.sort(key=lambda event: event.id)
        return out

    async def get_run_streams(
        self, positions: Mapping[str, ev.StreamPosition], limit: int = 1000
    ) -> dict[str, ev.StreamBatch]:
        if not positions:
            return {}
        sql = " UNION ALL ".join(_STREAM_PART for _ in positions)
        params: list[Any] = []
        for run_id, at in positions.items():
            params += (run_id, run_id, at.event_id, limit)
            params += (run_id, at.step_index, limit, run_id, at.log_id, limit)
        rows = await self._read(f"SELECT {ev.STREAM_COLUMNS} FROM ({sql})", params)
        return ev.stream_batches(rows, ms_to_dt, limit)

    async def get_run_events_after(self, after_id: int, limit: int = 1000) -> list[ev.RunEventRecord]:
        sql = f"SELECT {ev.RUN_EVENT_COLUMNS} FROM run_events WHERE id > ? ORDER BY id LIMIT ?"
        return [_run_event(row) for row in await self._read(sql, (after_id, limit))]

    async def latest_run_events(self, run_ids: Sequence[str]) -> dict[str, str]:
        if not run_ids:
            return {}
        marks = ",".join("?" * len(run_ids))
        # SQLite takes the bare `type` from the row that has the max(id) of its group.
        sql = f"SELECT e.run_id, e.type, max(e.id) FROM {_RUNS_EVENTS} WHERE r.id IN ({marks}) "
        sql += "GROUP BY e.run_id"
        return {row[0]: row[1] for row in await self._read(sql, list(run_ids))}

    async def last_run_event_id(self, run_ids: Sequence[str] | None = None) -> int:
        if run_ids is None:
            rows = await self._read("SELECT max(id) FROM run_events")
        elif not run_ids:
            return 0
        else:
            marks = ", ".join("?" * len(run_ids))
            rows = await self._read(f"SELECT max(e.id) FROM {_RUNS_EVENTS} WHERE r.id IN ({marks})", run_ids)
        return int(rows[0][0] or 0)

    async def poll_run_changes(
        self, after_seq: int | None, finished_since: datetime | None, active_limit: int = 500
    ) -> RunChanges:
        active = await self._read(
            f"SELECT {RUN_SELECT} FROM runs INDEXED BY runs_active WHERE status IN {ACTIVE_SQL} "
            "ORDER BY seq DESC LIMIT ?",
            (active_limit,),
        )
        created: list[RunRecord] = []
        finished: list[RunRecord] = []
        last_seq = after_seq or 0
        if after_seq is None:
            last_seq = int((await self._read("SELECT coalesce(max(seq), 0) FROM runs"))[0][0])
        else:
            sql = f"SELECT seq, {RUN_SELECT} FROM runs WHERE seq > ? ORDER BY seq LIMIT 500"
            for row in await self._read(sql, (after_seq,)):
                created.append(run_record(row))
                last_seq = int(row["seq"])
        if finished_since is not None:
            sql = (
                f"SELECT {RUN_SELECT} FROM runs INDEXED BY runs_finished WHERE status IN {FINISHED_SQL} "
                "AND completed_at >= ? ORDER BY completed_at LIMIT 500"
            )
            finished.extend(run_record(r) for r in await self._read(sql, (dt_to_ms(finished_since),)))
        return RunChanges([run_record(r) for r in active], created, finished, last_seq)

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
        rows = await self._read(f"SELECT {STEP_SELECT} FROM steps WHERE run_id = ? ORDER BY idx", (run_id,))
        return [step_record(r) for r in rows]

    async def get_attempts(self, run_id: str, after: int = 0) -> list[AttemptRecord]:
        rows = await self._read(ATTEMPTS_SQL.format(run="?", after="?"), (run_id, after))
        return [attempt_from_row(r, ms_to_dt) for r in rows]

    async def get_logs(self, run_id: str, after_id: int = 0, limit: int = 1000) -> list[LogRecord]:
        rows = await self._read(
            f"SELECT {LOG_SELECT} FROM logs WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?",
            (run_id, after_id, limit),
        )
        return [log_record(r) for r in rows]

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
                f"WHERE id = ? AND status IN {WAITING_OR_ACTIVE_SQL}",
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
        return await self._write_count(
            "DELETE FROM steps WHERE run_id = ? AND EXISTS "
            "(SELECT 1 FROM runs WHERE id = ? AND status = 'completed')",
            (run_id, run_id),
        )

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


_OF_RUN = "run_seq = (SELECT seq FROM runs WHERE id = ?) AND run_id = ?"
"""A run's transitions, by its seq (the index); its id as well: a row of a deleted run may stay
(the table's newest, migration 12) while SQLite gives its seq to a new run."""
_RUNS_EVENTS = "runs r JOIN run_events e ON e.run_seq = r.seq AND e.run_id = r.id"

_STREAM_PART = (
    "SELECT * FROM (SELECT 'e' AS src, run_id, id AS pos, type AS name, attempt, step_count, data, "
    "at AS t1, NULL AS t2, NULL AS level, NULL AS message FROM run_events "
    f"WHERE {_OF_RUN} AND id > ? ORDER BY id LIMIT ?) "
    "UNION ALL SELECT * FROM (SELECT 's', run_id, idx, name, NULL, NULL, output, started_at, "
    "completed_at, NULL, NULL FROM steps WHERE run_id = ? AND idx >= ? ORDER BY idx LIMIT ?) "
    "UNION ALL SELECT * FROM (SELECT 'l', run_id, id, step_name, attempt, step_count, data, created_at, "
    "NULL, level, message FROM logs WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?)"
)
"""One run's part of the stream read: its new transitions, steps and logs (ev.STREAM_COLUMNS)."""


def _run_event(row: Any) -> ev.RunEventRecord:
    return ev.run_event_from_row(row, ms_to_dt)
