"""SQLite's answers to the bucket-lease operations (rules.balance_buckets) and the scheduler
registry's reads. The database serves one host, so its clock is the host's: every time of one beat
is the writer's ``now`` (epoch milliseconds); the beat runs as one write under ``BEGIN IMMEDIATE``,
so takers never race."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

from ._common import ms_to_dt
from ._sqlite_base import SqliteAccess, now_ms
from .records import SchedulerRecord
from .rules import BeatScheduler, BucketOp, ReleaseBuckets, RenewBuckets, TakeBuckets

BEAT = """
INSERT INTO schedulers (id, host, pid, schedules, clock_offset, started_at, heartbeat_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, schedules = excluded.schedules,
    clock_offset = excluded.clock_offset, heartbeat_at = excluded.heartbeat_at,
    expires_at = excluded.expires_at
"""
LIST = """
SELECT s.id, s.host, s.pid, s.schedules, s.clock_offset, s.started_at, s.heartbeat_at, s.expires_at,
       (SELECT count(*) FROM schedule_buckets b WHERE b.owner = s.id AND b.expires_at > ?) AS buckets
FROM schedulers s ORDER BY s.started_at, s.id
"""


def bucket_answer(conn: sqlite3.Connection, op: BucketOp, now: int) -> Any:
    match op:
        case BeatScheduler(info, lease):
            row = (
                info.id,
                info.host,
                info.pid,
                info.schedules,
                info.clock_offset,
                now,
                now,
                now + _ms(lease),
            )
            conn.execute(BEAT, row)
            live = conn.execute("SELECT id FROM schedulers WHERE expires_at > ? ORDER BY id", (now,))
            return ms_to_dt(now), [r["id"] for r in live]
        case RenewBuckets(owner, lease):
            conn.execute(
                "UPDATE schedule_buckets SET expires_at = ? "
                "WHERE owner = ? AND expires_at > ? AND expires_at < ?",
                (now + _ms(lease), owner, now, now + _ms(lease / 2)),
            )
            rows = conn.execute(
                "SELECT bucket, expires_at FROM schedule_buckets WHERE owner = ? AND expires_at > ?",
                (owner, now),
            )
            return [(r["bucket"], ms_to_dt(r["expires_at"])) for r in rows]
        case ReleaseBuckets(owner, None):
            conn.execute(
                "UPDATE schedule_buckets SET owner = NULL, expires_at = NULL WHERE owner = ?", (owner,)
            )
            conn.execute("DELETE FROM schedulers WHERE id = ?", (owner,))
            return None
        case ReleaseBuckets(owner, tuple() as buckets):
            conn.executemany(
                "UPDATE schedule_buckets SET owner = NULL, expires_at = NULL WHERE owner = ? AND bucket = ?",
                [(owner, bucket) for bucket in buckets],
            )
            return None
        case TakeBuckets(owner, count, lease):
            rows = conn.execute(
                "UPDATE schedule_buckets SET owner = ?, expires_at = ?, taken_at = ? WHERE bucket IN ("
                "SELECT bucket FROM schedule_buckets WHERE owner IS NULL OR expires_at <= ? "
                "ORDER BY bucket LIMIT ?) RETURNING bucket, expires_at",
                (owner, now + _ms(lease), now, now, count),
            )
            return [(r["bucket"], ms_to_dt(r["expires_at"])) for r in rows]
    raise AssertionError(f"unknown operation {op!r}")  # pragma: no cover


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class SqliteBuckets(SqliteAccess):
    """The scheduler registry's reads and the host's clock."""

    async def list_schedulers(self) -> list[SchedulerRecord]:
        at = now_ms()
        rows = await self._read(LIST, (at,))
        times = ("started_at", "heartbeat_at", "expires_at")
        return [
            SchedulerRecord(**{**dict(r), **{k: ms_to_dt(r[k]) for k in times}, "read_at": ms_to_dt(at)})
            for r in rows
        ]

    async def database_time(self) -> datetime:
        return datetime.now(UTC)
