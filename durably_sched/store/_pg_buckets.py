"""PostgreSQL's answers to the bucket-lease operations (rules.balance_buckets) and the scheduler
registry's reads. Every time is the server's (``now()``: the transaction's start, one instant for a
whole beat), so leases do not depend on any host's clock; a take passes over buckets another taker
holds locked (``SKIP LOCKED``), so schedulers starting together do not queue behind each other."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ._pg_base import PostgresAccess
from .records import SchedulerRecord
from .rules import BeatScheduler, BucketOp, ReleaseBuckets, RenewBuckets, TakeBuckets

BEAT = """
INSERT INTO schedulers AS s (id, host, pid, schedules, clock_offset, expires_at)
VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, schedules = EXCLUDED.schedules,
    clock_offset = EXCLUDED.clock_offset, heartbeat_at = now(), expires_at = EXCLUDED.expires_at
"""
RENEW = """
WITH renewed AS (
    UPDATE schedule_buckets SET expires_at = now() + make_interval(secs => $2)
    WHERE owner = $1 AND expires_at > now() AND expires_at < now() + make_interval(secs => $2 / 2)
    RETURNING bucket, expires_at
)
SELECT bucket, expires_at FROM renewed
UNION ALL
SELECT bucket, expires_at FROM schedule_buckets
WHERE owner = $1 AND expires_at >= now() + make_interval(secs => $2 / 2)
"""
TAKE = """
UPDATE schedule_buckets b SET owner = $1, expires_at = now() + make_interval(secs => $3), taken_at = now()
FROM (
    SELECT bucket FROM schedule_buckets WHERE owner IS NULL OR expires_at <= now()
    ORDER BY bucket LIMIT $2 FOR UPDATE SKIP LOCKED
) AS free
WHERE b.bucket = free.bucket
RETURNING b.bucket, b.expires_at
"""
LIST = """
SELECT s.id, s.host, s.pid, s.schedules, s.clock_offset, s.started_at, s.heartbeat_at, s.expires_at,
       (SELECT count(*) FROM schedule_buckets b WHERE b.owner = s.id AND b.expires_at > now()) AS buckets,
       now() AS read_at
FROM schedulers s ORDER BY s.started_at, s.id
"""


async def bucket_answer(conn: Any, op: BucketOp) -> Any:
    match op:
        case BeatScheduler(info, lease):
            await conn.execute(BEAT, info.id, info.host, info.pid, info.schedules, info.clock_offset, lease)
            rows = await conn.fetch(
                "SELECT id, now() AS now FROM schedulers WHERE expires_at > now() ORDER BY id"
            )
            return rows[0]["now"], [r["id"] for r in rows]
        case RenewBuckets(owner, lease):
            return [(r["bucket"], r["expires_at"]) for r in await conn.fetch(RENEW, owner, lease)]
        case ReleaseBuckets(owner, None):
            await conn.execute(
                "UPDATE schedule_buckets SET owner = NULL, expires_at = NULL WHERE owner = $1", owner
            )
            await conn.execute("DELETE FROM schedulers WHERE id = $1", owner)
            return None
        case ReleaseBuckets(owner, tuple() as buckets):
            await conn.execute(
                "UPDATE schedule_buckets SET owner = NULL, expires_at = NULL "
                "WHERE owner = $1 AND bucket = ANY($2::integer[])",
                owner,
                list(buckets),
            )
            return None
        case TakeBuckets(owner, count, lease):
            return [(r["bucket"], r["expires_at"]) for r in await conn.fetch(TAKE, owner, count, lease)]
    raise AssertionError(f"unknown operation {op!r}")  # pragma: no cover


class PostgresBuckets(PostgresAccess):
    """The scheduler registry's reads and the server's clock."""

    async def list_schedulers(self) -> list[SchedulerRecord]:
        async def read(conn: Any, replay: bool) -> list[SchedulerRecord]:
            return [SchedulerRecord(**dict(row)) for row in await conn.fetch(LIST)]

        return await self._run("list_schedulers", read)

    async def database_time(self) -> datetime:
        async def read(conn: Any, replay: bool) -> datetime:
            value: datetime = await conn.fetchval("SELECT clock_timestamp()")
            return value

        return await self._run("database_time", read)
