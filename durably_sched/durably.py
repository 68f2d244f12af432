"""The ``Durably`` facade: jobs, triggers, waiting, operator actions, lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ValidationError

from ._bounds import SYSTEM_LABELS, check_key, check_labels, plain_labels, stored_input
from ._durations import parse_duration
from ._facade_reads import FacadeReads  # issue 21 (layout): the reads schedule/ and web/ ask for
from .errors import (
    AmbiguousRunIdError,
    InputValidationError,
    InvalidArgumentError,
    InvalidStateError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    ScheduleNotFoundError,
    UnknownJobError,
)
from .events import (
    EventEmitter,
    Listens,
    RunCancelEvent,
    RunCoalescedEvent,
    RunDeleteEvent,
    RunRetryEvent,
    RunTriggerEvent,
    SchedulePauseEvent,
    ScheduleResumeEvent,
)
from .execution.producer import Producer
from .feed import RunFeed, RunListSubscription, RunSubscription
from .jobs import JobDefinition, describe_validation_error
from .limits import Limits
from .registry import check_processes
from .retry import Retry, RetryPolicyError, parse_seconds
from .store import database_url, open_store
from .store.attempts import AttemptRecord
from .store.base import (
    Disposition,
    Fire,
    FireResult,
    LogRecord,
    NewRun,
    Progress,
    RunQuery,
    RunRecord,
    RunStatus,
    ScheduleState,
    StateChange,
    StepRecord,
    Store,
    WorkerRecord,
)
from .waiters import LogCallback, ProgressCallback, Waiters, follow_run_updates

if TYPE_CHECKING:
    from .clock import Clock as ExecutionClock
    from .execution.producer import HandOff
    from .ops.retention import Retention
    from .schedule.config import ScheduleEntry, SchedulesConfig
    from .schedule.pausing import ResumeResult
    from .schedule.scheduler import Clock
    from .waiters import Done

log = logging.getLogger("durably_sched")
O = TypeVar("O")  # noqa: E741
MIN_RUN_ID_PREFIX = 6
"""The shortest run id prefix :meth:`Durably.resolve_run_id` accepts (tables show 8 characters)."""
RUN_ID_CANDIDATES_SHOWN = 10

Coalesce = Literal["skip"]
COALESCE_MODES: tuple[str, ...] = ("skip",)


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
        labels: Mapping[str, Any] | None = None,
        coalesce: Coalesce | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
    ) -> Run:
        """A run of the job. With ``coalesce="skip"`` (needs ``concurrency_key``), a pending run of
        this job and key that has not started yet is returned instead (disposition ``coalesced``).
        ``retry`` (a Retry, or a mapping of fields to change in the job's policy) and ``run_timeout``
        override the job's for this run and are stored with it."""
        runs = await self._durably._trigger_many(
            self.job,
            [input],
            idempotency_key,
            concurrency_key,
            labels,
            coalesce=coalesce,
            retry=retry,
            run_timeout=run_timeout,
        )
        return runs[0]

    async def batch_trigger(
        self,
        inputs: Iterable[Any],
        *,
        concurrency_key: str | None = None,
        labels: Mapping[str, Any] | None = None,
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
        labels: Mapping[str, Any] | None = None,
        coalesce: Coalesce | None = None,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
    ) -> RunResult[O]:
        """Trigger and wait until the run finishes (retries included); ``timeout`` bounds the wait,
        ``run_timeout`` each attempt of the run. ``on_progress``/``on_log`` as in
        :meth:`Durably.wait_for_run` (for a new run: all of its progress and log lines)."""
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
                coalesce=coalesce,
                retry=retry,
                run_timeout=run_timeout,
                claim_here=True,
            )
            run = runs[0]
            if run.id != run_id:  # idempotent or coalesced: an existing run
                waiters.remove(run_id, waiter)
                run_id = run.id
                waiter = waiters.add(run_id)
                if run.record.is_finished:
                    waiters.resolve(run_id)
            if on_progress is not None or on_log is not None:
                after = 0 if run.disposition == "created" else await durably.store.last_log_id(run_id)
                record = await durably._follow(run_id, waiter, timeout, on_progress, on_log, after)
                return durably._result_of(self.job, record, run.disposition)
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


