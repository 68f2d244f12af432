"""``durably-sched schedules show NAME``: one schedule, whole.

Where it is defined and which version the schedulers fire, every field of its definition, its
run-time state (paused, failing), its next fire times and its last fire time with its run. The
definition is the database's (the one the schedulers fire: the file's schedules are synced there by
every serve); a schedule of the file that no serve has synced yet is shown from the file, and says so.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from ..errors import ConfigError, InvalidArgumentError, StoreError
from ..schedule.config import ScheduleEntry, entry_definition, entry_of, load_schedules
from ..schedule.cron import fire_times
from ..schedule.describe import definition_fields, describe_cron
from ..store.base import FireRecord, ScheduleState
from ..store.schedule_defs import ScheduleDef
from ._base import TIME_RULE_HELP, CliCommand, CliError, open_durably, settings, sqlite_path, utc_option
from ._output import echo_json, show_time, utc_json, zone_json
from .schedule_pause import state_json, state_lines, state_word

__all__ = ["show"]

UPCOMING = 3
"""Next fire times shown."""


@dataclass
class _Found:
    entry: ScheduleEntry
    row: ScheduleDef | None  # None: only in the file, not synced yet
    state: ScheduleState | None = None
    last: FireRecord | None = None
    last_status: str | None = None


EXAMPLES = """\b
Examples:
  durably-sched schedules show nightly-report
  durably-sched schedules show nightly-report --json
"""


@click.command("show", cls=CliCommand, epilog=f"{EXAMPLES}\n{TIME_RULE_HELP}")
@click.argument("name")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON object.")
@utc_option
async def show(name: str, json_mode: bool) -> None:
    """One schedule: where it is defined, its version, every field, its state, next and last fire time."""
    found = await _find(name)
    if json_mode:
        echo_json(_json(found))
        return
    for label, value in _lines(found):
        click.echo(f"{label:<13}{value}" if label else value)


async def _find(name: str) -> _Found:
    """The database's definition and state of ``name``, else the file's definition."""
    file_entry, file_problem = _from_file(name)
    url = settings().database
    path = sqlite_path(url)
    if path is not None and not os.path.exists(path):
        if file_entry is None:
            raise CliError(_unknown(name, file_problem))
        return _Found(file_entry, None)
    try:
        async with open_durably(url, read_only=True) as durably:
            row = await durably.schedules.get(name)
            entry = entry_of(row.name, row.definition, row.line) if row is not None else file_entry
            if entry is None:
                raise CliError(_unknown(name, file_problem))
            found = _Found(entry, row, await durably.get_schedule_state(name))
            records = await durably.list_fire_records(name, limit=1)
            if records:
                found.last = records[0]
                if found.last.run_id:
                    statuses = await durably.get_run_statuses([found.last.run_id])
                    found.last_status = statuses.get(found.last.run_id, "purged")
            return found
    except InvalidArgumentError as exc:
        raise CliError(str(exc)) from None
    except StoreError as exc:
        if file_entry is None:
            raise CliError(f"cannot read schedule '{name}': {exc}") from None
        click.echo(f"warning: state and history unavailable: {exc}", err=True)
        return _Found(file_entry, None)


def _from_file(name: str) -> tuple[ScheduleEntry | None, str | None]:
    """The file's schedule ``name`` (None when the file lacks it), and why the file could not be read."""
    try:
        config = load_schedules(settings().schedules)
    except ConfigError as exc:
        return None, str(exc)
    return config.schedules.get(name), None


def _unknown(name: str, file_problem: str | None) -> str:
    where = f"{settings().schedules} could not be read ({file_problem}) and " if file_problem else ""
    return f"unknown schedule '{name}': {where}the database has none of that name (see `schedules list`)"


def _upcoming(entry: ScheduleEntry) -> list[datetime]:
    if not entry.enabled:
        return []
    return list(itertools.islice(fire_times(entry.cron, entry.timezone, datetime.now(UTC)), UPCOMING))


def _json(found: _Found) -> dict[str, Any]:
    entry, row, last = found.entry, found.row, found.last
    definition = row.definition if row is not None else entry_definition(entry)
    upcoming = _upcoming(entry)
    return {
        **definition_fields(entry),
        "source": row.source if row is not None else "yaml",
        "version": row.version if row is not None else None,
        "synced": row is not None,
        "defined_at": row.location if row is not None else _file_location(entry),
        "updated_at": utc_json(row.updated_at) if row is not None else None,
        "definition": definition,
        "next_fire_times": [utc_json(t) for t in upcoming],
        "next_fire_times_in_zone": [zone_json(t, entry.timezone) for t in upcoming],
        "last": None
        if last is None
        else {
            "fire_time": utc_json(last.fire_time),
            "outcome": last.outcome,
            "run_id": last.run_id,
            "run_status": found.last_status,
        },
        **state_json(found.state),
    }


def _file_location(entry: ScheduleEntry) -> str:
    path = settings().schedules
    return f"{path}:{entry.line}" if entry.line else str(path)


def _lines(found: _Found) -> list[tuple[str, str]]:
    """(label, value) lines of the text form; an empty label continues the line above."""
    entry, row, state = found.entry, found.row, found.state
    definition = row.definition if row is not None else entry_definition(entry)
    if row is not None:
        where = f"{row.location}, version {row.version}"
        if row.updated_at is not None:
            where += f" (since {show_time(row.updated_at)})"
    else:
        where = f"{_file_location(entry)}, not synced yet (no serve has loaded this file's version)"
    lines = [
        ("", f"{entry.name}: job {entry.job}, {entry.cron.expression} ({entry.timezone.key})"),
        ("", f"  {describe_cron(entry.cron)}"),
        ("defined", where),
        ("state", state_word(entry, state)),
        *(("", f"{'':<13}{line}") for line in state_lines(state)),
        ("input", json.dumps(entry.input, sort_keys=True)),
        ("labels", " ".join(f"{k}={v}" for k, v in sorted(entry.labels.items())) or "-"),
        ("overlap", entry.overlap),
        ("catch-up", f"{definition.get('catchup')} (window {definition.get('catchup_window')})"),
        ("jitter", str(definition.get("jitter"))),
        ("retry", _value(definition.get("retry"), "the job's")),
        ("timeout", _value(definition.get("timeout"), "the job's")),
        ("auto-pause", _value(entry.pause_after_failures, "never", "after {} failed runs in a row")),
    ]
    upcoming = _upcoming(entry)
    paused = " (recorded as paused while it is paused)" if state is not None and state.paused else ""
    lines.append(("next", ", ".join(show_time(t) for t in upcoming) + paused if upcoming else "none"))
    last = found.last
    if last is None:
        lines.append(("last", "-"))
    else:
        run = f", run {last.run_id[:8]} ({found.last_status})" if last.run_id else ""
        lines.append(("last", f"{last.outcome} {show_time(last.fire_time)}{run}"))
    return lines


def _value(value: Any, default: str, shape: str = "{}") -> str:
    if value is None:
        return default
    if isinstance(value, dict):
        value = " ".join(f"{k}={v}" for k, v in value.items())
    return shape.format(value)
