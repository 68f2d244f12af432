"""``durably-sched runs ...``: list, inspect, follow and act on runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click
from rich.console import Group
from rich.text import Text

from .._durations import format_duration
from .._tracebacks import user_frame
from ..attempt_views import attempt_fields, retry_budget
from ..durably import Durably
from ..errors import InvalidArgumentError
from ..record_fields import log_fields, step_fields
from ..retry import Retry
from ..store.base import RUN_STATUSES, LogRecord, RunQuery, RunRecord, RunStatus, StepRecord, WorkerRecord
from ..wait_views import children_fields, wait_fields, waiting_for_text
from . import _base
from ._attempts import attempts_section, known_jobs
from ._base import (
    DURATION,
    EXIT_OK,
    SECONDS,
    TIME_RULE_HELP,
    CliError,
    CliGroup,
    open_durably,
    settings,
    utc_option,
)
from ._loader import load_jobs
from ._output import (
    announce_run,
    compact,
    data_text,
    echo_json,
    echo_next_cursor,
    print_table,
    progress_count,
    progress_text,
    run_json,
    seconds_text,
    show_time,
    table,
    total_text,
    utc_json,
)
from ._wait import check_wait_options, follow_and_report, wait_options, wait_signals
from .trigger import parse_labels
from .workers import worker_json

RUN_ID_HELP = """\b
RUN_ID is a run's id or any unique prefix of it, at least 6 characters long
(`runs list`, progress bars and the serve log show the first 8)."""
TOTAL_HELP = """\b
Total time: from the run's first start to its finish (so far, while it runs),
across all its attempts and the time between them; `serve` logs the time of
each attempt ("run completed in ...")."""
WAIT_HELP = """\b
--wait follows the run as `trigger --wait` does: a live progress bar and the
run's logs, then its output (exit 0) or error (exit 1); --timeout gives up
(exit 124), Ctrl-C stops waiting, not the run (exit 130)."""

STATUS_STYLE = {
    "pending": "yellow",
    "running": "cyan",
    "waiting": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
}


@click.group("runs", cls=CliGroup)
def runs() -> None:
    """List and inspect runs; retry, retrigger, cancel, delete and purge them.

    \b
    Examples:
      durably-sched runs list --status failed
      durably-sched runs show 0b6e0c1e
      durably-sched runs retry 0b6e0c1e --wait

    \b
    A run is named by its id or any unique prefix of at least 6 characters.
    """


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


@runs.command(
    "list",
    epilog=f"""\b
Examples:
  durably-sched runs list
  durably-sched runs list --status failed --status cancelled --limit 100
  durably-sched runs list --schedule nightly-report --json
  durably-sched runs list --label customer=acme --created-after 2026-05-01
  durably-sched runs list --limit 100 --cursor 48211    # the next page

\b
Every filter given must hold (each --label too). A page stops at --limit runs; when
more match, the cursor of the next page is printed on stderr.

\b
ID shows the first 8 characters of each id (--json has whole ids); any unique
prefix of 6 or more names the run in the other `runs` commands.

{TOTAL_HELP}

