"""The schedules as the API and the dashboard show them: a schedule's definition, state, next fire
times and last fire record."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from ..schedule.config import ScheduleEntry, entry_of
from ..schedule.cron import SCHEDULE_NAME_PATTERN
from ..schedule.describe import definition_fields
from ..schedule.firing import next_utc_fire
from ..store.base import FireRecord, ScheduleState
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
    read: tuple[dict[str, FireRecord], dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A schedule as the API shows it; ``state`` is its run-time state (read by the caller, once
    for a whole list: :meth:`Durably.get_schedule_states`); ``read``: the last fire records and
    their runs' statuses, read once for a page (else read here)."""
    store = ctx.durably
    upcoming = _upcoming(entry, now) if entry.enabled else []
    if read is None:
        records = await store.list_fire_records(entry.name, limit=1)
        first = records[0] if records else None
        ids = [first.run_id] if first is not None and first.run_id else []
        read = ({entry.name: first} if first else {}, dict(await store.get_run_statuses(ids)) if ids else {})
    last = read[0].get(entry.name)
    status = read[1].get(last.run_id, "purged") if last is not None and last.run_id else None
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
    """Every schedule in use (the file's, then -- with ``api`` -- the database's others), with its
    state: one read of the states for the whole list. The database's others are its API schedules;
    in a process without the file (a dashboard serve, a worker-only serve), every schedule the
    database has, the ones another serve synced from its file included."""
    found = entries(ctx)
    source = "api" if ctx.schedules() is not None else None
    rows: list[ScheduleDef] = []
    cursor: str | None = None
    while api:
        page = await ctx.durably.schedules.list(source=source, limit=1000, cursor=cursor)
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
    if states is None:  # the page's own states, not the whole table's
        states = await ctx.durably.get_schedule_states_of([row.name for row in rows]) if rows else {}
    now = datetime.now(UTC)
    last = await ctx.durably.last_fire_records([row.name for row in rows]) if rows else {}
    ids = [r.run_id for r in last.values() if r.run_id]
    statuses: dict[str, str] = dict(await ctx.durably.get_run_statuses(ids)) if ids else {}
    read = (last, statuses)
    out = []
    for row in rows:
        entry = entry_of(row.name, row.definition, row.line)
        out.append(await schedule_json(ctx, entry, now, states.get(row.name), row, read))
    return out


def _upcoming(entry: ScheduleEntry, now: datetime) -> list[datetime]:
    """The next 3 fire times, in the schedule's zone: each after the previous through the
    scheduler's cache of next fire times (``firing.next_utc_fire``), so a list of many schedules
    of few crons, or the same list again, steps croniter once per cron and second."""
    out: list[datetime] = []
    after = now.astimezone(UTC).replace(microsecond=0)
    while len(out) < 3:
        found = next_utc_fire(entry.cron, entry.timezone, after)
        if found is None:
            break
        out.append(found.astimezone(entry.timezone))
        after = found
    return out
