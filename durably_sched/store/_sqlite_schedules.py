"""The SQLite store's schedule reads and writes (the fire sequence itself is in rules.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from . import _activity
from ._common import dt_to_ms, ms_to_dt
from ._sqlite_base import STATE_SELECT, SqliteAccess, fire_record, state_record
from .records import (
    FireRecord,
    ScheduleActivity,
    ScheduleState,
)
from .rows import (
    FIRE_COLUMNS,
    columns,
)


class SqliteSchedules(SqliteAccess):
    """Cursors, fire records and schedule states (times stored as epoch milliseconds)."""

    async def get_cursors(self) -> dict[str, datetime]:
        rows = await self._read("SELECT schedule, last_fire_time FROM schedule_cursors")
        return {r["schedule"]: ms_to_dt(r["last_fire_time"]) for r in rows}  # type: ignore[misc]

    async def advance_cursor(self, schedule: str, to: datetime) -> datetime:
        to_ms = dt_to_ms(to)

        def advance(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "INSERT INTO schedule_cursors (schedule, last_fire_time) VALUES (?, ?) "
                "ON CONFLICT (schedule) DO UPDATE SET "
                "last_fire_time = max(last_fire_time, excluded.last_fire_time) RETURNING last_fire_time",
                (schedule, to_ms),
            ).fetchone()
            return int(row["last_fire_time"])

        cursor = ms_to_dt(await self._write(advance))
        assert cursor is not None
        return cursor

    async def list_fire_records(
        self, schedule: str, limit: int = 50, before: datetime | None = None
    ) -> list[FireRecord]:
        bound = dt_to_ms(before) if before is not None else 2**62
        rows = await self._read(
            f"SELECT {columns(FIRE_COLUMNS)} FROM fire_records "
            "WHERE schedule = ? AND fire_time < ? ORDER BY fire_time DESC LIMIT ?",
            (schedule, bound, limit),
        )
        return [fire_record(r) for r in rows]

    async def last_fire_records(self, schedules: Sequence[str] | None = None) -> dict[str, FireRecord]:
        if schedules is not None:
            names = list(dict.fromkeys(schedules))[:900]  # within SQLite's bound parameters
            if not names:
                return {}
            rows = await self._read(
                f"SELECT {columns(FIRE_COLUMNS, 'f.')} FROM fire_records f WHERE f.schedule IN "
                f"({', '.join('?' * len(names))}) AND f.fire_time = "
                "(SELECT max(fire_time) FROM fire_records m WHERE m.schedule = f.schedule)",
                names,
            )
            return {r["schedule"]: fire_record(r) for r in rows}
        rows = await self._read(
            f"SELECT {columns(FIRE_COLUMNS, 'f.')} FROM fire_records f "
            "JOIN (SELECT schedule, max(fire_time) AS t FROM fire_records GROUP BY schedule) m "
            "ON m.schedule = f.schedule AND m.t = f.fire_time"
        )
        return {r["schedule"]: fire_record(r) for r in rows}

    async def purge_fire_records(self, older_than: datetime, batch_size: int = 500) -> int:
        return await self._write_count(
            "DELETE FROM fire_records WHERE (schedule, fire_time) IN (SELECT schedule, fire_time "
            "FROM fire_records WHERE fire_time < ? LIMIT ?)",
            (dt_to_ms(older_than), batch_size),
            heavy=True,
        )

    async def get_schedule_states(self, *, attention_only: bool = False) -> dict[str, ScheduleState]:
        where = " WHERE paused = 1 OR consecutive_failures > 0" if attention_only else ""
        rows = await self._read(f"SELECT {STATE_SELECT} FROM schedule_states{where}")
        return {r["schedule"]: state_record(r) for r in rows}

    async def get_schedule_states_of(self, schedules: Sequence[str]) -> dict[str, ScheduleState]:
        names = list(dict.fromkeys(schedules))[:900]  # within SQLite's bound parameters
        if not names:
            return {}
        marks = ", ".join("?" * len(names))
        rows = await self._read(
            f"SELECT {STATE_SELECT} FROM schedule_states WHERE schedule IN ({marks})", names
        )
        return {r["schedule"]: state_record(r) for r in rows}

    async def get_schedule_state(self, schedule: str) -> ScheduleState | None:
        rows = await self._read(f"SELECT {STATE_SELECT} FROM schedule_states WHERE schedule = ?", (schedule,))
        return state_record(rows[0]) if rows else None

    async def schedule_activity(
        self, until: datetime, bucket: timedelta, buckets: int
    ) -> dict[str, ScheduleActivity]:
        since = _activity.window(until, bucket, buckets)
        start, step = dt_to_ms(since), max(1, round(bucket.total_seconds() * 1000))
        rows = await self._read(_activity.SQLITE, (start, step, start, dt_to_ms(until)))
        return _activity.activity_from_rows(rows, since, bucket, buckets)

    async def last_run_times(self) -> dict[str, datetime]:
        rows = await self._read(
            "SELECT c.schedule, (SELECT runs.created_at FROM runs WHERE runs.schedule_name = c.schedule "
            "ORDER BY runs.seq DESC LIMIT 1) AS created_at FROM schedule_cursors c"
        )
        return {r["schedule"]: ms_to_dt(r["created_at"]) for r in rows if r["created_at"] is not None}  # type: ignore[misc]
