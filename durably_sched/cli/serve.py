"""``durably-sched serve``: the scheduler and a worker in one process, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from .._durations import format_duration
from .._tasks import report_while_slow, stop_task
from ..durably import Durably
from ..jobs import JobDefinition
from ..limits import Limits
from ..ops.orphans import OrphanedJobsWatch
from ..schedule.config import SchedulesConfig, load_schedules
from ..schedule.cron import next_fire_time
from ..schedule.ownership import BEAT, LEASE
from ..schedule.reloading import SchedulesReloader, file_state
from ..schedule.scheduler import Scheduler
from ._base import (
    EXIT_FAILURE,
    EXIT_OK,
    HTTP_ADDRESS,
    RETENTION,
    SECONDS,
    TIME_RULE_HELP,
    CliCommand,
    CliError,
    HttpAddress,
    Settings,
    redact_url,
    settings,
    utc_option,
)
from ._limits import limit_option, limits_from
from ._loader import job_inputs, load_jobs
from ._runner import concurrency_option, durably_for, in_step_threads, seconds_option, stop_grace_option
from ._wait import Interrupts

log = logging.getLogger("durably_sched.serve")
LISTED = 20
"""Schedule names the start log lists (then: "and N more")."""
STOP_SLACK = 10.0
"""Seconds a stop may take beyond --stop-grace before it logs what it is still waiting for."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def lease_options(fn: F) -> F:
    """``--heartbeat-interval`` and ``--stale-threshold``: the lease of every worker command."""
    fn = seconds_option(
        "--stale-threshold",
        30.0,
        "Lease length: a run not renewed for this long is resumed by another worker.",
    )(fn)
    return seconds_option("--heartbeat-interval", 5.0, "How often leases of running runs are renewed.")(fn)


def check_lease(heartbeat_interval: float, stale_threshold: float) -> None:
    """A lease must be renewed before it ends: one line naming both flags, before anything starts."""
    if heartbeat_interval >= stale_threshold:
        raise CliError(
            f"--heartbeat-interval ({heartbeat_interval:g}s) must be shorter than --stale-threshold "
            f"({stale_threshold:g}s): a lease must be renewed before it expires"
        )


def log_options(fn: F) -> F:
    """``--log-format`` and ``--log-level`` of the long-running commands."""
    fn = click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default="INFO",
        show_default=True,
        envvar="DURABLY_LOG_LEVEL",
    )(fn)
    return click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        envvar="DURABLY_LOG_FORMAT",
    )(fn)


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
    http_token: str | None = None
    http_read_token: str | None = None
    http_metrics: str = "auto"
    limits: Limits | None = None
    trust_proxy_headers: bool = False
    scheduler_lease: float = LEASE