{TIME_RULE_HELP}""",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(RUN_STATUSES),
    help="Only runs with this status (repeatable).",
)
@click.option("--job", metavar="NAME", help="Only runs of this job.")
@click.option("--schedule", metavar="NAME", help="Only runs fired by this schedule.")
@click.option(
    "--label", "labels", metavar="KEY=VALUE", multiple=True, help="Only runs with this label (repeatable)."
)
@click.option("--created-after", type=_base.TIME, help="Only runs created at or after this time.")
@click.option("--created-before", type=_base.TIME, help="Only runs created before this time.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=20, show_default=True)
@click.option("--cursor", metavar="CURSOR", help="The next page: the cursor a previous page printed.")
@click.option("--json", "json_mode", is_flag=True, help="Print a JSON array.")
@utc_option
async def list_runs(
    statuses: tuple[RunStatus, ...], job: str | None, schedule: str | None, labels: tuple[str, ...],
    created_after: datetime | None, created_before: datetime | None, limit: int, cursor: str | None,
    json_mode: bool,
) -> None:  # fmt: skip
    """List runs, newest first."""
    query = RunQuery(
        statuses=statuses, job_name=job, schedule=schedule, labels=parse_labels(labels), limit=limit,
        created_after=_zoned(created_after), before_created=_zoned(created_before), cursor=cursor,
    )  # fmt: skip
    async with open_durably(settings().database, read_only=True) as durably:
        try:
            page = await durably.list_runs_page(query)
        except InvalidArgumentError as exc:
            flag = "--cursor: " if str(exc).startswith("invalid cursor") else ""
            raise CliError(f"{flag}{exc}") from None
    found = page.runs
    if json_mode:
        echo_json([run_json(run) for run in found])
    elif not found:
        click.echo("no runs", err=True)
    else:
        _runs_table(found)
    echo_next_cursor(page.next_cursor)


def _zoned(moment: datetime | None) -> datetime | None:
    """A time typed on the command line, read in the display zone when it has no offset."""
    return None if moment is None else _base.in_display_zone(moment)


def _runs_table(found: list[RunRecord]) -> None:
    grid = table("ID", "JOB", "STATUS", "PROGRESS", "CREATED", "TOTAL", "KEY", wrap=("KEY",))
    for run in found:
        grid.add_row(
            run.id[:8],
            run.job_name,
            _status(run.status),
            progress_count(run.progress),
            show_time(run.created_at),
            total_text(run),
            run.idempotency_key or "-",
        )
    print_table(grid)


async def _all_logs(durably: Durably, run_id: str) -> list[LogRecord]:
    logs: list[LogRecord] = []
    while True:
        page = await durably.get_logs(run_id, after_id=logs[-1].id if logs else 0, limit=1000)
        logs.extend(page)
        if len(page) < 1000:
            return logs


@runs.command(
    "show",
    epilog=f"""\b
Examples:
  durably-sched runs show 0b6e0c1e
  durably-sched runs show 0b6e0c1e-5b0a-4a47-9d0e-2f6f1b3f8c11 --json | jq .steps

{RUN_ID_HELP}

{TOTAL_HELP}

