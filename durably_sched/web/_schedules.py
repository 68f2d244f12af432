"""The schedules as the API and the dashboard show them: a schedule's definition, state, next fire
times and last fire record."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from ..schedule.config import ScheduleEntry
from ..schedule.cron import fire_times
from ..schedule.describe import definition_fields
from ..store.base import ScheduleState
from . import _json
from ._context import WebContext
from ._parse import ApiError


def entries(ctx: WebContext) -> dict[str, ScheduleEntry]:
    config = ctx.schedules()
    return dict(config.schedules) if config is not None else {}


def entry(ctx: WebContext, name: str) -> ScheduleEntry:
    found = entries(ctx)
    schedule = found.get(name)
    if schedule is None:
        known = ", ".join(sorted(found)) or "none"
        raise ApiError(404, "not_found", f"unknown schedule '{name}' (defined: {known})")
    return schedule


async def schedule_json(
    ctx: WebContext, entry: ScheduleEntry, now: datetime, state: ScheduleState | None
) -> dict[str, Any]:
    """A schedule as the API shows it; ``state`` is its run-time state (read by the caller, once
    for a whole list: :meth:`Durably.get_schedule_states`)."""
    store = ctx.durably
    upcoming = list(itertools.islice(fire_times(entry.cron, entry.timezone, now), 3)) if entry.enabled else []
    records = await store.list_fire_records(entry.name, limit=1)
    last = records[0] if records else None
    status = None
    if last is not None and last.run_id:
        status = (await store.get_run_statuses([last.run_id])).get(last.run_id, "purged")
    return {
        **definition_fields(entry),
        **_json.schedule_state(state),
        "pause_after_failures": entry.pause_after_failures,
        "overlap": entry.overlap,
        "catchup": entry.catchup,
        "catchup_window": entry.catchup_window.total_seconds(),
        "jitter": entry.jitter.total_seconds(),
        "input": entry.input,
        "labels": entry.labels,
        "next_fire_times": [{"utc": _json.utc(t), "local": t.isoformat()} for t in upcoming],
        "last": None
        if last is None
        else {
            "fire_time": _json.utc(last.fire_time),
            "local": last.fire_time.astimezone(entry.timezone).isoformat(),
            "outcome": last.outcome,
            "run_id": last.run_id,
            "run_status": status,
        },
    }


async def schedules_json(ctx: WebContext) -> list[dict[str, Any]]:
    """Every schedule in use, with its state: one read of the states for the whole list."""
    found = entries(ctx)
    if not found:
        return []
    states = await ctx.durably.get_schedule_states()
    now = datetime.now(UTC)
    return [await schedule_json(ctx, e, now, states.get(e.name)) for e in found.values()]
