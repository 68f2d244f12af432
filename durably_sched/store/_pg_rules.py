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
from ._pg_buckets import bucket_answer
from ._pg_sql import (
    ADVANCE_CURSORS,
    COALESCE_LOCK,
    COALESCE_TARGET,
    INSERT_RUNS,
    LOCK_SCHEDULES,
    PAUSE_SCHEDULE,
    RECORD_FIRES,
    RESUME_SCHEDULE,
    RUN_SELECT,
    SCHEDULE_LOCK_NAMESPACE,
    SCHEDULES_ACTIVE,
    SEEN_FIRE_SLOTS,
    STATE_SELECT,
    TAKE_FIRE_SLOTS,
    TAKE_PAUSED_SLOTS,
    UPSERT_CURSOR,
)
from .records import Disposition, NewRun, RunRecord, ScheduleState
from .rows import new_run_record, run_from_row, state_from_row
from .rules import (
    AdvanceCursor,
    AdvanceCursors,
    BeatScheduler,
    FetchRun,
    FetchRuns,
    FetchState,
    FindCoalesceTarget,
    FindIdempotent,
    InsertRuns,
    LockCoalescing,
    LockSchedules,
    MakeRule,
    Op,
    PauseState,
    RecordFires,
    ReleaseBuckets,
    RenewBuckets,
    ResumeState,
    SchedulesActive,
    SeenFire,
    Slot,
    TakeBuckets,
    TakeFireSlots,
    drive_async,
)


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
                await conn.execute(LOCK_SCHEDULES, SCHEDULE_LOCK_NAMESPACE, list(schedules))
                return None
            case LockCoalescing(run):
                await conn.execute(COALESCE_LOCK, run.job_name, run.concurrency_key)
                return None
            case AdvanceCursor(schedule, to):
                await conn.execute(UPSERT_CURSOR, schedule, aware(to))
                return None
            case AdvanceCursors(cursors):
                names, times = [c[0] for c in cursors], [aware(c[1]) for c in cursors]
                await conn.execute(ADVANCE_CURSORS, names, times)
                return None
            case TakeFireSlots(slots):
                return await take_fire_slots(conn, slots)
            case RecordFires(records):
                await conn.execute(RECORD_FIRES, *_columns(records, 4))
                return None
            case SchedulesActive(schedules):
                rows = await conn.fetch(SCHEDULES_ACTIVE, list(schedules))
                return {row["name"] for row in rows}
            case FetchRun(run_id):
                return await fetch_run(conn, run_id)
            case FetchRuns(run_ids):
                rows = await conn.fetch(
                    f"SELECT {RUN_SELECT} FROM runs WHERE id = ANY($1::text[])", list(run_ids)
                )
                return {row["id"]: run_from_row(row) for row in rows}
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
            case BeatScheduler() | RenewBuckets() | ReleaseBuckets() | TakeBuckets():
                return await bucket_answer(conn, op)
        raise AssertionError(f"unknown operation {op!r}")  # pragma: no cover


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as ``width`` parallel arrays (the parameters of an ``unnest``)."""
    return [[row[k] for row in rows] for k in range(width)]


async def take_fire_slots(conn: Any, slots: Sequence[Slot]) -> list[SeenFire | None]:
    """TakeFireSlots: one insert of every record; the paused ones not taken are taken over in one
    update; what the others found is read in one select."""
    keys = [(s.schedule, aware(s.fire_time)) for s in slots]
    args: list[list[Any]] = [
        [k[0] for k in keys],
        [k[1] for k in keys],
        [s.outcome for s in slots],
        [s.run_id for s in slots],
    ]
    taken = {(r["schedule"], r["fire_time"]) for r in await conn.fetch(TAKE_FIRE_SLOTS, *args)}
    paused = [
        i for i, (key, s) in enumerate(zip(keys, slots, strict=True)) if s.replace_paused and key not in taken
    ]
    if paused:
        rows = await conn.fetch(TAKE_PAUSED_SLOTS, *([column[i] for i in paused] for column in args))
        taken.update((r["schedule"], r["fire_time"]) for r in rows)
    others = [key for key in keys if key not in taken]
    found: dict[tuple[str, Any], SeenFire] = {}
    if others:
        rows = await conn.fetch(SEEN_FIRE_SLOTS, [k[0] for k in others], [k[1] for k in others])
        found = {(r["schedule"], r["fire_time"]): SeenFire(r["outcome"], r["run_id"]) for r in rows}
    return [None if key in taken else found.get(key, SeenFire(None, None)) for key in keys]


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
        [r.schedule_version for r in runs],
    ]


async def insert_runs(conn: Any, runs: Sequence[NewRun], replay: bool) -> list[tuple[RunRecord, Disposition]]:
    """One statement for all the runs; each conflict resolves to the existing run."""
    rows = await conn.fetch(INSERT_RUNS, *_insert_args(runs))
    created = {row["id"]: row["created_at"] for row in rows}
    out: list[tuple[RunRecord, Disposition]] = []
    for run in runs:
        at = created.pop(run.id, None)
        if at is not None:
            out.append((new_run_record(run, at), "created"))
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
            return new_run_record(run, rows[0]["created_at"])
    raise StoreError(f"could not insert or find run {run.id}")  # pragma: no cover


__all__ = ["Answers", "PostgresRules", "existing_run", "free_text", "insert_runs"]