class Durably(FacadeReads, Listens):
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
        labels: type[BaseModel] | None = None,
        preserve_steps: bool = True,
        retain_runs: str | timedelta | None = None,
        limits: Limits | None = None,
        clock: ExecutionClock | None = None,
    ) -> None:
        if labels is not None and not (isinstance(labels, type) and issubclass(labels, BaseModel)):
            raise InvalidArgumentError(f"labels: expected a pydantic BaseModel subclass, got {labels!r}")
        retention_age = _retention_age(retain_runs)
        if limits is not None and not isinstance(limits, Limits):
            raise InvalidArgumentError(f"limits: expected a durably_sched.Limits, got {limits!r}")
        self.limits = limits or Limits()
        """Size limits on inputs, labels, keys, log lines, step values and HTTP bodies."""
        self.store = store
        self.events = EventEmitter()
        self.jobs = _JobsNamespace()
        self._by_name: dict[str, JobDefinition[Any, Any]] = {}
        self.polling_interval = polling_interval
        self.labels_model = labels
        """The pydantic model every trigger's labels are validated with (None: any str -> str)."""
        self.preserve_steps = preserve_steps
        self.waiters = Waiters(store)
        self.worker = Producer(
            store=store,
            events=self.events,
            jobs=self._by_name,
            on_finished=self._finished_here,
            concurrency=max_concurrent_runs,
            polling_interval=polling_interval,
            heartbeat_interval=heartbeat_interval,
            stale_threshold=stale_threshold,
            worker_id=worker_id,
            keep_steps=preserve_steps,
            limits=self.limits,
            clock=clock,
        )
        self.retention: Retention | None = None
        """With ``retain_runs``: the purge of finished runs (``durably_sched.ops.retention``)."""
        if retention_age is not None:
            from .ops.retention import Retention

            self.retention = Retention(self, retention_age)
        self._connected = False
        self._feed: RunFeed | None = None
        self._schedules: SchedulesConfig | None = None
        self.schedule_clock: Clock | None = None
        """Where pause and resume times and the catch-up window's "now" come from. None (default):
        the store's clock (PostgreSQL's, or this host's for SQLite). Tests give the scheduler's."""

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

    def _subscribe(self, event_type: str, listener: Callable[[Any], Any]) -> Callable[[], None]:
        """``on`` (typed per event type in :class:`~durably_sched.events.Listens`): this process's emitter."""
        return self.events._subscribe(event_type, listener)

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
        """Check the schema and start the worker (unless ``worker=False``) and, with
        ``retain_runs``, the background purge of finished runs."""
        await self.connect()
        await self.store.check_schema()
        self.store.set_wakeup(self.worker.wake)
        if worker:
            self.worker.start()
        if self.retention is not None:
            self.retention.start()

    async def init(self) -> None:
        """``migrate()`` then ``start()``."""
        await self.migrate()
        await self.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; give running steps ``grace`` seconds to checkpoint; release leases."""
        if self.retention is not None:
            await self.retention.stop()
        await self.worker.stop(grace)

    # -- one-shot processing ---------------------------------------------------------------------
    async def process_one(self, *, jobs: Sequence[str] | None = None) -> RunRecord | None:
        """Claim one run that is claimable now, execute it here, and return its final record;
        None when there was nothing to do. See :meth:`process_until_idle`."""
        done = await self._process(1, jobs)
        return done[0] if done else None

    async def process_until_idle(
        self, max_runs: int | None = None, *, jobs: Sequence[str] | None = None
    ) -> list[RunRecord]:
        """Execute runs here until none is claimable now; returns the final records of the runs it
        executed, in claim order (``len()`` is how many).

        For cron-style runners that cannot keep a worker running: up to ``max_concurrent_runs`` at
        once, through the worker's own claims and execution (leases, heartbeats, fencing). Runs
        that are not this call's work are not waited for: runs executing in other processes (under
        live leases), runs of jobs not registered here (or not in ``jobs``), runs waiting for their
        concurrency key behind a run executing elsewhere, runs claimable only later. A run claimed
        here that another run of its key was waiting for lets that one go next, in this call.
        ``max_runs`` stops claiming after that many. With ``retain_runs``, reaching idle also
        purges expired runs (at most once per retention interval). ``stop()`` from another task
        ends it early: running steps get the grace, then their runs are released.

        Not while this instance's worker loop runs (``start()``): use ``start(worker=False)``.
        """
        if max_runs is not None and (type(max_runs) is not int or max_runs < 1):
            raise InvalidArgumentError(f"max_runs: expected a positive integer or None, got {max_runs!r}")
        done = await self._process(max_runs, jobs)
        idle = (max_runs is None or len(done) < max_runs) and not self.worker.stopping
        if idle and self.retention is not None:
            await self.retention.run_if_due()
        return done

    async def _process(self, max_runs: int | None, jobs: Sequence[str] | None) -> list[RunRecord]:
        if isinstance(jobs, str):
            raise InvalidArgumentError(f"jobs: expected a list of job names, got the string {jobs!r}")
        names = None if jobs is None else [self.job_by_name(name).name for name in jobs]
        if self.worker.running:
            raise InvalidStateError(
                "this Durably's worker loop is running (start() started it): process runs one-shot "
                "with start(worker=False), or let the worker do it"
            )
        if not self._connected:
            await self.start(worker=False)
        return await self.final_records(await self.worker.process(max_runs=max_runs, job_names=names))

    async def final_records(self, runs: Sequence[RunRecord]) -> list[RunRecord]:
        """The runs as stored now, in the order given, 500 per query; a run deleted since comes
        back as given."""
        found: dict[str, RunRecord] = {}
        for i in range(0, len(runs), 500):
            found.update(await self.store.get_runs_by_id([run.id for run in runs[i : i + 500]]))
        return [found.get(run.id, run) for run in runs]

    async def close(self) -> None:
        await self.stop()
        if self._feed is not None:
            await self._feed.close()
            self._feed = None
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
        labels: Mapping[str, Any] | None,
        run_ids: Sequence[str] | None = None,
        coalesce: Coalesce | None = None,
        *,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
        claim_here: bool = False,
    ) -> list[Run]:
        if coalesce is not None:
            if coalesce not in COALESCE_MODES:
                raise InvalidArgumentError(
                    f"coalesce: unknown mode {coalesce!r} (the mode is 'skip', or None to queue)"
                )
            if concurrency_key is None:
                raise InvalidArgumentError(
                    f"coalesce={coalesce!r} needs a concurrency_key: it joins the pending run of "
                    f"job '{job.name}' with the same key"
                )
        label_map = self.validate_labels(labels)
        check_key(self.limits, "idempotency_key", idempotency_key)
        check_key(self.limits, "concurrency_key", concurrency_key)
        policy = stored_retry_policy(job, retry)
        seconds = stored_timeout(job, run_timeout)
        new_runs = [
            NewRun(
                id=run_ids[i] if run_ids else str(uuid.uuid4()),
                job_name=job.name,
                input=stored_input(self.limits, job, raw),
                idempotency_key=idempotency_key,
                concurrency_key=concurrency_key,
                labels=label_map,
                coalesce=coalesce is not None,
                retry_policy=policy,
                timeout=seconds,
            )
            for i, raw in enumerate(inputs)
        ]
        if not new_runs:
            return []
        slot = self.worker.hand_off(job.name) if claim_here and len(new_runs) == 1 else None
        if slot is not None:
            return [await self._create_here(new_runs[0], slot)]
        runs = [Run(record, disposition) for record, disposition in await self.store.create_runs(new_runs)]
        self._after_trigger(runs, new_runs)
        return runs

    async def _create_here(self, new: NewRun, slot: HandOff) -> Run:
        """Create a run already claimed by this process's worker, in a slot held for it: it
        starts without waiting for a wake-up or a claim's round trips (where the store can do it in
        the insert; see Store.create_and_claim)."""
        async with slot:
            record, disposition = await self.store.create_and_claim(
                new, slot.worker_id, list(self._by_name), slot.lease_seconds
            )
            run = Run(record, disposition)
            if disposition != "created" or record.status != "running" or record.worker_id != slot.worker_id:
                self._after_trigger([run], [new])
                return run
            self._after_trigger([run], [new], wake=False)
            await slot.take(record)
            return run

    def _after_trigger(self, runs: Sequence[Run], asked: Sequence[NewRun] = (), *, wake: bool = True) -> None:
        if wake and any(r.disposition == "created" for r in runs):
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
        if self.events.wants("run:coalesced"):
            for run, new in zip(runs, asked, strict=False):
                if run.disposition == "coalesced":
                    rec = run.record
                    self.events.emit(
                        RunCoalescedEvent(
                            run_id=rec.id,
                            job_name=rec.job_name,
                            labels=rec.labels,
                            skipped_input=new.input,
                            skipped_labels=new.labels,
                        )
                    )

    def validate_labels(self, labels: Mapping[str, Any] | None, *, where: str = "") -> dict[str, str]:
        """The labels a trigger stores: checked against the ``labels`` model when there is one
        (its defaults filled in), else as a plain str -> str mapping, then against ``limits``
        (LimitExceededError). Raises InputValidationError naming the field. ``schedule``,
        ``scheduled_for`` and ``apscheduler_job`` (set by durably-sched) pass through unless the
        model declares them."""
        model = self.labels_model
        if model is None:
            return check_labels(self.limits, plain_labels(labels), where)
        given = dict(labels or {})
        for key in given:
            if not isinstance(key, str):
                raise InputValidationError(f"{where}labels: keys must be strings (got {key!r})")
        declared = model.model_fields
        system = {k: v for k, v in given.items() if k in SYSTEM_LABELS and k not in declared}
        try:
            parsed = model.model_validate({k: v for k, v in given.items() if k not in system})
        except ValidationError as exc:
            raise InputValidationError(
                f"{where}labels: {describe_validation_error(exc)} ({model.__name__})"
            ) from None
        out: dict[str, str] = {}
        for key, value in parsed.model_dump(mode="json", exclude_none=True).items():
            if not isinstance(value, str):
                raise InputValidationError(
                    f"{where}labels: field '{key}' of {model.__name__} is {type(value).__name__} "
                    f"{value!r}; label values are strings (declare the field as str)"
                )
            out[key] = value
        for key, value in system.items():
            if not isinstance(value, str):
                raise InputValidationError(f"{where}labels: '{key}' must be a string (got {value!r})")
            out[key] = value
        return check_labels(self.limits, out, where)

    async def trigger(
        self,
        job_name: str,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        labels: Mapping[str, Any] | None = None,
        coalesce: Coalesce | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
    ) -> Run:
        """Trigger a job by its name (``durably.jobs.<key>.trigger`` is the usual way)."""
        job = self.job_by_name(job_name)
        runs = await self._trigger_many(
            job,
            [input],
            idempotency_key,
            concurrency_key,
            labels,
            coalesce=coalesce,
            retry=retry,
            run_timeout=run_timeout,
        )
        return runs[0]

    async def fire(self, fire: Fire) -> FireResult:
        """Handle one schedule fire time (used by the scheduler, slot triggers and backfills)."""
        if fire.run is not None:
            fire = dataclasses.replace(fire, run=self.scheduled_run(fire.schedule, fire.run))
        result = await self.store.fire(fire)
        if result.run is not None and result.outcome == "triggered":
            self._after_trigger([Run(result.run, "created")])
        return result

    def scheduled_run(self, schedule: str, run: NewRun) -> NewRun:
        """A schedule's run as it is stored, exactly as a direct trigger would store it (defaults
        filled in, the retry override completed from the job's policy, the limits checked); the
        errors name the schedule. The scheduler checks each schedule once this way when it loads."""
        job = self.job_by_name(run.job_name)
        where = f"schedule '{schedule}': "
        stored = stored_input(self.limits, job, run.input, where)
        labels = self.validate_labels(run.labels, where=where)
        check_key(self.limits, "idempotency_key", run.idempotency_key, where)
        check_key(self.limits, "concurrency_key", run.concurrency_key, where)
        policy, seconds = stored_retry_policy(job, run.retry_policy), stored_timeout(job, run.timeout)
        return dataclasses.replace(run, input=stored, labels=labels, retry_policy=policy, timeout=seconds)

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
        return self._result_of(job, record, disposition)

    def _result_of(
        self, job: JobDefinition[Any, Any], record: RunRecord, disposition: Disposition
    ) -> RunResult[Any]:
        if record.status == "completed":
            return RunResult(id=record.id, output=job.parse_output(record.output), disposition=disposition)
        if record.status == "cancelled":
            raise RunCancelledError(record.id)
        raise RunFailedError(record.id, record.error, record.failed_step_name)

    async def wait_for_run(
        self,
        run_id: str,
        timeout: float | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
    ) -> RunRecord:
        """Wait until a run (triggered anywhere, executing anywhere) finishes; returns its final
        record, whatever its status. Raises TimeoutError after ``timeout`` seconds (the run goes on).

        ``on_progress(progress)`` is called for every change of the run's progress and
        ``on_log(log_record)`` for every log line stored, both from the moment of the call on (as in
        the TypeScript library: no replay; ``get_run(...).progress`` and ``get_logs`` give what
        was before), in order, once each. Either may be a coroutine function; an exception it
        raises ends the wait and propagates.
        """
        waiter = self.waiters.add(run_id)
        try:
            record = await self.get_run(run_id)
            if record.is_finished:
                return record
            if on_progress is not None or on_log is not None:
                after = await self.store.last_log_id(run_id) if on_log is not None else 0
                return await self._follow(
                    run_id, waiter, timeout, on_progress, on_log, after, progress=record.progress
                )
            _, final = await self.waiters.wait(run_id, waiter, timeout)
            return final if final is not None else await self.get_run(run_id)
        finally:
            self.waiters.remove(run_id, waiter)

    async def _follow(
        self,
        run_id: str,
        waiter: asyncio.Future[Done],
        timeout: float | None,
        on_progress: ProgressCallback | None,
        on_log: LogCallback | None,
        after_log_id: int,
        progress: Progress | None = None,
    ) -> RunRecord:
        try:
            async with asyncio.timeout(timeout):
                return await follow_run_updates(
                    self.store,
                    run_id,
                    on_progress=on_progress,
                    on_log=on_log,
                    after_log_id=after_log_id,
                    progress=progress,
                    woken=waiter,
                )
        except TimeoutError:
            raise TimeoutError(f"run {run_id} did not finish within {timeout}s") from None

    # -- live events from the store (any process) ---------------------------------------------------
    @property
    def feed(self) -> RunFeed:
        """The shared poller behind :meth:`subscribe` and :meth:`subscribe_runs` (one per instance)."""
        if self._feed is None:
            self._feed = RunFeed(self.store)
        return self._feed

    def subscribe(
        self, run_id: str, *, since: RunRecord | None = None, after_log_id: int | None = None
    ) -> RunSubscription:
        """Events of one run, wherever it executes, read from the store; the iterator ends with
        the run's ``run:complete``, ``run:fail``, ``run:cancel`` (or ``run:delete``) event::

            async for event in durably.subscribe(run.id):
                print(event.type)

        Raises RunNotFoundError (from the iterator) for an unknown run. See durably_sched.feed for
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

    # -- schedules at run time ---------------------------------------------------------------------
    @property
    def schedules(self) -> SchedulesConfig | None:
        """The schedules in use (see :meth:`use_schedules`), or None."""
        return self._schedules

    def use_schedules(self, config: SchedulesConfig | None) -> None:
        """Tell this instance which schedules are in use (a :class:`Scheduler` does so itself).

        With them, :meth:`pause_schedule` refuses names that are not defined, and
        :meth:`resume_schedule` can catch up (it needs each schedule's cron and catch-up policy).
        """
        self._schedules = config

    def _defined(self, name: str) -> ScheduleEntry | None:
        from .schedule.cron import SCHEDULE_NAME_PATTERN

        if not isinstance(name, str) or not re.fullmatch(SCHEDULE_NAME_PATTERN, name, re.ASCII):
            raise ScheduleNotFoundError(f"unknown schedule {name!r}: not a schedule name")
        return None if self._schedules is None else self._schedules.schedules.get(name)

    def _unknown(self, name: str) -> ScheduleNotFoundError:
        config = self._schedules
        known = ", ".join(sorted(config.schedules)) if config is not None else ""
        where = f" in {config.path}" if config is not None else ""
        return ScheduleNotFoundError(
            f"unknown schedule '{name}': not defined{where} (defined: {known or 'none'})"
        )

    async def get_schedule_states(self) -> dict[str, ScheduleState]:
        """The run-time state of every schedule the database knows (paused, failure counts)."""
        return await self.store.get_schedule_states()

    async def get_schedule_state(self, name: str) -> ScheduleState | None:
        """One schedule's state; None if it was never paused and no run of it finished."""
        return await self.store.get_schedule_state(name)

    async def pause_schedule(
        self, name: str, *, reason: str | None = None, by: str | None = None
    ) -> StateChange:
        """Pause a schedule in every process: its fire times are recorded ``paused`` from the next tick.

        ``by`` defaults to ``user@host`` of this process. Pausing a paused schedule changes nothing
        (``changed`` is False and the state shows the pause in force). With schedules in use
        (:meth:`use_schedules`) a name that is not defined raises :class:`ScheduleNotFoundError`.
        """
        from .schedule.pausing import check_actor, check_reason

        if self._defined(name) is None and self._schedules is not None:
            raise self._unknown(name)
        text, actor = check_reason(reason), check_actor(by)
        clock = self.schedule_clock
        change = await self.store.pause_schedule(
            name, reason=text, by=actor, at=clock.now() if clock is not None else None
        )
        if change.changed:
            log.info(
                "schedule %s paused by %s%s",
                name,
                actor,
                f": {text}" if text else "",
                extra={"schedule": name},
            )
            if self.events.wants("schedule:pause"):
                self.events.emit(SchedulePauseEvent(schedule=name, by=actor, reason=text))
        return change

    async def resume_schedule(
        self, name: str, *, catchup: bool = False, by: str | None = None
    ) -> ResumeResult:
        """Resume a paused schedule: it fires again from its next fire time.

        Nothing of the paused span is caught up unless ``catchup`` is True: then the schedule's
        catch-up policy and window apply to the fire times from the pause to the resume (the current
        pause, or the last one if the schedule is no longer paused, so a catch-up interrupted by a
        crash can be asked for again without doubling anything). Catching up needs the schedule's
        definition (:meth:`use_schedules`) and its job registered here.
        """
        from .schedule.pausing import ResumeResult, catchup_fire_times, check_actor
        from .schedule.scheduler import make_fire

        entry = self._defined(name)
        actor = check_actor(by)
        if catchup and entry is None:
            if self._schedules is None:
                raise InvalidArgumentError(
                    "resume_schedule(catchup=True) needs the schedules in use: call use_schedules(config)"
                )
            raise self._unknown(name)
        if catchup and entry is not None:
            self.job_by_name(entry.job)  # before resuming: a catch-up that cannot run is refused whole
        if (
            entry is None
            and self._schedules is not None
            and await self.store.get_schedule_state(name) is None
        ):
            raise self._unknown(name)  # not defined, and never paused: nothing to write
        clock = self.schedule_clock
        change = await self.store.resume_schedule(
            name, by=actor, at=clock.now() if clock is not None else None
        )
        if change is None:
            return ResumeResult(state=None, changed=False)
        state = change.state
        caught: list[tuple[datetime, FireResult]] = []
        if catchup and entry is not None and not state.paused and state.paused_at and state.resumed_at:
            now = clock.now() if clock is not None else datetime.now(UTC)
            times = catchup_fire_times(entry, state.paused_at, state.resumed_at, now)
            for start in range(0, len(times), 200):
                batch = times[start : start + 200]
                results = await asyncio.gather(
                    *(
                        self.fire(make_fire(entry, t, advance_cursor=False, replace_paused=True))
                        for t in batch
                    )
                )
                caught.extend(zip(batch, results, strict=True))
        if change.changed:
            log.info(
                "schedule %s resumed by %s%s",
                name,
                actor,
                f"; {sum(r.outcome == 'triggered' for _, r in caught)} paused fire times caught up"
                if catchup
                else "",
                extra={"schedule": name},
            )
        if (change.changed or caught) and self.events.wants("schedule:resume"):
            since = state.paused_at.timestamp() if state.paused_at else None
            self.events.emit(
                ScheduleResumeEvent(
                    schedule=name,
                    by=actor,
                    paused_since=since,
                    caught_up=sum(r.outcome == "triggered" for _, r in caught),
                )
            )
        return ResumeResult(state=state, changed=change.changed, caught_up=caught)


