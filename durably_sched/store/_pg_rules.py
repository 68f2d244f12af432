"""PostgreSQL's answers to the operations of the domain rules (rules.py).

A rule runs in ONE transaction on a pool connection, through the store's retry loop: after a lost
connection it runs again with ``replay`` set, and the rule recognises its own committed writes.
Under READ COMMITTED each statement sees what other transactions committed before it, so the
rules' lock operations are transaction-level advisory locks here: one per schedule (a fire's
``skip_if_active`` then sees runs created by fires of other slots that committed before it) and
one per coalescing (job, concurrency key) (see COALESCE_LOCK). A fire record's primary key
serialises concurrent fires of one fire time: a second insert waits for the first transaction,
then does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import StoreError
from ._common import dumps
from ._pg_base import PostgresAccess, T, aware, fetch_run, free_text
from ._pg_sql import (
    COALESCE_LOCK,
    COALESCE_TARGET,
    INSERT_RUNS,
    PAUSE_SCHEDULE,
    RESUME_SCHEDULE,
    RUN_SELECT,
    SCHEDULE_LOCK_NAMESPACE,
    STATE_SELECT,
    UPSERT_CURSOR,
)
from .records import Disposition, NewRun, RunRecord, ScheduleState
from .rows import ACTIVE_SQL, run_from_row, state_from_row
from .rules import (
    AdvanceCursor,
    FetchRun,
    FetchState,
    FindCoalesceTarget,
    FindIdempotent,
    InsertRuns,
    LockCoalescing,
    LockSchedules,
    MakeRule,
    Op,
    PauseState,
    RecordFire,
    ResumeState,
    ScheduleActive,
    SeenFire,
    TakeFireSlot,
    drive_async,
)
from .waits import SCHEDULE_WAITING


class PostgresRules(PostgresAccess):
    """Runs the domain rules on the PostgreSQL store's pool."""

    async def _rule(self, what: str, make: MakeRule[T], *, atomic: bool = True) -> T:
        async def run(conn: Any, replay: bool) -> T:
            answers = Answers(conn, replay)
            if not atomic:  # one statement: no explicit transaction (one round trip, not three)
                return await drive_async(make(replay), answers.answer)
            async with conn.transaction():
                return await drive_async(make(replay), answers.answer)

        return await self._run(what, run)

    def _free_text(self, text: str | None) -> str | None:
        return free_text(text)


class Answers:
    """One rule's answers on one connection (``replay``: see PostgresStore._run)."""

    def __init__(self, conn: Any, replay: bool) -> None:
        self.conn = conn
        self.replay = replay

    async def answer(self, op: Op) -> Any:
        conn = self.conn
        match op:
            case LockSchedules(schedules):
                for schedule in schedules:
                    lock = "SELECT pg_advisory_xact_lock($1, hashtext($2))"
                    await conn.execute(lock, SCHEDULE_LOCK_NAMESPACE, schedule)
                return None
            case LockCoalescing(run):
                await conn.execute(COALESCE_LOCK, run.job_name, run.concurrency_key)
                return None
            case AdvanceCursor(schedule, to):
                await conn.execute(UPSERT_CURSOR, schedule, aware(to))
                return None
            case TakeFireSlot():
                return await self.take_fire_slot(op)
            case RecordFire(schedule, fire_time, outcome, run_id):
                sql = (
                    "UPDATE fire_records SET outcome = $3, run_id = $4 WHERE schedule = $1 AND fire_time = $2"
                )
                await conn.execute(sql, schedule, aware(fire_time), outcome, run_id)
                return None
            case ScheduleActive(schedule):
                sql = f"SELECT true FROM runs WHERE schedule_name = $1 AND status IN {ACTIVE_SQL} LIMIT 1"
                if await conn.fetchval(sql, schedule):
                    return True
                return bool(await conn.fetchval(SCHEDULE_WAITING.replace("?", "$1"), schedule))
            case FetchRun(run_id):
                return await fetch_run(conn, run_id)
            case FindIdempotent(run):
                return await _idempotent(conn, run)
            case FindCoalesceTarget(run):
                row = await conn.fetchrow(COALESCE_TARGET, run.job_name, run.concurrency_key)
                return None if row is None else run_from_row(row)
            case InsertRuns(runs):
                return await insert_runs(conn, runs, self.replay)
            case PauseState(schedule, by, reason, auto, min_failures, at):
                await conn.execute(
                    "INSERT INTO schedule_states (schedule) VALUES ($1) ON CONFLICT DO NOTHING", schedule
                )
                at = None if at is None else aware(at)
                return _state(
                    await conn.fetchrow(PAUSE_SCHEDULE, schedule, by, reason, auto, min_failures, at)
                )
            case ResumeState(schedule, by, at):
                return _state(
                    await conn.fetchrow(RESUME_SCHEDULE, schedule, by, None if at is None else aware(at))
                )
            case FetchState(schedule):
                sql = f"SELECT {STATE_SELECT} FROM schedule_states WHERE schedule = $1"
                return _state(await conn.fetchrow(sql, schedule))
        raise AssertionError(f"unknown operation {op!r}")  # pragma: no cover

    async def take_fire_slot(self, op: TakeFireSlot) -> SeenFire | None:
        key = (op.schedule, aware(op.fire_time))
        taken = await self.conn.fetchval(
            "INSERT INTO fire_records (schedule, fire_time, outcome, run_id, recorded_at) "
            "VALUES ($1, $2, $3, NULL, now()) ON CONFLICT DO NOTHING RETURNING true",
            *key,
            op.outcome,
        )
        if not taken and op.replace_paused:  # catch-up on resume: a paused record is handled again
            taken = await self.conn.fetchval(
                "UPDATE fire_records SET outcome = $3, run_id = NULL, recorded_at = now() "
                "WHERE schedule = $1 AND fire_time = $2 AND outcome = 'paused' RETURNING true",
                *key,
                op.outcome,
            )
        if taken:
            return None
        row = await self.conn.fetchrow(
            "SELECT outcome, run_id FROM fire_records WHERE schedule = $1 AND fire_time = $2", *key
        )
        return SeenFire(None, None) if row is None else SeenFire(row["outcome"], row["run_id"])


