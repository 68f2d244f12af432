"""The store's record types: the plain values that cross the store boundary (see base.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

RunStatus = Literal["pending", "running", "waiting", "completed", "failed", "cancelled"]
RUN_STATUSES: tuple[RunStatus, ...] = ("pending", "running", "waiting", "completed", "failed", "cancelled")
FINISHED_STATUSES: tuple[RunStatus, ...] = ("completed", "failed", "cancelled")
Disposition = Literal["created", "idempotent", "coalesced"]
"""How a trigger was resolved: a new run; the existing run of its idempotency key; or (with
``coalesce``) the existing pending run of its job and concurrency key."""
FireOutcome = Literal["triggered", "deduplicated", "skipped", "missed", "disabled", "paused"]
FIRE_OUTCOMES: tuple[FireOutcome, ...] = (
    "triggered",
    "deduplicated",
    "skipped",
    "missed",
    "disabled",
    "paused",
)
WriteResult = Literal["ok", "cancelled", "lost"]
"""Outcome of a fenced write: applied; applied but the run was cancelled meanwhile; rejected."""


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to create. ``id`` is chosen by the caller so retries of an insert are harmless.

    ``coalesce`` (with a ``concurrency_key``): if a run of the same job with the same key is pending
    and has never started, return it (disposition ``coalesced``) instead of creating another. An
    existing run of the idempotency key still comes first (``idempotent``). Decided inside the
    insert's transaction, so concurrent coalescing triggers of one key make one run.
    """

    id: str
    job_name: str
    input: dict[str, Any]
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    coalesce: bool = False
    retry_policy: dict[str, Any] | None = None
    """The effective retry policy (``Retry.to_json()``) when the trigger or schedule overrode the
    job's; None: the job's own policy applies."""
    timeout: float | None = None
    """Seconds one attempt may take, when the trigger or schedule set it; None: the job's."""
    schedule_version: int | None = None
    """The version of the schedule that fired it (None: not fired by a schedule's definition)."""


@dataclass(frozen=True, slots=True)
class Progress:
    current: int
    total: int | None = None
    message: str | None = None


WaitKind = Literal["sleep", "event", "children"]
WAIT_KINDS: tuple[WaitKind, ...] = ("sleep", "event", "children")


@dataclass(frozen=True, slots=True)
class WaitState:
    """A run's last durable wait (``step.sleep``, ``step.wait_for_event``, ``step.run_job``): what
    it waits (or waited) for, and once woken, how the wait ended."""

    kind: WaitKind
    step: str
    """The step that waits: its name makes the replay deterministic."""
    key: str | None = None
    """The event key (kind ``event``)."""
    until: datetime | None = None
    """When it may wake: the sleep's end, or the event's timeout (None: no timeout)."""
    children: int | None = None
    """The child runs it waits for (kind ``children``)."""
    outcome: str | None = None
    """How it ended: ``due``, ``event``, ``timeout``, ``children``; None while it waits."""
    data: Any = None
    """The data of the event that ended it."""

    def describe(self) -> dict[str, Any]:
        """The ``waiting_for`` JSON field: kind, until, key, children."""
        return {"kind": self.kind, "until": self.until, "key": self.key, "children": self.children}


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    job_name: str
    status: RunStatus
    input: dict[str, Any]
    output: Any
    error: str | None
    failed_step_name: str | None
    idempotency_key: str | None
    concurrency_key: str | None
    labels: dict[str, str]
    generation: int
    worker_id: str | None
    lease_expires_at: datetime | None
    progress: Progress | None
    step_count: int
    attempt: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    traceback: str | None = None
    """The formatted traceback of the failed attempt that set ``error`` (its last 16 KiB)."""
    failed_attempts: int = 0
    """Attempts that failed so far (the retry budget's counter); ``attempt`` counts claims."""
    not_before: datetime | None = None
    """A pending run waiting for its retry backoff is not claimed before this time."""
    retry_policy: dict[str, Any] | None = None
    """The retry policy stored on the run (an override); None: the job's policy applies."""
    timeout: float | None = None
    """Seconds one attempt may take, stored on the run (an override); None: the job's."""
    previous_worker_id: str | None = None
    """Only on records returned by ``claim``: the worker that held (or last held) the run before."""
    parent_run_id: str | None = None
    """The run that started this one with ``step.run_job`` (None: started otherwise)."""
    wait: WaitState | None = None
    """The run's last durable wait (kept after it ended, for the replay); see ``waiting_for``."""
    event_seq: int = 0
    schedule_version: int | None = None
    """The version of the schedule whose fire time made this run (None: not a scheduled run)."""
    """The newest event this run received."""

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def waiting_for(self) -> dict[str, Any] | None:
        """What a ``waiting`` run waits for (``{"kind", "until", "key", "children"}``); None otherwise."""
        if self.status != "waiting" or self.wait is None:
            return None
        return self.wait.describe()