def configure_logging(fmt: str, level: str, *, utc: bool = False) -> None:
    """Logging for serve (text or JSON lines on stderr), set up by durably_sched.ops.logging."""
    from ..ops.logging import configure_logging as configure

    configure(fmt, level, utc=utc)  # type: ignore[arg-type]


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


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

    def _loaded(self, config: SchedulesConfig) -> None:
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
        seen = file_state(self.cli.schedules)
        self.config = self._initial_schedules(inputs)
        durably = durably_for(self.cli.database, opts, "serve", polling_interval=opts.polling_interval)
        durably.register(jobs)
        if durably.retention is not None:
            durably.retention.schedules = lambda: self.config  # fire records: this process's schedules
        http_server: Any = None
        metrics: Any = None
        orphans: OrphanedJobsWatch | None = None
        reloader: SchedulesReloader | None = None
        try:
            if self.config is not None:  # it checks the schedules against the limits: before any write
                self.scheduler = Scheduler(durably, self.config)
                # Serves on one database share the schedules by leased buckets, by its clock.
                lease = opts.scheduler_lease
                self.scheduler.share(
                    durably.worker.worker_id, lease_seconds=lease, interval=min(BEAT, lease / 5)
                )
            await durably.migrate()
            await durably.start(worker=opts.worker)
            if self.scheduler is not None and self.config is not None:
                # A name of the file that an API schedule has is an error of the file: exit 2 here.
                await self.scheduler.sync(self.config)
                self.scheduler.start()
                reloader = SchedulesReloader(
                    durably, self.scheduler, self.cli.schedules, inputs, on_loaded=self._loaded
                )
                await reloader.close()  # a row an earlier process with this worker id left
                self._tasks.append(
                    asyncio.get_running_loop().create_task(
                        reloader.run(seen), name="durably-schedules-reload"
                    )
                )
            http_server, metrics = await self._start_http(durably)
            orphans = OrphanedJobsWatch(durably, first_after=max(2 * opts.heartbeat_interval, 5.0))
            orphans.start()
            where = HttpAddress(opts.http.host, http_server.port) if http_server and opts.http else None
            self._log_started(durably, jobs, str(where) if where else None, durably.retention is not None)
            await self.stop_requested.wait()
            log.info(
                "stopping: no new step starts; steps in flight get up to %ss to finish, then their "
                "runs are released",
                f"{opts.stop_grace:g}",
            )
        finally:
            await self._shut_down(durably, orphans, reloader, http_server, metrics)
        log.info("stopped")
        return EXIT_OK

    async def _shut_down(
        self,
        durably: Durably,
        orphans: OrphanedJobsWatch | None,
        reloader: SchedulesReloader | None,
        http_server: Any,
        metrics: Any,
    ) -> None:
        """Stop firing and claiming first (what SIGTERM promises), then let the steps in flight
        finish and release the runs, then the side services, the web server and the store. A stop
        that takes longer than the stop grace plus STOP_SLACK logs what it still waits for, and
        where every pending task is suspended, until it ends."""
        stage = "the side tasks"
        watchdog = asyncio.get_running_loop().create_task(
            report_while_slow(
                lambda: f"stop is taking long: still stopping {stage}",
                self.options.stop_grace + STOP_SLACK,
                log.warning,
            ),
            name="durably-stop-watchdog",
        )
        try:
            for task in self._tasks:  # the schedules file's reload: it would change the scheduler
                await stop_task(task)
            if orphans is not None:
                await orphans.stop()
            stage = "the scheduler"
            if self.scheduler is not None:
                await self.scheduler.stop()
            stage = "the worker (steps in flight, then the release of the runs held)"
            await durably.stop(grace=self.options.stop_grace)
            stage = "the schedules file's state in the database"
            if reloader is not None:
                await reloader.close()
            stage = "the web server"
            if http_server is not None:
                await http_server.close()
            if metrics is not None:
                metrics.close()
            stage = "the database connections"
            await durably.close()
        finally:
            await stop_task(watchdog)

    async def _start_http(self, durably: Durably) -> tuple[Any, Any]:
        """The web app (dashboard, API, /healthz, /readyz, /metrics) and its metrics, with --http."""
        opts = self.options
        address = opts.http
        if address is None:
            return None, None
        from ..ops.metrics import Metrics
        from ..web import create_app
        from ..web.server import start_server

        metrics = Metrics(durably, self.scheduler)
        loopback = is_loopback(address.host)
        app = create_app(
            durably,
            schedules=lambda: self.config,
            scheduler=self.scheduler,
            token=opts.http_token,
            read_token=opts.http_read_token,
            metrics=metrics,
            metrics_public={"auto": loopback, "open": True, "token": False}[opts.http_metrics],
            worker=opts.worker,
            allowed_hosts=[address.host] if opts.http_token is None else None,
            trust_proxy_headers=opts.trust_proxy_headers,
        )
        try:
            server = await start_server(app, address.host, address.port)
        except OSError as exc:
            metrics.close()
            raise CliError(f"--http {address}: cannot listen: {exc.strerror or exc}", EXIT_FAILURE) from None
        shown = f"[{address.host}]" if ":" in address.host else address.host
        log.info(
            "serving the dashboard, /api, /healthz, /readyz and /metrics on http://%s:%d%s",
            shown,
            server.port,
            " (token required)" if opts.http_token else "",
        )
        return server, metrics

    def _log_started(
        self, durably: Durably, jobs: dict[str, JobDefinition[Any, Any]], http: str | None, retention: bool
    ) -> None:
        """A few short lines, one per topic, rather than one that wraps three times; the last one
        says the process is up."""
        opts = self.options
        names = ", ".join(sorted(job.name for job in jobs.values())) or "none"
        log.info("%s from '%s': %s", _count(len(jobs), "job"), self.cli.jobs, names)
        if self.config is not None:
            entries = self.config.schedules
            shown = list(entries)[:LISTED]
            more = f" and {len(entries) - LISTED:,} more" if len(entries) > LISTED else ""
            listed = f": {', '.join(shown)}{more}" if entries else ""
            log.info("%s from %s%s", _count(len(entries), "schedule"), self.cli.schedules, listed)
        kept = _duration_text(opts.retention) if retention and opts.retention is not None else "off"
        log.info("database %s, retention %s, http %s", redact_url(self.cli.database), kept, http or "off")
        upcoming = _first_fire(self.config) if self.config is not None else None
        if upcoming is not None:
            log.info("next fire time: %s at %s", upcoming[0], _local(upcoming[1]))
        if opts.scheduler and opts.worker:
            roles = f"scheduler + worker ({_at_a_time(opts.concurrency)})"
        elif opts.worker:
            roles = f"worker only ({_at_a_time(opts.concurrency)})"
        elif opts.scheduler:
            roles = "scheduler only"
        else:
            roles = "dashboard and API only (no scheduler, no worker)"
        if opts.scheduler or opts.worker:
            log.info("serve started: %s, worker id %s", roles, durably.worker.worker_id)
        else:
            log.info("serve started: %s", roles)


