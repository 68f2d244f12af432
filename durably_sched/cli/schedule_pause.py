"""``durably-sched schedules pause|resume``: stop and restart a schedule at run time, in every process."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import click

from .._durations import format_duration
from ..durably import Durably
from ..errors import ConfigError
from ..schedule.config import ScheduleEntry, SchedulesConfig, load_schedules
from ..schedule.cron import next_fire_time
from ..schedule.pausing import ResumeResult, check_actor, check_reason, state_fields
from ..store.base import ScheduleState
from ._base import EXIT_USAGE, CliCommand, CliError, open_durably, settings, utc_option
from ._loader import job_inputs, load_jobs
from ._output import echo_json, print_table, show_time, table, utc_json
from .schedule_defs import with_stored

PAUSED_COUNT_LIMIT = 10_000
"""How many fire records ``resume`` reads back to count the paused fire times it leaves alone."""


def state_json(state: ScheduleState | None) -> dict[str, Any]:
    """The run-time state of a schedule in ``--json`` output (``schedules list``, pause, resume)."""
    return state_fields(state, utc_json)


def pause_text(state: ScheduleState) -> str:
    """``paused 2026-05-04 10:02:11+02:00 by alice@host: reason`` (the current or last pause)."""
    reason = f": {state.pause_reason}" if state.pause_reason else ""
    auto = " automatically" if state.auto_paused else ""
    return f"paused{auto} {show_time(state.paused_at)} by {state.paused_by or '?'}{reason}"


def state_word(entry: ScheduleEntry, state: ScheduleState | None) -> str:
    """The STATE column: active, paused, auto-paused, disabled (in the file), or both."""
    paused = state is not None and state.paused
    word = ("auto-paused" if state is not None and state.auto_paused else "paused") if paused else ""
    if not entry.enabled:
        return f"disabled, {word}" if word else "disabled"
    return word or "active"


def state_lines(state: ScheduleState | None) -> list[str]:
    """What a schedule's state says beyond its word: who paused it and why; failures."""
    if state is None:
        return []
    lines = [pause_text(state)] if state.paused else []
    if state.consecutive_failures and not (state.paused and state.auto_paused):  # its reason says it
        count = state.consecutive_failures
        last = f" (last: run {state.last_failed_run_id})" if state.last_failed_run_id else ""
        success = show_time(state.last_success_at) if state.last_success_at else "never"
        lines.append(
            f"{count} consecutive failed run{'s' if count != 1 else ''}{last}; last success: {success}"
        )
    return lines


def _load_lenient() -> tuple[SchedulesConfig | None, ConfigError | None]:
    try:
        return load_schedules(settings().schedules), None
    except ConfigError as exc:
        return None, exc


def _check_defined(name: str, config: SchedulesConfig) -> None:
    if name not in config.schedules:
        known = ", ".join(sorted(config.schedules)) or "none"
        raise CliError(f"unknown schedule '{name}' in {config.path} (defined: {known})")


async def _check_known_to_database(durably: Durably, name: str, problem: Exception | None) -> None:
    """When the schedules file cannot be read (an emergency pause while it is being edited), a
    schedule the database knows (it has a cursor) may still be paused."""
    if name not in await durably.get_cursors():
        raise CliError(
            f"unknown schedule '{name}': the database has no schedule of that name and the schedules "
            f"file cannot be read ({problem})"
        )
    click.echo(f"warning: {problem}; pausing '{name}', which the database knows", err=True)


@click.command(
    "pause",
    cls=CliCommand,
    epilog="""\b
Examples:
  durably-sched schedules pause nightly-report --reason "warehouse migration, OPS-1234"
  durably-sched schedules pause nightly-report --by deploy-bot --json

\b
Every scheduler process sees the pause at its next tick (at most 30 s, at once for a
schedule that is due) and records the schedule's fire times from then on as "paused"
(see `schedules history`); runs already started go on. The pause is stored in the
database: it survives restarts and reloads of the schedules file. Pausing a paused
schedule changes nothing and exits 0. `schedules resume NAME` undoes it.""",
)
@click.argument("name")
@click.option("--reason", metavar="TEXT", help="Why; shown by `schedules list` and in the logs.")
@click.option("--by", metavar="TEXT", help="Who pauses it (default: user@host).")
@click.option("--json", "json_mode", is_flag=True, help="Print the schedule's state as JSON.")
@utc_option
async def pause(name: str, reason: str | None, by: str | None, json_mode: bool) -> None:
    """Pause a schedule in every scheduler process until it is resumed."""
    text, actor = check_reason(reason), check_actor(by)
    config, problem = _load_lenient()
    config = await with_stored(config, name)
    entry: ScheduleEntry | None = None
    if config is not None:
        _check_defined(name, config)
        entry = config.schedules[name]
    async with open_durably(settings().database) as durably:
        if config is None:
            await _check_known_to_database(durably, name, problem)
        change = await durably.pause_schedule(name, reason=text, by=actor)
    state = change.state
    if json_mode:
        echo_json({"schedule": name, "changed": change.changed, **state_json(state)})
        return
    if not change.changed:
        click.echo(f"schedule '{name}' is already {pause_text(state)}; nothing changed")
        return
    click.echo(
        f"schedule '{name}' {pause_text(state)}; every scheduler records its fire times as paused "
        "from its next tick"
    )
    if entry is not None and not entry.enabled:
        click.echo(f"note: '{name}' is also disabled in {config.path if config else 'the schedules file'}")


