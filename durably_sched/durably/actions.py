"""Reading runs and their live events, operator actions on runs (retry, retrigger, cancel, delete,
purge), and the worker registry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from .._bounds import plain_labels
from ..errors import AmbiguousRunIdError, InvalidStateError, RunNotFoundError
from ..events import RunCancelEvent, RunDeleteEvent, RunRetryEvent
from ..registry import check_processes
from ..store.attempts import AttemptRecord
from ..store.base import (
    BucketLease,
    LogRecord,
    RunQuery,
    RunRecord,
    RunStatus,
    SchedulerInfo,
    SchedulerRecord,
    StepRecord,
    WorkerRecord,
)
from ..stream.feed import RunListSubscription, RunSubscription
from .triggers import Triggers
from .values import Run

MIN_RUN_ID_PREFIX = 6
"""The shortest run id prefix :meth:`Durably.resolve_run_id` accepts (tables show 8 characters)."""
RUN_ID_CANDIDATES_SHOWN = 10


class RunActions(Triggers):
    """Reading runs, their live events and the workers; retry, retrigger, cancel, delete, purge."""

    # -- live events from the store (any process) ---------------------------------------------------
    def subscribe(
        self, run_id: str, *, since: RunRecord | None = None, after_log_id: int | None = None
    ) -> RunSubscription:
        """Events of one run, wherever it executes, read from the store; the iterator ends with
        the run's ``run:complete``, ``run:fail``, ``run:cancel`` (or ``run:delete``) event::

            async for event in durably.subscribe(run.id):
                print(event.type)

        Raises RunNotFoundError (from the iterator) for an unknown run. See durably_sched.stream for
        the events and how they map to the in-process ones.
        """
        return self.feed.subscribe(run_id, since=since, after_log_id=after_log_id)

    def subscribe_runs(self) -> RunListSubscription:
        """Changes of the run list (new runs, status, step counts and progress), from any process."""
        return self.feed.subscribe_runs()

    # -- operator actions ------------------------------------------------------------------------
    async def resolve_run_id(self, run_id: str) -> str:
        """The full id of the run that ``run_id`` names: the id itself, or a unique prefix of it
        at least ``MIN_RUN_ID_PREFIX`` characters long (``33fc6f80`` as tables and logs show it).

        Raises RunNotFoundError (no such run, or a prefix too short) or AmbiguousRunIdError
        (several runs start with it; the message lists them).
        """
        text = run_id.strip()
        found = await self.store.find_run_ids(text, RUN_ID_CANDIDATES_SHOWN + 1) if text else []
        if text in found:
            return text  # a whole id, even if a longer id happens to start with it
        if len(text) < MIN_RUN_ID_PREFIX:
            raise RunNotFoundError(
                f"no run with id '{text}' (a short id needs at least {MIN_RUN_ID_PREFIX} characters)"
            )
        if not found:
            raise RunNotFoundError(f"no run with id or id prefix '{text}'")
        if len(found) == 1:
            return found[0]
        shown = ", ".join(found[:RUN_ID_CANDIDATES_SHOWN])
        count = f"{RUN_ID_CANDIDATES_SHOWN}+" if len(found) > RUN_ID_CANDIDATES_SHOWN else str(len(found))
        more = ", ..." if len(found) > RUN_ID_CANDIDATES_SHOWN else ""
        raise AmbiguousRunIdError(
            f"run id prefix '{text}' matches {count} runs: {shown}{more}; give more characters",
            found[:RUN_ID_CANDIDATES_SHOWN],
        )

    async def get_runs(
        self,
        status: RunStatus | Sequence[RunStatus] | None = None,
        job_name: str | None = None,
        *,
        schedule: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int = 50,
        before: datetime | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first. ``labels``: only runs that carry every one of these labels."""
        statuses: tuple[RunStatus, ...] = ()
        if isinstance(status, str):
            statuses = (status,)
        elif status is not None:
            statuses = tuple(status)
        return await self.store.list_runs(
            RunQuery(
                statuses=statuses,
                job_name=job_name,
                schedule=schedule,
                limit=limit,
                before_created=before,
                labels=plain_labels(labels),
            )
        )

    async def get_failed_runs(self, limit: int = 50) -> list[RunRecord]:
        return await self.get_runs(status="failed", limit=limit)

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        await self.get_run(run_id)
        return await self.store.get_steps(run_id)

    async def get_attempts(self, run_id: str, after: int = 0) -> list[AttemptRecord]:
        """The run's ended attempts numbered above ``after``, oldest first (docs/attempts.md)."""
        return await self.store.get_attempts(run_id, after)

    async def get_logs(self, run_id: str, after_id: int = 0, limit: int = 1000) -> list[LogRecord]:
        return await self.store.get_logs(run_id, after_id, limit)

    async def retry(self, run_id: str) -> RunRecord:
        """A failed or cancelled run goes back to pending; it resumes after its last completed step,
        with a fresh retry budget (its failed attempts are counted from zero again)."""
        record = await self.store.retry_run(run_id)
        if record is None:
            raise RunNotFoundError(f"no run with id '{run_id}'")
        if record.status != "pending" or record.error is not None:
            raise InvalidStateError(
                f"run {run_id} is {record.status}: only failed or cancelled runs can be retried"
            )
        self.worker.wake()
        if self.events.wants("run:retry"):
            self.events.emit(RunRetryEvent(run_id=run_id, job_name=record.job_name, labels=record.labels))
        return record

    async def retrigger(self, run_id: str) -> Run:
        """A new run of the same job with the same input (and concurrency key and labels)."""
        old = await self.get_run(run_id)
        job = self.job_by_name(old.job_name)
        runs = await self._trigger_many(job, [old.input], None, old.concurrency_key, old.labels)
        return runs[0]

    async def cancel(self, run_id: str) -> RunRecord:
        """Pending: cancelled at once. Running: finishes at most its current step, never completes."""
        record = await self.store.cancel_run(run_id)
        if record is None:
            raise RunNotFoundError(f"no run with id '{run_id}'")
        if record.status != "cancelled":
            raise InvalidStateError(f"run {run_id} is already {record.status}; it cannot be cancelled")
        self.worker.mark_cancelled(run_id)
        if self.events.wants("run:cancel"):
            self.events.emit(RunCancelEvent(run_id=run_id, job_name=record.job_name, labels=record.labels))
        self.waiters.resolve(run_id)
        return record

    async def delete_run(self, run_id: str) -> None:
        """Delete a run that is not running, with its steps and logs (event ``run:delete``)."""
        wanted = self.events.wants("run:delete")
        before = await self.store.get_run(run_id) if wanted else None
        if not await self.store.delete_run(run_id):
            record = await self.get_run(run_id)
            raise InvalidStateError(f"run {run_id} is {record.status}: cancel it before deleting it")
        if before is not None:
            self.events.emit(RunDeleteEvent(run_id=run_id, job_name=before.job_name, labels=before.labels))

    async def purge_runs(self, older_than: timedelta, batch_size: int = 500) -> int:
        """Delete finished runs that completed more than ``older_than`` ago; returns how many."""
        cutoff = datetime.now(UTC) - older_than
        total = 0
        while True:
            n = await self.store.purge_runs(cutoff, batch_size)
            total += n
            if n < batch_size:
                return total

    # -- workers -----------------------------------------------------------------------------------
    async def list_workers(self) -> list[WorkerRecord]:
        """The worker registry: every worker process that registered and has not stopped cleanly
        (``state`` live, stale or gone; rows of dead workers are kept for a day). Workers on this
        host whose process has ended say ``gone`` at once (their pid is checked now), and each
        worker's ``leased`` runs are the ones it holds now."""
        return check_processes(await self.store.list_workers())

    async def list_schedulers(self) -> list[SchedulerRecord]:
        """The scheduler registry: each scheduler's host, pid, schedules loaded, clock offset and
        the schedule buckets it owns now (rows of schedulers that stopped cleanly are gone)."""
        return await self.store.list_schedulers()

    async def balance_buckets(self, info: SchedulerInfo, lease_seconds: float, total: int) -> BucketLease:
        """One beat of a scheduler's bucket leases (schedule/ownership.py)."""
        return await self.store.balance_buckets(info, lease_seconds, total)

    async def leave_buckets(self, scheduler_id: str) -> None:
        """A scheduler stops: its buckets are free at once."""
        await self.store.leave_buckets(scheduler_id)

    async def schedule_version(self, name: str) -> int | None:
        """The newest version of schedule ``name`` in the database (None: not stored there)."""
        found = await self.store.get_schedule_def(name)
        return None if found is None else found.version

    async def database_time(self) -> datetime:
        """The database's clock now (PostgreSQL: the server's; SQLite: this host's)."""
        return await self.store.database_time()

    async def jobs_without_worker(self) -> dict[str, int]:
        """Pending runs of jobs that no live worker has, by job name (say, a job added after the
        running ``serve`` started: it runs once a ``serve`` with that code is started)."""
        pending = await self.store.pending_counts()
        if not pending:
            return {}
        served: set[str] = set()
        for worker in await self.list_workers():
            if worker.alive:
                served.update(worker.jobs)
        return {job: count for job, count in sorted(pending.items()) if job not in served}

    async def waiting_reason(self, run: RunRecord) -> str | None:
        """Why a pending run has not started (None for other statuses): its retry backoff, an
        earlier run of its concurrency key, no live worker with its job, or a worker to claim it.
        None too when this process's worker runs only this run (``trigger --here``): it claims it."""
        if run.status != "pending":
            return None
        now = datetime.now(UTC)
        if run.not_before is not None and run.not_before > now:
            wait = (run.not_before - now).total_seconds()
            tries = f"{run.failed_attempts} failed attempt{'s' if run.failed_attempts != 1 else ''}"
            return f"retry after {tries}, in {max(wait, 0.5):.0f}s"
        blocker = await self.store.queue_blocker(run.id)
        if blocker is not None:
            return f"concurrency key '{run.concurrency_key}': run {blocker.id} ({blocker.status}) goes first"
        worker = self.worker
        if worker.running and worker.only_run_ids is not None and run.id in worker.only_run_ids:
            return None  # trigger --here: this process is about to run it, nothing to explain
        if run.job_name in await self.jobs_without_worker():
            return f"no live worker has job '{run.job_name}'"
        return "for a worker to claim it"