def _first_fire(config: SchedulesConfig) -> tuple[str, datetime] | None:
    """The enabled schedule that fires first from now, and when (jitter aside)."""
    now = datetime.now(UTC)
    best: tuple[str, datetime] | None = None
    seen: dict[tuple[str, str], datetime | None] = {}  # thousands of schedules share a few crons
    for entry in config.schedules.values():
        if not entry.enabled:
            continue
        key = (entry.cron.expression, str(entry.timezone))
        if key not in seen:
            try:
                seen[key] = next_fire_time(entry.cron, entry.timezone, now)
            except ValueError:
                seen[key] = None
        at = seen[key]
        if at is None:
            continue
        if best is None or at < best[1]:
            best = (entry.name, at)
    return best


def _local(moment: datetime) -> str:
    """In the log's zone; the time alone when it is today."""
    zoned, now = (
        (moment.astimezone(UTC), datetime.now(UTC))
        if settings().utc
        else (moment.astimezone(), datetime.now().astimezone())
    )
    if zoned.date() == now.date():
        return zoned.timetz().isoformat(timespec="seconds")
    return zoned.isoformat(sep=" ", timespec="seconds")


MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; a wildcard (0.0.0.0, ::) or any other address is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def read_token(flag: str, path: str | None, env: str, env_value: str | None) -> str | None:
    """The token from ``flag``'s file (stripped), else from the environment variable's value."""
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"{flag}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        where = f"{flag} {path}"
    else:
        text = (env_value or "").strip()
        if not text:
            return None
        where = env
    if not text:
        raise CliError(f"{where}: the token is empty")
    if len(text) < MIN_TOKEN_LENGTH or any(c.isspace() for c in text):
        raise CliError(
            f"{where}: a token must be at least {MIN_TOKEN_LENGTH} characters without spaces "
            "(e.g. the output of `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return text


def refuse_tokens_on_the_command_line() -> None:
    ctx = click.get_current_context()
    for name, env in (("http_token", "DURABLY_HTTP_TOKEN"), ("http_read_token", "DURABLY_HTTP_READ_TOKEN")):
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise CliError(
                f"--{name.replace('_', '-')}: a token on the command line shows in process lists and shell "
                f"history; put it in a file (--{name.replace('_', '-')}-file) or in {env}"
            )


def check_http_security(address: HttpAddress | None, token: str | None, read_only: str | None) -> None:
    if address is None:
        if token or read_only:
            raise CliError("--http-token-file / --http-read-token-file need --http HOST:PORT")
        return
    if read_only is not None and token is None:
        raise CliError("--http-read-token-file needs --http-token-file (or DURABLY_HTTP_TOKEN) as well")
    if read_only is not None and read_only == token:
        raise CliError("the read-only token must differ from the full-access token")
    if token is None and not is_loopback(address.host):
        raise CliError(
            f"--http {address}: not a loopback address, so the dashboard and API would be open to the "
            "network; give a token with --http-token-file FILE or DURABLY_HTTP_TOKEN (every request must "
            "then carry it), or bind 127.0.0.1"
        )


def _duration_text(value: timedelta) -> str:
    """``30d`` rather than ``4w2d`` for whole days."""
    if value % timedelta(days=1) == timedelta(0):
        return f"{value.days}d"
    return format_duration(value)


async def _serve(cli: Settings, options: ServeOptions) -> int:
    interrupts = Interrupts.graceful_stop(options.stop_grace, log)
    with interrupts.installed(signal.SIGTERM, signal.SIGINT):
        return await Server(cli, options, interrupts.event).run()


EPILOG = (
    """\b
Examples:
  durably-sched serve
  durably-sched serve --concurrency 8 --http 127.0.0.1:9464
  durably-sched --database postgresql://durably@db/durably serve --no-scheduler   # workers only
  durably-sched serve --no-scheduler --no-worker --http 127.0.0.1:9464   # the dashboard alone
  DURABLY_HTTP=0.0.0.0:8080 durably-sched serve --log-format json --stop-grace 25

\b
At start: migrates the schema (idempotent), imports --jobs (a module, or a package with all
its submodules, from the current directory) and registers every job found, loads
--schedules. With the scheduler on, a missing schedules file is an error when --schedules
or DURABLY_SCHEDULES names it; a missing default schedules.yaml only logs a warning, and
the file is picked up once it appears. The file is checked every second and reloaded when
it changes; a version that fails to load in any way is logged and the last good one stays
in force, shown in the dashboard's banner, GET /api/schedules, `schedules list` and the
durably_schedules_reload_failed metric until a good version loads.

\b
SIGTERM or SIGINT: stop firing and claiming; no new step starts in any run (a run reaching
its next step is released at once, its completed steps kept); the steps in flight get
--stop-grace to finish and checkpoint; then every run still held is released (another
process resumes it at once) and each release is logged; exit 0. A second signal exits at
once.

\b
Job code is imported once, at start: restart serve after adding or changing jobs (runs in
flight resume after their last completed step; runs of a job no live worker has are
reported in the log, in `runs show` and as a metric). schedules.yaml needs no restart.

\b
Log times: the text log (for a terminal) writes times to the second in this machine's
time zone with the UTC offset, or in UTC with --utc, like every other command; the JSON
log always writes UTC with milliseconds, for log collectors. The text log shows a run
as <job> <first 8 characters of its id> (what `runs show` accepts); JSON has every
field whole.

"""
    + TIME_RULE_HELP
)


def _token_file_option(flag: str, holding: str) -> Callable[[F], F]:
    """A --...-token-file option: "A file holding " ``holding``."""
    text = f"A file holding {holding}"
    return click.option(flag, type=click.Path(dir_okay=False), metavar="FILE", help=text)


@click.command("serve", cls=CliCommand, epilog=EPILOG)
@click.option("--no-scheduler", is_flag=True, help="Do not fire schedules (worker only).")
@click.option(
    "--no-worker",
    is_flag=True,
    help="Do not execute runs (scheduler only; with --no-scheduler and --http: the dashboard and "
    "API alone, whose live pages then cost the workers nothing).",
)
@concurrency_option("Runs executed at the same time by this process.")
@click.option(
    "--polling-interval",
    type=SECONDS,
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="How often the worker looks for runs made by other processes.",
)
@lease_options
@click.option(
    "--http",
    type=HTTP_ADDRESS,
    envvar="DURABLY_HTTP",
    metavar="HOST:PORT",
    help="Serve the dashboard, the API, /healthz, /readyz and /metrics here (PORT or :PORT bind "
    "127.0.0.1; any other address needs a token). Default: off.",
)
@log_options
@stop_grace_option("On SIGTERM, how long running steps may take to finish before their runs are released.")
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
@click.option(
    "--scheduler-lease",
    type=SECONDS,
    default=LEASE,
    show_default=True,
    metavar="SECONDS",
    help="How long this scheduler's lease on its share of the schedules lasts: when it dies, the "
    "other serves fire its schedules after at most this (plus a beat of a second).",
)
@_token_file_option(
    "--http-token-file",
    "the token every dashboard and API request must carry (env DURABLY_HTTP_TOKEN "
    "holds the token itself). Required for a non-loopback --http.",
)
@_token_file_option(
    "--http-read-token-file",
    "a read-only token: it sees everything, changes nothing "
    "(env DURABLY_HTTP_READ_TOKEN holds the token itself).",
)
@click.option("--http-token", envvar="DURABLY_HTTP_TOKEN", hidden=True, help="Only from the environment.")
@click.option(
    "--http-read-token", envvar="DURABLY_HTTP_READ_TOKEN", hidden=True, help="Only from the environment."
)
@click.option(
    "--http-metrics",
    type=click.Choice(["auto", "open", "token"]),
    default="auto",
    show_default=True,
    envvar="DURABLY_HTTP_METRICS",
    help="/metrics without the token (open), behind it (token), or open on loopback only (auto).",
)
@click.option(
    "--trust-proxy-headers",
    is_flag=True,
    envvar="DURABLY_TRUST_PROXY_HEADERS",
    help="Behind a reverse proxy: client address from X-Forwarded-For, scheme from X-Forwarded-Proto.",
)
@click.option(
    "--once",
    is_flag=True,
    help="Handle the fire times due now, work until no run is claimable, then exit (cron-style runners).",
)
@click.option(
    "--max-runs",
    type=click.IntRange(min=1),
    metavar="N",
    help="With --once: claim at most N runs.",
)
@click.option(
    "--max-seconds",
    type=SECONDS,
    metavar="SECONDS",
    help="With --once: stop claiming after this long (running steps then get --stop-grace).",
)
@limit_option
@utc_option
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
    http_token_file: str | None,
    http_read_token_file: str | None,
    http_token: str | None,
    http_read_token: str | None,
    http_metrics: str,
    trust_proxy_headers: bool,
    scheduler_lease: float,
    once: bool,
    max_runs: int | None,
    max_seconds: float | None,
    limits: tuple[tuple[str, int], ...],
) -> int:
    """Run the scheduler and a worker until stopped (or one role with --no-scheduler/--no-worker)."""
    http = _check_roles(no_scheduler, no_worker, once, http, max_runs, max_seconds)
    check_lease(heartbeat_interval, stale_threshold)
    configure_logging(log_format, log_level.upper(), utc=settings().utc)

    def options_of(kind: Callable[..., T], **more: Any) -> T:
        """The options of ``serve`` or of ``serve --once`` (what both have, and ``more``)."""
        return kind(
            scheduler=not no_scheduler,
            worker=not no_worker,
            concurrency=concurrency,
            heartbeat_interval=heartbeat_interval,
            stale_threshold=stale_threshold,
            stop_grace=stop_grace,
            retention=retention,
            worker_id=worker_id,
            limits=limits_from(limits),
            **more,
        )

    if once:
        from .once import OneShotOptions, run_one_shot

        one_shot = options_of(OneShotOptions, max_runs=max_runs, max_seconds=max_seconds)
        return await in_step_threads(lambda: run_one_shot(settings(), one_shot))
    if polling_interval <= 0:
        raise CliError("--polling-interval must be longer than 0")
    refuse_tokens_on_the_command_line()
    token = read_token("--http-token-file", http_token_file, "DURABLY_HTTP_TOKEN", http_token)
    read_only = read_token(
        "--http-read-token-file", http_read_token_file, "DURABLY_HTTP_READ_TOKEN", http_read_token
    )
    check_http_security(http, token, read_only)
    options = options_of(
        ServeOptions,
        polling_interval=polling_interval,
        http=http,
        http_token=token,
        http_read_token=read_only,
        http_metrics=http_metrics,
        trust_proxy_headers=trust_proxy_headers,
        scheduler_lease=scheduler_lease,
    )
    return await in_step_threads(lambda: _serve(settings(), options))


