"""SQLite's answers to the operations of the domain rules (rules.py).

A rule runs as ONE write of the group-commit writer: inside its ``BEGIN IMMEDIATE`` transaction,
which holds the file's write lock from the start, so no other process creates a run or a fire
record between a look-up and the insert that follows it (no locks of our own are needed: the
rules' lock operations are no-ops here), and one failing rule rolls back alone (its savepoint).
"""

from __future__ import annotations

import sqlite3
from typing import Any, TypeVar

from . import rules
from ._common import dt_to_ms, dumps
from ._runs_query import labels_indexed
from ._sqlite_base import RUN_SELECT, STATE_SELECT, SqliteAccess, fetch_run, now_ms, run_record, state_record
from ._sqlite_buckets import bucket_answer
from .records import Disposition, NewRun, RunRecord, ScheduleState
from .rows import ACTIVE_SQL
from .waits import SCHEDULE_WAITING

T = TypeVar("T")
ADVANCE_CURSOR = (
    "INSERT INTO schedule_cursors (schedule, last_fire_time) VALUES (?, ?) "
    "ON CONFLICT (schedule) DO UPDATE SET last_fire_time = excluded.last_fire_time "
    "WHERE last_fire_time < excluded.last_fire_time"
)


class SqliteRules(SqliteAccess):
    """Runs the domain rules on the SQLite store's writer."""

    async def _rule(self, what: str, make: rules.MakeRule[T], *, atomic: bool = True) -> T:
        def run(conn: sqlite3.Connection) -> T:
            return rules.drive(make(False), Answers(conn).answer)

        return await self._write(run)