def _retention_age(value: str | timedelta | None) -> timedelta | None:
    """``retain_runs``: a duration string (``"30d"``, ``"12h"``, ``"90m"``), a timedelta, or None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        age = value
    elif isinstance(value, str):
        try:
            age = parse_duration(value)
        except ValueError as exc:
            raise InvalidArgumentError(f"retain_runs: {exc}") from None
    else:
        raise InvalidArgumentError(
            f"retain_runs: expected a duration such as '30d' or a timedelta, got {value!r}"
        )
    if age <= timedelta(0):
        raise InvalidArgumentError(f"retain_runs: must be longer than 0, got {value!r} (None keeps runs)")
    return age


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
        raise InvalidArgumentError(f"job '{job.name}': retry.{exc}") from None


def stored_timeout(job: JobDefinition[Any, Any], value: float | timedelta | str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_seconds(value, "timeout", allow_zero=False)
    except RetryPolicyError as exc:
        raise InvalidArgumentError(f"job '{job.name}': {exc}") from None


def create_durably(
    database: str | None = None,
    *,
    polling_interval: float = 1.0,
    heartbeat_interval: float = 5.0,
    stale_threshold: float = 30.0,
    max_concurrent_runs: int = 1,
    worker_id: str | None = None,
    labels: type[BaseModel] | None = None,
    preserve_steps: bool = True,
    retain_runs: str | timedelta | None = None,
    limits: Limits | None = None,
    clock: ExecutionClock | None = None,
) -> Durably:
    """A Durably instance on ``database`` (default: $DURABLY_DATABASE_URL, else sqlite:///durably.db).

    ``labels``: a pydantic model every trigger's labels must satisfy. ``preserve_steps=False``:
    the step rows of a run are deleted once it completes (failed and cancelled runs keep theirs, to
    resume from on ``retry``). ``retain_runs="30d"``: finished runs older than that are purged
    while the instance runs (``serve --retention`` is the same option). ``limits``: size limits
    (:class:`durably_sched.Limits`; the defaults are documented there). ``clock``: the clock the
    worker's leases, timeouts and back-offs read (``durably_sched.clock``; tests pass a
    ``ManualClock`` to move time).
    """
    store = open_store(database_url(database), worker_concurrency=max_concurrent_runs)
    return Durably(
        store,
        polling_interval=polling_interval,
        heartbeat_interval=heartbeat_interval,
        stale_threshold=stale_threshold,
        max_concurrent_runs=max_concurrent_runs,
        worker_id=worker_id,
        labels=labels,
        preserve_steps=preserve_steps,
        retain_runs=retain_runs,
        limits=limits,
        clock=clock,
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
