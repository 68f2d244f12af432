"""Human output (aligned tables, local times) and the ``--json`` shapes."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

import click
from rich.console import Console, RenderableType
from rich.table import Table

from ..record_fields import attributes, clock_text, fire_fields, run_key_fields, utc_attributes, utc_text
from ..store.base import FireRecord, LogRecord, Progress, RunRecord
from ._base import display_utc

PIPE_WIDTH = 240  # tables written to a pipe are not wrapped at 80 columns


def console(*, stderr: bool = False) -> Console:
    """A console on the current stdout/stderr: no markup (user data may contain brackets)."""
    stream = sys.stderr if stderr else sys.stdout
    interactive = stream.isatty()
    return Console(
        file=stream,
        markup=False,
        highlight=False,
        emoji=False,
        width=None if interactive else PIPE_WIDTH,
        soft_wrap=not interactive,
    )


def table(*columns: str, wrap: Sequence[str] = (), show_header: bool = True) -> Table:
    """An aligned table without borders; only the ``wrap`` columns may wrap, the others never do."""
    grid = Table(box=None, pad_edge=False, header_style="bold", show_edge=False, show_header=show_header)
    for name in columns:
        grid.add_column(name, no_wrap=name not in wrap, overflow="fold")
    return grid


def print_table(grid: RenderableType) -> None:
    """Print a table (or any renderable) on stdout; plain text without trailing padding for pipes."""
    out = console()
    if out.is_terminal:
        out.print(grid)
        return
    with out.capture() as captured:
        out.print(grid)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def announce_run(run: RunRecord, extra: dict[str, Any], line: str, *, json_mode: bool, wait: bool) -> None:
    """What a command that made or re-queued a run prints at once: ``line``, on stderr while waiting
    (stdout is kept for the run's output); with ``--json`` and no wait, the run's id, job and status
    with ``extra``; with ``--json`` and a wait, nothing until the run ends."""
    if json_mode and not wait:
        echo_json({"id": run.id, "job_name": run.job_name, "status": run.status, **extra})
    elif not json_mode:
        click.echo(line, err=wait)


# --- times ----------------------------------------------------------------------------------------


def shown(value: datetime) -> datetime:
    """The time in the display zone: this machine's time zone, or UTC with ``--utc``."""
    return value.astimezone(UTC) if display_utc() else value.astimezone()


def show_time(value: datetime | None) -> str:
    """``2026-11-21 05:30:02+01:00`` in the display zone, offset always written ("-" for none)."""
    if value is None:
        return "-"
    return shown(value).isoformat(sep=" ", timespec="seconds")


def zone_time(value: datetime, zone: tzinfo) -> str:
    """A fire time on its schedule's own clock: ``2026-03-29 03:00:00+02:00``."""
    return value.astimezone(zone).isoformat(sep=" ", timespec="seconds")


def zone_json(value: datetime | None, zone: tzinfo) -> str | None:
    """The same, for --json: ``2026-03-29T03:00:00+02:00``."""
    return None if value is None else value.astimezone(zone).isoformat(timespec="seconds")


utc_json = utc_text
"""``2026-11-21T04:30:02.123Z``: what every ``--json`` time looks like."""


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.3f}s" if seconds < 1 else f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return clock_text(seconds)


def run_duration(run: RunRecord) -> float | None:
    """The run's *total* time: from its first start to its finish (to now while unfinished).

    It spans every attempt and the time between them (a resume after a crash, a retry). The time of
    one attempt (claim to finish) is what ``serve`` logs ("run completed in ..."); the store keeps no
    start time per attempt, so the CLI shows the total only, always labelled as such.
    """
    if run.started_at is None:
        return None
    end = run.completed_at or datetime.now(UTC)
    return max(0.0, (end - run.started_at).total_seconds())


def total_text(run: RunRecord) -> str:
    """``42.3s``, or ``12.0s so far`` for a run that has not finished ("-" before its first start)."""
    took = run_duration(run)
    if took is None:
        return "-"
    return seconds_text(took) + ("" if run.completed_at is not None else " so far")


def compact(value: Any, limit: int = 60) -> str:
    """A JSON value on one line, shortened to ``limit`` characters."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_count(progress: Progress | None) -> str:
    """``3/20`` (or ``3``): for tables."""
    if progress is None:
        return "-"
    return f"{progress.current}/{progress.total}" if progress.total is not None else str(progress.current)


def progress_text(progress: Progress | None) -> str:
    if progress is None:
        return "-"
    amount = f"{progress.current}/{progress.total}" if progress.total is not None else str(progress.current)
    return f"{amount} {progress.message}" if progress.message else amount


# --- JSON shapes ------------------------------------------------------------------------------------


def progress_json(progress: Progress | None) -> dict[str, Any] | None:
    if progress is None:
        return None
    return {"current": progress.current, "total": progress.total, "message": progress.message}


def run_json(run: RunRecord) -> dict[str, Any]:
    return {
        **run_key_fields(run),
        **attributes(run, "input", "output", "error", "failed_step_name"),
        "progress": progress_json(run.progress),
        **attributes(run, "attempt", "failed_attempts"),
        "not_before": utc_json(run.not_before),
        **attributes(run, "retry_policy", "timeout", "traceback", "step_count", "worker_id"),
        **utc_attributes(run, "lease_expires_at", "created_at", "started_at", "completed_at", "updated_at"),
        "total_duration": run_duration(run),
    }


def fire_json(record: FireRecord, key: str, run_status: str | None) -> dict[str, Any]:
    return fire_fields(record, key, run_status)


def data_text(data: dict[str, Any], limit: int = 120) -> str:
    """A log entry's data as ``key=value`` pairs, as the serve log writes them."""
    return compact(" ".join(f"{k}={compact(v, limit)}" for k, v in data.items()), limit)


def log_line(entry: LogRecord) -> str:
    """A run's stored log entry, as `--wait` and `runs watch` print it: like a serve log line."""
    step = f" {entry.step_name}:" if entry.step_name else ""
    data = f" {data_text(entry.data)}" if entry.data else ""
    return f"{show_time(entry.created_at)} {entry.level.upper():<5}{step} {entry.message}{data}"


def echo_next_cursor(cursor: str | None) -> None:
    """On stderr, after a page of a list that has more: the cursor of the next page."""
    if cursor is not None:
        click.echo(f"next cursor: {cursor}  (--cursor {cursor} for the next page)", err=True)
