"""``durably-sched workers list``: the worker registry, as the database sees it."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from ..registry import worker_fields
from ..schedule.ownership import BUCKETS, OFFSET_WARN, scheduler_fields
from ..store.base import SchedulerRecord, WorkerRecord
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


def worker_json(worker: WorkerRecord, scheduler: SchedulerRecord | None = None) -> dict[str, Any]:
    out = worker_fields(worker, utc_json)
    out["scheduler"] = None if scheduler is None else scheduler_json(scheduler)
    return out


def scheduler_json(scheduler: SchedulerRecord) -> dict[str, Any]:
    return scheduler_fields(scheduler, utc_json)


def _offset(seconds: float | None) -> Text:
    if seconds is None:
        return Text("?")
    way = "ahead" if seconds > 0 else "behind"
    text = f"{abs(seconds):.1f}s {way}" if abs(seconds) >= 0.05 else "0.0s"
    return Text(text, style="yellow" if abs(seconds) > OFFSET_WARN else "")


def _schedulers_table(found: list[SchedulerRecord]) -> Any:
    grid = table("SCHEDULER", "STATE", "HOST", "PID", "BUCKETS", "SCHEDULES", "CLOCK", "HEARTBEAT")
    for s in found:
        grid.add_row(
            s.id,
            Text("live" if s.live else "stale", style="green" if s.live else "yellow"),
            s.host,
            str(s.pid),
            f"{s.buckets}/{BUCKETS}",
            str(s.schedules),
            _offset(s.clock_offset),
            f"{seconds_text((s.read_at - s.heartbeat_at).total_seconds())} ago",
        )
    return grid


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

\b
The schedulers (serves with a scheduler) come first: BUCKETS is how many of the 256
schedule buckets each owns now (the schedules are shared among the live ones),
SCHEDULES how many it has loaded, CLOCK how far its host's clock is from the
database's (fire times fall due by the database's clock). In --json, each worker has
a "scheduler" object (null for a worker without a scheduler).

"""
    + TIME_RULE_HELP,
)
@click.option("--json", "json_mode", is_flag=True, help="Print a JSON array.")
@utc_option
async def list_workers(json_mode: bool) -> None:
    """List registered workers: host, pid, heartbeat age, runs held, jobs."""
    async with open_durably(settings().database, read_only=True) as durably:
        found = await durably.list_workers()
        schedulers = await durably.list_schedulers()
    by_id = {s.id: s for s in schedulers}
    if json_mode:
        echo_json([worker_json(w, by_id.get(w.id)) for w in found])
        return
    if schedulers:
        print_table(_schedulers_table(schedulers))
        click.echo()
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
