"""The store contract: what every backend (SQLite, PostgreSQL) provides, above its record types (records.py).

Backend differences (claim query, upsert syntax, clocks, wake-ups) stay inside the backend modules.
Values crossing this boundary are plain Python: JSON-able dicts for inputs/outputs, aware UTC
datetimes for times. Leases are given as durations, never as absolute times, so each backend can
use the clock it trusts (the local clock for one SQLite file, the database's clock for PostgreSQL).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from ..errors import InvalidArgumentError
from ._callbacks import call_callbacks, keep_callback
from ._web_sessions import WebSessionStore
from .attempts import AttemptReads
from .config_errors import ConfigErrorStore
from .records import (
    COUNT_CAP,
    FINISHED_STATUSES,
    FIRE_OUTCOMES,
    RUN_STATUSES,
    BucketLease,
    Checkpoint,
    Disposition,
    Fire,
    FireOutcome,
    FireRecord,
    FireResult,
    LogRecord,
    NewLog,
    NewRun,
    Progress,
    RunChanges,
    RunPage,
    RunQuery,
    RunRecord,
    RunStatus,
    ScheduleActivity,
    SchedulerInfo,
    SchedulerRecord,
    ScheduleState,
    StateChange,
    StepRecord,
    WorkerInfo,
    WorkerRecord,
    WriteResult,
)
from .rows import bounded_traceback
from .rules import (
    AttemptEnd,
    EndKind,
    MakeRule,
    PauseState,
    ResumeState,
    advance_cursors,
    balance_buckets,
    create_runs,
    fire_many,
    leave,
    pause,
    resume,
)
from .run_events import RunEventReads
from .schedule_defs import ScheduleDefStore
from .waits import WaitStore

T = TypeVar("T")
__all__ = [
    "COUNT_CAP",
    "FINISHED_STATUSES",
    "FIRE_OUTCOMES",
    "RUN_STATUSES",
    "BucketLease",
    "Checkpoint",
    "Disposition",
    "Fire",
    "FireOutcome",
    "FireRecord",
    "FireResult",
    "LogRecord",
    "NewLog",
    "NewRun",
    "Progress",
    "RunChanges",
    "RunPage",
    "RunQuery",
    "RunRecord",
    "RunStatus",
    "ScheduleActivity",
    "ScheduleState",
    "SchedulerInfo",
    "SchedulerRecord",
    "StateChange",
    "StepRecord",
    "Store",
    "WorkerInfo",
    "WorkerRecord",
    "WriteResult",
]


def _failure(
    kind: EndKind,
    run_id: str,
    generation: int,
    error: str,
    failed_step_name: str | None,
    logs: Sequence[NewLog],
    traceback: str | None,
    delay_seconds: float = 0.0,
) -> AttemptEnd:
    return AttemptEnd(
        kind,
        run_id,
        generation,
        logs,
        error=error,
        failed_step_name=failed_step_name,
        traceback=bounded_traceback(traceback),
        delay_seconds=max(0.0, float(delay_seconds)),
    )


class Store(ConfigErrorStore, AttemptReads, RunEventReads, WebSessionStore, WaitStore, ScheduleDefStore):
    """The storage contract. One instance per process; safe for concurrent use from one loop."""

    url: str

    # -- lifecycle ------------------------------------------------------------------------
    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections. Raises StoreError with a one-line reason when the database is unusable."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def migrate(self) -> int:
        """Bring the schema to the current version (idempotent, safe from several processes).

        Returns the schema version. Raises SchemaVersionError for a database of a newer version.
        """

    @abc.abstractmethod
    async def check_schema(self) -> None:
        """Raise SchemaVersionError unless the schema is exactly the current version."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """A cheap round trip; raises StoreError when the database is unreachable."""

    # -- runs: creation and queries ---------------------------------------------------------
    async def create_runs(self, runs: Sequence[NewRun]) -> list[tuple[RunRecord, Disposition]]:
        """Insert runs; a run whose (job, idempotency key) exists returns the existing one."""
        if not runs:
            return []
        coalescing = any(run.coalesce and run.concurrency_key is not None for run in runs)
        return await self._rule("create_runs", lambda replay: create_runs(runs, replay), atomic=coalescing)

    async def create_and_claim(
        self, run: NewRun, worker_id: str, job_names: Sequence[str], lease_seconds: float
    ) -> tuple[RunRecord, Disposition]:
        """Create one run and, where the backend can do it in the same write, claim it for
        ``worker_id`` (a worker of this process with a free slot, that runs ``job_names``).

        A run comes back claimed (status running, ``worker_id`` set, generation and attempt 1, a
        lease of ``lease_seconds``) only if it was created here, has no concurrency key, is not
        coalescing, and no run of ``job_names`` was waiting to be claimed (older runs keep their
        turn); the record is then exactly what :meth:`claim` would have returned right after the
        insert. Otherwise this is :meth:`create_runs` of the one run. This default never claims.
        """
        [result] = await self.create_runs([run])
        return result

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None: ...

    @abc.abstractmethod
    async def get_run_statuses(self, run_ids: Sequence[str]) -> dict[str, RunStatus]:
        """Statuses of many runs in one query (used by waiters polling across processes)."""

    async def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs matching the query, newest first."""
        return (await self.list_runs_page(query)).runs

    @abc.abstractmethod
    async def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        """Ids of runs that start with ``prefix`` (case-sensitive), in id order, at most ``limit``.

        One indexed range read whatever the table's size (short ids typed at the CLI).
        """

    @abc.abstractmethod
    async def list_runs_page(self, query: RunQuery) -> RunPage:
        """Like :meth:`list_runs`, with a cursor for the next page. Every filter reads an index:
        a label filter the labels index, job/status filters their indexes (one index walk per
        job/status pair, merged), ``created_after`` the creation-time index; the cost of a page does
        not grow with the history the table holds."""

    @abc.abstractmethod
    async def count_runs(self, query: RunQuery, cap: int = COUNT_CAP) -> tuple[int, bool]:
        """(count, capped): how many runs match (cursor and limit ignored), counting at most
        ``cap``; ``capped`` is True when there are more."""

    @abc.abstractmethod
    async def get_runs_by_id(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        """The runs with these ids that exist, in one query."""

    @abc.abstractmethod
    async def poll_run_changes(
        self, after_seq: int | None, finished_since: datetime | None, active_limit: int = 500
    ) -> RunChanges:
        """One poll of the run feed (see :class:`RunChanges`), on indexes only: active runs through
        the partial index of active runs, new runs by creation order, finished ones through the
        index of finished runs. ``after_seq`` None: nothing is returned in ``created``, only the
        current position; ``finished_since`` None: nothing in ``finished``."""

    @abc.abstractmethod
    async def count_runs_by_status(self) -> dict[tuple[str, str], int]:
        """{(job_name, status): count}, for metrics and queue depth."""

    @abc.abstractmethod
    async def get_steps(self, run_id: str) -> list[StepRecord]: ...

    @abc.abstractmethod
    async def get_logs(self, run_id: str, after_id: int = 0, limit: int = 1000) -> list[LogRecord]: ...

    @abc.abstractmethod
    async def last_log_id(self, run_id: str) -> int:
        """The id of the run's newest log line (0 when it has none): where "logs from now on" start."""

    # -- worker side: claims and fenced writes ------------------------------------------------
    async def claim(
        self,
        worker_id: str,
        job_names: Sequence[str],
        limit: int,
        lease_seconds: float,
        *,
        run_ids: Sequence[str] | None = None,
    ) -> list[RunRecord]:
        """Atomically claim up to ``limit`` runnable runs of the given jobs, oldest first.

        With ``run_ids``, only runs with those ids are candidates (``trigger --here`` runs exactly
        the run it triggered, never other pending runs of the same job).

        Runnable: pending and past its not-before time (if any), or running with an expired
        lease. A run with a concurrency key is runnable only if no other run with that key holds a
        live lease and no older run with the key is waiting (a run waiting for its retry backoff
        keeps its place). Claiming sets status running, the lease, and increments ``generation``
        (the fencing token every later write by this holder is conditioned on); the records
        returned carry ``previous_worker_id``.
        """
        if limit <= 0 or not job_names or (run_ids is not None and not run_ids):
            return []
        return await self._claim(worker_id, list(job_names), limit, lease_seconds, run_ids)

    @abc.abstractmethod
    async def _claim(
        self, worker_id: str, jobs: list[str], limit: int, lease_seconds: float, run_ids: Sequence[str] | None
    ) -> list[RunRecord]:
        """The backend's claim (``jobs`` and ``limit``, and ``run_ids`` when given, are not empty)."""

    async def renew_leases(
        self,
        leases: Sequence[tuple[str, int]],
        lease_seconds: float,
        *,
        worker: tuple[str, int] | None = None,
    ) -> dict[str, WriteResult]:
        """Extend the leases of (run id, generation) pairs; returns the outcome per run id.

        ``worker`` = (worker id, runs held): the registry's heartbeat of that worker, written in the
        same transaction (no extra round trip).
        """
        if not leases:
            if worker is not None:
                await self.heartbeat_worker(*worker)
            return {}
        return await self._renew_leases(leases, lease_seconds, worker)

    @abc.abstractmethod
    async def _renew_leases(
        self, leases: Sequence[tuple[str, int]], lease_seconds: float, worker: tuple[str, int] | None
    ) -> dict[str, WriteResult]:
        """The backend's renewal of (not zero) leases."""

    @abc.abstractmethod
    async def checkpoint(self, cp: Checkpoint) -> WriteResult:
        """Store a completed step (fenced); ``cancelled`` means stored, but stop after this step."""

    @abc.abstractmethod
    async def set_progress(
        self, run_id: str, generation: int, progress: Progress, logs: Sequence[NewLog] = ()
    ) -> WriteResult: ...

    @abc.abstractmethod
    async def append_logs(self, run_id: str, generation: int, logs: Sequence[NewLog]) -> WriteResult: ...

    async def complete_run(
        self, run_id: str, generation: int, output: Any, logs: Sequence[NewLog] = ()
    ) -> WriteResult:
        """Mark completed (fenced on status running and generation)."""
        return await self._end_attempt(AttemptEnd("completed", run_id, generation, logs, output=output))

    async def fail_run(
        self,
        run_id: str,
        generation: int,
        error: str,
        failed_step_name: str | None,
        logs: Sequence[NewLog] = (),
        *,
        traceback: str | None = None,
    ) -> WriteResult:
        """Mark failed (fenced on status running and generation); counts a failed attempt."""
        return await self._end_attempt(
            _failure("failed", run_id, generation, error, failed_step_name, logs, traceback)
        )

    async def retry_later(
        self,
        run_id: str,
        generation: int,
        error: str,
        failed_step_name: str | None,
        delay_seconds: float,
        logs: Sequence[NewLog] = (),
        *,
        traceback: str | None = None,
    ) -> WriteResult:
        """A failed attempt that will be retried (fenced like ``fail_run``): the run goes back to
        pending, claimable from ``now + delay_seconds`` (the store's clock; never before now) on,
        with its error, traceback and completed steps kept and one more failed attempt counted."""
        end = _failure("retry", run_id, generation, error, failed_step_name, logs, traceback, delay_seconds)
        return await self._end_attempt(end)

    async def release_run(self, run_id: str, generation: int) -> WriteResult:
        """Give a running run back (graceful stop): pending again, resumable by anyone at once."""
        return await self._end_attempt(AttemptEnd("released", run_id, generation))

    @abc.abstractmethod
    async def _end_attempt(self, end: AttemptEnd) -> WriteResult:
        """The backend's fenced terminal write (see :class:`~.rules.AttemptEnd`)."""

    @abc.abstractmethod
    async def _rule(self, what: str, make: MakeRule[T], *, atomic: bool = True) -> T:
        """Run a domain rule (:mod:`.rules`) in one transaction, answering its operations with this
        backend's SQL. ``atomic`` False: the rule needs no transaction of its own (one statement)."""

    def _free_text(self, text: str | None) -> str | None:
        """Free text as this backend stores it (PostgreSQL replaces NUL)."""
        return text

    # -- operator actions ------------------------------------------------------------------
    @abc.abstractmethod
    async def cancel_run(self, run_id: str) -> RunRecord | None:
        """Pending or running → cancelled. Returns the run after the change (None if absent)."""

    @abc.abstractmethod
    async def retry_run(self, run_id: str) -> RunRecord | None:
        """Failed or cancelled → pending, keeping completed steps, with a fresh retry budget
        (``failed_attempts`` 0, no not-before time). Returns the run (None if absent)."""

    @abc.abstractmethod
    async def delete_run(self, run_id: str) -> bool:
        """Delete a run that is not running, with its steps and logs."""

    @abc.abstractmethod
    async def delete_steps(self, run_id: str) -> int:
        """Delete the step rows of a *completed* run (``preserve_steps=False``); returns how many.

        Runs in any other status keep their steps (a failed or cancelled run resumes from them on
        ``retry``), so a late call can never take checkpoints from a run that still needs them.
        """

    @abc.abstractmethod
    async def purge_runs(self, older_than: datetime, batch_size: int = 500) -> int:
        """Delete up to ``batch_size`` finished runs completed before ``older_than``."""

    # -- the worker registry -----------------------------------------------------------------
    @abc.abstractmethod
    async def register_worker(self, info: WorkerInfo) -> None:
        """Add (or refresh) a worker's row: started and heartbeat now, holding nothing."""

    @abc.abstractmethod
    async def heartbeat_worker(self, worker_id: str, runs_held: int) -> bool:
        """Stamp a worker's heartbeat; False when it has no row (it must register again)."""

    @abc.abstractmethod
    async def deregister_worker(self, worker_id: str) -> None:
        """Remove a worker's row (a clean stop)."""

    @abc.abstractmethod
    async def list_workers(self) -> list[WorkerRecord]:
        """Every registry row, oldest start first, each with the runs it holds now (``leased``)."""

    @abc.abstractmethod
    async def take_over_worker(self, worker_id: str, by: str) -> list[str]:
        """A worker's process is gone for certain: mark its row gone (by ``by``) and expire the
        leases of the runs it holds, so that they can be claimed now. Returns those runs' ids.
        Fencing still guards them: their generation changes only when they are claimed."""

    @abc.abstractmethod
    async def purge_workers(self, older_than: datetime) -> int:
        """Delete registry rows whose last heartbeat is older than ``older_than``."""

    @abc.abstractmethod
    async def pending_counts(self) -> dict[str, int]:
        """Pending runs per job name (for "no live worker has this job")."""

    @abc.abstractmethod
    async def queue_blocker(self, run_id: str) -> RunRecord | None:
        """For a pending run with a concurrency key: the run of that key it waits for (an older
        active one, or one running under a live lease); None otherwise."""

    # -- schedules ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def get_cursors(self) -> dict[str, datetime]:
        """The last fire time handled, per schedule."""

    @abc.abstractmethod
    async def advance_cursor(self, schedule: str, to: datetime) -> datetime:
        """Move a schedule's cursor forward to ``to`` (never back); returns the cursor after.

        Used when a schedule is first seen (start from now, no backfill) and when its cron or time
        zone changes.
        """

    async def advance_cursors(self, cursors: Mapping[str, datetime]) -> None:
        """Move many schedules' cursors forward (never back) in one transaction (a scheduler's load:
        the schedules without a cursor, or with a new cron, start from now)."""
        if any(t.tzinfo is None for t in cursors.values()):
            raise InvalidArgumentError("naive datetime: durably-sched needs timezone-aware times")
        moves = tuple(sorted(cursors.items()))
        if moves:
            await self._rule("advance_cursors", lambda replay: advance_cursors(moves))

    async def fire(self, fire: Fire) -> FireResult:
        """Handle one fire time atomically (see :class:`Fire`).

        The fire record is the authority: when one exists for (schedule, fire time), the result is
        ``deduplicated`` and no run is created, even if the run itself was purged since.
        """
        [result] = await self.fire_many([fire])
        return result

    async def fire_many(self, fires: Sequence[Fire]) -> list[FireResult]:
        """Handle many fire times in one transaction, each as :meth:`fire` would, in the order
        given (a later fire time of the same schedule sees the runs created for earlier ones)."""
        if not fires:
            return []
        if any(f.fire_time.tzinfo is None for f in fires):
            raise InvalidArgumentError("naive datetime: durably-sched needs timezone-aware times")
        return await self._rule("fire", lambda replay: fire_many(fires, replay))

    # -- schedulers sharing the schedules (schedule/ownership.py) ----------------------------------
    async def balance_buckets(self, info: SchedulerInfo, lease_seconds: float, total: int) -> BucketLease:
        """One beat of a scheduler's bucket leases (rules.balance_buckets), by the store's clock."""
        return await self._rule("balance_buckets", lambda replay: balance_buckets(info, lease_seconds, total))

    async def leave_buckets(self, scheduler_id: str) -> None:
        """The scheduler stops: its buckets are free at once and its row goes."""
        await self._rule("leave_buckets", lambda replay: leave(scheduler_id))

    @abc.abstractmethod
    async def list_schedulers(self) -> list[SchedulerRecord]:
        """The scheduler registry, with the buckets each owns now (oldest first)."""

    @abc.abstractmethod
    async def database_time(self) -> datetime:
        """The store's clock now (PostgreSQL: the server's ``clock_timestamp()``)."""

    @abc.abstractmethod
    async def list_fire_records(
        self, schedule: str, limit: int = 50, before: datetime | None = None
    ) -> list[FireRecord]:
        """Newest first."""

    @abc.abstractmethod
    async def last_fire_records(self, schedules: Sequence[str] | None = None) -> dict[str, FireRecord]:
        """The newest fire record of every schedule (with ``schedules``: of these only, one index
        read each, for a page of a list)."""

    @abc.abstractmethod
    async def purge_fire_records(self, older_than: datetime, batch_size: int = 500) -> int: ...

    # -- schedule states (pause/resume, failure counts) -------------------------------------
    @abc.abstractmethod
    async def get_schedule_states(self, *, attention_only: bool = False) -> dict[str, ScheduleState]:
        """Every schedule's state row; with ``attention_only``, only paused or failing schedules
        (what a scheduler reads once per tick, through an index that holds only those)."""

    @abc.abstractmethod
    async def get_schedule_state(self, schedule: str) -> ScheduleState | None: ...

    @abc.abstractmethod
    async def get_schedule_states_of(self, schedules: Sequence[str]) -> dict[str, ScheduleState]:
        """The state rows of these schedules (a page of a schedule list), by their key."""

    async def pause_schedule(
        self,
        schedule: str,
        *,
        reason: str | None,
        by: str,
        auto: bool = False,
        min_failures: int | None = None,
        at: datetime | None = None,
    ) -> StateChange:
        """Pause a schedule unless it is paused already (then nothing changes).

        ``at`` is the moment of the pause (default: the store's clock, as for leases).

        With ``min_failures`` (automatic pause) it pauses only if the schedule has at least that many
        failures since its last resume, checked in the same statement, so a run completed meanwhile
        prevents the pause. An automatic pause counts from the failure that caused it (``paused_at``
        is that run's completion): fire times after it are paused, whenever a scheduler gets to them.
        """
        request = PauseState(schedule, by, self._free_text(reason), auto, min_failures or 0, at)
        return await self._rule("pause_schedule", lambda replay: pause(request, replay))

    async def resume_schedule(
        self, schedule: str, *, by: str, at: datetime | None = None
    ) -> StateChange | None:
        """Resume a paused schedule (at ``at``, default: the store's clock); None if it has no state row.

        In the same transaction the schedule's cursor moves to now (never back), so fire times of
        the paused span that no scheduler handled while it was paused are never caught up later
        behind the operator's back.
        """
        request = ResumeState(schedule, by, at)
        return await self._rule("resume_schedule", lambda replay: resume(request, replay))

    @abc.abstractmethod
    async def schedule_activity(
        self, until: datetime, bucket: timedelta, buckets: int
    ) -> dict[str, ScheduleActivity]:
        """For every schedule with runs created in the ``buckets`` buckets of length ``bucket``
        ending at ``until``: its runs and failed runs per bucket, in one query (schedules without
        runs in the window are left out). InvalidArgumentError for fewer than 1 or more than 1000 buckets."""

    @abc.abstractmethod
    async def last_run_times(self) -> dict[str, datetime]:
        """For every schedule with a cursor: when its newest stored run was created (index lookups,
        one per schedule; schedules with no stored run are left out)."""

    # -- cross-process wake-ups ------------------------------------------------------------
    def set_wakeup(self, callback: Callable[[], None]) -> None:
        """Register a callback run (on the event loop) when another process may have made work.

        Backends with notifications (PostgreSQL LISTEN/NOTIFY) call it; others rely on polling.
        """
        self._wakeup = callback

    _wakeup: Callable[[], None] | None = None

    def on_schedules_changed(self, callback: Callable[[], None], *, add: bool = True) -> None:
        """Add (or remove) a callback run on the event loop when a schedule may have changed in
        another process. PostgreSQL calls it on the change's NOTIFY; other backends never do (a
        scheduler polls ``schedule_seq`` anyway)."""
        keep_callback(self, "_schedule_callbacks", callback, add)

    def schedules_changed(self) -> None:
        """Run the callbacks of :meth:`on_schedules_changed`."""
        call_callbacks(self, "_schedule_callbacks")
