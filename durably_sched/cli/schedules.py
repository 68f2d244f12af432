"""``durably-sched schedules ...``: validate the file, show fire times and history, backfill."""

from __future__ import annotations

import asyncio
import itertools
import os
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from .._durations import format_duration
from ..durably import Durably
from ..errors import ConfigError, InvalidArgumentError, StoreError
from ..schedule import manual
from ..schedule.config import ScheduleEntry, SchedulesConfig, entry_of, load_schedules
from ..schedule.cron import fire_key, fire_times, next_fire_time
from ..schedule.describe import definition_fields, describe_cron
from ..schedule.reloading import current_config_errors
from ..store.base import FireRecord, FireResult, RunStatus, ScheduleState
from ..store.schedule_defs import ScheduleDef
from ._base import (
    TIME,
    TIME_RULE_HELP,
    CliError,
    CliGroup,
    in_display_zone,
    open_durably,
    settings,
    sqlite_path,
    utc_option,
)
from ._loader import job_inputs, load_jobs
from ._output import console, echo_json, echo_next_cursor, print_table, show_time, table, utc_json, zone_json
from .schedule_defs import create, delete, rollback, update, versions, with_stored
from .schedule_pause import pause, resume, state_json, state_lines, state_word
from .schedule_show import show
from .trigger import find_schedule

BACKFILL_LIMIT = manual.BACKFILL_LIMIT
BACKFILL_ROWS_SHOWN = 200


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _load(with_jobs: bool) -> SchedulesConfig:
    s = settings()
    inputs = job_inputs(load_jobs(s.jobs)) if with_jobs else None
    return load_schedules(s.schedules, inputs)


@click.group("schedules", cls=CliGroup)
def schedules() -> None:
    """Check schedules.yaml, see upcoming fire times and history, backfill past fire times.

    \b
    Cron expressions are evaluated on each schedule's own clock (its timezone); the
    fire times are then shown like every time: in this machine's time zone with the
    UTC offset, or in UTC with --utc. Times typed without an offset (--after, --from,
    --to) are read in that same display zone.

    \b
    Examples:
      durably-sched schedules validate
      durably-sched schedules next nightly-report --count 3
      TZ=Europe/Berlin durably-sched schedules next nightly-report   # on Berlin's clock
      durably-sched schedules pause nightly-report --reason "warehouse migration"
    """


@schedules.command(
    "validate",
    epilog="""\b
Examples:
  durably-sched schedules validate
  durably-sched --jobs myapp.jobs schedules validate deploy/schedules.yaml

\b
Prints "ok: N schedules" and exits 0, or prints every problem in the file,
one line each as "error: FILE:LINE: message" in the file's order, and exits 2.
Never touches the database.""",
)
@click.argument("file", required=False, type=click.Path(dir_okay=False))
def validate(file: str | None) -> None:
    """Check a schedules file (default: --schedules) against the registered jobs."""
    s = settings()
    path = file or s.schedules
    jobs = load_jobs(s.jobs)
    try:
        config = load_schedules(path, job_inputs(jobs))
    except ConfigError as exc:
        *before, last = exc.problems
        for problem in before:  # the last one is printed as the command's error, like any other
            click.echo(f"error: {problem}", err=True)
        raise last from None
    click.echo(f"ok: {_plural(len(config.schedules), 'schedule')} in {path}")


@dataclass
class _Database:
    """What `schedules list` reads of the database (nothing when it does not exist)."""

    last: dict[str, FireRecord] = field(default_factory=dict)
    states: dict[str, ScheduleState] = field(default_factory=dict)
    rows: list[ScheduleDef] = field(default_factory=list)
    next_cursor: str | None = None
    problem: str | None = None