{TIME_RULE_HELP}""",
)
@click.argument("run_id")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON object.")
@utc_option
async def show(run_id: str, json_mode: bool) -> None:
    """Show a run: status, input, steps with durations, progress, output or error, logs."""
    async with open_durably(settings().database, known_jobs(), read_only=True) as durably:
        run_id = await durably.resolve_run_id(run_id)
        run = await durably.get_run(run_id)
        steps = await durably.get_steps(run_id)
        logs = await _all_logs(durably, run_id)
        waiting = await durably.waiting_reason(run)
        children = await durably.list_children(run_id)
        attempts, budget = await durably.get_attempts(run_id), retry_budget(durably, run)
        holder = None
        if run.status == "running" and run.worker_id:
            holder = next((w for w in await durably.list_workers() if w.id == run.worker_id), None)
    if json_mode:
        echo_json(
            {
                **run_json(run),
                **wait_fields(run),
                "children": children_fields(children),
                "waiting": waiting,
                "error_location": user_frame(run.traceback),
                "holder": None if holder is None else worker_json(holder),
                "attempts": [attempt_fields(a, utc_json, budget) for a in attempts],
                "steps": [step_fields(s) for s in steps],
                "logs": [log_fields(e) for e in logs],
            }
        )
        return
    facts = table("", "", show_header=False, wrap=("",))
    facts.columns[0].style = "bold"
    rows: list[tuple[str, Any]] = [
        ("run", run.id),
        ("job", run.job_name),
        ("status", _status(run.status)),
        ("created", show_time(run.created_at)),
        ("first started", show_time(run.started_at)),
        ("finished", show_time(run.completed_at)),
        ("total time", _total_row(run)),
        ("attempt", _attempts(run)),
    ]
    if run.retry_policy is not None:
        rows.append(("retry", f"{Retry.from_json(run.retry_policy).describe()} (set for this run)"))
    if run.timeout is not None:
        rows.append(("timeout", f"{seconds_text(run.timeout)} per attempt (set for this run)"))
    if waiting:
        style = "yellow" if waiting.startswith(("no live worker", "retry")) else ""
        rows.append(("waiting", Text(waiting, style=style)))
    rows += _wait_rows(run, children)
    if run.worker_id and run.status == "running":
        rows.append(("worker", run.worker_id))
        rows.append(("lease", _lease(run, holder)))
    if run.idempotency_key:
        rows.append(("idempotency key", run.idempotency_key))
    if run.concurrency_key:
        rows.append(("concurrency key", run.concurrency_key))
    if run.labels:
        rows.append(("labels", " ".join(f"{k}={v}" for k, v in sorted(run.labels.items()))))
    rows.append(("input", compact(run.input, 200)))
    rows.append(("progress", progress_text(run.progress)))
    if run.status == "completed":
        rows.append(("output", compact(run.output, 500)))
    if run.error:
        step = f" (step '{run.failed_step_name}')" if run.failed_step_name else ""
        label = "error" if run.status == "failed" else "last error"
        rows.append((label, Text(run.error + step, style="red")))
        where = user_frame(run.traceback)
        if where:
            rows.append(("at", where))
    for name, value in rows:
        facts.add_row(name, value)
    parts: list[Any] = [facts]
    if run.traceback:
        # A run that is not failed (retrying, or completed after retries) keeps its last failure's.
        heading = "traceback" if run.status == "failed" else "traceback of the last failed attempt"
        parts += [Text(""), Text(heading, style="bold"), Text(run.traceback.rstrip(), style="red")]
    parts += attempts_section(run, attempts, budget)
    print_table(Group(*parts, *_steps_and_logs(steps, logs)))


def _wait_rows(run: RunRecord, children: list[RunRecord]) -> list[tuple[str, Any]]:
    """What a waiting run waits for; its parent and its children."""
    rows: list[tuple[str, Any]] = []
    text = waiting_for_text(run, show_time)
    if text:
        # "waiting  for event KEY (until T)", "waiting  sleeping until T": the label says it once
        rows.append(("waiting", Text(text.removeprefix("waiting "), style="cyan")))
    if run.parent_run_id:
        rows.append(("parent", run.parent_run_id))
    if children:
        rows.append(("children", " ".join(f"{c.id[:8]} ({c.status})" for c in children)))
    return rows


def _steps_and_logs(steps: list[StepRecord], logs: list[LogRecord]) -> list[Any]:
    """``runs show``'s steps and logs sections (nothing for what the run has none of)."""
    parts: list[Any] = []
    if steps:
        grid = table("#", "STEP", "STARTED", "DURATION", "OUTPUT", wrap=("OUTPUT",))
        for record in steps:
            grid.add_row(
                str(record.index),
                record.name,
                show_time(record.started_at),
                seconds_text(record.duration),
                compact(step_fields(record)["output"], 80),
            )
        parts += [Text(""), Text("steps", style="bold"), grid]
    if logs:
        grid = table("TIME", "LEVEL", "STEP", "MESSAGE", wrap=("MESSAGE",))
        for entry in logs:
            message = entry.message + (f" {data_text(entry.data)}" if entry.data else "")
            grid.add_row(show_time(entry.created_at), entry.level, entry.step_name or "-", message)
        parts += [Text(""), Text("logs", style="bold"), grid]
    return parts


