"""``durably-sched work --until-idle``: only the worker half of ``serve --once``."""

from __future__ import annotations

import click

from ._base import SECONDS, CliCommand, CliError, settings, utc_option
from ._limits import limit_option, limits_from
from ._runner import concurrency_option, in_step_threads, stop_grace_option
from .once import OneShotOptions, run_one_shot
from .serve import check_lease, configure_logging, lease_options, log_options

EPILOG = """\b
Examples:
  durably-sched work --until-idle
  durably-sched work --until-idle --job nightly-report --max-seconds 15m
  durably-sched --database postgresql://durably@db/durably work --until-idle --concurrency 8

\b
Executes runs that are claimable now -- up to --concurrency at once, through the same
leases and checkpoints as serve -- and exits when none is left for it: 0, or 1 naming
the runs it executed that failed. Runs executing in other processes, runs of jobs it
does not have (or not named by --job), runs waiting for their concurrency key behind a
run executing elsewhere and runs claimable only later are not waited for. SIGTERM or
--max-seconds: no new claims, running steps get --stop-grace, their runs are released
for the next invocation or any worker. Fire times are not handled: serve --once does
both, serve --no-scheduler keeps a worker running."""


@click.command("work", cls=CliCommand, epilog=EPILOG)
@click.option(
    "--until-idle",
    is_flag=True,
    help="Exit once no run is claimable by this process (required: the one mode of `work`).",
)
@click.option(
    "--job",
    "jobs",
    multiple=True,
    metavar="NAME",
    help="Only runs of this job (repeatable). Default: every job found in --jobs.",
)
@concurrency_option("Runs executed at the same time.")
@click.option("--max-runs", type=click.IntRange(min=1), metavar="N", help="Claim at most N runs.")
@click.option(
    "--max-seconds",
    type=SECONDS,
    metavar="SECONDS",
    help="Stop claiming after this long (running steps then get --stop-grace).",
)
@stop_grace_option(
    "On SIGTERM or --max-seconds, how long running steps may take before their runs are released."
)
@lease_options
@log_options
@click.option("--worker-id", metavar="ID", help="Name this worker (default: host:pid:random).")
@limit_option
@utc_option
async def work(
    until_idle: bool,
    jobs: tuple[str, ...],
    concurrency: int,
    max_runs: int | None,
    max_seconds: float | None,
    stop_grace: float,
    heartbeat_interval: float,
    stale_threshold: float,
    log_format: str,
    log_level: str,
    worker_id: str | None,
    limits: tuple[tuple[str, int], ...],
) -> int:
    """Execute the runs claimable now, then exit (--until-idle)."""
    if not until_idle:
        raise CliError(
            "work needs --until-idle (run until no run is claimable, then exit); "
            "`durably-sched serve --no-scheduler` keeps a worker running"
        )
    if max_seconds is not None and max_seconds <= 0:
        raise CliError("--max-seconds must be longer than 0")
    check_lease(heartbeat_interval, stale_threshold)
    configure_logging(log_format, log_level.upper(), utc=settings().utc)
    options = OneShotOptions(
        scheduler=False,
        worker=True,
        concurrency=concurrency,
        heartbeat_interval=heartbeat_interval,
        stale_threshold=stale_threshold,
        stop_grace=stop_grace,
        retention=None,
        worker_id=worker_id,
        max_runs=max_runs,
        max_seconds=max_seconds,
        jobs=tuple(dict.fromkeys(jobs)),
        command="work --until-idle",
        limits=limits_from(limits),
    )
    return await in_step_threads(lambda: run_one_shot(settings(), options))