async def _read_database(page: dict[str, Any] | None) -> _Database:
    """The newest fire record and the run-time state per schedule, and the schedules stored in the
    database (``page``: one page of them by these filters; None: every API schedule), without ever
    creating a database; warns (stderr) about every serve whose last reload of its file failed."""
    url = settings().database
    path = sqlite_path(url)
    if path is not None and not os.path.exists(path):
        return _Database()
    try:
        async with open_durably(url, read_only=True) as durably:
            for failed in await current_config_errors(durably):
                click.echo(
                    f"warning: {failed.location}: {failed.message} (serve on {failed.host}, pid "
                    f"{failed.pid}, since {show_time(failed.since)}); the last good version is running",
                    err=True,
                )
            found = _Database(await durably.last_fire_records(), await durably.get_schedule_states())
            if page is not None:
                listed = await durably.schedules.list(**page)
                found.rows, found.next_cursor = listed.items, listed.next_cursor
                return found
            cursor: str | None = None
            while True:
                listed = await durably.schedules.list(source="api", limit=1000, cursor=cursor)
                found.rows += listed.items
                if (cursor := listed.next_cursor) is None:
                    return found
    except InvalidArgumentError as exc:
        raise CliError(str(exc)) from None
    except StoreError as exc:
        return _Database(problem=str(exc))


def _short_time(value: datetime, now: datetime) -> str:
    """A time in the display zone, without its date when that is today's (``05:00:00+01:00``)."""
    text = show_time(value)
    return text.split(" ", 1)[1] if text[:10] == show_time(now)[:10] else text


def _next(entry: ScheduleEntry, now: datetime) -> datetime | None:
    try:
        return next_fire_time(entry.cron, entry.timezone, now)
    except ValueError:
        return None


@schedules.command(
    "list",
    epilog=f"""\b
Examples:
  durably-sched schedules list
  durably-sched --schedules deploy/schedules.yaml schedules list --json

{TIME_RULE_HELP}""",
)
@click.option("--job", metavar="JOB", help="Only the schedules of this job (from the database).")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="Only schedules with this label.")
@click.option("--source", type=click.Choice(["yaml", "api"]), help="Only schedules of this source.")
@click.option("--limit", type=click.IntRange(1, 1000), help="One page of this many (from the database).")
@click.option("--cursor", metavar="CURSOR", help="The page after the one that printed this cursor.")
@click.option("--json", "json_mode", is_flag=True, help="Print a JSON array.")
@utc_option
async def list_schedules(
    json_mode: bool, job: str | None, labels: tuple[str, ...], source: str | None, limit: int | None,
    cursor: str | None,
) -> None:  # fmt: skip
    """Every schedule: job, cron and what it means, time zone, next fire time, last outcome.

    Without filters: the file's schedules, then the API schedules of the database. With --job,
    --label, --source, --limit or --cursor: one page of the database's schedules (both sources,
    as the serves synced them), by name; the next page's cursor is printed on stderr."""
    page = None
    if job or labels or source or limit or cursor:
        label_map = dict(item.partition("=")[::2] for item in labels)
        page = {
            "job": job,
            "labels": label_map or None,
            "source": source,
            "limit": limit or 50,
            "cursor": cursor,
        }
    config = None if page is not None else _load(with_jobs=False)
    db = await _read_database(page)
    if db.problem is not None:
        click.echo(f"warning: last outcomes unavailable: {db.problem}", err=True)
    listed = [(entry, "yaml") for entry in config.schedules.values()] if config is not None else []
    listed += [(entry_of(row.name, row.definition, row.line), row.source) for row in db.rows]
    _show_list(listed, db, json_mode, config)
    echo_next_cursor(db.next_cursor)


