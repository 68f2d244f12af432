"""The schedules as the API and the dashboard show them: a schedule's definition, state, next fire
times and last fire record."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from typing import Any

from ..schedule.config import ScheduleEntry, entry_of
from ..schedule.cron import SCHEDULE_NAME_PATTERN, fire_times
from ..schedule.describe import definition_fields
from ..store.base import ScheduleState
from ..store.schedule_defs import ScheduleDef
from . import _json
from ._context import WebContext
from ._parse import ApiError

_NAME = re.compile(SCHEDULE_NAME_PATTERN, re.ASCII)


def entries(ctx: WebContext) -> dict[str, ScheduleEntry]:
    config = ctx.schedules()
    return dict(config.schedules) if config is not None else {}


async def entry(ctx: WebContext, name: str) -> ScheduleEntry:
    """The schedule of this name: the file's in use, else the database's (an API schedule, or a
    YAML schedule another serve synced); 404 when neither has it."""
    found = entries(ctx)
    schedule = found.get(name)
    if schedule is not None:
        return schedule
    row = await stored(ctx, name)
    if row is None:
        known = ", ".join(sorted(found)) or "none"
        raise ApiError(404, "not_found", f"unknown schedule '{name}' (defined: {known}, and no API schedule)")
    return entry_of(row.name, row.definition, row.line)


async def stored(ctx: WebContext, name: str) -> ScheduleDef | None:
    """The database's newest version of the schedule (None: none, or deleted)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return None
    return await ctx.durably.schedules.get(name)


async def schedule_json(
    ctx: WebContext,
    entry: ScheduleEntry,
    now: datetime,
    state: ScheduleState | None,
    source: ScheduleDef | str | None = None,
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
    row = source if isinstance(source, ScheduleDef) else None
    return {
        **definition_fields(entry),
        "source": row.source if row is not None else source or "yaml",
        "version": row.version if row is not None else None,
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


async def schedules_json(ctx: WebContext, *, api: bool = True) -> list[dict[str, Any]]:
    """Every schedule in use (the file's, then -- with ``api`` -- the database's API schedules),
    with its state: one read of the states for the whole list."""
    found = entries(ctx)
    rows: list[ScheduleDef] = []
    cursor: str | None = None
    while api:
        page = await ctx.durably.schedules.list(source="api", limit=1000, cursor=cursor)
        rows += [row for row in page.items if row.name not in found]
        if (cursor := page.next_cursor) is None:
            break
    if not found and not rows:
        return []
    states = await ctx.durably.get_schedule_states()
    now = datetime.now(UTC)
    listed = [await schedule_json(ctx, e, now, states.get(e.name), "yaml") for e in found.values()]
    return listed + await rows_json(ctx, rows, states)


async def rows_json(
    ctx: WebContext, rows: list[ScheduleDef], states: dict[str, ScheduleState] | None = None
) -> list[dict[str, Any]]:
    """Stored schedules as the API shows them."""
    if states is None:
        states = await ctx.durably.get_schedule_states() if rows else {}
    now = datetime.now(UTC)
    return [
        await schedule_json(ctx, entry_of(r.name, r.definition, r.line), now, states.get(r.name), r)
        for r in rows
    ]