def _check_roles(
    no_scheduler: bool,
    no_worker: bool,
    once: bool,
    http: HttpAddress | None,
    max_runs: int | None,
    max_seconds: float | None,
) -> HttpAddress | None:
    """Refuse contradictory flags; the --http address that applies (none with --once)."""
    if no_scheduler and no_worker:
        if once:
            raise CliError("serve --once with --no-scheduler and --no-worker together leaves nothing to do")
        if http is None:  # with --http, the dashboard alone: its streams off the workers' processes
            raise CliError(
                "--no-scheduler and --no-worker together leave nothing to do without --http "
                "(then the process serves the dashboard and the API only)"
            )
    if not once:
        for flag, value in (("--max-runs", max_runs), ("--max-seconds", max_seconds)):
            if value is not None:
                raise CliError(f"{flag} only applies with --once")
    elif http is not None:
        source = click.get_current_context().get_parameter_source("http")
        if source is not click.core.ParameterSource.ENVIRONMENT:
            raise CliError("--http does not apply with --once (the process exits when its work is done)")
        http = None  # DURABLY_HTTP set for the long-running serve of the same image: not for --once
    if max_seconds is not None and max_seconds <= 0:
        raise CliError("--max-seconds must be longer than 0")
    return http


def _at_a_time(concurrency: int) -> str:
    return f"{concurrency} run{'s' if concurrency != 1 else ''} at a time"
