"""``durably-sched serve``: the scheduler and a worker in one process, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import click

from .._durations import format_duration
from ..durably import Durably, create_durably
from ..errors import ConfigError
from ..jobs import JobDefinition
from ..ops.orphans import OrphanedJobsWatch
from ..schedule.config import SchedulesConfig, load_schedules
from ..schedule.scheduler import Scheduler
from ._base import (
    EXIT_FAILURE,
    EXIT_OK,
    HTTP_ADDRESS,
    RETENTION,
    SECONDS,
    CliCommand,
    CliError,
    HttpAddress,
    Settings,
    StepThreads,
    redact_url,
    settings,
)
from ._loader import job_inputs, load_jobs
from ._wait import Interrupts

log = logging.getLogger("durably_sched.serve")

RELOAD_INTERVAL = 1.0
"""How often the schedules file is checked for changes (mtime, size, inode)."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class ServeOptions:
    scheduler: bool
    worker: bool
    concurrency: int
    polling_interval: float
    heartbeat_interval: float
    stale_threshold: float
    http: HttpAddress | None
    stop_grace: float
    retention: timedelta | None
    worker_id: str | None


def configure_logging(fmt: str, level: str) -> None:
    """Logging for serve (text or JSON lines on stderr), set up by durably_sched.ops.logging."""
    from ..ops.logging import configure_logging as configure

    configure(fmt, level)  # type: ignore[arg-type]