def _show_list(
    listed: list[tuple[ScheduleEntry, str]], db: _Database, json_mode: bool, config: SchedulesConfig | None
) -> None:
    now = datetime.now(UTC)
    last, states = db.last, db.states
    if json_mode:
        items = []
        for entry, source in listed:
            upcoming = _next(entry, now)
            record = last.get(entry.name)
            items.append(
                {
                    **definition_fields(entry),
                    "source": source,
                    "overlap": entry.overlap,
                    "catchup": entry.catchup,
                    "jitter": format_duration(entry.jitter),
                    "next_fire_time": utc_json(upcoming),
                    "next_fire_time_in_zone": zone_json(upcoming, entry.timezone),
                    "last_fire_time": utc_json(record.fire_time) if record else None,
                    "last_outcome": record.outcome if record else None,
                    "last_run_id": record.run_id if record else None,
                    **state_json(states.get(entry.name)),
                }
            )
        echo_json(items)
        return
    if not listed:
        click.echo(f"no schedules in {config.path}" if config is not None else "no schedules", err=True)
        return
    # Every column one line (no wrapping), so each schedule's description can follow its row. The
    # cron expression and its zone go on that line, with the words for them: the row stays within
    # 100 columns for names of up to 14 characters.
    grid = table("NAME", "JOB", "STATE", "NEXT FIRE TIME", "LAST")
    descriptions: list[list[str]] = []
    for entry, source in listed:
        upcoming = _next(entry, now)
        record = last.get(entry.name)
        state = states.get(entry.name)
        grid.add_row(
            entry.name,
            entry.job,
            state_word(entry, state),
            ("disabled" if not entry.enabled else show_time(upcoming) if upcoming else "never"),
            "-" if record is None else f"{record.outcome} {_short_time(record.fire_time, now)}",
        )
        about = f"{entry.cron.expression} ({entry.timezone.key}): {describe_cron(entry.cron)}"
        if source == "api":
            about += "; API schedule"
        if record is not None and record.run_id:
            about += f"; last run {record.run_id[:8]}"
        descriptions.append([about, *state_lines(state)])
    _print_with_descriptions(grid, descriptions)
    if config is None:
        return
    names = {entry.name for entry, _ in listed}
    gone = sorted(name for name, state in states.items() if state.paused and name not in names)
    for name in gone:
        click.echo(
            f"note: schedule '{name}' is paused in the database but not defined in {config.path} "
            f"(`durably-sched schedules resume {name}` clears it)",
            err=True,
        )


def _print_with_descriptions(grid: Table, descriptions: list[list[str]]) -> None:
    """The table, each row followed by indented lines: its cron's description, then its state.

    A description is too long for a column at 80 columns (it would wrap to a word per line), and rich
    tables have no cell spanning several columns, so the lines go between the rendered rows.
    """
    out = console()
    with out.capture() as captured:
        out.print(grid)
    header, *rows = captured.get().splitlines()
    if len(rows) != len(descriptions):  # not one line per row after all: the table alone
        print_table(grid)
        return
    width = out.width if out.is_terminal else None
    click.echo(header.rstrip())
    for row, texts in zip(rows, descriptions, strict=True):
        click.echo(row.rstrip())
        for description in texts:
            lines = textwrap.wrap(description, width - 2) if width and width > 20 else [description]
            for line in lines:
                click.echo(click.style(f"  {line}", dim=True) if out.is_terminal else f"  {line}")


