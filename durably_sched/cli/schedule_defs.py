"""``durably-sched schedules create/update/delete/versions/rollback``: schedules as data.

The options spell every field as schedules.yaml does (durations ``30s``/``6h``, ``--catchup all``,
``--retry max_attempts=5``); bad input is one line naming the field, exit 2. Jobs are loaded when
the settings name a jobs module, so the job and its input are checked as the YAML's are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, Literal

import click

from ..errors import InvalidArgumentError, StoreError
from ..record_fields import attributes, utc_attributes, version_fields
from ..schedule.config import SchedulesConfig, entry_of
from ..store.schedule_defs import ScheduleDef, ScheduleVersion
from ._base import CliCommand, CliError, open_durably, settings, sqlite_path
from ._loader import load_jobs
from ._output import echo_json, print_table, show_time, table

__all__ = ["create", "delete", "rollback", "update", "versions"]


def _json_object(value: str | None, field: str) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise CliError(f"{field}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(parsed, dict):
        raise CliError(f"{field}: expected a JSON object such as '{{\"n\": 1}}'")
    return parsed


def _pairs(values: tuple[str, ...], field: str) -> dict[str, str] | None:
    if not values:
        return None
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{field}: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _retry(values: tuple[str, ...]) -> dict[str, Any] | None:
    pairs = _pairs(values, "retry")
    if pairs is None:
        return None
    out: dict[str, Any] = {}
    for key, text in pairs.items():
        try:
            out[key] = json.loads(text)  # numbers stay numbers; "30s" stays a duration
        except json.JSONDecodeError:
            out[key] = text
    return out


def definition_options(required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The definition's options (create: --cron and --job required; update: all optional)."""
    options = [
        click.option("--cron", required=required, metavar="EXPR", help='Cron expression, e.g. "0 2 * * *".'),
        click.option("--job", required=required, metavar="JOB", help="The job each fire time runs."),
        click.option("--timezone", metavar="TZ", help="IANA zone the cron is read in (default UTC)."),
        click.option("--input", "input_json", metavar="JSON", help="The job's input, a JSON object."),
        click.option("--label", "labels", multiple=True, metavar="K=V", help="A run label (repeatable)."),
        click.option("--catchup", type=click.Choice(["all", "latest", "none"]), help="Catch-up policy."),
        click.option("--catchup-window", metavar="DURATION", help="How far back fire times are caught up."),
        click.option("--overlap", type=click.Choice(["queue", "skip", "allow"]), help="Overlap policy."),
        click.option("--jitter", metavar="DURATION", help="Spread each start by up to this long."),
        click.option("--retry", "retry", multiple=True, metavar="K=V",
                     help="A retry field, e.g. max_attempts=5 or backoff=30s (repeatable)."),
        click.option("--timeout", metavar="DURATION", help="How long one attempt may take."),
        click.option("--enabled/--disabled", "enabled", default=None, help="Whether fire times run."),
        click.option("--pause-after-failures", type=int, metavar="N", help="Pause after N failed runs."),
        click.option("--note", metavar="TEXT", help="Why: recorded with the version."),
        click.option("--by", metavar="TEXT", help="Who (default: user@host)."),
        click.option("--json", "json_mode", is_flag=True, help="Print the schedule as JSON."),
    ]  # fmt: skip

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def _fields(options: dict[str, Any]) -> dict[str, Any]:
    """The definition fields given on the command line (the YAML's names)."""
    fields = {
        "cron": options["cron"], "job": options["job"], "timezone": options["timezone"],
        "input": _json_object(options["input_json"], "input"), "labels": _pairs(options["labels"], "label"),
        "catchup": options["catchup"], "catchup_window": options["catchup_window"],
        "overlap": options["overlap"], "jitter": options["jitter"], "retry": _retry(options["retry"]),
        "timeout": options["timeout"], "enabled": options["enabled"],
        "pause_after_failures": options["pause_after_failures"],
    }  # fmt: skip
    return {k: v for k, v in fields.items() if v is not None}


def schedule_json(row: ScheduleDef) -> dict[str, Any]:
    return {
        **attributes(row, "name", "source", "version"),
        **row.definition,
        **attributes(row, "path", "line"),
        **utc_attributes(row, "created_at", "updated_at"),
    }


def version_json(version: ScheduleVersion) -> dict[str, Any]:
    return version_fields(version)


async def with_stored(config: SchedulesConfig | None, name: str | None) -> SchedulesConfig | None:
    """The file's schedules, plus the schedule ``name`` from the database when the file does not
    define it (an API schedule, or one another serve synced): so pause, resume, trigger, backfill,
    history and next work on every schedule. Without a database (or a file), as given."""
    if config is None or name is None or name in config.schedules:
        return config
    url = settings().database
    path = sqlite_path(url)
    if path is not None and not os.path.exists(path):
        return config
    try:
        async with open_durably(url, read_only=True) as durably:
            row = await durably.schedules.get(name)
    except (StoreError, InvalidArgumentError):
        return config  # the command then says the name is unknown, as before
    if row is None:
        return config
    entry = entry_of(row.name, row.definition, row.line)
    return config.model_copy(update={"schedules": {**config.schedules, name: entry}})


