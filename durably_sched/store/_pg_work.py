"""The PostgreSQL store's worker side: claims, leases, fenced writes and the worker registry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from ._common import dumps
from ._pg_base import PostgresAccess, aware, free_text, log_arrays, row_status
from ._pg_group_commit import GroupCommit
from ._pg_sql import (
    APPEND_LOGS,
    BEAT,
    CHECKPOINT,
    CHECKPOINT_BATCH,
    CHECKPOINT_NO_LOGS,
    CHECKPOINT_REPLAYED,
    CLAIM_CANDIDATES,
    CLAIM_ONE_STATEMENT,
    CLAIM_UPDATE,
    COMPLETE,
    COMPLETE_BATCH,
    COMPLETE_NO_LOGS,
    FAIL,
    NOTIFY,
    RELEASE,
    RENEW,
    RENEW_WITH_BEAT,
    RETRY_LATER,
    SET_PROGRESS,
    STEP_EXISTS,
)
from .records import (
    Checkpoint,
    NewLog,
    Progress,
    RunRecord,
    WorkerInfo,
    WorkerRecord,
    WriteResult,
)
from .rows import (
    LEASED_RUNS,
    WORKER_COLUMNS,
    columns,
    fence_result,
    leased_by_worker,
    run_from_row,
    worker_from_row,
    worker_values,
)
from .rules import END_STATUS, AttemptEnd, EndKind


class PostgresWork(PostgresAccess):
    """Claims and every write a run's holder makes, fenced on the run's generation."""

    _keyed_backlog = False
    """The last claim met runs with a concurrency key: the next one starts with the transaction
    that claims them (and any others), not with the one statement that can only count them."""

    async def _claim(
        self, worker_id: str, jobs: list[str], limit: int, lease_seconds: float, run_ids: Sequence[str] | None
    ) -> list[RunRecord]:
        """Claim up to ``limit`` runs, oldest first.

        First one statement without an explicit transaction (CLAIM_ONE_STATEMENT: one round trip,
        where a transaction costs three): it locks the candidates in creation order with
        ``FOR UPDATE SKIP LOCKED`` (claimers running at the same time take different rows) and
        claims those without a concurrency key at once. If keyed candidates were among them, the
        keyed rule needs more than one snapshot, so a transaction of two statements follows for
        the rest of the limit (:meth:`_claim_keyed`):

        1. Pick candidates in creation order, again with ``FOR UPDATE SKIP LOCKED``, excluding
           keyed runs that the key rule blocks so they cannot use up the limit. For each keyed
           candidate, try the key's transaction-level advisory lock; a key another claimer is
           working on is skipped, never waited for (no deadlocks, and at most one run per key is
           runnable anyway).
        2. Claim them with one UPDATE that re-checks the whole rule. Under READ COMMITTED the
           first statement's snapshot may be stale: two claimers could each see a different run
           of the key as "first" (e.g. an older run retried in between). The UPDATE's snapshot is
           taken after our key locks were granted, so it sees every claim committed by earlier
           holders of those locks; only one claim of a key can pass the re-check at a time.
        """
        only = list(run_ids) if run_ids is not None else None
        only_sql = "AND r.id = ANY($4::text[])" if only else ""
        quick_sql = CLAIM_ONE_STATEMENT.format(only=only_sql, limit=limit)
        quick_args: list[Any] = [jobs, worker_id, float(lease_seconds)] + ([only] if only else [])

        async def claim(conn: Any, replay: bool) -> list[RunRecord]:
            if self._keyed_backlog:
                # Keyed runs were waiting last time (a backlog of scheduled runs, keyed by their
                # schedule when overlap is "queue"): the transaction claims every kind, so the
                # statement that would only count them again is skipped. It comes back once a
                # claim takes no keyed run.
                out = keyed = await self._claim_keyed(conn, jobs, limit, worker_id, lease_seconds, only)
            else:
                # Runs without a concurrency key: one statement, no explicit transaction.
                rows = await conn.fetch(quick_sql, *quick_args)
                out = [
                    (r["seq"], run_from_row(r, previous_worker_id=r["previous_worker_id"]))
                    for r in rows
                    if r["seq"] is not None
                ]
                room = limit - len(out)
                keyed = []
                if rows[0]["keyed"] and room > 0:
                    keyed = await self._claim_keyed(conn, jobs, room, worker_id, lease_seconds, only)
                    out.extend(keyed)
            self._keyed_backlog = any(run.concurrency_key is not None for _, run in keyed)
            if len(out) > 1:
                out.sort(key=lambda pair: pair[0])
            return [record for _, record in out]

        return await self._run("claim", claim)

    async def _claim_keyed(
        self,
        conn: Any,
        jobs: list[str],
        limit: int,
        worker_id: str,
        lease_seconds: float,
        only: list[str] | None,
    ) -> list[tuple[int, RunRecord]]:
        """The claim of runs with a concurrency key (and any others among the candidates): one
        transaction of two statements, see :meth:`claim`."""
        only_sql = "AND r.id = ANY($2::text[])" if only else ""
        candidates_sql = CLAIM_CANDIDATES.format(only=only_sql, limit=limit)
        args: list[Any] = [jobs] + ([only] if only else [])
        async with conn.transaction():
            rows = await conn.fetch(candidates_sql, *args)
            previous = {r["seq"]: r["worker_id"] for r in rows if r["free"]}
            if not previous:
                return []
            claimed = await conn.fetch(CLAIM_UPDATE, list(previous), worker_id, float(lease_seconds))
        return [(r["seq"], run_from_row(r, previous_worker_id=previous.get(r["seq"]))) for r in claimed]

    async def _renew_leases(
        self, leases: Sequence[tuple[str, int]], lease_seconds: float, worker: tuple[str, int] | None
    ) -> dict[str, WriteResult]:
        args: list[Any] = [[r for r, _ in leases], [g for _, g in leases], float(lease_seconds)]
        sql = RENEW
        if worker is not None:
            sql = RENEW_WITH_BEAT
            args += [worker[0], worker[1]]

        async def renew(conn: Any, replay: bool) -> dict[str, WriteResult]:
            rows = await conn.fetch(sql, *args)
            found = {r["id"]: fence_result(r["status"]) for r in rows}
            return {run_id: found.get(run_id, "lost") for run_id, _ in leases}

        return await self._run("renew_leases", renew)

    _checkpoints: GroupCommit[Checkpoint]
    """Checkpoints of concurrent runs share statements and commits (the store makes it)."""
    _completions: GroupCommit[AttemptEnd]
    """Completions likewise."""

    async def checkpoint(self, cp: Checkpoint) -> WriteResult:
        return await self._checkpoints.write(cp)

    async def _checkpoint_one(self, cp: Checkpoint) -> WriteResult:
        """One checkpoint in one statement (the group commit's answer when it is alone)."""
        step = (cp.name, cp.index, cp.output_json, aware(cp.started_at), aware(cp.completed_at))
        if cp.logs:
            sql, args = CHECKPOINT, (cp.run_id, cp.generation, *log_arrays(cp.logs), *step)
        else:
            sql, args = CHECKPOINT_NO_LOGS, (cp.run_id, cp.generation, *step)

        async def write(conn: Any, replay: bool) -> WriteResult:
            try:
                status = await conn.fetchval(sql, *args)
            except asyncpg.UniqueViolationError as exc:
                # The step row exists: written by our own first attempt (a replay), else the
                # run is no longer ours to write (the statement changed nothing).
                if exc.constraint_name != STEP_EXISTS:
                    raise
                status = None
            if status is None and replay:
                status = await conn.fetchval(CHECKPOINT_REPLAYED, cp.run_id, cp.generation, cp.name)
            return fence_result(status)

        return await self._run("checkpoint", write)

    async def _checkpoint_batch(self, cps: list[Checkpoint]) -> list[WriteResult]:
        """Several checkpoints in one statement, one commit, each fenced on its own run: each
        one's result, in order. A replay (after a lost connection) asks about each checkpoint the
        answer does not name, as a replayed single checkpoint does."""
        args = _batch_arrays(cps)

        async def write(conn: Any, replay: bool) -> list[WriteResult]:
            rows = await conn.fetch(CHECKPOINT_BATCH, *args)
            found = {(r["run_id"], r["name"]): r["status"] for r in rows}
            results: list[WriteResult] = []
            for cp in cps:
                status = found.get((cp.run_id, cp.name))
                if status is None and replay:
                    status = await conn.fetchval(CHECKPOINT_REPLAYED, cp.run_id, cp.generation, cp.name)
                results.append(fence_result(status))
            return results

        return await self._run("checkpoint", write)

    async def _fenced(
        self,
        what: str,
        sql: str,
        run_id: str,
        generation: int,
        logs: Sequence[NewLog],
        params: Sequence[Any] = (),
        replayed_status: str | None = None,
        no_logs_sql: str | None = None,
    ) -> WriteResult:
        """One fenced UPDATE of the run (with its log lines): ``sql`` takes the run id, the
        generation, the five log arrays, then ``params``; ``no_logs_sql``, if given, is the same
        write without the logs part (run id, generation, ``params``), sent when there are none."""
        if not logs and no_logs_sql is not None:
            sql, args = no_logs_sql, (run_id, generation, *params)
        else:
            args = (run_id, generation, *log_arrays(logs), *params)

        async def write(conn: Any, replay: bool) -> WriteResult:
            row = await conn.fetchrow(sql, *args)
            if row is None and replay and replayed_status is not None:
                status = await conn.fetchval(
                    "SELECT status FROM runs WHERE id = $1 AND generation = $2", run_id, generation
                )
                if status == replayed_status:
                    return "ok"
            return row_status(row)

        return await self._run(what, write)

    async def set_progress(
        self, run_id: str, generation: int, progress: Progress, logs: Sequence[NewLog] = ()
    ) -> WriteResult:
        return await self._fenced(
            "set_progress",
            SET_PROGRESS,
            run_id,
            generation,
            logs,
            (progress.current, progress.total, free_text(progress.message)),
        )

    async def append_logs(self, run_id: str, generation: int, logs: Sequence[NewLog]) -> WriteResult:
        return await self._fenced("append_logs", APPEND_LOGS, run_id, generation, logs)

    async def register_worker(self, info: WorkerInfo) -> None:
        args = worker_values(info)

        async def register(conn: Any, replay: bool) -> None:
            await conn.execute(
                "INSERT INTO workers (id, host, host_key, pid, process_start, version, jobs, concurrency, "
                "lease_seconds, runs_held, started_at, heartbeat_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8, $9, 0, clock_timestamp(), clock_timestamp()) "
                "ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, host_key = EXCLUDED.host_key, "
                "pid = EXCLUDED.pid, process_start = EXCLUDED.process_start, version = EXCLUDED.version, "
                "jobs = EXCLUDED.jobs, concurrency = EXCLUDED.concurrency, "
                "lease_seconds = EXCLUDED.lease_seconds, heartbeat_at = EXCLUDED.heartbeat_at, "
                "gone_at = NULL, gone_by = NULL",
                *args,
            )

        await self._run("register_worker", register)

    async def heartbeat_worker(self, worker_id: str, runs_held: int) -> bool:
        async def beat(conn: Any, replay: bool) -> bool:
            return bool(await conn.fetchval(BEAT, worker_id, runs_held))

        return await self._run("heartbeat_worker", beat)

    async def deregister_worker(self, worker_id: str) -> None:
        async def delete(conn: Any, replay: bool) -> None:
            await conn.execute("DELETE FROM workers WHERE id = $1", worker_id)

        await self._run("deregister_worker", delete)

    async def list_workers(self) -> list[WorkerRecord]:
        async def read(conn: Any, replay: bool) -> list[WorkerRecord]:
            rows = await conn.fetch(
                f"SELECT {columns(WORKER_COLUMNS)}, clock_timestamp() AS read_at FROM workers "
                "ORDER BY started_at, id"
            )
            if not rows:
                return []
            held = leased_by_worker(await conn.fetch(LEASED_RUNS.format(now="$1"), rows[0]["read_at"]))
            return [worker_from_row(r, r["read_at"], leased=held) for r in rows]

        return await self._run("list_workers", read)

    async def take_over_worker(self, worker_id: str, by: str) -> list[str]:
        async def take(conn: Any, replay: bool) -> list[str]:
            async with conn.transaction():
                await conn.execute(
                    "UPDATE workers SET gone_at = COALESCE(gone_at, clock_timestamp()), "
                    "gone_by = COALESCE(gone_by, $2) WHERE id = $1",
                    worker_id,
                    by,
                )
                rows = await conn.fetch(
                    "UPDATE runs SET lease_expires_at = clock_timestamp() - interval '1 millisecond' "
                    "WHERE worker_id = $1 AND status = 'running' AND lease_expires_at >= clock_timestamp() "
                    f"RETURNING id, {NOTIFY}",
                    worker_id,
                )
            return [r["id"] for r in rows]

        return await self._run("take_over_worker", take)

    async def purge_workers(self, older_than: datetime) -> int:
        cutoff = aware(older_than)

        async def purge(conn: Any, replay: bool) -> int:
            rows = await conn.fetch("DELETE FROM workers WHERE heartbeat_at < $1 RETURNING 1", cutoff)
            return len(rows)

        return await self._run("purge_workers", purge)

    async def _end_attempt(self, end: AttemptEnd) -> WriteResult:
        if end.kind == "completed":
            return await self._completions.write(end)
        return await self._end_one(end)

    async def _complete_batch(self, ends: list[AttemptEnd]) -> list[WriteResult]:
        """Several completions in one statement, one commit, each fenced on its own run: each
        one's result, in order. A replay asks about each run the answer does not name, as a
        replayed single completion does (completed with our generation: ours)."""
        logs = [(end.run_id, lg) for end in ends for lg in end.logs]
        args = [
            [end.run_id for end in ends],
            [end.generation for end in ends],
            [dumps(end.output) for end in ends],
            [run_id for run_id, _ in logs],
            *log_arrays([lg for _, lg in logs]),
        ]

        async def write(conn: Any, replay: bool) -> list[WriteResult]:
            done = {r["id"]: r["status"] for r in await conn.fetch(COMPLETE_BATCH, *args)}
            results: list[WriteResult] = []
            for end in ends:
                status = done.get(end.run_id)
                if status is None and replay:
                    status = await conn.fetchval(
                        "SELECT status FROM runs WHERE id = $1 AND generation = $2 AND status = 'completed'",
                        end.run_id,
                        end.generation,
                    )
                results.append(fence_result(status))
            return results

        return await self._run("complete_run", write)

    async def _end_one(self, end: AttemptEnd) -> WriteResult:
        """One attempt's ending in one statement (a completion's, when it is alone)."""
        sql, logs = RELEASE, end.logs
        params: tuple[Any, ...] = ()
        no_logs_sql = None
        if end.kind == "completed":
            sql, params, no_logs_sql = COMPLETE, (dumps(end.output),), COMPLETE_NO_LOGS
        elif end.kind != "released":
            params = (free_text(end.error), end.failed_step_name, free_text(end.traceback))
            if end.kind == "retry":
                sql, params = RETRY_LATER, (*params, end.delay_seconds)
            else:
                sql = FAIL
        # A replay that finds the run in the status this ending gives it, with our generation,
        # found our own committed write (the generation changes only on claims).
        what = _WHAT[end.kind]
        return await self._fenced(
            what, sql, end.run_id, end.generation, logs, params, END_STATUS[end.kind], no_logs_sql
        )


def _batch_arrays(cps: list[Checkpoint]) -> list[list[Any]]:
    """CHECKPOINT_BATCH's fourteen arrays: seven of one element per checkpoint, seven per log line."""
    logs = [(cp.run_id, cp.name, lg) for cp in cps for lg in cp.logs]
    lines = log_arrays([lg for _, _, lg in logs])
    return [
        [cp.run_id for cp in cps],
        [cp.generation for cp in cps],
        [cp.name for cp in cps],
        [cp.index for cp in cps],
        [cp.output_json for cp in cps],
        [aware(cp.started_at) for cp in cps],
        [aware(cp.completed_at) for cp in cps],
        [run_id for run_id, _, _ in logs],
        [name for _, name, _ in logs],
        *lines,
    ]


_WHAT: dict[EndKind, str] = {
    "completed": "complete_run",
    "failed": "fail_run",
    "retry": "retry_later",
    "released": "release_run",
}
"""The operation's name in messages (the Store method that made the ending)."""