def _total_row(run: RunRecord) -> str:
    took = total_text(run)
    if took == "-":
        return "- (not started yet)"
    attempts = f"{run.attempt} attempts" if run.attempt > 1 else "1 attempt"
    return f"{took} (first start to finish, {attempts})"


@runs.command(
    "watch",
    epilog=f"""\b
Example:
  durably-sched runs watch 0b6e0c1e

\b
Exit 0 when the run completes (its output is printed), 1 when it fails or is
cancelled, 124 on --timeout, 130 on Ctrl-C (the run continues).

{RUN_ID_HELP}

{TIME_RULE_HELP}""",
)
@click.argument("run_id")
@click.option("--timeout", type=SECONDS, metavar="SECONDS", help="Give up after this long (exit 124).")
@click.option("--json", "json_mode", is_flag=True, help="No progress bar; one JSON object at the end.")
@utc_option
async def watch(run_id: str, timeout: float | None, json_mode: bool) -> int:
    """Follow a run live (progress bar and logs) until it ends."""
    interrupts, handling = wait_signals(True)
    with handling:
        async with open_durably(settings().database, known_jobs(), read_only=True) as durably:
            run_id = await durably.resolve_run_id(run_id)
            return await follow_and_report(durably, run_id, interrupts, timeout=timeout, json_mode=json_mode)


def _attempts(run: RunRecord) -> str:
    if not run.failed_attempts or (run.status == "failed" and run.failed_attempts == 1):
        return str(run.attempt)
    failed = f"{run.failed_attempts} failed"
    return f"{run.attempt} ({failed})"


def _lease(run: RunRecord, holder: WorkerRecord | None) -> str:
    """``expires in 24s; heartbeat 1.0s ago`` (times by the database's clock when it has one)."""
    now = holder.read_at if holder is not None else datetime.now(UTC)
    parts = []
    if run.lease_expires_at is not None:
        left = (run.lease_expires_at - now).total_seconds()
        if left >= 0:
            parts.append(f"expires in {seconds_text(left)}")
        else:
            parts.append(f"expired {seconds_text(-left)} ago (another worker may take the run over)")
    if holder is None:
        parts.append("holder not in the worker registry")
    else:
        parts.append(f"heartbeat {seconds_text(holder.heartbeat_age.total_seconds())} ago")
        if holder.state != "live":
            parts.append(f"holder {holder.state}")
    return "; ".join(parts)


def _done(run: RunRecord) -> str:
    return f"{run.step_count} step{'s' if run.step_count != 1 else ''} done"


F = TypeVar("F", bound=Callable[..., Any])
_FOLLOWED_HELP = f"{WAIT_HELP}\n\n{RUN_ID_HELP}\n\n{TIME_RULE_HELP}"


def _followed_run_options(command: F) -> F:
    """RUN_ID, --wait/--timeout/--json and --utc: a run action that can be followed to its end."""
    return click.argument("run_id")(wait_options(utc_option(command)))


@runs.command(
    "retry",
    epilog=f"""\b
Examples:
  durably-sched runs retry 0b6e0c1e
  durably-sched runs retry 0b6e0c1e --wait --timeout 10m

\b
The run keeps its id, input and completed steps: it resumes after the last one.
Failed runs are never retried automatically; this command (or the library's
durably.retry) is how a failed run runs again.

{_FOLLOWED_HELP}""",
)
@_followed_run_options
async def retry(run_id: str, wait: bool, timeout: float | None, json_mode: bool) -> int:
    """Put a failed or cancelled run back to pending; it resumes after its last completed step."""

    async def act(durably: Durably) -> tuple[RunRecord, dict[str, Any], str]:
        run = await durably.retry(await durably.resolve_run_id(run_id))
        line = (
            f"run {run.id} is pending again ({_done(run)}; it resumes after the last one, "
            "with a fresh retry budget)"
        )
        return run, {"action": "retry"}, line

    return await _act_and_follow(act, with_jobs=False, wait=wait, timeout=timeout, json_mode=json_mode)