def _jobs() -> dict[str, Any]:
    return dict(load_jobs(settings().jobs))


def _report(row: ScheduleDef, verb: str, json_mode: bool) -> None:
    if json_mode:
        echo_json(schedule_json(row))
        return
    d = row.definition
    click.echo(
        f"schedule '{row.name}' {verb} (version {row.version}): job {d['job']}, cron '{d['cron']}' "
        f"({d['timezone']}); every running scheduler applies it within a second"
    )


def _argument_error(exc: InvalidArgumentError) -> CliError:
    return CliError(str(exc))


async def _save(
    op: Literal["create", "update"],
    name: str,
    fields: dict[str, Any],
    note: str | None,
    by: str | None,
    json_mode: bool,
) -> None:
    """Create or update the schedule (a new version) and report it."""
    async with open_durably(settings().database, _jobs()) as durably:
        try:
            if op == "create":
                row = await durably.schedules.create(name, **fields, note=note, by=by)
            else:
                row = await durably.schedules.update(name, **fields, note=note, by=by)
        except InvalidArgumentError as exc:
            raise _argument_error(exc) from None
    _report(row, f"{op}d", json_mode)


@click.command("create", cls=CliCommand, epilog="""\b
Examples:
  durably-sched schedules create acme-report --cron "0 6 * * *" --job report \\
      --timezone Europe/Berlin --input '{"customer": "acme"}' --label customer=acme \\
      --note "onboarding ticket 4411"
""")  # fmt: skip
@click.argument("name")
@definition_options(required=True)
async def create(name: str, note: str | None, by: str | None, json_mode: bool, **options: Any) -> None:
    """Create a schedule in the database (source api); it fires without a restart."""
    fields = _fields(options)
    await _save("create", name, fields, note, by, json_mode)


@click.command("update", cls=CliCommand, epilog="""\b
Examples:
  durably-sched schedules update acme-report --cron "0 7 * * *" --note "after the warehouse load"
""")  # fmt: skip
@click.argument("name")
@definition_options(required=False)
async def update(name: str, note: str | None, by: str | None, json_mode: bool, **options: Any) -> None:
    """Change fields of an API schedule (a new version); the others keep their values."""
    fields = _fields(options)
    if not fields:
        raise CliError("nothing to change: give at least one option (--cron, --job, --input, ...)")
    await _save("update", name, fields, note, by, json_mode)


@click.command("delete", cls=CliCommand, epilog="""\b
Examples:
  durably-sched schedules delete acme-report --note "customer left, ticket 5120"
""")  # fmt: skip
@click.argument("name")
@click.option("--note", metavar="TEXT", help="Why: recorded with the version.")
@click.option("--by", metavar="TEXT", help="Who (default: user@host).")
async def delete(name: str, note: str | None, by: str | None) -> None:
    """Delete an API schedule: it fires nothing more (its runs, history and versions stay)."""
    async with open_durably(settings().database) as durably:
        version = await durably.schedules.delete(name, note=note, by=by)
    click.echo(f"schedule '{name}' deleted (version {version.version}); it fires nothing more")


@click.command("versions", cls=CliCommand, epilog="""\b
Examples:
  durably-sched schedules versions acme-report
  durably-sched schedules versions acme-report --json
""")  # fmt: skip
@click.argument("name")
@click.option("--json", "json_mode", is_flag=True, help="Print a JSON array, oldest first.")
async def versions(name: str, json_mode: bool) -> None:
    """Every version of a schedule: who changed what, when and why."""
    async with open_durably(settings().database, read_only=True) as durably:
        found = await durably.schedules.versions(name)
    if json_mode:
        echo_json([version_json(v) for v in found])
        return
    grid = table("VERSION", "AT", "OP", "SOURCE", "BY", "CHANGED", "NOTE")
    for v in found:
        grid.add_row(str(v.version), show_time(v.at), v.op, v.source, v.by or "-",
                     v.what_changed, v.note or "")  # fmt: skip
    print_table(grid)


@click.command("rollback", cls=CliCommand, epilog="""\b
Examples:
  durably-sched schedules rollback acme-report --to 2 --note "version 3 ran too early"
""")  # fmt: skip
@click.argument("name")
@click.option(
    "--to", "to", type=int, required=True, metavar="N", help="The version whose definition to restore."
)
@click.option("--note", metavar="TEXT", help="Why: recorded with the version.")
@click.option("--by", metavar="TEXT", help="Who (default: user@host).")
async def rollback(name: str, to: int, note: str | None, by: str | None) -> None:
    """Restore an earlier version's definition (recorded as a new version)."""
    async with open_durably(settings().database, _jobs()) as durably:
        try:
            row = await durably.schedules.rollback(name, to=to, note=note, by=by)
        except InvalidArgumentError as exc:
            raise _argument_error(exc) from None
    _report(row, f"rolled back to version {to}", False)