@click.command(
    "resume",
    cls=CliCommand,
    epilog="""\b
Examples:
  durably-sched schedules resume nightly-report
  durably-sched schedules resume nightly-report --catchup

\b
The schedule fires again from its next fire time; fire times of the paused span stay
recorded as "paused" and are not run. With --catchup the schedule's own catch-up policy
and window apply to them: catchup: all runs every paused fire time inside catchup_window,
latest only the newest, none nothing. --catchup on a schedule that is no longer paused
catches up its last pause (fire times already run are never run again). Resuming a
schedule that is not paused changes nothing and exits 0.""",
)
@click.argument("name")
@click.option("--catchup", is_flag=True, help="Run the paused fire times by the schedule's catch-up policy.")
@click.option("--by", metavar="TEXT", help="Who resumes it (default: user@host).")
@click.option("--json", "json_mode", is_flag=True, help="Print the result as JSON.")
@utc_option
async def resume(name: str, catchup: bool, by: str | None, json_mode: bool) -> None:
    """Resume a paused schedule; with --catchup, run its paused fire times by its catch-up policy."""
    actor = check_actor(by)
    s = settings()
    jobs = None
    problem: ConfigError | None = None
    if catchup:  # the catch-up triggers runs: the file and the jobs must be right
        jobs = load_jobs(s.jobs)
        config: SchedulesConfig | None = load_schedules(s.schedules, job_inputs(jobs))
    else:
        config, problem = _load_lenient()
    config = await with_stored(config, name)
    async with open_durably(s.database, jobs) as durably:
        if config is not None:
            durably.use_schedules(config)
        result = await durably.resume_schedule(name, catchup=catchup, by=actor)
        paused_left = await _paused_left(durably, name, result) if not catchup else 0
    entry = config.schedules.get(name) if config is not None else None
    if result.state is None and entry is None:
        where = f" in {config.path}" if config is not None else f" ({problem})"
        raise CliError(f"unknown schedule '{name}': not defined{where} and never paused", EXIT_USAGE)
    if json_mode:
        echo_json(
            {
                "schedule": name,
                "changed": result.changed,
                **state_json(result.state),
                "caught_up": [
                    {
                        "fire_time": utc_json(t),
                        "outcome": r.outcome,
                        "run_id": r.run.id if r.run is not None else None,
                    }
                    for t, r in result.caught_up
                ],
            }
        )
        return
    _show_resume(name, result, entry, catchup, paused_left)


async def _paused_left(durably: Durably, name: str, result: ResumeResult) -> int:
    state = result.state
    if not result.changed or state is None or state.paused_at is None:
        return 0
    records = await durably.list_fire_records(name, limit=PAUSED_COUNT_LIMIT)
    return sum(1 for r in records if r.outcome == "paused" and r.fire_time >= state.paused_at)


def _show_resume(
    name: str, result: ResumeResult, entry: ScheduleEntry | None, catchup: bool, paused_left: int
) -> None:
    state = result.state
    if state is None:  # defined, but never paused
        click.echo(f"schedule '{name}' is not paused; nothing to resume")
        return
    if result.changed:
        since = f" (it was {pause_text(state)})"
        upcoming = ""
        if entry is not None:
            try:
                following = next_fire_time(entry.cron, entry.timezone, datetime.now(UTC))
                upcoming = f"; next fire time {show_time(following)}"
            except ValueError:
                upcoming = ""
        click.echo(f"schedule '{name}' resumed by {state.resumed_by}{since}{upcoming}")
    elif catchup and state.paused_at is not None and state.resumed_at is not None:
        click.echo(
            f"schedule '{name}' is not paused; catching up its last pause, "
            f"{show_time(state.paused_at)} to {show_time(state.resumed_at)}"
        )
    else:
        click.echo(f"schedule '{name}' is not paused; nothing to resume")
        return
    if not catchup:
        if paused_left:
            policy = f"catchup: {entry.catchup}" if entry is not None else "its catch-up policy"
            click.echo(
                f"{paused_left} paused fire time{'s' if paused_left != 1 else ''} not run "
                f"(`schedules resume {name} --catchup` runs them by {policy})"
            )
        return
    if result.caught_up:
        grid = table("FIRE TIME", "OUTCOME", "RUN")
        for t, r in result.caught_up:
            grid.add_row(show_time(t), r.outcome, r.run.id if r.run is not None else "-")
        print_table(grid)
    if entry is None:
        return
    counts = ", ".join(
        f"{n} {outcome}" for outcome, n in sorted(Counter(r.outcome for _, r in result.caught_up).items())
    )
    rule = f"catchup: {entry.catchup}, catchup_window: {format_duration(entry.catchup_window)}"
    if entry.catchup == "none":
        click.echo(f"catch-up ({rule}): no paused fire time is run")
    else:
        click.echo(f"catch-up ({rule}): {counts or 'no fire time of the pause is inside the window'}")
