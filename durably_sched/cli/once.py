"""One-shot mode for cron-style runners: ``serve --once`` and ``work --until-idle``.

A Kubernetes CronJob, a systemd timer, CI or a serverless function starts the process, which

1. (scheduler role) handles every fire time due now, exactly as ``serve``'s scheduler does: the
   same cursors, catch-up rules and fire-time keys, one :meth:`Scheduler.tick`;
2. (worker role) executes runs with ``Durably.process_until_idle`` until none is claimable now, or
   ``--max-runs`` were claimed, or ``--max-seconds`` passed, or SIGTERM/SIGINT arrived (then running
   steps get ``--stop-grace`` and their runs are released, to resume in the next invocation or in
   any worker);
3. exits 0, or 1 naming the runs it executed that failed.

Several invocations overlapping on one database stay exactly-once: fire records dedupe fire times,
leases and fencing keep each run in one worker. "Idle" is this invocation's view: runs executing
elsewhere, runs of jobs it does not have, runs waiting for their concurrency key behind a run
executing elsewhere and runs not claimable before a later time are left, and counted in the last
log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._durations import format_duration
from ..durably import Durably
from ..limits import Limits
from ..schedule.config import SchedulesConfig, load_schedules
from ..schedule.scheduler import Scheduler
from ..store.base import FireResult, RunRecord
from ._base import EXIT_FAILURE, EXIT_OK, CliError, Settings, one_line, redact_url
from ._loader import job_inputs, load_jobs
from ._runner import durably_for

log = logging.getLogger("durably_sched.once")

SHOWN_FAILURES = 5
"""Failed runs named in the exit line; more are counted."""


@dataclass(frozen=True)
class OneShotOptions:
    """What ``serve --once`` and ``work --until-idle`` were asked to do."""

    scheduler: bool
    worker: bool
    concurrency: int
    heartbeat_interval: float
    stale_threshold: float
    stop_grace: float
    retention: Any  # timedelta | None
    worker_id: str | None
    max_runs: int | None
    max_seconds: float | None
    jobs: tuple[str, ...] = ()
    command: str = "serve --once"
    limits: Limits | None = None


@dataclass
class Outcome:
    fired: list[tuple[str, datetime, FireResult]]
    executed: list[RunRecord]
    stopped_by: str  # idle | max-runs | max-seconds | signal


class OneShot:
    """One invocation: load, fire what is due, work until idle, report."""

    def __init__(self, cli: Settings, options: OneShotOptions, stop: asyncio.Event) -> None:
        self.cli = cli
        self.options = options
        self.stop_requested = stop
        self.started = time.monotonic()

    def _schedules(self, inputs: dict[str, Any]) -> SchedulesConfig | None:
        if not self.options.scheduler:
            return None
        path = self.cli.schedules
        if not os.path.exists(path) and not self.cli.schedules_explicit:
            log.warning("no schedules file at %s: no fire times to handle", path)
            return SchedulesConfig(path=path)
        return load_schedules(path, inputs)

    async def run(self) -> int:
        opts = self.options
        jobs = load_jobs(self.cli.jobs)
        names = sorted(job.name for job in jobs.values())
        for name in opts.jobs:
            if name not in names:
                raise CliError(f"--job {name}: unknown job (registered: {', '.join(names) or 'none'})")
        config = self._schedules(job_inputs(jobs))
        durably = durably_for(self.cli.database, opts, opts.command)
        durably.register(jobs)
        if durably.retention is not None:
            durably.retention.schedules = lambda: config
        try:
            await durably.migrate()
            await durably.start(worker=False)
            log.info(
                "durably-sched %s: database %s, jobs '%s' (%s), %s, concurrency %d, worker id %s",
                opts.command,
                redact_url(self.cli.database),
                self.cli.jobs,
                ", ".join(names) or "none",
                f"{len(config.schedules)} schedules from {self.cli.schedules}"
                if config is not None
                else "scheduler off",
                opts.concurrency,
                durably.worker.worker_id,
            )
            fired = await self._fire(durably, config) if config is not None else []
            executed: list[RunRecord] = []
            stopped_by = "idle"
            if opts.worker and not self.stop_requested.is_set():
                executed, stopped_by = await self._work(durably)
            elif durably.retention is not None:
                await durably.retention.run_if_due()
            outcome = Outcome(fired, executed, stopped_by)
            await self._report(durably, outcome)
        finally:
            await durably.stop(grace=opts.stop_grace)
            await durably.close()
        return self._exit_code(outcome)

    # -- the scheduler half ---------------------------------------------------------------------
    async def _fire(
        self, durably: Durably, config: SchedulesConfig
    ) -> list[tuple[str, datetime, FireResult]]:
        cursors = await durably.get_cursors()
        for name in sorted(set(config.schedules) - set(cursors)):
            log.info(
                "new schedule: it starts from now (earlier fire times are not caught up; "
                "`durably-sched schedules backfill` triggers them)",
                extra={"schedule": name},
            )
        scheduler = Scheduler(durably, config)
        await scheduler.load()
        fired = await scheduler.tick()
        missed = Counter(name for name, _, result in fired if result.outcome == "missed")
        for name, count in sorted(missed.items()):
            entry = config.schedules[name]
            log.warning(
                "%d fire time%s recorded missed (catchup: %s, catchup_window %s): start the one-shot "
                "more often, or give the schedule catchup: all and a window longer than the time "
                "between invocations",
                count,
                "" if count == 1 else "s",
                entry.catchup,
                format_duration(entry.catchup_window),
                extra={"schedule": name},
            )
        return fired

    # -- the worker half -----------------------------------------------------------------------------
    async def _work(self, durably: Durably) -> tuple[list[RunRecord], str]:
        opts = self.options
        work = asyncio.ensure_future(durably.process_until_idle(opts.max_runs, jobs=list(opts.jobs) or None))
        stop = asyncio.ensure_future(self.stop_requested.wait())
        remaining = None
        if opts.max_seconds is not None:
            remaining = max(0.0, opts.max_seconds - (time.monotonic() - self.started))
        try:
            await asyncio.wait([work, stop], timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if work.done():
            executed = work.result()
            full = opts.max_runs is not None and len(executed) >= opts.max_runs
            return executed, "max-runs" if full else "idle"
        stopped_by = "signal" if self.stop_requested.is_set() else "max-seconds"
        log.info(
            "stopping (%s): no new claims; running steps get up to %ss to checkpoint, then their runs "
            "are released",
            "signal" if stopped_by == "signal" else f"--max-seconds {opts.max_seconds:g}",
            f"{opts.stop_grace:g}",
        )
        await durably.stop(grace=opts.stop_grace)
        claimed = await work
        # Read again: the runs stopped were released after process_until_idle returned.
        return await durably.final_records(claimed), stopped_by

    # -- what happened --------------------------------------------------------------------------
    async def _report(self, durably: Durably, outcome: Outcome) -> None:
        fires = Counter(result.outcome for _, _, result in outcome.fired)
        statuses = Counter(
            "released" if r.status in ("pending", "running") else r.status for r in outcome.executed
        )
        parts = [f"{n} {status}" for status, n in sorted(statuses.items())]
        fired_text = ", ".join(f"{n} {kind}" for kind, n in sorted(fires.items())) or "none due"
        took = time.monotonic() - self.started
        log.info(
            "%s done in %.1fs: fire times: %s; runs executed here: %d%s; stopped: %s",
            self.options.command,
            took,
            fired_text if self.options.scheduler else "scheduler off",
            len(outcome.executed),
            f" ({', '.join(parts)})" if parts else "",
            outcome.stopped_by,
        )
        for record in outcome.executed:
            if record.status in ("pending", "running"):
                log.info(
                    "released after %d steps: it resumes in the next invocation or any worker",
                    record.step_count,
                    extra={"run_id": record.id, "job": record.job_name},
                )
        if self.options.worker:
            await self._left_for_others(durably)

    async def _left_for_others(self, durably: Durably) -> None:
        """One line on the runs still active that were not this invocation's work, and why."""
        counts = await durably.count_runs_by_status()
        ours = set(self.options.jobs) or set(durably.job_names)
        foreign: Counter[str] = Counter()
        running = pending_ours = 0
        for (job, status), n in counts.items():
            if status == "running":
                running += n
            elif status == "pending" and job in ours:
                pending_ours += n
            elif status == "pending":
                foreign[job] += n
        parts = []
        if running:
            parts.append(f"{running} running in other processes (or under a lease not yet expired)")
        if pending_ours:
            parts.append(
                f"{pending_ours} pending not claimable now (concurrency key held elsewhere, "
                "not due yet, released at stop, or made since)"
            )
        if foreign:
            jobs = ", ".join(f"{job} ({n})" for job, n in sorted(foreign.items()))
            parts.append(f"{sum(foreign.values())} pending of jobs this process does not run: {jobs}")
        if parts:
            log.info("left for other workers or later invocations: %s", "; ".join(parts))

    def _exit_code(self, outcome: Outcome) -> int:
        failed = [r for r in outcome.executed if r.status == "failed"]
        if not failed:
            return EXIT_OK
        shown = "; ".join(
            f"{r.id} ({r.job_name}"
            + (f", step '{r.failed_step_name}'" if r.failed_step_name else "")
            + f"): {one_line(r.error)}"
            for r in failed[:SHOWN_FAILURES]
        )
        more = f"; and {len(failed) - SHOWN_FAILURES} more" if len(failed) > SHOWN_FAILURES else ""
        raise CliError(
            f"{len(failed)} of {len(outcome.executed)} runs executed here failed: {shown}{more}",
            EXIT_FAILURE,
        )


async def run_one_shot(cli: Settings, options: OneShotOptions) -> int:
    """Run one invocation with the signal handling of ``serve``: the first SIGTERM/SIGINT stops
    claiming and gives running steps ``--stop-grace``; a second one exits at once."""
    import signal

    from ._wait import Interrupts

    interrupts = Interrupts.graceful_stop(options.stop_grace, log)
    with interrupts.installed(signal.SIGTERM, signal.SIGINT):
        return await OneShot(cli, options, interrupts.event).run()