def _file_state(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Server:
    """One serve process: owns the Durably instance, the scheduler and the side services."""

    def __init__(self, cli: Settings, options: ServeOptions, stop: asyncio.Event) -> None:
        self.cli = cli
        self.options = options
        self.stop_requested = stop
        self.config: SchedulesConfig | None = None
        self.scheduler: Scheduler | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- configuration ------------------------------------------------------------------------
    def _initial_schedules(self, inputs: dict[str, Any]) -> SchedulesConfig | None:
        path = self.cli.schedules
        if not self.options.scheduler:
            return None
        if not os.path.exists(path) and not self.cli.schedules_explicit:
            log.warning(
                "no schedules file at %s: running without schedules (it is picked up when created)", path
            )
            return SchedulesConfig(path=path)
        return load_schedules(path, inputs)

    async def _watch_schedules(self, inputs: dict[str, Any], seen: tuple[int, int, int] | None) -> None:
        """Hot reload: a changed file is loaded again; an invalid one is reported and ignored."""
        path = self.cli.schedules
        scheduler = self.scheduler
        assert scheduler is not None
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            current = _file_state(path)
            if current == seen:
                continue
            seen = current
            try:
                config = await asyncio.to_thread(load_schedules, path, inputs)
            except ConfigError as exc:
                kept = len(self.config.schedules) if self.config is not None else 0
                log.error("schedules not reloaded (keeping the %d loaded before): %s", kept, exc)
                continue
            try:
                await scheduler.reload(config)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("could not apply the changed schedules (retrying): %s", exc)
                seen = None
                continue
            self.config = config

    # -- the process ---------------------------------------------------------------------------
    async def run(self) -> int:
        opts = self.options
        jobs = load_jobs(self.cli.jobs)
        inputs = job_inputs(jobs)
        if not jobs:
            log.warning(
                "no jobs found in '%s' (no module attribute holds a job made by define_job)", self.cli.jobs
            )
        seen = _file_state(self.cli.schedules)
        self.config = self._initial_schedules(inputs)
        try:
            durably = create_durably(
                self.cli.database,
                polling_interval=opts.polling_interval,
                heartbeat_interval=opts.heartbeat_interval,
                stale_threshold=opts.stale_threshold,
                max_concurrent_runs=opts.concurrency,
                worker_id=opts.worker_id,
            )
        except ValueError as exc:  # e.g. heartbeat interval not shorter than the stale threshold
            raise CliError(f"serve: {exc}") from None
        durably.register(jobs)
        http_server: Any = None
        metrics: Any = None
        retention: Any = None
        orphans: OrphanedJobsWatch | None = None
        try:
            await durably.migrate()
            await durably.start(worker=opts.worker)
            if self.config is not None:
                self.scheduler = Scheduler(durably, self.config)
                self.scheduler.start()
                self._tasks.append(
                    asyncio.get_running_loop().create_task(
                        self._watch_schedules(inputs, seen), name="durably-schedules-reload"
                    )
                )
            http_server, metrics = await self._start_http(durably)
            retention = self._start_retention(durably)
            orphans = OrphanedJobsWatch(durably, first_after=max(2 * opts.heartbeat_interval, 5.0))
            orphans.start()
            where = HttpAddress(http_server.host or "0.0.0.0", http_server.port) if http_server else None
            self._log_started(durably, jobs, str(where) if where else None, retention is not None)
            await self.stop_requested.wait()
            log.info(
                "stopping: no new step starts; steps in flight get up to %ss to finish, then their "
                "runs are released",
                f"{opts.stop_grace:g}",
            )
        finally:
            if orphans is not None:
                await orphans.stop()
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.scheduler is not None:
                await self.scheduler.stop()
            if retention is not None:
                await retention.stop()
            await durably.stop(grace=opts.stop_grace)
            if http_server is not None:
                await http_server.close()
            if metrics is not None:
                metrics.close()
            await durably.close()
        log.info("stopped")
        return EXIT_OK

    async def _start_http(self, durably: Durably) -> tuple[Any, Any]:
        """The /healthz, /readyz and /metrics server and its metrics, when --http is given."""
        address = self.options.http
        if address is None:
            return None, None
        from ..ops.http import start_http_server
        from ..ops.metrics import Metrics

        metrics = Metrics(durably, self.scheduler)
        try:
            server = await start_http_server(
                address.host,
                address.port,
                durably=durably,
                scheduler=self.scheduler,
                metrics=metrics,
                worker=self.options.worker,
            )
        except OSError as exc:
            metrics.close()
            raise CliError(f"--http {address}: cannot listen: {exc.strerror or exc}", EXIT_FAILURE) from None
        return server, metrics

    def _start_retention(self, durably: Durably) -> Any:
        older_than = self.options.retention
        if older_than is None:
            return None
        from ..ops.retention import Retention

        retention = Retention(durably, older_than, lambda: self.config)
        retention.start()
        return retention

    def _log_started(
        self, durably: Durably, jobs: dict[str, JobDefinition[Any, Any]], http: str | None, retention: bool
    ) -> None:
        opts = self.options
        roles = "+".join(role for role, on in (("scheduler", opts.scheduler), ("worker", opts.worker)) if on)
        names = ", ".join(sorted(job.name for job in jobs.values())) or "none"
        schedules = (
            f"{len(self.config.schedules)} schedules from {self.cli.schedules}"
            if self.config is not None
            else "scheduler off"
        )
        log.info(
            "durably-sched serve started: database %s, jobs '%s' (%s), %s, roles %s, worker id %s, "
            "concurrency %d, http %s, retention %s",
            redact_url(self.cli.database),
            self.cli.jobs,
            names,
            schedules,
            roles,
            durably.worker.worker_id,
            opts.concurrency,
            http or "off",
            _duration_text(opts.retention) if retention and opts.retention is not None else "off",
        )


def _duration_text(value: timedelta) -> str:
    """``30d`` rather than ``4w2d`` for whole days."""
    if value % timedelta(days=1) == timedelta(0):
        return f"{value.days}d"
    return format_duration(value)


async def _serve(cli: Settings, options: ServeOptions) -> int:
    def first(signum: int) -> None:
        log.info(
            "received %s: stopping gracefully (up to %ss); send it again to exit at once",
            signal.Signals(signum).name,
            f"{options.stop_grace:g}",
        )

    interrupts = Interrupts(
        on_second="second signal: exiting at once; unfinished runs resume when their leases expire",
        on_first=first,
    )
    with interrupts.installed(signal.SIGTERM, signal.SIGINT):
        return await Server(cli, options, interrupts.event).run()


EPILOG = """\b
Examples:
  durably-sched serve
  durably-sched serve --concurrency 8 --http 127.0.0.1:9464
  durably-sched --database postgresql://durably@db/durably serve --no-scheduler   # workers only
  DURABLY_HTTP=0.0.0.0:8080 durably-sched serve --log-format json --stop-grace 25

\b
At start: migrates the schema (idempotent), imports --jobs (a module, or a package with all
its submodules, from the current directory) and registers every job found, loads
--schedules. With the scheduler on, a missing schedules file is an error when --schedules
or DURABLY_SCHEDULES names it; a missing default schedules.yaml only logs a warning, and
the file is picked up once it appears. The file is checked every second and reloaded when
it changes; an invalid version is logged and the last good one stays in force.

\b
SIGTERM or SIGINT: stop firing and claiming; no new step starts in any run (a run reaching
its next step is released at once, its completed steps kept); the steps in flight get
--stop-grace to finish and checkpoint; then every run still held is released (another
process resumes it at once) and each release is logged; exit 0. A second signal exits at
once.


Job code is imported once, at start: restart serve after adding or changing jobs (runs of a
job no live worker has are reported in the log, in `runs show` and as a metric)."""


@click.command("serve", cls=CliCommand, epilog=EPILOG)
@click.option("--no-scheduler", is_flag=True, help="Do not fire schedules (worker only).")
@click.option("--no-worker", is_flag=True, help="Do not execute runs (scheduler only).")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    envvar="DURABLY_CONCURRENCY",
    help="Runs executed at the same time by this process.",
)
@click.option(
    "--polling-interval",
    type=SECONDS,
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="How often the worker looks for runs made by other processes.",
)
@click.option(
    "--heartbeat-interval",
    type=SECONDS,
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How often leases of running runs are renewed.",
)
@click.option(
    "--stale-threshold",
    type=SECONDS,
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Lease length: a run not renewed for this long is resumed by another worker.",
)
@click.option(
    "--http",
    type=HTTP_ADDRESS,
    envvar="DURABLY_HTTP",
    metavar="HOST:PORT",
    help="Serve /healthz, /readyz and /metrics here (PORT or :PORT bind 127.0.0.1). Default: off.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="DURABLY_LOG_FORMAT",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    envvar="DURABLY_LOG_LEVEL",
)
@click.option(
    "--stop-grace",
    type=SECONDS,
    default=25.0,
    show_default=True,
    envvar="DURABLY_STOP_GRACE",
    metavar="SECONDS",
    help="On SIGTERM, how long running steps may take to finish before their runs are released.",
)
@click.option(
    "--retention",
    type=RETENTION,
    default="30d",
    show_default=True,
    envvar="DURABLY_RETENTION",
    metavar="DURATION|off",
    help="Purge finished runs older than this ('off' keeps them).",
)
@click.option("--worker-id", metavar="ID", help="Name this worker (default: host:pid:random).")
async def serve(
    no_scheduler: bool,
    no_worker: bool,
    concurrency: int,
    polling_interval: float,
    heartbeat_interval: float,
    stale_threshold: float,
    http: HttpAddress | None,
    log_format: str,
    log_level: str,
    stop_grace: float,
    retention: timedelta | None,
    worker_id: str | None,
) -> int:
    """Run the scheduler and a worker until stopped (or one role with --no-scheduler/--no-worker)."""
    configure_logging(log_format, log_level.upper())
    if no_scheduler and no_worker:
        raise CliError("--no-scheduler and --no-worker together leave nothing to do")
    if polling_interval <= 0:
        raise CliError("--polling-interval must be longer than 0")
    options = ServeOptions(
        scheduler=not no_scheduler,
        worker=not no_worker,
        concurrency=concurrency,
        polling_interval=polling_interval,
        heartbeat_interval=heartbeat_interval,
        stale_threshold=stale_threshold,
        http=http,
        stop_grace=stop_grace,
        retention=retention,
        worker_id=worker_id,
    )
    threads = StepThreads()
    threads.install()
    code = await _serve(settings(), options)
    await threads.exit_if_lingering(code)
    return code