@schedules.command(
    "next",
    epilog=f"""\b
Examples:
  durably-sched schedules next
  durably-sched schedules next nightly-report --count 10
  durably-sched schedules next nightly-report --after 2026-10-24T12:00 --count 3 --json
  TZ=Europe/Berlin durably-sched schedules next nightly-report   # on Berlin's clock

\b
The DST policy applies: a wall time skipped by a spring-forward gap fires once, right
after the gap; a repeated wall time fires once for fixed hours ("30 2 * * *") and at
both occurrences for hourly-style fields ("*/15 * * * *"). --json gives each fire time
in UTC (fire_time) and on the schedule's own clock (fire_time_in_zone).

{TIME_RULE_HELP}""",
)
@click.argument("name", required=False)
@click.option("--count", type=click.IntRange(1, 100_000), default=5, show_default=True)
@click.option("--after", type=TIME, help="Fire times after this time (exclusive; default now).")
@click.option("--json", "json_mode", is_flag=True, help="Print a JSON array.")
@utc_option
def next_times(name: str | None, count: int, after: datetime | None, json_mode: bool) -> None:
    """The next fire times of a schedule (all schedules when NAME is omitted), with their keys."""
    loaded = _load(with_jobs=False)
    config = asyncio.run(with_stored(loaded, name)) or loaded
    entries = (
        [find_schedule(config.schedules, name, config.path)] if name else list(config.schedules.values())
    )
    rows: list[tuple[ScheduleEntry, datetime]] = []
    for entry in entries:
        start = in_display_zone(after) if after is not None else datetime.now(UTC)
        rows.extend(
            (entry, t) for t in itertools.islice(fire_times(entry.cron, entry.timezone, start), count)
        )
    if json_mode:
        echo_json(
            [
                {
                    "schedule": e.name,
                    "fire_time": utc_json(t),
                    "fire_time_in_zone": zone_json(t, e.timezone),
                    "idempotency_key": fire_key(e.name, t),
                }
                for e, t in rows
            ]
        )
        return
    if not rows:
        click.echo("no fire times", err=True)
        return
    grid = table("SCHEDULE", "FIRE TIME", "IDEMPOTENCY KEY")
    for entry, t in rows:
        grid.add_row(entry.name, show_time(t), fire_key(entry.name, t))
    print_table(grid)


@schedules.command(
    "history",
    epilog=f"""\b
Examples:
  durably-sched schedules history nightly-report
  durably-sched schedules history thumbnails --limit 100 --json

{TIME_RULE_HELP}""",
)
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 100_000), default=20, show_default=True)
@click.option("--json", "json_mode", is_flag=True, help="Print a JSON array.")
@utc_option
async def history(name: str, limit: int, json_mode: bool) -> None:
    """Recorded fire times of a schedule, newest first: outcome and run."""
    try:
        config: SchedulesConfig | None = _load(with_jobs=False)
    except ConfigError:
        config = None  # history outlives the file: a removed schedule still has records
    config = await with_stored(config, name)
    entry = config.schedules.get(name) if config is not None else None
    async with open_durably(settings().database, read_only=True) as durably:
        records = await durably.list_fire_records(name, limit=limit)
        statuses = await durably.get_run_statuses([r.run_id for r in records if r.run_id])
    if not records and entry is None:
        where = f" in {config.path}" if config is not None else ""
        raise CliError(f"unknown schedule '{name}': not defined{where} and no fire times recorded")
    if json_mode:
        echo_json([fire_json(r, statuses.get(r.run_id) if r.run_id else None, entry) for r in records])
        return
    if not records:
        click.echo(f"no fire times recorded for schedule '{name}' yet", err=True)
        return
    grid = table("FIRE TIME", "OUTCOME", "RUN", "STATUS", "RECORDED")
    for r in records:
        status = statuses.get(r.run_id, "purged") if r.run_id else "-"
        grid.add_row(
            show_time(r.fire_time),
            r.outcome,
            r.run_id[:8] if r.run_id else "-",
            status,
            show_time(r.recorded_at),
        )
    print_table(grid)


def fire_json(record: FireRecord, run_status: str | None, entry: ScheduleEntry | None) -> dict[str, Any]:
    """A recorded fire time in --json (history, backfill): times in UTC, and on the schedule's
    clock when the schedule is still in the file."""
    return {
        "schedule": record.schedule,
        "fire_time": utc_json(record.fire_time),
        "fire_time_in_zone": zone_json(record.fire_time, entry.timezone) if entry is not None else None,
        "idempotency_key": fire_key(record.schedule, record.fire_time),
        "outcome": record.outcome,
        "run_id": record.run_id,
        "run_status": run_status,
        "recorded_at": utc_json(record.recorded_at),
    }


