"""The ``Durably`` facade: jobs, triggers, waiting, operator actions, lifecycle."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from .errors import (
    InvalidStateError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    UnknownJobError,
)
from .events import EventEmitter, RunCancelEvent, RunRetryEvent, RunTriggerEvent
from .jobs import JobDefinition
from .retry import Retry, RetryPolicyError, parse_seconds
from .store import database_url, open_store
from .store.base import (
    Disposition,
    Fire,
    FireResult,
    LogRecord,
    NewRun,
    RunQuery,
    RunRecord,
    RunStatus,
    StepRecord,
    Store,
    WorkerRecord,
)
from .waiters import Waiters
from .worker import Worker

if TYPE_CHECKING:
    import asyncio

    from .waiters import Done

log = logging.getLogger("durably_sched")
O = TypeVar("O")  # noqa: E741


@dataclass(frozen=True, slots=True)
class Run:
    """A run as returned by a trigger: the stored record plus how the trigger was resolved."""

    record: RunRecord
    disposition: Disposition

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def status(self) -> RunStatus:
        return self.record.status

    @property
    def job_name(self) -> str:
        return self.record.job_name


@dataclass(frozen=True, slots=True)
class RunResult(Generic[O]):
    """What ``trigger_and_wait`` returns for a completed run."""

    id: str
    output: O
    disposition: Disposition = "created"


class JobHandle(Generic[O]):
    """``durably.jobs.<key>``: trigger a registered job."""

    def __init__(self, durably: Durably, job: JobDefinition[Any, Any]) -> None:
        self._durably = durably
        self.job = job
        self.name = job.name

    async def trigger(
        self,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        labels: Mapping[str, str] | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
    ) -> Run:
        """Trigger a run. ``retry`` (a Retry, or a mapping of fields to change in the job's policy)
        and ``run_timeout`` override the job's for this run and are stored with it."""
        runs = await self._durably._trigger_many(
            self.job, [input], idempotency_key, concurrency_key, labels, retry=retry, run_timeout=run_timeout
        )
        return runs[0]

    async def batch_trigger(
        self,
        inputs: Iterable[Any],
        *,
        concurrency_key: str | None = None,
        labels: Mapping[str, str] | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
    ) -> list[Run]:
        """Trigger one run per input in a single write (all validated first; nothing is stored if
        any input is invalid). The runs share ``concurrency_key``, ``labels`` and overrides."""
        return await self._durably._trigger_many(
            self.job, list(inputs), None, concurrency_key, labels, retry=retry, run_timeout=run_timeout
        )

    async def trigger_and_wait(
        self,
        input: Any = None,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        labels: Mapping[str, str] | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
    ) -> RunResult[O]:
        """Trigger a run and wait until it finishes (retries included); ``timeout`` bounds the wait,
        ``run_timeout`` each attempt of the run."""
        durably = self._durably
        waiters = durably.waiters
        run_id = str(uuid.uuid4())
        waiter = waiters.add(run_id)
        try:
            runs = await durably._trigger_many(
                self.job,
                [input],
                idempotency_key,
                concurrency_key,
                labels,
                run_ids=[run_id],
                retry=retry,
                run_timeout=run_timeout,
            )
            run = runs[0]
            if run.id != run_id:  # idempotent: an existing run
                waiters.remove(run_id, waiter)
                run_id = run.id
                waiter = waiters.add(run_id)
                if run.record.is_finished:
                    waiters.resolve(run_id)
            return await durably._await_result(self.job, run_id, waiter, timeout, run.disposition)
        finally:
            waiters.remove(run_id, waiter)


class _JobsNamespace:
    def __init__(self) -> None:
        self._handles: dict[str, JobHandle[Any]] = {}

    def __getattr__(self, key: str) -> JobHandle[Any]:
        try:
            return self._handles[key]
        except KeyError:
            raise AttributeError(
                f"no job registered as {key!r}; registered: {', '.join(sorted(self._handles)) or 'none'}"
            ) from None

    def __getitem__(self, key: str) -> JobHandle[Any]:
        return self.__getattr__(key)

    def __iter__(self) -> Any:
        return iter(self._handles.items())

    def __len__(self) -> int:
        return len(self._handles)


class Durably:
    """One durably-sched instance: a store, registered jobs, a worker and the event emitter."""

    def __init__(
        self,
        store: Store,
        *,
        polling_interval: float = 1.0,
        heartbeat_interval: float = 5.0,
        stale_threshold: float = 30.0,
        max_concurrent_runs: int = 1,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        self.events = EventEmitter()
        self.jobs = _JobsNamespace()
        self._by_name: dict[str, JobDefinition[Any, Any]] = {}
        self.polling_interval = polling_interval
        self.waiters = Waiters(store)
        self.worker = Worker(
            store=store,
            events=self.events,
            jobs=self._by_name,
            on_finished=self._finished_here,
            concurrency=max_concurrent_runs,
            polling_interval=polling_interval,
            heartbeat_interval=heartbeat_interval,
            stale_threshold=stale_threshold,
            worker_id=worker_id,
        )
        self._connected = False

    # -- registration ------------------------------------------------------------------------
    def register(
        self, jobs: Mapping[str, JobDefinition[Any, Any]] | Iterable[JobDefinition[Any, Any]]
    ) -> Self:
        """Register jobs, as ``{"attribute": job}`` (then ``durably.jobs.attribute``) or a list."""
        items = jobs.items() if isinstance(jobs, Mapping) else ((j.name, j) for j in jobs)
        for key, job in items:
            if not isinstance(job, JobDefinition):
                raise TypeError(f"register: {key!r} is not a job made by define_job")
            existing = self._by_name.get(job.name)
            if existing is not None and existing is not job:
                raise ValueError(f"two different jobs are named {job.name!r}")
            self._by_name[job.name] = job
            self.jobs._handles[key] = JobHandle(self, job)
        return self

    @property
    def job_names(self) -> list[str]:
        return list(self._by_name)

    def job_by_name(self, name: str) -> JobDefinition[Any, Any]:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise UnknownJobError(f"unknown job '{name}' (registered: {known})") from None

    def job(self, name: str) -> JobHandle[Any]:
        """The handle of a job by its name (as given to define_job)."""
        job = self.job_by_name(name)
        for handle in self.jobs._handles.values():
            if handle.job is job:
                return handle
        raise UnknownJobError(name)  # pragma: no cover - register keeps both maps in step

    def on(self, event_type: str, listener: Callable[[Any], Any]) -> Callable[[], None]:
        """Subscribe to an event type (``"run:complete"``, ... or ``"*"``); returns unsubscribe."""
        return self.events.on(event_type, listener)

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Whether the database is open: after connect/migrate/start/init, until close."""
        return self._connected

    async def connect(self) -> None:
        """Open the database without migrating or starting the worker."""
        if not self._connected:
            await self.store.connect()
            self._connected = True

    async def migrate(self) -> int:
        await self.connect()
        return await self.store.migrate()

    async def start(self, *, worker: bool = True) -> None:
        await self.connect()
        await self.store.check_schema()
        self.store.set_wakeup(self.worker.wake)
        if worker:
            self.worker.start()

    async def init(self) -> None:
        """``migrate()`` then ``start()``."""
        await self.migrate()
        await self.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; give running steps ``grace`` seconds to checkpoint; release leases."""
        await self.worker.stop(grace)

    async def close(self) -> None:
        await self.stop()
        await self.waiters.close()
        await self.events.drain()
        if self._connected:
            await self.store.close()
            self._connected = False

    async def __aenter__(self) -> Self:
        await self.init()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- triggers ------------------------------------------------------------------------------
    async def _trigger_many(
        self,
        job: JobDefinition[Any, Any],
        inputs: Sequence[Any],
        idempotency_key: str | None,
        concurrency_key: str | None,
        labels: Mapping[str, str] | None,
        run_ids: Sequence[str] | None = None,
        *,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
    ) -> list[Run]:
        label_map = _check_labels(labels)
        policy = stored_retry_policy(job, retry)
        seconds = stored_timeout(job, run_timeout)
        new_runs = [
            NewRun(
                id=run_ids[i] if run_ids else str(uuid.uuid4()),
                job_name=job.name,
                input=job.validate_input(raw),
                idempotency_key=idempotency_key,
                concurrency_key=concurrency_key,
                labels=label_map,
                retry_policy=policy,
                timeout=seconds,
            )
            for i, raw in enumerate(inputs)
        ]
        if not new_runs:
            return []
        runs = [Run(record, disposition) for record, disposition in await self.store.create_runs(new_runs)]
        self._after_trigger(runs)
        return runs

    def _after_trigger(self, runs: Sequence[Run]) -> None:
        if any(r.disposition == "created" for r in runs):
            self.worker.wake()
        if self.events.wants("run:trigger"):
            for run in runs:
                if run.disposition == "created":
                    rec = run.record
                    self.events.emit(
                        RunTriggerEvent(
                            run_id=rec.id, job_name=rec.job_name, labels=rec.labels, input=rec.input
                        )
                    )

    async def trigger(
        self,
        job_name: str,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        labels: Mapping[str, str] | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
    ) -> Run:
        """Trigger a job by its name (``durably.jobs.<key>.trigger`` is the usual way)."""
        job = self.job_by_name(job_name)
        runs = await self._trigger_many(
            job, [input], idempotency_key, concurrency_key, labels, retry=retry, run_timeout=run_timeout
        )
        return runs[0]

    async def fire(self, fire: Fire) -> FireResult:
        """Handle one schedule fire time (used by the scheduler, slot triggers and backfills)."""
        if fire.run is not None:
            # Store the validated form, exactly as a direct trigger would (defaults filled in); a
            # schedule's retry override is completed from the job's policy.
            job = self.job_by_name(fire.run.job_name)
            stored = job.validate_input(fire.run.input)
            policy = stored_retry_policy(job, fire.run.retry_policy)
            seconds = stored_timeout(job, fire.run.timeout)
            fire = dataclasses.replace(
                fire, run=dataclasses.replace(fire.run, input=stored, retry_policy=policy, timeout=seconds)
            )
        result = await self.store.fire(fire)
        if result.run is not None and result.outcome == "triggered":
            self._after_trigger([Run(result.run, "created")])
        return result

    # -- waiting ---------------------------------------------------------------------------------
    def _finished_here(self, run_id: str, completed: bool, output: Any) -> None:
        """The worker finished a run: wake its waiters without a database round trip."""
        self.waiters.resolve(run_id, (True, output) if completed else None)

    async def _await_result(
        self,
        job: JobDefinition[Any, Any],
        run_id: str,
        waiter: asyncio.Future[Done],
        timeout: float | None,
        disposition: Disposition,
    ) -> RunResult[Any]:
        (here, value), record = await self.waiters.wait(run_id, waiter, timeout)
        if here or record is None:
            return RunResult(id=run_id, output=value, disposition=disposition)
        if record.status == "completed":
            return RunResult(id=run_id, output=job.parse_output(record.output), disposition=disposition)
        if record.status == "cancelled":
            raise RunCancelledError(run_id)
        raise RunFailedError(run_id, record.error, record.failed_step_name)

    async def wait_for_run(self, run_id: str, timeout: float | None = None) -> RunRecord:
        """Wait until a run (triggered anywhere) finishes; returns its final record."""
        waiter = self.waiters.add(run_id)
        try:
            record = await self.get_run(run_id)
            if record.is_finished:
                return record
            _, final = await self.waiters.wait(run_id, waiter, timeout)
            return final if final is not None else await self.get_run(run_id)
        finally:
            self.waiters.remove(run_id, waiter)

    # -- operator actions ------------------------------------------------------------------------
    async def get_run(self, run_id: str) -> RunRecord:
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFoundError(f"no run with id '{run_id}'")
        return record

    async def get_runs(
        self,
        status: RunStatus | Sequence[RunStatus] | None = None,
        job_name: str | None = None,
        *,
        schedule: str | None = None,
        limit: int = 50,
        before: datetime | None = None,
    ) -> list[RunRecord]:
        statuses: tuple[RunStatus, ...] = ()
        if isinstance(status, str):
            statuses = (status,)
        elif status is not None:
            statuses = tuple(status)
        return await self.store.list_runs(
            RunQuery(
                statuses=statuses, job_name=job_name, schedule=schedule, limit=limit, before_created=before
            )
        )

    async def get_failed_runs(self, limit: int = 50) -> list[RunRecord]:
        return await self.get_runs(status="failed", limit=limit)

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        await self.get_run(run_id)
        return await self.store.get_steps(run_id)

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
        if not await self.store.delete_run(run_id):
            record = await self.get_run(run_id)
            raise InvalidStateError(f"run {run_id} is {record.status}: cancel it before deleting it")

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
        (``state`` live, stale or gone; rows of dead workers are kept for a day)."""
        return await self.store.list_workers()

    async def jobs_without_worker(self) -> dict[str, int]:
        """Pending runs of jobs that no live worker has, by job name (say, a job added after the
        running ``serve`` started: it runs once a ``serve`` with that code is started)."""
        pending = await self.store.pending_counts()
        if not pending:
            return {}
        served: set[str] = set()
        for worker in await self.store.list_workers():
            if worker.alive:
                served.update(worker.jobs)
        return {job: count for job, count in sorted(pending.items()) if job not in served}

    async def waiting_reason(self, run: RunRecord) -> str | None:
        """Why a pending run has not started (None for other statuses): its retry backoff, an
        earlier run of its concurrency key, no live worker with its job, or a worker to claim it."""
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
        if run.job_name in await self.jobs_without_worker():
            return f"no live worker has job '{run.job_name}'"
        return "for a worker to claim it"


def stored_retry_policy(
    job: JobDefinition[Any, Any], override: Retry | Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """What a run stores of a retry override: the complete policy (the job's, with the fields the
    override changes), or None when there is no override (the job's policy applies as it is)."""
    if override is None:
        return None
    if isinstance(override, Retry):
        return override.to_json()
    if not isinstance(override, Mapping):
        raise TypeError(f"retry must be a Retry or a mapping of its fields (got {type(override).__name__})")
    try:
        return (job.retry or Retry()).merged(override).to_json()
    except RetryPolicyError as exc:
        raise ValueError(f"job '{job.name}': retry.{exc}") from None


def stored_timeout(job: JobDefinition[Any, Any], value: float | timedelta | str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_seconds(value, "timeout", allow_zero=False)
    except RetryPolicyError as exc:
        raise ValueError(f"job '{job.name}': {exc}") from None


def _check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    if not labels:
        return {}
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"labels must map strings to strings (got {key!r}: {value!r})")
        out[key] = value
    return out


def create_durably(
    database: str | None = None,
    *,
    polling_interval: float = 1.0,
    heartbeat_interval: float = 5.0,
    stale_threshold: float = 30.0,
    max_concurrent_runs: int = 1,
    worker_id: str | None = None,
) -> Durably:
    """A Durably instance on ``database`` (default: $DURABLY_DATABASE_URL, else sqlite:///durably.db)."""
    return Durably(
        open_store(database_url(database), worker_concurrency=max_concurrent_runs),
        polling_interval=polling_interval,
        heartbeat_interval=heartbeat_interval,
        stale_threshold=stale_threshold,
        max_concurrent_runs=max_concurrent_runs,
        worker_id=worker_id,
    )


__all__ = [
    "Durably",
    "JobHandle",
    "Run",
    "RunResult",
    "create_durably",
    "stored_retry_policy",
    "stored_timeout",
]