@dataclass(frozen=True, slots=True)
class StepRecord:
    run_id: str
    index: int
    name: str
    output_json: str
    started_at: datetime
    completed_at: datetime

    @property
    def duration(self) -> float:
        return (self.completed_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class LogRecord:
    id: int
    run_id: str
    step_name: str | None
    level: str
    message: str
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewLog:
    level: str
    message: str
    step_name: str | None
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One completed step, written atomically with the run's step counter and pending logs."""

    run_id: str
    generation: int
    index: int
    name: str
    output_json: str
    started_at: datetime
    completed_at: datetime
    logs: Sequence[NewLog] = ()


@dataclass(frozen=True, slots=True)
class ScheduleActivity:
    """A schedule's runs in equal buckets of time: ``runs[i]`` were created in
    ``[since + i * bucket, since + (i + 1) * bucket)``, ``failed[i]`` of them have failed."""

    since: datetime
    bucket: timedelta
    runs: tuple[int, ...]
    failed: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FireRecord:
    schedule: str
    fire_time: datetime
    outcome: FireOutcome
    run_id: str | None
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Fire:
    """One fire time of a schedule, handled atomically: fire record + run + cursor.

    ``run`` is None for outcomes without a run (missed, disabled, paused). With ``skip_if_active``
    the fire time is recorded as skipped when a run of the schedule is pending or running.
    ``advance_cursor`` is False for manual slot triggers and backfills, which must not move
    the scheduler's cursor. With ``replace_paused`` (catch-up on resume) a fire time recorded as
    ``paused`` is handled again, as if it had no record, in the same atomic way; any other
    record still makes it ``deduplicated``.
    """

    schedule: str
    fire_time: datetime
    run: NewRun | None
    outcome_without_run: FireOutcome = "missed"
    skip_if_active: bool = False
    advance_cursor: bool = True
    replace_paused: bool = False


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """The run-time state of a schedule, shared by every process through the database.

    ``paused_*`` describe the current pause while ``paused`` is true, else the last one (None if
    never paused). The failure fields are kept by the database itself, in the transaction that
    finishes a run of the schedule: a completed run resets ``consecutive_failures`` to 0, a
    failed one adds 1; cancelled runs change nothing. ``failures_at_resume`` is the count when the
    schedule was last resumed, so an automatic pause counts only failures after a resume.
    """

    schedule: str
    paused: bool
    paused_at: datetime | None
    paused_by: str | None
    pause_reason: str | None
    auto_paused: bool
    resumed_at: datetime | None
    resumed_by: str | None
    consecutive_failures: int
    failures_at_resume: int
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_failed_run_id: str | None
    updated_at: datetime

    @property
    def failures_since_resume(self) -> int:
        return max(0, self.consecutive_failures - self.failures_at_resume)


@dataclass(frozen=True, slots=True)
class StateChange:
    """What a pause or resume did: the state after it, and whether it changed anything."""

    state: ScheduleState
    changed: bool


@dataclass(frozen=True, slots=True)
class FireResult:
    outcome: FireOutcome
    run: RunRecord | None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """What a worker process registers about itself when it starts."""

    id: str
    host: str
    host_key: str | None
    """Host name + boot id + pid namespace: workers with equal keys see the same pids (None: unknown)."""
    pid: int
    process_start: str | None
    """The process's start time in clock ticks since boot (tells a reused pid apart; None: unknown)."""
    version: str
    jobs: tuple[str, ...]
    concurrency: int
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class WorkerRecord(WorkerInfo):
    """A row of the worker registry, as read at ``read_at`` (the store's clock): what the worker
    registered (its fields first, in their order) and its state."""

    runs_held: int
    started_at: datetime
    heartbeat_at: datetime
    gone_at: datetime | None
    gone_by: str | None
    read_at: datetime
    leased: tuple[str, ...] = ()
    """The runs it holds now (running, its lease unexpired at ``read_at``), oldest first; unlike
    ``runs_held`` (its last heartbeat's count) this drops at once when its runs are taken over."""
    process_gone: bool = False
    """Set by :meth:`Durably.list_workers` when the reader runs on the worker's host and found its
    process gone (see registry.py): its row is not marked gone until a worker takes it over."""

    @property
    def heartbeat_age(self) -> timedelta:
        return max(self.read_at - self.heartbeat_at, timedelta(0))

    @property
    def state(self) -> Literal["live", "stale", "gone"]:
        """``gone``: another worker on its host found its process gone; ``stale``: no heartbeat for
        longer than its lease (dead, stopped or cut off); ``live`` otherwise."""
        if self.gone_at is not None or self.process_gone:
            return "gone"
        if self.heartbeat_age.total_seconds() > self.lease_seconds:
            return "stale"
        return "live"

    @property
    def alive(self) -> bool:
        return self.state == "live"


@dataclass(frozen=True, slots=True)
class RunQuery:
    """Which runs to list, newest (highest creation order) first. Every filter given must hold.

    ``job_name`` and ``job_names`` both restrict the job (a run must match both when both are
    given); ``statuses`` and ``job_names`` match any of their values; ``labels`` must all be on the
    run. ``created_after`` is inclusive, ``before_created`` exclusive. ``cursor`` continues after
    the last run of a previous page (:attr:`RunPage.next_cursor`); it is opaque.
    """

    statuses: Sequence[RunStatus] = ()
    job_name: str | None = None
    schedule: str | None = None
    limit: int = 50
    before_created: datetime | None = None
    job_names: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    created_after: datetime | None = None
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of :meth:`Store.list_runs_page`; ``next_cursor`` is None on the last page."""

    runs: list[RunRecord]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class RunChanges:
    """What :meth:`Store.poll_run_changes` found (the run feed's view of the runs table).

    ``active``: pending and running runs (newest first, at most the limit asked for); ``created``:
    runs created after the ``after_seq`` given, in creation order; ``finished``: runs that finished
    at or after the time given, in completion order. ``last_seq`` is where the next poll continues
    (the creation-order position of the last run in ``created``, or of the newest run when polled
    without ``after_seq``).
    """

    active: list[RunRecord]
    created: list[RunRecord]
    finished: list[RunRecord]
    last_seq: int


COUNT_CAP = 10_000
"""``count_runs`` stops counting here: "10,000+" is what a page needs, at any history size."""


@dataclass(frozen=True, slots=True)
class SchedulerInfo:
    """What a scheduler says about itself at every beat of its bucket leases."""

    id: str
    host: str
    pid: int
    schedules: int
    """Schedules it has loaded."""
    clock_offset: float | None
    """Seconds its host's clock is ahead of the database's (negative: behind; None: unknown)."""


@dataclass(frozen=True, slots=True)
class BucketLease:
    """What a beat of a scheduler's bucket leases came to: the buckets it owns now, and until when
    (the earliest lease end among them), by the database's clock at the beat (``database_time``)."""

    buckets: frozenset[int]
    until: datetime | None
    database_time: datetime
    live: int
    """Live schedulers, this one included."""


@dataclass(frozen=True, slots=True)
class SchedulerRecord(SchedulerInfo):
    """A row of the scheduler registry, as read at ``read_at`` (the store's clock)."""

    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    buckets: int
    """Buckets it owns under an unexpired lease at ``read_at``."""
    read_at: datetime

    @property
    def live(self) -> bool:
        return self.expires_at > self.read_at