class Answers:
    """One rule's answers, on the writer's connection, at one moment (``now``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.now = now_ms()

    def answer(self, op: rules.Op) -> Any:
        conn = self.conn
        match op:
            case rules.LockSchedules() | rules.LockCoalescing():
                return None  # BEGIN IMMEDIATE holds the file's write lock already
            case rules.AdvanceCursor(schedule, to):
                conn.execute(ADVANCE_CURSOR, (schedule, dt_to_ms(to)))
                return None
            case rules.AdvanceCursors(cursors):
                conn.executemany(ADVANCE_CURSOR, [(name, dt_to_ms(to)) for name, to in cursors])
                return None
            case rules.TakeFireSlots(slots):
                return [self.take_fire_slot(slot) for slot in slots]
            case rules.RecordFires(records):
                conn.executemany(
                    "UPDATE fire_records SET outcome = ?, run_id = ?, recorded_at = ? "
                    "WHERE schedule = ? AND fire_time = ?",
                    [(outcome, run_id, self.now, name, dt_to_ms(t)) for name, t, outcome, run_id in records],
                )
                return None
            case rules.SchedulesActive(schedules):
                sql = (
                    "SELECT 1 FROM runs INDEXED BY runs_schedule_active WHERE schedule_name = ? "
                    f"AND status IN {ACTIVE_SQL} LIMIT 1"
                )
                return {
                    name
                    for name in schedules
                    if conn.execute(sql, (name,)).fetchone() is not None
                    or conn.execute(SCHEDULE_WAITING, (name,)).fetchone() is not None
                }
            case rules.FetchRun(run_id):
                return fetch_run(conn, run_id)
            case rules.FetchRuns(run_ids):
                return {run_id: run for run_id in run_ids if (run := fetch_run(conn, run_id)) is not None}
            case rules.FindIdempotent(run):
                return _idempotent(conn, run)
            case rules.FindCoalesceTarget(run):
                return self.coalesce_target(run)
            case rules.InsertRuns(runs):
                return [self.insert_run(run) for run in runs]
            case rules.PauseState():
                return self.pause(op)
            case rules.ResumeState():
                return self.resume(op)
            case rules.FetchState(schedule):
                return _state(conn, schedule)
            case rules.BeatScheduler() | rules.RenewBuckets() | rules.ReleaseBuckets() | rules.TakeBuckets():
                return bucket_answer(conn, op, self.now)
        raise AssertionError(f"unknown operation {op!r}")  # pragma: no cover

    def take_fire_slot(self, op: rules.Slot) -> rules.SeenFire | None:
        key = (op.schedule, dt_to_ms(op.fire_time))
        taken = self.conn.execute(
            "INSERT INTO fire_records (schedule, fire_time, outcome, run_id, recorded_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1",
            (*key, op.outcome, op.run_id, self.now),
        ).fetchone()
        if taken is None and op.replace_paused:
            taken = self.conn.execute(
                "UPDATE fire_records SET outcome = ?, run_id = ?, recorded_at = ? "
                "WHERE schedule = ? AND fire_time = ? AND outcome = 'paused' RETURNING 1",
                (op.outcome, op.run_id, self.now, *key),
            ).fetchone()
        if taken is not None:
            return None
        row = self.conn.execute(
            "SELECT outcome, run_id FROM fire_records WHERE schedule = ? AND fire_time = ?", key
        ).fetchone()
        return rules.SeenFire(row["outcome"], row["run_id"])

    def coalesce_target(self, run: NewRun) -> RunRecord | None:
        row = self.conn.execute(
            f"SELECT {RUN_SELECT} FROM runs INDEXED BY runs_concurrency_active WHERE concurrency_key = ? "
            f"AND status IN {ACTIVE_SQL} AND status = 'pending' AND job_name = ? AND started_at IS NULL "
            "ORDER BY seq LIMIT 1",
            (run.concurrency_key, run.job_name),
        ).fetchone()
        return None if row is None else run_record(row)

    def insert_run(self, run: NewRun) -> tuple[RunRecord, Disposition]:
        row = self.conn.execute(
            "INSERT INTO runs (id, job_name, status, input, idempotency_key, concurrency_key, labels, "
            "schedule_name, retry_policy, timeout, schedule_version, created_at, updated_at) "
            "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            f"ON CONFLICT DO NOTHING RETURNING {RUN_SELECT}",
            (
                run.id,
                run.job_name,
                dumps(run.input),
                run.idempotency_key,
                run.concurrency_key,
                dumps(run.labels),
                run.labels.get("schedule"),
                None if run.retry_policy is None else dumps(run.retry_policy),
                run.timeout,
                run.schedule_version,
                self.now,
                self.now,
            ),
        ).fetchone()
        if row is not None:
            if labels_indexed(run.labels):
                # The labels index of run lists: written when a run is created, never by checkpoints
                # (the label `schedule` is the schedule_name column).
                self.conn.execute(
                    "INSERT INTO run_labels (key, value, seq) SELECT j.key, j.value, r.seq "
                    "FROM runs r, json_each(r.labels) j WHERE r.id = ? AND j.key <> 'schedule'",
                    (run.id,),
                )
            return run_record(row), "created"
        existing = _idempotent(self.conn, run) or fetch_run(self.conn, run.id)  # else: a conflict on the id
        assert existing is not None
        return existing, "idempotent"

    def pause(self, op: rules.PauseState) -> ScheduleState | None:
        now = self.now if op.at is None else dt_to_ms(op.at)
        self.conn.execute(
            "INSERT INTO schedule_states (schedule, updated_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (op.schedule, now),
        )
        row = self.conn.execute(
            "UPDATE schedule_states SET paused = 1, "
            "paused_at = CASE WHEN ? THEN coalesce(last_failure_at, ?) ELSE ? END, "
            "paused_by = ?, pause_reason = ?, auto_paused = ?, updated_at = ? "
            "WHERE schedule = ? AND paused = 0 AND consecutive_failures - failures_at_resume >= ? "
            f"RETURNING {STATE_SELECT}",
            (int(op.auto), now, now, op.by, op.reason, int(op.auto), now, op.schedule, op.min_failures),
        ).fetchone()
        return None if row is None else state_record(row)

    def resume(self, op: rules.ResumeState) -> ScheduleState | None:
        now = self.now if op.at is None else dt_to_ms(op.at)
        row = self.conn.execute(
            "UPDATE schedule_states SET paused = 0, resumed_at = ?, resumed_by = ?, "
            "failures_at_resume = consecutive_failures, updated_at = ? WHERE schedule = ? AND paused = 1 "
            f"RETURNING {STATE_SELECT}",
            (now, op.by, now, op.schedule),
        ).fetchone()
        return None if row is None else state_record(row)


def _idempotent(conn: sqlite3.Connection, run: NewRun) -> RunRecord | None:
    if run.idempotency_key is None:
        return None
    row = conn.execute(
        f"SELECT {RUN_SELECT} FROM runs WHERE job_name = ? AND idempotency_key = ?",
        (run.job_name, run.idempotency_key),
    ).fetchone()
    return None if row is None else run_record(row)


def _state(conn: sqlite3.Connection, schedule: str) -> ScheduleState | None:
    row = conn.execute(
        f"SELECT {STATE_SELECT} FROM schedule_states WHERE schedule = ?", (schedule,)
    ).fetchone()
    return None if row is None else state_record(row)