async def _act_and_follow(
    act: Callable[[Durably], Awaitable[tuple[RunRecord, dict[str, Any], str]]],
    *,
    with_jobs: bool,
    wait: bool,
    timeout: float | None,
    json_mode: bool,
) -> int:
    """``runs retry|retrigger``: the action, what it printed at once, then as ``trigger --wait``."""
    check_wait_options(wait, timeout)
    jobs = (load_jobs(settings().jobs),) if with_jobs else ()
    interrupts, handling = wait_signals(wait)
    with handling:
        async with open_durably(settings().database, *jobs) as durably:
            run, extra, line = await act(durably)
            announce_run(run, extra, line, json_mode=json_mode, wait=wait)
            if not wait:
                return EXIT_OK
            return await follow_and_report(
                durably, run.id, interrupts, timeout=timeout, json_mode=json_mode, extra=extra
            )


@runs.command(
    "retrigger",
    epilog=f"""\b
Examples:
  durably-sched runs retrigger 0b6e0c1e
  durably-sched runs retrigger 0b6e0c1e --wait --json

\b
A new run (a new id, no idempotency key) of the same job with the same input,
concurrency key and labels; the original run is left as it is.

{_FOLLOWED_HELP}""",
)
@_followed_run_options
async def retrigger(run_id: str, wait: bool, timeout: float | None, json_mode: bool) -> int:
    """Start a new run of the same job with the same input, concurrency key and labels."""

    async def act(durably: Durably) -> tuple[RunRecord, dict[str, Any], str]:
        original = await durably.resolve_run_id(run_id)
        run = (await durably.retrigger(original)).record
        line = f"run {run.id} created ({run.job_name}, retrigger of {original})"
        return run, {"action": "retrigger", "retrigger_of": original}, line

    return await _act_and_follow(act, with_jobs=True, wait=wait, timeout=timeout, json_mode=json_mode)


def _run_id_command(name: str) -> Callable[[Callable[..., Any]], click.Command]:
    """``runs NAME RUN_ID``: its help ends with an example and what RUN_ID may be."""
    epilog = f"\b\nExample:\n  durably-sched runs {name} 0b6e0c1e\n\n{RUN_ID_HELP}"

    def make(f: Callable[..., Any]) -> click.Command:
        return runs.command(name, epilog=epilog)(click.argument("run_id")(f))

    return make


@_run_id_command("cancel")
async def cancel(run_id: str) -> None:
    """Cancel a pending run, or stop a running one after its current step."""
    async with open_durably(settings().database) as durably:
        run_id = await durably.resolve_run_id(run_id)
        before = await durably.get_run(run_id)
        if before.status == "cancelled":
            click.echo(f"run {run_id} was already cancelled")
            return
        run = await durably.cancel(run_id)
    note = " (it stops after its current step)" if before.status == "running" else ""
    click.echo(f"run {run.id} cancelled{note}")


@_run_id_command("delete")
async def delete(run_id: str) -> None:
    """Delete a run that is not running, with its steps and logs."""
    async with open_durably(settings().database) as durably:
        run_id = await durably.resolve_run_id(run_id)
        await durably.delete_run(run_id)
    click.echo(f"run {run_id} deleted")


@runs.command(
    "purge",
    epilog="""\b
Examples:
  durably-sched runs purge --older-than 30d
  durably-sched runs purge --older-than 12h""",
)
@click.option(
    "--older-than",
    type=DURATION,
    required=True,
    metavar="DURATION",
    help="Finished more than this long ago (30d, 12h, 90m).",
)
async def purge(older_than: timedelta) -> None:
    """Delete finished runs (completed, failed, cancelled) that ended more than a while ago."""
    async with open_durably(settings().database) as durably:
        count = await durably.purge_runs(older_than)
    click.echo(
        f"purged {count} run{'s' if count != 1 else ''} finished more than {format_duration(older_than)} ago"
    )
