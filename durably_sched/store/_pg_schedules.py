"""The PostgreSQL store's schedule reads and writes (the fire sequence itself is in rules.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from . import _activity
from ._pg_base import PostgresAccess, aware
from ._pg_sql import (
    STATE_SELECT,
    UPSERT_CURSOR,
)
from .records import (
    FireRecord,
    ScheduleActivity,
    ScheduleState,
)
from .rows import (
    FIRE_COLUMNS,
    columns,
    fire_from_row,
    state_from_row,
)


class PostgresSchedules(PostgresAccess):
    """Cursors, fire records and schedule states."""

    async def get_cursors(self) -> dict[str, datetime]:
        async def read(conn: Any, replay: bool) -> dict[str, datetime]:
            rows = await conn.fetch("SELECT schedule, last_fire_time FROM schedule_cursors")
            return {r["schedule"]: r["last_fire_time"] for r in rows}

        return await self._run("get_cursors", read)

    async def advance_cursor(self, schedule: str, to: datetime) -> datetime:
        when = aware(to)

        async def advance(conn: Any, replay: bool) -> datetime:
            value: datetime = await conn.fetchval(UPSERT_CURSOR, schedule, when)
            return value

        return await self._run("advance_cursor", advance)

    async def list_fire_records(
        self, schedule: str, limit: int = 50, before: datetime | None = None
    ) -> list[FireRecord]:
        async def read(conn: Any, replay: bool) -> list[FireRecord]:
            if before is None:
                rows = await conn.fetch(
                    f"SELECT {columns(FIRE_COLUMNS)} FROM fire_records WHERE schedule = $1 "
                    "ORDER BY fire_time DESC LIMIT $2",
                    schedule,
                    limit,
                )
            else:
                rows = await conn.fetch(
                    f"SELECT {columns(FIRE_COLUMNS)} FROM fire_records "
                    "WHERE schedule = $1 AND fire_time < $3 ORDER BY fire_time DESC LIMIT $2",
                    schedule,
                    limit,
                    aware(before),
                )
            return [fire_from_row(r) for r in rows]

        return await self._run("list_fire_records", read)

    async def last_fire_records(self, schedules: Sequence[str] | None = None) -> dict[str, FireRecord]:
        async def read(conn: Any, replay: bool) -> dict[str, FireRecord]:
            if schedules is not None:
                rows = await conn.fetch(
                    f"SELECT f.* FROM unnest($1::text[]) AS s(name) CROSS JOIN LATERAL (SELECT "
                    f"{columns(FIRE_COLUMNS)} FROM fire_records WHERE schedule = s.name "
                    "ORDER BY fire_time DESC LIMIT 1) f",
                    list(schedules),
                )
                return {r["schedule"]: fire_from_row(r) for r in rows}
            rows = await conn.fetch(
                f"SELECT DISTINCT ON (schedule) {columns(FIRE_COLUMNS)} FROM fire_records "
                "ORDER BY schedule, fire_time DESC"
            )
            return {r["schedule"]: fire_from_row(r) for r in rows}

        return await self._run("last_fire_records", read)

    async def purge_fire_records(self, older_than: datetime, batch_size: int = 500) -> int:
        cutoff = aware(older_than)

        async def purge(conn: Any, replay: bool) -> int:
            rows = await conn.fetch(
                "DELETE FROM fire_records WHERE (schedule, fire_time) IN (SELECT schedule, fire_time "
                "FROM fire_records WHERE fire_time < $1 ORDER BY fire_time LIMIT $2) RETURNING 1",
                cutoff,
                batch_size,
            )
            return len(rows)

        return await self._run("purge_fire_records", purge)

    async def get_schedule_states(self, *, attention_only: bool = False) -> dict[str, ScheduleState]:
        where = " WHERE paused OR consecutive_failures > 0" if attention_only else ""

        async def read(conn: Any, replay: bool) -> dict[str, ScheduleState]:
            rows = await conn.fetch(f"SELECT {STATE_SELECT} FROM schedule_states{where}")
            return {r["schedule"]: state_from_row(r) for r in rows}

        return await self._run("get_schedule_states", read)

    async def get_schedule_states_of(self, schedules: Sequence[str]) -> dict[str, ScheduleState]:
        async def read(conn: Any, replay: bool) -> dict[str, ScheduleState]:
            rows = await conn.fetch(
                f"SELECT {STATE_SELECT} FROM schedule_states WHERE schedule = ANY($1::text[])",
                list(schedules),
            )
            return {r["schedule"]: state_from_row(r) for r in rows}

        return await self._run("get_schedule_states_of", read)

    async def get_schedule_state(self, schedule: str) -> ScheduleState | None:
        async def read(conn: Any, replay: bool) -> ScheduleState | None:
            row = await conn.fetchrow(
                f"SELECT {STATE_SELECT} FROM schedule_states WHERE schedule = $1", schedule
            )
            return None if row is None else state_from_row(row)

        return await self._run("get_schedule_state", read)

    async def schedule_activity(
        self, until: datetime, bucket: timedelta, buckets: int
    ) -> dict[str, ScheduleActivity]:
        since = _activity.window(until, bucket, buckets)
        step = bucket // timedelta(microseconds=1)

        async def read(conn: Any, replay: bool) -> list[Any]:
            return list(await conn.fetch(_activity.POSTGRES, since, step, until))

        rows = await self._run("schedule_activity", read)
        return _activity.activity_from_rows(rows, since, bucket, buckets)

    async def last_run_times(self) -> dict[str, datetime]:
        async def read(conn: Any, replay: bool) -> dict[str, datetime]:
            rows = await conn.fetch(
                "SELECT c.schedule, (SELECT runs.created_at FROM runs WHERE runs.schedule_name = c.schedule "
                "ORDER BY runs.seq DESC LIMIT 1) AS created_at FROM schedule_cursors c"
            )
            return {r["schedule"]: r["created_at"] for r in rows if r["created_at"] is not None}

        return await self._run("last_run_times", read)