@schedules.command(
    "backfill",
    epilog=f"""\b
Examples:
  durably-sched schedules backfill nightly-report --from 2026-05-01 --to 2026-05-07T23:59 --dry-run
  durably-sched schedules backfill nightly-report --from 2026-05-01 --to 2026-05-07T23:59

\b
Every fire time in [--from, --to] is handled exactly like the scheduler would handle it,
with the same key (schedule:<name>:<UTC fire time>): a fire time that already has a
record (fired, skipped, missed) is left alone, so running a backfill twice, or while
the scheduler runs, never makes a second run. The schedule's overlap policy applies
(with overlap: skip, slots that come while a run of the schedule is active are recorded
as skipped). The scheduler's cursor does not move. More than {BACKFILL_LIMIT:,} fire times,
or a --to in the future, need --force.

\b
--dry-run writes nothing: it lists each fire time with what a backfill would do, from
the records already stored: "trigger" (no record yet) or "deduplicate" (recorded, with
its outcome and run).

\b
--from and --to without an offset are read in this machine's time zone (UTC with --utc);
a date alone means its midnight. The fire times themselves come from the schedule's cron
on its own clock (its timezone).

{TIME_RULE_HELP}""",
)
@click.argument("name")
@click.option("--from", "start", type=TIME, required=True, help="First time of the range (inclusive).")
@click.option("--to", "end", type=TIME, required=True, help="Last time of the range (inclusive).")
@click.option(
    "--dry-run", is_flag=True, help="List the fire times, what a backfill would do with each; write nothing."
)
@click.option(
    "--force", is_flag=True, help=f"Allow more than {BACKFILL_LIMIT:,} fire times or a future --to."
)
@click.option("--json", "json_mode", is_flag=True, help="Print a JSON array.")
@utc_option
async def backfill(
    name: str, start: datetime, end: datetime, dry_run: bool, force: bool, json_mode: bool
) -> None:
    """Trigger every fire time of a schedule in a past range (runs missed while nothing ran)."""
    s = settings()
    jobs = load_jobs(s.jobs)
    config = await with_stored(load_schedules(s.schedules, job_inputs(jobs)), name)
    assert config is not None
    entry = find_schedule(config.schedules, name, config.path)
    first, last = in_display_zone(start), in_display_zone(end)
    try:
        times = await manual.plan_backfill(
            entry, first, last, force=force, names=("--from", "--to", "--force"), show=show_time
        )
    except manual.ScheduleActionError as exc:
        raise CliError(exc.message) from None
    if dry_run:
        recorded, statuses = await _recorded(entry, first, last, len(times))
        _show_plan(entry, times, recorded, statuses, json_mode)
        return
    results: list[FireResult] = []
    async with open_durably(s.database, jobs) as durably:
        err = console(stderr=True)
        with Progress(
            TextColumn(f"backfill {name}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal or len(times) < 2 or json_mode,
        ) as bar:
            task = bar.add_task("", total=len(times))
            results = await manual.backfill(durably, entry, times, on_batch=lambda n: bar.advance(task, n))
    _show_results(entry, times, results, json_mode)


async def _records_between(
    durably: Durably, schedule: str, first: datetime, last: datetime, expected: int
) -> dict[datetime, FireRecord]:
    """The fire records of ``schedule`` in [first, last]: one read of ``expected + 1`` records (the
    newest first, from ``last`` down), more pages only if the range holds more records than fire
    times (records of an earlier cron of the same schedule)."""
    found: dict[datetime, FireRecord] = {}
    before = last + timedelta(milliseconds=1)
    page_size = max(expected + 1, 2)
    while True:
        page = await durably.list_fire_records(schedule, limit=page_size, before=before)
        for record in page:
            if record.fire_time < first:
                return found
            found[record.fire_time] = record
        if len(page) < page_size:
            return found
        before = page[-1].fire_time


async def _recorded(
    entry: ScheduleEntry, first: datetime, last: datetime, expected: int
) -> tuple[dict[datetime, FireRecord], dict[str, RunStatus]]:
    """What is already recorded in the range, and the statuses of those runs; nothing when the
    database does not exist yet (a dry run never creates it)."""
    url = settings().database
    path = sqlite_path(url)
    if path is not None and not os.path.exists(path):
        return {}, {}
    async with open_durably(url) as durably:
        recorded = await _records_between(durably, entry.name, first, last, expected)
        run_ids = sorted({r.run_id for r in recorded.values() if r.run_id})
        statuses = await durably.get_run_statuses(run_ids)
    return recorded, statuses


def _show_plan(
    entry: ScheduleEntry,
    times: list[datetime],
    recorded: dict[datetime, FireRecord],
    statuses: dict[str, RunStatus],
    json_mode: bool,
) -> None:
    items: list[dict[str, Any]] = []
    for t in times:
        record = recorded.get(t.astimezone(UTC))
        run_id = record.run_id if record is not None else None
        items.append(
            {
                "schedule": entry.name,
                "fire_time": utc_json(t),
                "fire_time_in_zone": zone_json(t, entry.timezone),
                "idempotency_key": fire_key(entry.name, t),
                "action": "trigger" if record is None else "deduplicate",
                "recorded_outcome": record.outcome if record is not None else None,
                "run_id": run_id,
                "run_status": (statuses.get(run_id, "purged") if run_id else None),
            }
        )
    if json_mode:
        echo_json(items)
        return
    grid = table("FIRE TIME", "WOULD", "RECORDED", "RUN", "IDEMPOTENCY KEY")
    for t, item in zip(times, items, strict=True):
        run = f"{item['run_id'][:8]} ({item['run_status']})" if item["run_id"] else "-"
        grid.add_row(
            show_time(t), item["action"], item["recorded_outcome"] or "-", run, item["idempotency_key"]
        )
    if times:
        print_table(grid)
    new = sum(1 for item in items if item["action"] == "trigger")
    known = len(items) - new
    parts = [f"{new} would be triggered"]
    if known:
        parts.append(f"{known} already recorded (deduplicated)")
    note = (
        "; with overlap: skip, a fire time that comes while a run of the schedule is active is recorded "
        "as skipped instead"
        if new and entry.overlap == "skip"
        else ""
    )
    click.echo(
        f"dry run: {_plural(len(times), 'fire time')} of schedule '{entry.name}': {', '.join(parts)}"
        f"{note}; nothing written",
        err=True,
    )


def _show_results(
    entry: ScheduleEntry, times: list[datetime], results: list[FireResult], json_mode: bool
) -> None:
    rows: list[dict[str, Any]] = [
        {
            "schedule": entry.name,
            "fire_time": utc_json(t),
            "fire_time_in_zone": zone_json(t, entry.timezone),
            "idempotency_key": fire_key(entry.name, t),
            "outcome": r.outcome,
            "run_id": r.run.id if r.run else None,
        }
        for t, r in zip(times, results, strict=True)
    ]
    if json_mode:
        echo_json(rows)
        return
    if 0 < len(rows) <= BACKFILL_ROWS_SHOWN:
        grid = table("FIRE TIME", "OUTCOME", "RUN")
        for t, row in zip(times, rows, strict=True):
            grid.add_row(show_time(t), row["outcome"], row["run_id"][:8] if row["run_id"] else "-")
        print_table(grid)
    counts = Counter(row["outcome"] for row in rows)
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "nothing to do"
    click.echo(f"backfill {entry.name}: {_plural(len(rows), 'fire time')}: {summary}")


# Pause and resume live in their own module (schedule_pause.py); they are commands of this group.
schedules.add_command(pause)
schedules.add_command(resume)
schedules.add_command(show)
for _command in (create, update, delete, versions, rollback):  # schedules as data (schedule_defs.py)
    schedules.add_command(_command)
