"""What the SQLite store's mixins share: its two access paths and the row helpers of its SQL."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ._common import dt_to_ms, dumps, ms_to_dt
from .records import FireRecord, LogRecord, NewLog, RunRecord, ScheduleState, StepRecord, WriteResult
from .rows import (
    LOG_COLUMNS,
    RUN_COLUMNS,
    STATE_COLUMNS,
    STEP_COLUMNS,
    WORKER_COLUMNS,
    columns,
    fence_result,
    fire_from_row,
    log_from_row,
    run_from_row,
    state_from_row,
    step_from_row,
)

T = TypeVar("T")
RUN_SELECT = columns(RUN_COLUMNS)
STATE_SELECT = columns(STATE_COLUMNS)
STEP_SELECT = columns(STEP_COLUMNS)
LOG_SELECT = columns(LOG_COLUMNS)
WORKER_SELECT = columns(WORKER_COLUMNS)


class SqliteAccess:
    """The SQLite store's own ``_write`` (one function of a connection, in the next group commit of
    the writer) and ``_read`` (the reader connection), for the mixins that make up the store."""

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, heavy: bool = False) -> T:
        raise NotImplementedError  # pragma: no cover - the store's own

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError  # pragma: no cover - the store's own

    async def _write_count(self, sql: str, params: Sequence[Any], *, heavy: bool = False) -> int:
        """One statement through ``_write``; the number of rows it changed."""

        def execute(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, params).rowcount

        return await self._write(execute, heavy=heavy)


def now_ms() -> int:
    return int(time.time() * 1000)


def run_record(row: Any) -> RunRecord:
    return run_from_row(row, ms_to_dt)


def fence(row: Any) -> WriteResult:
    return fence_result(None if row is None else row["status"])


def fetch_run(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    row = conn.execute(f"SELECT {RUN_SELECT} FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else run_record(row)


def insert_logs(conn: sqlite3.Connection, run_id: str, logs: Sequence[NewLog]) -> None:
    if logs:
        conn.executemany(
            "INSERT INTO logs (run_id, step_name, level, message, data, created_at, attempt, step_count) "
            "SELECT ?, ?, ?, ?, ?, ?, attempt, step_count FROM runs WHERE id = ?",
            [
                (run_id, lg.step_name, lg.level, lg.message, dumps(lg.data), dt_to_ms(lg.created_at), run_id)
                for lg in logs
            ],
        )


def step_record(row: Any) -> StepRecord:
    return step_from_row(row, ms_to_dt)


def log_record(row: Any) -> LogRecord:
    return log_from_row(row, ms_to_dt)


def fire_record(row: Any) -> FireRecord:
    return fire_from_row(row, ms_to_dt)


def state_record(row: Any) -> ScheduleState:
    return state_from_row(row, ms_to_dt)
