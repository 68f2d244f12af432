"""``durably-sched workers list``: the worker registry, as the database sees it."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from ..registry import worker_fields
from ..store.base import WorkerRecord
from ._base import TIME_RULE_HELP, CliGroup, open_durably, settings, utc_option
from ._output import echo_json, print_table, seconds_text, show_time, table, utc_json

STATE_STYLE = {"live": "green", "stale": "yellow", "gone": "red"}


@click.group("workers", cls=CliGroup)
def workers() -> None:
    """The worker processes registered in the database.

    \b
    Examples:
      durably-sched workers list
      durably-sched workers list --json
    """


def worker_json(worker: WorkerRecord) -> dict[str, Any]:
    return worker_fields(worker, utc_json)


def _state(worker: WorkerRecord) -> Text:
    text: str = worker.state
    if worker.state == "gone" and worker.gone_by:
        text = f"gone (found by {worker.gone_by})"
    elif worker.process_gone:
        text = "gone (its process ended; not yet taken over)"
    return Text(text, style=STATE_STYLE.get(worker.state, ""))


def _jobs(worker: WorkerRecord) -> str:
    if not worker.jobs:
        return "(one run only)"  # trigger --here
    return ", ".join(worker.jobs)


def _runs(worker: WorkerRecord) -> str:
    held = f"{len(worker.leased)}/{worker.concurrency}"
    if worker.leased:
        held += " " + ", ".join(run_id[:8] for run_id in worker.leased[:3])
        held += f" +{len(worker.leased) - 3}" if len(worker.leased) > 3 else ""
    return held


@workers.command(
    "list",
    epilog="""\b
Examples:
  durably-sched workers list
  durably-sched workers list --json | jq '.[] | select(.state != "live")'

\b
STATE: live (its heartbeat is recent), stale (no heartbeat for longer than its lease:
stopped without deregistering, stalled, or cut off from the database), gone (a worker
on the same host found its process gone and took over its runs; or, for a worker on
the host this command runs on, its pid is checked now and no longer runs). RUNS: the
runs it holds now (leased and running; their ids follow) out of its concurrency. A
worker that stops cleanly removes itself; rows of dead workers are kept for a day.

"""
    + TIME_RULE_HELP,
)
@click.option("--json", "json_mode", is_flag=True, help="Print a JSON array.")
@utc_option
async def list_workers(json_mode: bool) -> None:
    """List registered workers: host, pid, heartbeat age, runs held, jobs."""
    async with open_durably(settings().database, read_only=True) as durably:
        found = await durably.list_workers()
    if json_mode:
        echo_json([worker_json(w) for w in found])
        return
    if not found:
        click.echo("no workers registered (start one with `durably-sched serve`)", err=True)
        return
    grid = table("ID", "STATE", "HOST", "PID", "HEARTBEAT", "RUNS", "STARTED", "JOBS", wrap=("RUNS", "JOBS"))
    for worker in found:
        grid.add_row(
            worker.id,
            _state(worker),
            worker.host,
            str(worker.pid),
            f"{seconds_text(worker.heartbeat_age.total_seconds())} ago",
            _runs(worker),
            show_time(worker.started_at),
            _jobs(worker),
        )
    print_table(grid)