def _state(row: Any) -> ScheduleState | None:
    return None if row is None else state_from_row(row)


async def _idempotent(conn: Any, run: NewRun) -> RunRecord | None:
    if run.idempotency_key is None:
        return None
    row = await conn.fetchrow(
        f"SELECT {RUN_SELECT} FROM runs WHERE job_name = $1 AND idempotency_key = $2",
        run.job_name,
        run.idempotency_key,
    )
    return None if row is None else run_from_row(row)


def _insert_args(runs: Sequence[NewRun]) -> list[list[Any]]:
    """INSERT_RUNS's arrays, one element per run."""
    return [
        [r.id for r in runs],
        [r.job_name for r in runs],
        [dumps(r.input) for r in runs],
        [r.idempotency_key for r in runs],
        [r.concurrency_key for r in runs],
        [dumps(r.labels) for r in runs],
        [r.labels.get("schedule") for r in runs],
        [None if r.retry_policy is None else dumps(r.retry_policy) for r in runs],
        [r.timeout for r in runs],
    ]


async def insert_runs(conn: Any, runs: Sequence[NewRun], replay: bool) -> list[tuple[RunRecord, Disposition]]:
    """One statement for all the runs; each conflict resolves to the existing run."""
    rows = await conn.fetch(INSERT_RUNS, *_insert_args(runs))
    created = {row["id"]: run_from_row(row) for row in rows}
    out: list[tuple[RunRecord, Disposition]] = []
    for run in runs:
        record = created.pop(run.id, None)
        if record is not None:
            out.append((record, "created"))
            continue
        existing = await existing_run(conn, run)
        # On replay, a run that already has our id was inserted by our own first attempt.
        out.append((existing, "created" if replay and existing.id == run.id else "idempotent"))
    return out


async def existing_run(conn: Any, run: NewRun) -> RunRecord:
    """The run an insert of ``run`` conflicted with (its idempotency key's, else its id's)."""
    for _ in range(10):
        found = await _idempotent(conn, run) or await fetch_run(conn, run.id)
        if found is not None:
            return found
        # The conflicting row was deleted (purged) meanwhile: try the insert once more.
        rows = await conn.fetch(INSERT_RUNS, *_insert_args([run]))
        if rows:
            return run_from_row(rows[0])
    raise StoreError(f"could not insert or find run {run.id}")  # pragma: no cover


__all__ = ["Answers", "PostgresRules", "existing_run", "free_text", "insert_runs"]
