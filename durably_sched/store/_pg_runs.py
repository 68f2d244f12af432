"""The PostgreSQL store's run queries and operator actions (cancel, retry, delete, purge)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from . import _runs_query
from ._common import dumps
from ._pg_base import PostgresAccess, aware, fetch_run
from ._pg_reads import fetch_by_run, fetch_records
from ._pg_rules import existing_run
from ._pg_sql import (
    INSERT_CLAIMED,
    INSERT_CLAIMED_NO_LABELS,
    NOTIFY,
    RUN_SELECT,
    find_run_ids_query,
)
from ._runs_query import labels_indexed
from .attempts import ATTEMPTS_SQL, AttemptRecord, attempt_from_row
from .records import (
    COUNT_CAP,
    Disposition,
    LogRecord,
    NewRun,
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
    run_from_row,
    step_from_row,
)
from .rules import coalescing, create_runs
from .run_events import (
    RUN_EVENT_COLUMNS,
    STREAM_COLUMNS,
    RunEventRecord,
    StreamBatch,
    StreamPosition,
    run_event_from_row,
    stream_batches,
)
from .waits import WAITING_OR_ACTIVE_SQL


class PostgresRuns(PostgresAccess):
    """Reads of runs, steps and logs, and the operator's writes to runs."""

    async def create_and_claim(
        self, run: NewRun, worker_id: str, job_names: Sequence[str], lease_seconds: float
    ) -> tuple[RunRecord, Disposition]:
        if run.concurrency_key is not None or run.coalesce:
            [result] = await self._rule(
                "create_runs", lambda replay: create_runs([run], replay), atomic=coalescing(run)
            )
            return result
        args = (
            run.id,
            run.job_name,
            dumps(run.input),
            run.idempotency_key,
            dumps(run.labels),
            run.labels.get("schedule"),
            None if run.retry_policy is None else dumps(run.retry_policy),
            run.timeout,
            worker_id,
            float(lease_seconds),
            list(job_names),
        )
        sql = INSERT_CLAIMED if labels_indexed(run.labels) else INSERT_CLAIMED_NO_LABELS

        async def insert(conn: Any, replay: bool) -> tuple[RunRecord, Disposition]:
            row = await conn.fetchrow(sql, *args)
            if row is not None:
                return run_from_row(row), "created"
            # A conflict: an existing run of the idempotency key, or on replay our own first
            # attempt (then as it committed it: claimed or not).
            existing = await existing_run(conn, run)
            return existing, "created" if replay and existing.id == run.id else "idempotent"

        return await self._run("create_runs", insert)

    async def get_run(self, run_id: str) -> RunRecord | None:
        async def read(conn: Any, replay: bool) -> RunRecord | None:
            return await fetch_run(conn, run_id)

        return await self._run("get_run", read)

    async def get_run_statuses(self, run_ids: Sequence[str]) -> dict[str, RunStatus]:
        if not run_ids:
            return {}

        async def read(conn: Any, replay: bool) -> dict[str, RunStatus]:
            rows = await conn.fetch("SELECT id, status FROM runs WHERE id = ANY($1::text[])", list(run_ids))
            return {r["id"]: r["status"] for r in rows}

        return await self._run("get_run_statuses", read)

    async def list_runs_page(self, query: RunQuery) -> RunPage:
        built = _runs_query.page_sql(query, RUN_SELECT, "postgres", aware)
        if built is None:
            return RunPage([], None)
        sql, params = built

        async def read(conn: Any, replay: bool) -> RunPage:
            rows = await conn.fetch(sql, *params)
            return RunPage(
                [run_from_row(r) for r in rows[: query.limit]], _runs_query.next_cursor(rows, query.limit)
            )

        return await self._run("list_runs", read)

    async def count_runs(self, query: RunQuery, cap: int = COUNT_CAP) -> tuple[int, bool]:
        built = _runs_query.count_sql(query, "postgres", aware, cap)
        if built is None:
            return 0, False
        sql, params = built

        async def read(conn: Any, replay: bool) -> int:
            return int(await conn.fetchval(sql, *params))

        count = await self._run("count_runs", read)
        return min(count, cap), count > cap

    async def get_runs_by_id(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        if not run_ids:
            return {}

        async def read(conn: Any, replay: bool) -> dict[str, RunRecord]:
            rows = await conn.fetch(
                f"SELECT {RUN_SELECT} FROM runs WHERE id = ANY($1::text[])", list(run_ids)
            )
            return {r["id"]: run_from_row(r) for r in rows}

        return await self._run("get_runs_by_id", read)

    async def get_run_events_since(
        self, positions: Mapping[str, int], limit: int = 1000
    ) -> dict[str, list[RunEventRecord]]:
        return await fetch_by_run(
            self,
            "get_run_events_since",
            _run_event,
            "SELECT x.* FROM unnest($1::text[], $2::bigint[]) AS p(run_id, after) "
            "JOIN runs r ON r.id = p.run_id "
            f"CROSS JOIN LATERAL (SELECT {RUN_EVENT_COLUMNS} FROM run_events e "
            "WHERE e.run_seq = r.seq AND e.id > p.after ORDER BY e.id LIMIT $3) AS x "
            "ORDER BY x.run_id, x.id",
            positions,
            limit,
        )

    async def get_run_streams(
        self, positions: Mapping[str, StreamPosition], limit: int = 1000
    ) -> dict[str, StreamBatch]:
        if not positions:
            return {}
        at = list(positions.values())
        args = (
            list(positions),
            [p.event_id for p in at],
            [p.step_index for p in at],
            [p.log_id for p in at],
            limit,
        )

        async def read(conn: Any, replay: bool) -> dict[str, StreamBatch]:
            return stream_batches(await conn.fetch(_STREAM_SQL, *args), aware, limit)

        return await self._run("get_run_streams", read)

    async def get_run_events_after(self, after_id: int, limit: int = 1000) -> list[RunEventRecord]:
        sql = f"SELECT {RUN_EVENT_COLUMNS} FROM run_events WHERE id > $1 ORDER BY id LIMIT $2"
        return await fetch_records(self, "get_run_events_after", _run_event, sql, after_id, limit)

    async def latest_run_events(self, run_ids: Sequence[str]) -> dict[str, str]:
        if not run_ids:
            return {}

        async def read(conn: Any, replay: bool) -> dict[str, str]:
            rows = await conn.fetch(
                "SELECT DISTINCT ON (r.id) r.id AS run_id, e.type FROM runs r "
                "JOIN run_events e ON e.run_seq = r.seq WHERE r.id = ANY($1::text[]) "
                "ORDER BY r.id, e.id DESC",
                list(run_ids),
            )
            return {row["run_id"]: row["type"] for row in rows}

        return await self._run("latest_run_events", read)

    async def last_run_event_id(self, run_ids: Sequence[str] | None = None) -> int:
        async def read(conn: Any, replay: bool) -> int:
            if run_ids is None:
                return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM run_events"))
            sql = (
                "SELECT coalesce(max(e.id), 0) FROM runs r JOIN run_events e ON e.run_seq = r.seq "
                "WHERE r.id = ANY($1::text[])"
            )
            return int(await conn.fetchval(sql, list(run_ids)))

        return await self._run("last_run_event_id", read)

    async def poll_run_changes(
        self, after_seq: int | None, finished_since: datetime | None, active_limit: int = 500
    ) -> RunChanges:
        async def read(conn: Any, replay: bool) -> RunChanges:
            active = await conn.fetch(
                f"SELECT {RUN_SELECT} FROM runs WHERE status IN {ACTIVE_SQL} ORDER BY seq DESC LIMIT $1",
                active_limit,
            )
            created: list[Any] = []
            if after_seq is None:
                last_seq = int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM runs"))
            else:
                created = await conn.fetch(
                    f"SELECT seq, {RUN_SELECT} FROM runs WHERE seq > $1 ORDER BY seq LIMIT 500", after_seq
                )
                last_seq = int(created[-1]["seq"]) if created else after_seq
            finished: list[Any] = []
            if finished_since is not None:
                finished = await conn.fetch(
                    f"SELECT {RUN_SELECT} FROM runs WHERE status IN {FINISHED_SQL} AND completed_at >= $1 "
                    "ORDER BY completed_at LIMIT 500",
                    aware(finished_since),
                )
            return RunChanges(
                active=[run_from_row(r) for r in active],
                created=[run_from_row(r) for r in created],
                finished=[run_from_row(r) for r in finished],
                last_seq=last_seq,
            )

        return await self._run("poll_run_changes", read)

    async def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        sql, args = find_run_ids_query(prefix, limit)

        async def read(conn: Any, replay: bool) -> list[str]:
            rows = await conn.fetch(sql, *args)
            return [r["id"] for r in rows if r["id"].startswith(prefix)]

        return await self._run("find_run_ids", read)

    async def count_runs_by_status(self) -> dict[tuple[str, str], int]:
        async def read(conn: Any, replay: bool) -> dict[tuple[str, str], int]:
            rows = await conn.fetch(
                "SELECT job_name, status, count(*) AS n FROM runs GROUP BY job_name, status"
            )
            return {(r["job_name"], r["status"]): r["n"] for r in rows}

        return await self._run("count_runs_by_status", read)

    async def get_attempts(self, run_id: str, after: int = 0) -> list[AttemptRecord]:
        sql = ATTEMPTS_SQL.format(run="$1", after="$2")
        return await fetch_records(self, "get_attempts", attempt_from_row, sql, run_id, after)

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        sql = f"SELECT {columns(STEP_COLUMNS)} FROM steps WHERE run_id = $1 ORDER BY idx"
        return await fetch_records(self, "get_steps", step_from_row, sql, run_id)

    async def get_logs(self, run_id: str, after_id: int = 0, limit: int = 1000) -> list[LogRecord]:
        sql = f"SELECT {columns(LOG_COLUMNS)} FROM logs WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        return await fetch_records(self, "get_logs", log_from_row, sql, run_id, after_id, limit)

    async def last_log_id(self, run_id: str) -> int:
        async def read(conn: Any, replay: bool) -> int:
            value = await conn.fetchval("SELECT max(id) FROM logs WHERE run_id = $1", run_id)
            return int(value or 0)

        return await self._run("last_log_id", read)

    async def pending_counts(self) -> dict[str, int]:
        async def read(conn: Any, replay: bool) -> dict[str, int]:
            rows = await conn.fetch(
                "SELECT job_name, count(*) AS n FROM runs WHERE status = 'pending' GROUP BY job_name"
            )
            return {r["job_name"]: r["n"] for r in rows}

        return await self._run("pending_counts", read)

    async def queue_blocker(self, run_id: str) -> RunRecord | None:
        async def read(conn: Any, replay: bool) -> RunRecord | None:
            row = await conn.fetchrow(
                f"SELECT {columns(RUN_COLUMNS, 'o.')} FROM runs r JOIN runs o "
                f"ON o.concurrency_key = r.concurrency_key AND o.seq <> r.seq AND o.status IN {ACTIVE_SQL} "
                "AND (o.seq < r.seq OR (o.status = 'running' AND o.lease_expires_at >= now())) "
                "WHERE r.id = $1 AND r.concurrency_key IS NOT NULL "
                "ORDER BY o.status = 'running' DESC, o.seq LIMIT 1",
                run_id,
            )
            return None if row is None else run_from_row(row)

        return await self._run("queue_blocker", read)

    async def cancel_run(self, run_id: str) -> RunRecord | None:
        async def cancel(conn: Any, replay: bool) -> RunRecord | None:
            row = await conn.fetchrow(
                "UPDATE runs SET status = 'cancelled', completed_at = now(), updated_at = now() "
                f"WHERE id = $1 AND status IN {WAITING_OR_ACTIVE_SQL} RETURNING {RUN_SELECT}",
                run_id,
            )
            return run_from_row(row) if row is not None else await fetch_run(conn, run_id)

        return await self._run("cancel_run", cancel)

    async def retry_run(self, run_id: str) -> RunRecord | None:
        async def retry(conn: Any, replay: bool) -> RunRecord | None:
            row = await conn.fetchrow(
                "UPDATE runs SET status = 'pending', error = NULL, failed_step_name = NULL, "
                "traceback = NULL, completed_at = NULL, worker_id = NULL, lease_expires_at = NULL, "
                "failed_attempts = 0, not_before = NULL, "
                "updated_at = now() "
                f"WHERE id = $1 AND status IN ('failed', 'cancelled') RETURNING {RUN_SELECT}, {NOTIFY}",
                run_id,
            )
            return run_from_row(row) if row is not None else await fetch_run(conn, run_id)

        return await self._run("retry_run", retry)

    async def delete_run(self, run_id: str) -> bool:
        async def delete(conn: Any, replay: bool) -> bool:
            async with conn.transaction():
                # Lock the run first: the deleting statement's snapshot then includes every step a
                # cancelled-but-still-executing holder committed (its checkpoint locks the row too).
                status = await conn.fetchval("SELECT status FROM runs WHERE id = $1 FOR UPDATE", run_id)
                if status is None:
                    return replay  # gone: on replay, most likely by our own first attempt
                if status == "running":
                    return False
                await conn.execute(
                    "WITH s AS (DELETE FROM steps WHERE run_id = $1), "
                    "l AS (DELETE FROM logs WHERE run_id = $1), "
                    "b AS (DELETE FROM run_labels WHERE seq IN (SELECT seq FROM runs WHERE id = $1)) "
                    "DELETE FROM runs WHERE id = $1",
                    run_id,
                )
                return True

        return await self._run("delete_run", delete)

    async def delete_steps(self, run_id: str) -> int:
        async def delete(conn: Any, replay: bool) -> int:
            rows = await conn.fetch(
                "DELETE FROM steps WHERE run_id = $1 AND EXISTS "
                "(SELECT 1 FROM runs WHERE id = $1 AND status = 'completed') RETURNING 1",
                run_id,
            )
            return len(rows)

        return await self._run("delete_steps", delete)

    async def purge_runs(self, older_than: datetime, batch_size: int = 500) -> int:
        cutoff = aware(older_than)

        async def purge(conn: Any, replay: bool) -> int:
            async with conn.transaction():
                ids = [
                    r["id"]
                    for r in await conn.fetch(
                        f"SELECT id FROM runs WHERE status IN {FINISHED_SQL} AND completed_at < $1 "
                        "ORDER BY completed_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                        cutoff,
                        batch_size,
                    )
                ]
                if not ids:
                    return 0
                await conn.execute(
                    "WITH s AS (DELETE FROM steps WHERE run_id = ANY($1::text[])), "
                    "l AS (DELETE FROM logs WHERE run_id = ANY($1::text[])), "
                    "b AS (DELETE FROM run_labels WHERE seq IN "
                    "(SELECT seq FROM runs WHERE id = ANY($1::text[]))) "
                    "DELETE FROM runs WHERE id = ANY($1::text[])",
                    ids,
                )
                return len(ids)

        return await self._run("purge_runs", purge)


_STREAM_SQL = f"""
WITH p AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::integer[], $4::bigint[]) AS p(run_id, ev, st, lg)
)
SELECT {STREAM_COLUMNS} FROM (
    SELECT 'e' AS src, x.run_id, x.id AS pos, x.type AS name, x.attempt, x.step_count, x.data::text AS data,
           x.at AS t1, NULL::timestamptz AS t2, NULL::text AS level, NULL::text AS message
    FROM p JOIN runs r ON r.id = p.run_id
    CROSS JOIN LATERAL (SELECT * FROM run_events e WHERE e.run_seq = r.seq AND e.id > p.ev
                        ORDER BY e.id LIMIT $5) AS x
    UNION ALL
    SELECT 's', x.run_id, x.idx, x.name, NULL, NULL, x.output, x.started_at, x.completed_at, NULL, NULL
    FROM p CROSS JOIN LATERAL (SELECT * FROM steps s WHERE s.run_id = p.run_id AND s.idx >= p.st
                               ORDER BY s.idx LIMIT $5) AS x
    UNION ALL
    SELECT 'l', x.run_id, x.id, x.step_name, x.attempt, x.step_count, x.data::text, x.created_at, NULL,
           x.level, x.message
    FROM p CROSS JOIN LATERAL (SELECT * FROM logs l WHERE l.run_id = p.run_id AND l.id > p.lg
                               ORDER BY l.id LIMIT $5) AS x
) AS found
"""
"""The stream read of many runs in one statement (one snapshot): STREAM_COLUMNS."""


def _run_event(row: Any) -> RunEventRecord:
    return run_event_from_row(row, aware)
