"""Prometheus metrics for one durably-sched process.

Two sources, kept apart in the names' help texts:

* **this process**: counters and histograms fed by the Durably events of this process and by the
  scheduler's fire-time listener (runs this worker finished, fire times this scheduler handled);
  sum them over instances in PromQL.
* **the database**: ``durably_runs`` and ``durably_queue_depth`` count rows through
  ``store.count_runs_by_status()``, the same numbers in every instance; use ``max`` over instances,
  not ``sum``. That query is async, so :meth:`Metrics.refresh` runs it (with a timeout and a short
  cache, so scrapes of several Prometheus servers cost one query) and :meth:`Metrics.render` reads
  the cached result. ``durably_database_up`` says whether the last query succeeded; when it did not,
  the row counts are left out rather than shown stale.
* **per schedule** (processes running a scheduler, for the schedules they fire: their file's
  and the API schedules):
  paused, auto-paused, consecutive failures, last success and last fire come from the database
  (``schedule_states`` and an index lookup per schedule), the same in every instance; the next fire
  time is this scheduler's own (it moves only when this process handles the fire time before it).
  ``deploy/prometheus/alerts.yaml`` aggregates them with ``max by (schedule)``.

Every instance has its own :class:`CollectorRegistry` (never the global one), so tests and embedders
can create several.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .._version import __version__
from ..events import (
    RunCancelEvent,
    RunCompleteEvent,
    RunFailEvent,
    RunRetryScheduledEvent,
    ScheduleAutoPauseEvent,
    SchedulePauseEvent,
    StepCompleteEvent,
    WorkerErrorEvent,
)
from ..schedule.cron import jitter_offset
from ..store.base import FINISHED_STATUSES, FIRE_OUTCOMES, RUN_STATUSES, FireResult, ScheduleState
from ..store.records import WAIT_KINDS

if TYPE_CHECKING:
    from ..ports import OpsFacade
    from ..schedule.config import ScheduleEntry
    from ..schedule.ownership import Ownership
    from ..schedule.scheduler import Scheduler

__all__ = ["Metrics"]

log = logging.getLogger("durably_sched.ops.metrics")

RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600)
"""Whole runs: from a no-op job (10 ms) to a six-hour batch."""
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
LATENESS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600,
)  # fmt: skip
"""On time is milliseconds; a loop stall is seconds; catch-up after downtime is minutes or more."""


class Metrics:
    """The metrics of one process. ``render()`` after ``await refresh()``; ``close()`` detaches."""

    content_type = CONTENT_TYPE_PLAIN_0_0_4
    """Prometheus text format 0.0.4, understood by every Prometheus version."""

    def __init__(
        self,
        durably: OpsFacade,
        scheduler: Scheduler | None,
        registry: CollectorRegistry | None = None,
        *,
        cache_seconds: float = 1.0,
        query_timeout: float = 2.0,
    ) -> None:
        self.durably = durably
        self.scheduler = scheduler
        self.registry = registry if registry is not None else CollectorRegistry()
        self.cache_seconds = cache_seconds
        self.query_timeout = query_timeout
        self._define(self.registry)
        self._counts: dict[tuple[str, str], int] | None = None
        self._orphaned: dict[str, int] | None = None
        self._waiting: dict[tuple[str, str], int] = {}
        self._counts_at: float | None = None
        self._database_up: bool | None = None
        self._schedule_states: dict[str, ScheduleState] = {}
        self._last_runs: dict[str, datetime] = {}
        self._lock = asyncio.Lock()
        self._known_jobs: set[str] = set()
        for job in durably.job_names:
            self._init_job(job)

        on = durably.on
        self._unsubscribe: list[Callable[[], None]] = [
            on("run:complete", self._on_run_complete),
            on("run:fail", self._on_run_fail),
            on("run:cancel", self._on_run_cancel),
            on("step:complete", self._on_step_complete),
            on("run:retry-scheduled", self._on_retry_scheduled),
            on("worker:error", self._on_worker_error),
            on("schedule:pause", self._on_pause),
            on("schedule:auto-pause", self._on_auto_pause),
        ]
        if scheduler is not None:
            scheduler.listeners.append(self._on_fire)

    def _define(self, r: CollectorRegistry) -> None:
        """The metrics this process counts, and the collectors read at scrape time, in ``r``."""
        self.runs_finished = Counter(
            "durably_runs_finished",
            "Runs finished by this process (cancelled: cancelled through this process), by job and status.",
            ["job", "status"],
            registry=r,
        )
        self.run_duration = Histogram(
            "durably_run_duration_seconds",
            "Run execution time in this process (one attempt, from claim to completed or failed).",
            ["job", "status"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.step_duration = Histogram(
            "durably_step_duration_seconds",
            "Execution time of completed steps in this process (replayed steps are not counted).",
            ["job"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.fire_times = Counter(
            "durably_fire_times",
            "Fire times handled by this process's scheduler, by schedule and outcome "
            f"({', '.join(FIRE_OUTCOMES)}).",
            ["schedule", "outcome"],
            registry=r,
        )
        self.lateness = Histogram(
            "durably_scheduler_lateness_seconds",
            "Time from a fire time's due time (fire time plus its jitter) to this scheduler handling it.",
            ["schedule"],
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.pauses = Counter(
            "durably_schedule_pauses",
            "Schedule pauses made through this process, by schedule and kind "
            "(manual: pause_schedule, auto: pause_after_failures).",
            ["schedule", "kind"],
            registry=r,
        )
        self.retries_scheduled = Counter(
            "durably_run_retries_scheduled",
            "Failed attempts of runs in this process that their retry policy retries later, by job.",
            ["job"],
            registry=r,
        )
        self.worker_errors = Counter(
            "durably_worker_errors",
            "Errors reported by this process's worker (worker:error events), by where they happened.",
            ["context"],
            registry=r,
        )
        Info("durably_build", "durably-sched version and Python version.", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )
        r.register(_LiveCollector(self))
        for make in (ProcessCollector, PlatformCollector, GCCollector):
            make(registry=r)

    def close(self) -> None:
        """Stop listening to events and to the scheduler (the registry keeps its values)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self.scheduler is not None and self._on_fire in self.scheduler.listeners:
            self.scheduler.listeners.remove(self._on_fire)

    # -- event listeners (synchronous, on the loop) ---------------------------------------------------
    def _init_job(self, job: str) -> None:
        """Show zeros for a job before its first run, so rate() and absent() work from the start."""
        if job not in self._known_jobs:
            self._known_jobs.add(job)
            for status in FINISHED_STATUSES:
                self.runs_finished.labels(job, status)

    def _init_schedules(self) -> None:
        """A zero for each schedule's missed fire times, so the first miss is an increase that
        ``increase()`` (and the DurablyScheduleMissedFireTimes alert) can see."""
        if self.scheduler is not None:
            for name in self.scheduler.schedule_names():
                self.fire_times.labels(name, "missed")

    def _finished(self, job: str, status: str, duration: float | None) -> None:
        self._init_job(job)
        self.runs_finished.labels(job, status).inc()
        if duration is not None:
            self.run_duration.labels(job, status).observe(duration)

    def _on_run_complete(self, event: RunCompleteEvent) -> None:
        self._finished(event.job_name, "completed", event.duration)

    def _on_run_fail(self, event: RunFailEvent) -> None:
        self._finished(event.job_name, "failed", event.duration)

    def _on_run_cancel(self, event: RunCancelEvent) -> None:
        self._finished(event.job_name, "cancelled", None)

    def _on_step_complete(self, event: StepCompleteEvent) -> None:
        self.step_duration.labels(event.job_name).observe(event.duration)

    def _on_retry_scheduled(self, event: RunRetryScheduledEvent) -> None:
        self.retries_scheduled.labels(event.job_name).inc()

    def _on_worker_error(self, event: WorkerErrorEvent) -> None:
        self.worker_errors.labels(event.context or "unknown").inc()

    def _on_pause(self, event: SchedulePauseEvent) -> None:
        self.pauses.labels(event.schedule, "manual").inc()

    def _on_auto_pause(self, event: ScheduleAutoPauseEvent) -> None:
        self.pauses.labels(event.schedule, "auto").inc()

    def _on_fire(
        self, entry: ScheduleEntry, fire_time: datetime, result: FireResult, lateness: timedelta
    ) -> None:
        self.fire_times.labels(entry.name, result.outcome).inc()
        late = lateness - jitter_offset(entry.name, fire_time, entry.jitter)
        self.lateness.labels(entry.name).observe(max(late.total_seconds(), 0.0))

    # -- the database's numbers ---------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Re-read run counts from the store, unless read less than ``cache_seconds`` ago."""
        self._init_schedules()
        if self._fresh():
            return
        async with self._lock:  # concurrent scrapes share one query
            if self._fresh():
                return
            try:
                counts = await asyncio.wait_for(self.durably.count_runs_by_status(), self.query_timeout)
                orphaned = await asyncio.wait_for(self.durably.jobs_without_worker(), self.query_timeout)
                self._waiting = await asyncio.wait_for(self.durably.count_waiting(), self.query_timeout)
                if self.scheduler is not None:
                    states, last_runs = await asyncio.wait_for(self._read_schedules(), self.query_timeout)
                    self._schedule_states, self._last_runs = states, last_runs
            except Exception as exc:
                if self._database_up is not False:
                    log.warning("metrics: cannot count runs in the database: %s", exc or type(exc).__name__)
                self._counts, self._orphaned, self._database_up = None, None, False
            else:
                if self._database_up is False:
                    log.info("metrics: the database answers again")
                self._counts, self._orphaned, self._database_up = counts, orphaned, True
            self._counts_at = time.monotonic()

    async def _read_schedules(self) -> tuple[dict[str, ScheduleState], dict[str, datetime]]:
        durably = self.durably
        return await durably.get_schedule_states(), await durably.last_run_times()

    def _fresh(self) -> bool:
        return self._counts_at is not None and time.monotonic() - self._counts_at < self.cache_seconds

    def render(self) -> bytes:
        """The registry in Prometheus text format (:attr:`content_type`)."""
        return generate_latest(self.registry)

    def _live(self) -> Iterable[Metric]:
        """Metrics read at scrape time: process state and the cached database counts."""
        yield from _process_families(self.durably)
        scheduler = self.scheduler
        if scheduler is not None and scheduler.last_tick_monotonic > 0:
            age = GaugeMetricFamily(
                "durably_scheduler_last_tick_age_seconds",
                "Seconds since this process's scheduler loop last ticked.",
            )
            age.add_metric([], max(0.0, time.monotonic() - scheduler.last_tick_monotonic))
            yield age
        if scheduler is not None and scheduler.ownership is not None:
            yield from _ownership_families(scheduler.ownership)
        if scheduler is not None:
            failed = GaugeMetricFamily(
                "durably_schedules_reload_failed",
                "1 while the last reload of this process's schedules file failed (the last good "
                "schedules keep running), else 0.",
            )
            failed.add_metric([], 0.0 if scheduler.config_error is None else 1.0)
            yield failed
        if self._database_up is not None:
            up = GaugeMetricFamily(
                "durably_database_up", "1 if the last count of runs in the database succeeded, else 0."
            )
            up.add_metric([], 1.0 if self._database_up else 0.0)
            yield up
        counts = self._counts
        if counts is None:
            return
        if scheduler is not None:
            yield from self._schedule_families(scheduler)
        runs = GaugeMetricFamily(
            "durably_runs",
            "Runs in the database by job and status, all processes (finished runs until purged).",
            labels=["job", "status"],
        )
        jobs = sorted(self._known_jobs | set(self.durably.job_names) | {job for job, _ in counts})
        for job in jobs:
            for status in RUN_STATUSES:
                runs.add_metric([job, status], counts.get((job, status), 0))
        yield runs
        waiting = GaugeMetricFamily(
            "durably_waiting_runs",
            "Runs waiting (holding no worker) by job and what they wait for: sleep, event, children.",
            labels=["job", "kind"],
        )
        for job in jobs:
            for kind in WAIT_KINDS:
                waiting.add_metric([job, kind], self._waiting.get((job, kind), 0))
        yield waiting
        depth = GaugeMetricFamily(
            "durably_queue_depth", "Pending runs in the database (all jobs, all processes)."
        )
        depth.add_metric([], sum(n for (_, status), n in counts.items() if status == "pending"))
        yield depth
        if self._orphaned is not None:
            orphaned = GaugeMetricFamily(
                "durably_runs_without_worker",
                "Pending runs of jobs that no live worker in the registry has (all processes), by job.",
                labels=["job"],
            )
            for job, count in sorted(self._orphaned.items()):
                orphaned.add_metric([job], count)
            yield orphaned

    def _schedule_families(self, scheduler: Scheduler) -> Iterable[Metric]:
        """Per-schedule gauges: the database's view (cached by refresh) and this scheduler's next fire."""
        names = scheduler.schedule_names()
        states, last_runs = self._schedule_states, self._last_runs
        db = "from the database, the same in every instance"

        def family(name: str, help_text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, help_text, labels=["schedule"])

        paused = family(
            "durably_schedule_paused", f"1 while the schedule is paused at run time, else 0 ({db})."
        )
        auto = family(
            "durably_schedule_auto_paused",
            f"1 while the schedule is paused by pause_after_failures, else 0 ({db}).",
        )
        failures = family(
            "durably_schedule_consecutive_failures",
            f"Failed runs of the schedule since its last completed run ({db}).",
        )
        success = family(
            "durably_schedule_last_success_timestamp_seconds",
            f"When the schedule's newest completed run completed ({db}; absent before the first).",
        )
        last_fire = family(
            "durably_schedule_last_fire_timestamp_seconds",
            f"When the schedule's newest stored run was created by a fire time or a slot trigger ({db}; "
            "absent while none is stored).",
        )
        upcoming = family(
            "durably_schedule_next_fire_timestamp_seconds",
            "The next fire time this process's scheduler will handle (in the past: it is behind).",
        )
        next_fires = scheduler.next_fire_times()
        for name in names:
            state = states.get(name)
            paused.add_metric([name], 1.0 if state is not None and state.paused else 0.0)
            auto.add_metric([name], 1.0 if state is not None and state.paused and state.auto_paused else 0.0)
            failures.add_metric([name], float(state.consecutive_failures) if state is not None else 0.0)
            if state is not None and state.last_success_at is not None:
                success.add_metric([name], state.last_success_at.timestamp())
            if name in last_runs:
                last_fire.add_metric([name], last_runs[name].timestamp())
            if name in next_fires:
                upcoming.add_metric([name], next_fires[name].timestamp())
        yield from (paused, auto, failures, success, last_fire, upcoming)


