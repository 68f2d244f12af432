"""What the dashboard's pictures show, from the records the pages read: a schedule's fire-time strip
and run durations (from its fire records and their runs), the home page's sparklines (from one
``schedule_activity`` read for every schedule). The SVG itself is drawn by ``charts``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from ..store.base import FireRecord, RunRecord
from . import charts

if TYPE_CHECKING:
    from ..ports import WebFacade

SPARK_BUCKETS = 24
SPARK_BUCKET = timedelta(hours=1)
"""The home page's sparklines: the last 24 hours in hours."""


def _short(run_id: str) -> str:
    return run_id[:8]


def _run_seconds(run: RunRecord, now: datetime) -> float | None:
    if run.started_at is None:
        return None
    return max(0.0, ((run.completed_at or now) - run.started_at).total_seconds())


def schedule_pictures(
    name: str, records: Sequence[FireRecord], runs: Mapping[str, RunRecord], zone: tzinfo, root: str
) -> dict[str, Any]:
    """The strip of ``records`` (newest first, as listed) and the chart of their runs' durations,
    both oldest first."""
    now = datetime.now(UTC)
    cells: list[charts.Cell] = []
    bars: list[charts.Bar] = []
    for record in reversed(records):
        when = record.fire_time.astimezone(zone).isoformat(sep=" ", timespec="seconds")
        run = runs.get(record.run_id) if record.run_id else None
        href = f"{root}/runs/{record.run_id}" if record.run_id else None
        if record.outcome == "triggered":
            status = run.status if run is not None else "purged"
            title = f"{when}: triggered, run {_short(record.run_id or '')} {status}"
            cells.append(charts.Cell(status, title, href))
        else:
            cells.append(charts.Cell(record.outcome, f"{when}: {record.outcome}", href))
        seconds = _run_seconds(run, now) if run is not None and record.outcome == "triggered" else None
        if run is not None and seconds is not None:
            so_far = " so far" if run.status == "running" else ""
            title = f"{when}: run {_short(run.id)} {run.status}, {charts.seconds_text(seconds)}{so_far}"
            bars.append(charts.Bar(seconds, run.status, title, href))
    shown = {c.kind for c in cells} | {b.kind for b in bars}
    return {
        "strip": charts.fire_strip(cells, label=f"Recent fire times of {name}"),
        "durations": charts.duration_chart(bars, label=f"Run durations of {name}"),
        "legend": [kind for kind in charts.STRIP_KINDS if kind in shown],
    }


async def sparklines(store: WebFacade, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each schedule's runs and failures in the last 24 hours (``svg``, ``runs``, ``failed``), from
    one query for all of them."""
    activity = await store.schedule_activity(datetime.now(UTC), SPARK_BUCKET, SPARK_BUCKETS)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        found = activity.get(name)
        out[name] = {
            "svg": charts.sparkline(found, SPARK_BUCKETS, label=f"{name}, last 24 hours"),
            "runs": sum(found.runs) if found is not None else 0,
            "failed": sum(found.failed) if found is not None else 0,
        }
    return out
