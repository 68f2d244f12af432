"""What both backends share about rows: column lists, row -> record mapping, status rules.

Rows are read **by column name** (``sqlite3.Row`` and ``asyncpg.Record`` both support
``row["name"]``), so adding a column to a table or to a SELECT list cannot shift what another
column means. The two backends differ in how they store times: SQLite keeps integer milliseconds
since the epoch, PostgreSQL ``timestamptz``; each mapping function takes the converter (``time``)
that turns a stored time into an aware UTC datetime.

The SQL itself stays in the backends: their concurrency designs differ on purpose (group commit on
one SQLite writer vs. ``SKIP LOCKED`` claims and advisory locks on PostgreSQL).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from ..errors import SchemaVersionError, StoreError
from ._common import SCHEMA_VERSION, as_stored, dumps, loads, newer_schema_message
from .records import (
    FINISHED_STATUSES,
    FireRecord,
    LogRecord,
    NewRun,
    Progress,
    RunRecord,
    ScheduleState,
    StepRecord,
    WaitState,
    WorkerInfo,
    WorkerRecord,
    WriteResult,
)

__all__ = [
    "ACTIVE_SQL",
    "FINISHED_SQL",
    "FIRE_COLUMNS",
    "HELD_SQL",
    "LEASED_RUNS",
    "LOG_COLUMNS",
    "RUN_COLUMNS",
    "STATE_COLUMNS",
    "STEP_COLUMNS",
    "TRACEBACK_LIMIT",
    "WORKER_COLUMNS",
    "bounded_traceback",
    "check_schema_version",
    "columns",
    "fence_result",
    "fire_from_row",
    "leased_by_worker",
    "log_from_row",
    "new_run_record",
    "run_from_row",
    "state_from_row",
    "step_from_row",
    "worker_from_row",
    "worker_values",
]

Row = Mapping[str, Any]
TimeFn = Callable[[Any], datetime | None]
R = TypeVar("R")

RUN_COLUMNS: tuple[str, ...] = (
    "id",
    "job_name",
    "status",
    "input",
    "output",
    "error",
    "failed_step_name",
    "idempotency_key",
    "concurrency_key",
    "labels",
    "generation",
    "worker_id",
    "lease_expires_at",
    "progress_current",
    "progress_total",
    "progress_message",
    "step_count",
    "attempt",
    "created_at",
    "started_at",
    "completed_at",
    "updated_at",
    "traceback",
    "failed_attempts",
    "not_before",
    "retry_policy",
    "timeout",
    "parent_run_id",
    "wait_kind",
    "wait_step",
    "wait_key",
    "wake_at",
    "wait_children",
    "wait_outcome",
    "wait_data",
    "event_seq",
    "schedule_version",
)
STEP_COLUMNS: tuple[str, ...] = ("run_id", "name", "idx", "output", "started_at", "completed_at")
LOG_COLUMNS: tuple[str, ...] = ("id", "run_id", "step_name", "level", "message", "data", "created_at")
FIRE_COLUMNS: tuple[str, ...] = ("schedule", "fire_time", "outcome", "run_id", "recorded_at")
STATE_COLUMNS: tuple[str, ...] = (
    "schedule",
    "paused",
    "paused_at",
    "paused_by",
    "pause_reason",
    "auto_paused",
    "resumed_at",
    "resumed_by",
    "consecutive_failures",
    "failures_at_resume",
    "last_success_at",
    "last_failure_at",
    "last_failed_run_id",
    "updated_at",
)
WORKER_COLUMNS: tuple[str, ...] = (
    "id",
    "host",
    "host_key",
    "pid",
    "process_start",
    "version",
    "jobs",
    "concurrency",
    "lease_seconds",
    "runs_held",
    "started_at",
    "heartbeat_at",
    "gone_at",
    "gone_by",
)
TRACEBACK_LIMIT = 16 * 1024
"""Characters of a traceback kept on a run (the end: the innermost frames and the error)."""

ACTIVE_SQL = "('pending', 'running')"
"""Statuses of runs that are not finished (the partial indexes are defined on exactly this list)."""
FINISHED_SQL = "(" + ", ".join(f"'{s}'" for s in FINISHED_STATUSES) + ")"
HELD_SQL = "('running', 'cancelled')"
"""Statuses in which the holder of a generation may still write (a cancelled run may checkpoint
the step it was executing, never complete)."""


def columns(names: tuple[str, ...], prefix: str = "") -> str:
    """``id, job_name, ...`` (or ``r.id, r.job_name, ...``) for a SELECT or RETURNING list."""
    return ", ".join(prefix + name for name in names)


def _same(value: Any) -> Any:
    return value


def _required(value: datetime | None, column: str) -> datetime:
    if value is None:  # pragma: no cover - NOT NULL columns
        raise StoreError(f"column {column} is NULL")
    return value


def _by_name(row: Row) -> Row:
    """A row whose columns can be looked up cheaply by name.

    ``sqlite3.Row`` finds a name by comparing it with every column in turn, so reading all ~27
    columns of a run that way costs ~27² comparisons; one dict of the row costs about half of the
    whole lookup. ``asyncpg.Record`` already looks names up in a hash map.
    """
    if isinstance(row, sqlite3.Row):
        return dict(zip(row.keys(), row, strict=True))
    return row


def run_from_row(row: Row, time: TimeFn = _same, previous_worker_id: str | None = None) -> RunRecord:
    row = _by_name(row)
    current = row["progress_current"]
    progress = (
        None
        if current is None
        else Progress(current=current, total=row["progress_total"], message=row["progress_message"])
    )
    output = row["output"]
    policy = row["retry_policy"]
    # Hot (every claim, trigger and run read): plain keywords, which Python passes without
    # building a dict (``**fields`` costs ~2 µs more per record).
    return RunRecord(
        id=row["id"],
        job_name=row["job_name"],
        status=row["status"],
        input=loads(row["input"]),
        output=None if output is None else loads(output),
        error=row["error"],
        failed_step_name=row["failed_step_name"],
        idempotency_key=row["idempotency_key"],
        concurrency_key=row["concurrency_key"],
        labels=loads(row["labels"]),
        generation=row["generation"],
        worker_id=row["worker_id"],
        lease_expires_at=time(row["lease_expires_at"]),
        progress=progress,
        step_count=row["step_count"],
        attempt=row["attempt"],
        created_at=_required(time(row["created_at"]), "created_at"),
        started_at=time(row["started_at"]),
        completed_at=time(row["completed_at"]),
        updated_at=_required(time(row["updated_at"]), "updated_at"),
        traceback=row["traceback"],
        failed_attempts=row["failed_attempts"],
        not_before=time(row["not_before"]),
        retry_policy=None if policy is None else loads(policy),
        timeout=row["timeout"],
        previous_worker_id=previous_worker_id,
        parent_run_id=row["parent_run_id"],
        wait=_wait_from_row(row, time),
        event_seq=row["event_seq"],
        schedule_version=row["schedule_version"],
    )


def new_run_record(run: NewRun, created_at: datetime) -> RunRecord:
    """The record of a run just inserted from ``run`` at ``created_at``: its values as given (the
    facade hands JSON values only, which read back equal), every other column at its default. An
    insert of many runs returns only ids and times; reading each row back cost ~20 % of a
    scheduler's CPU per fire time at 100,000 schedules (docs/design.md, record 47). The fields go
    by position, in RunRecord's order (half the cost of keywords, a tenth of a burst's CPU);
    the contract test of fire_many compares every field with the stored run."""
    return RunRecord(
        run.id, run.job_name, "pending", run.input, None, None, None, run.idempotency_key,
        run.concurrency_key, run.labels, 0, None, None, None, 0, 0, created_at, None, None, created_at,
        None, 0, None, run.retry_policy, run.timeout, None, None, None, 0, run.schedule_version,
    )  # fmt: skip


def _wait_from_row(row: Row, time: TimeFn) -> WaitState | None:
    kind = row["wait_kind"]
    if kind is None:
        return None
    data = row["wait_data"]
    return WaitState(
        kind=kind,
        step=row["wait_step"],
        key=row["wait_key"],
        until=time(row["wake_at"]),
        children=row["wait_children"],
        outcome=row["wait_outcome"],
        data=None if data is None else loads(data),
    )


def worker_from_row(
    row: Row, read_at: datetime, time: TimeFn = _same, leased: Mapping[str, list[str]] | None = None
) -> WorkerRecord:
    return WorkerRecord(
        **as_stored(
            row,
            "id host host_key pid process_start version concurrency runs_held gone_by",
        ),
        jobs=tuple(loads(row["jobs"])),
        lease_seconds=float(row["lease_seconds"]),
        started_at=_required(time(row["started_at"]), "started_at"),
        heartbeat_at=_required(time(row["heartbeat_at"]), "heartbeat_at"),
        gone_at=time(row["gone_at"]),
        read_at=read_at,
        leased=tuple((leased or {}).get(row["id"], ())),
    )


LEASED_RUNS = (
    "SELECT worker_id, id FROM runs WHERE status = 'running' AND worker_id IS NOT NULL "
    "AND lease_expires_at >= {now} ORDER BY seq"
)
"""The runs held now, by worker (``{now}``: the backend's parameter for the read time)."""


def leased_by_worker(rows: Sequence[Row]) -> dict[str, list[str]]:
    """(worker_id, id) rows of running runs with live leases, grouped by worker."""
    held: dict[str, list[str]] = {}
    for row in rows:
        held.setdefault(row["worker_id"], []).append(row["id"])
    return held


def bounded_traceback(text: str | None, limit: int = TRACEBACK_LIMIT) -> str | None:
    """A traceback cut to its last ``limit`` characters (the innermost frames and the error)."""
    if text is None or len(text) <= limit:
        return text
    cut = text[-limit:]
    newline = cut.find("\n")
    if 0 <= newline < 200:
        cut = cut[newline + 1 :]  # start at a line
    return f"[... {len(text) - len(cut)} characters of the traceback cut ...]\n{cut}"


def by_run(rows: Iterable[Row], record: Callable[[Row], R]) -> dict[str, list[R]]:
    """The records of ``rows``, grouped by their ``run_id`` column in the order of the rows."""
    out: dict[str, list[R]] = {}
    for row in rows:
        out.setdefault(row["run_id"], []).append(record(row))
    return out


def step_from_row(row: Row, time: TimeFn = _same) -> StepRecord:
    return StepRecord(
        run_id=row["run_id"],
        index=row["idx"],
        name=row["name"],
        output_json=row["output"],
        started_at=_required(time(row["started_at"]), "started_at"),
        completed_at=_required(time(row["completed_at"]), "completed_at"),
    )


def log_from_row(row: Row, time: TimeFn = _same) -> LogRecord:
    return LogRecord(
        **as_stored(row, "id run_id step_name level message"),
        data=loads(row["data"]),
        created_at=_required(time(row["created_at"]), "created_at"),
    )


def fire_from_row(row: Row, time: TimeFn = _same) -> FireRecord:
    return FireRecord(
        schedule=row["schedule"],
        fire_time=_required(time(row["fire_time"]), "fire_time"),
        outcome=row["outcome"],
        run_id=row["run_id"],
        recorded_at=_required(time(row["recorded_at"]), "recorded_at"),
    )


def state_from_row(row: Row, time: TimeFn = _same) -> ScheduleState:
    """A schedule_states row (SQLite keeps the flags as 0/1, PostgreSQL as booleans)."""
    return ScheduleState(
        **as_stored(
            row,
            "schedule paused_by pause_reason "
            "resumed_by consecutive_failures failures_at_resume last_failed_run_id",
        ),
        paused=bool(row["paused"]),
        paused_at=time(row["paused_at"]),
        auto_paused=bool(row["auto_paused"]),
        resumed_at=time(row["resumed_at"]),
        last_success_at=time(row["last_success_at"]),
        last_failure_at=time(row["last_failure_at"]),
        updated_at=_required(time(row["updated_at"]), "updated_at"),
    )


def fence_result(status: str | None) -> WriteResult:
    """The outcome of a fenced write from the status it returned (None: no row matched)."""
    if status is None:
        return "lost"
    return "cancelled" if status == "cancelled" else "ok"


def check_schema_version(found: int) -> None:
    """Raise SchemaVersionError unless ``found`` is exactly the version this code needs."""
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(newer_schema_message(found))
    if found < SCHEMA_VERSION:
        raise SchemaVersionError(
            f"database schema version {found} is older than {SCHEMA_VERSION}: run `durably-sched migrate`"
        )


def worker_values(info: WorkerInfo) -> tuple[Any, ...]:
    """A registry row's values as the worker registers them: id, host, host_key, pid,
    process_start, version, jobs (JSON), concurrency, lease_seconds."""
    jobs = dumps(list(info.jobs))
    return (
        info.id,
        info.host,
        info.host_key,
        info.pid,
        info.process_start,
        info.version,
        jobs,
        info.concurrency,
        float(info.lease_seconds),
    )
