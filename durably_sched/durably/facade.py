"""``Durably`` itself (construction, registration, lifecycle, one-shot processing) and ``create_durably``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel

from .._durations import parse_duration
from .._facade_reads import FacadeReads  # issue 21 (layout): the reads schedule/ and web/ ask for
from ..errors import InvalidArgumentError, InvalidStateError, UnknownJobError
from ..events import EventEmitter, Listens
from ..execution.producer import Producer
from ..jobs import JobDefinition
from ..limits import Limits
from ..store import database_url, open_store
from ..store.base import RunRecord, Store
from ..stream.feed import RunFeed
from ..stream.waiters import Waiters
from .handles import JobHandle, JobsNamespace
from .schedules import SchedulePausing
from .waits import WaitActions

if TYPE_CHECKING:
    from ..clock import Clock as ExecutionClock
    from ..ops.retention import Retention
    from ..schedule.config import SchedulesConfig
    from ..schedule.scheduler import Clock


class Durably(FacadeReads, Listens, WaitActions, SchedulePausing):
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
        self.jobs = JobsNamespace()
        self._by_name: dict[str, JobDefinition[Any, Any]] = {}
        self.polling_interval = polling_interval
        self.labels_model = labels
        """The pydantic model every trigger's labels are validated with (None: any str -> str)."""
        self.preserve_steps = preserve_steps
        self.waiters = Waiters(store, lambda: self.feed)
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
        self.worker.start_child = self._start_child
        self.retention: Retention | None = None
        """With ``retain_runs``: the purge of finished runs (``durably_sched.ops.retention``)."""
        if retention_age is not None:
            from ..ops.retention import Retention

            self.retention = Retention(self, retention_age)
        self._connected = False
        self._feed: RunFeed | None = None
        self._schedules: SchedulesConfig | None = None
        self.schedule_clock: Clock | None = None
        """Where pause and resume times and the catch-up window's "now" come from. None (default):
        the store's clock (PostgreSQL's, or this host's for SQLite). Tests give the scheduler's."""

    def _subscribe(self, event_type: str, listener: Callable[[Any], Any]) -> Callable[[], None]:
        """``on`` (typed per event type in :class:`~durably_sched.events.Listens`): this process's emitter."""
        return self.events._subscribe(event_type, listener)

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

    def job(self, name: str) -> JobHandle[Any]:
        """The handle of a job by its name (as given to define_job)."""
        job = self.job_by_name(name)
        for handle in self.jobs._handles.values():
            if handle.job is job:
                return handle
        raise UnknownJobError(name)  # pragma: no cover - register keeps both maps in step

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
