"""Runs and failed runs per schedule in equal time buckets (the dashboard's sparklines), for every
schedule in one query.

The query walks ``runs_created (created_at)`` over the window only, so its cost grows with the runs
created in the window, not with the history kept nor with the number of schedules; it groups in the
database and returns one row per (schedule, bucket) that has runs. A run counts in the bucket of its
creation; ``failed`` counts the runs whose status is failed now (a run that failed and was retried
successfully counts as run, not failed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ..errors import InvalidArgumentError
from .records import ScheduleActivity

SQLITE = (
    "SELECT schedule_name AS schedule, (created_at - ?) / ? AS bucket, count(*) AS runs, "
    "sum(status = 'failed') AS failed FROM runs INDEXED BY runs_created "
    "WHERE created_at >= ? AND created_at < ? AND schedule_name IS NOT NULL "
    "GROUP BY schedule_name, bucket"
)
"""Parameters: since (ms), bucket (ms), since (ms), until (ms)."""

POSTGRES = (
    "SELECT schedule_name AS schedule, "
    "(extract(epoch FROM created_at - $1) * 1000000)::bigint / $2::bigint AS bucket, "
    "count(*) AS runs, count(*) FILTER (WHERE status = 'failed') AS failed FROM runs "
    "WHERE created_at >= $1 AND created_at < $3 AND schedule_name IS NOT NULL "
    "GROUP BY 1, 2"
)
"""Parameters: since, bucket (microseconds: integer division places a run exactly), until."""


def window(until: datetime, bucket: timedelta, buckets: int) -> datetime:
    """Where the window of ``buckets`` buckets ending at ``until`` starts.

    InvalidArgumentError on nonsense."""
    if buckets < 1 or buckets > 1000 or bucket <= timedelta(0):
        raise InvalidArgumentError("activity needs 1 to 1000 buckets of a positive length")
    return until - bucket * buckets


def activity_from_rows(
    rows: Iterable[Mapping[str, Any]], since: datetime, bucket: timedelta, buckets: int
) -> dict[str, ScheduleActivity]:
    counts: dict[str, tuple[list[int], list[int]]] = {}
    for row in rows:
        index = int(row["bucket"])
        if not 0 <= index < buckets:
            continue
        runs, failed = counts.setdefault(row["schedule"], ([0] * buckets, [0] * buckets))
        runs[index] += int(row["runs"])
        failed[index] += int(row["failed"] or 0)
    return {
        name: ScheduleActivity(since=since, bucket=bucket, runs=tuple(runs), failed=tuple(failed))
        for name, (runs, failed) in sorted(counts.items())
    }