class _LiveCollector:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics._live()


def _process_families(durably: OpsFacade) -> Iterable[Metric]:
    """This process's runs, lease losses, takeovers and live streams."""
    worker = durably.worker
    active = GaugeMetricFamily("durably_active_runs", "Runs executing in this process now.")
    active.add_metric([], len(worker.active))
    yield active
    losses = CounterMetricFamily(
        "durably_lease_losses",
        "Runs this process stopped because another worker took over their lease.",
    )
    losses.add_metric([], worker.lease_losses)
    yield losses
    takeovers = CounterMetricFamily(
        "durably_worker_takeovers",
        "Workers on this host whose process was found gone and whose runs this process resumed early.",
    )
    takeovers.add_metric([], worker.takeovers)
    yield takeovers
    streams = GaugeMetricFamily(
        "durably_stream_subscribers",
        "Live run streams this process serves now (dashboard pages, API event streams, waits).",
    )
    streams.add_metric([], durably.feed.subscribers)
    yield streams


def _ownership_families(ownership: Ownership) -> Iterable[Metric]:
    """This scheduler's share of the schedule buckets and its host clock's offset."""
    owned = GaugeMetricFamily(
        "durably_scheduler_buckets",
        "Schedule buckets this process's scheduler owns now (of 256, shared among the live schedulers).",
        labels=["scheduler"],
    )
    owned.add_metric([ownership.id], float(len(ownership.owned)))
    yield owned
    live = GaugeMetricFamily("durably_schedulers_live", "Live schedulers on the database at the last beat.")
    live.add_metric([], float(ownership.live))
    yield live
    offset = ownership.database_clock.offset
    if offset is not None:
        clock = GaugeMetricFamily(
            "durably_scheduler_clock_offset_seconds",
            "Seconds this host's clock is ahead of the database's (negative: behind); fire times "
            "fall due by the database's clock.",
        )
        clock.add_metric([], offset)
        yield clock
