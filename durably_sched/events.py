"""Typed events and the in-process emitter.

Listeners are called synchronously in registration order; a listener that raises is logged and
reported as ``worker:error`` but never breaks the worker or the other listeners. A listener may be
a coroutine function: it is scheduled as a task on the running loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypedDict, TypeVar, overload

from .errors import InvalidArgumentError
from .store.base import Progress, RunRecord

log = logging.getLogger("durably_sched.events")

EventType = Literal[
    "run:trigger",
    "run:coalesced",
    "run:leased",
    "run:lease-renewed",
    "run:start",
    "run:complete",
    "run:fail",
    "run:cancel",
    "run:retry",
    "run:delete",
    "run:retry-scheduled",
    "run:waiting",
    "run:wake",
    "run:progress",
    "step:start",
    "step:complete",
    "step:fail",
    "step:cancel",
    "log:write",
    "worker:error",
    "schedule:pause",
    "schedule:resume",
    "schedule:auto-pause",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    type: str
    timestamp: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEvent(Event):
    run_id: str
    job_name: str
    labels: dict[str, str] = field(default_factory=dict)


class RunScope(TypedDict):
    """The fields every run event carries (``RunEvent(**run_scope(run), ...)``)."""

    run_id: str
    job_name: str
    labels: dict[str, str]


def run_scope(run: RunRecord) -> RunScope:
    """The run-scoped fields of an event about ``run``: its id, job name and labels."""
    return {"run_id": run.id, "job_name": run.job_name, "labels": run.labels}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunTriggerEvent(RunEvent):
    type: str = "run:trigger"
    input: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCoalescedEvent(RunEvent):
    """A trigger with ``coalesce="skip"`` joined an existing pending run (``run_id``, whose
    ``labels`` these are) instead of creating one; its own input and labels were not used."""

    type: str = "run:coalesced"
    skipped_input: dict[str, Any] = field(default_factory=dict)
    skipped_labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunLeasedEvent(RunEvent):
    """This process's worker claimed the run: it holds the lease until ``lease_expires_at`` (the
    store's clock: the database's for PostgreSQL), generation ``generation``."""

    type: str = "run:leased"
    input: dict[str, Any] = field(default_factory=dict)
    worker_id: str = ""
    lease_expires_at: datetime | None = None
    generation: int = 0
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RunLeaseRenewedEvent(RunEvent):
    """A heartbeat extended the lease by ``lease_seconds`` from the moment the store wrote it."""

    type: str = "run:lease-renewed"
    worker_id: str = ""
    lease_seconds: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStartEvent(RunEvent):
    type: str = "run:start"
    attempt: int = 1
    resumed_steps: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCompleteEvent(RunEvent):
    type: str = "run:complete"
    output: Any = None
    duration: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFailEvent(RunEvent):
    """The run failed for good (no retry left, or its error is not retried)."""

    type: str = "run:fail"
    error: str = ""
    failed_step_name: str | None = None
    duration: float = 0.0
    traceback: str | None = None
    failed_attempts: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRetryScheduledEvent(RunEvent):
    """An attempt failed and the run's retry policy retries it after ``delay`` seconds."""

    type: str = "run:retry-scheduled"
    error: str = ""
    failed_step_name: str | None = None
    traceback: str | None = None
    failed_attempts: int = 1
    max_attempts: int = 1
    delay: float = 0.0
    duration: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunWaitingEvent(RunEvent):
    """The run waits durably (``step.sleep``, ``step.wait_for_event``, ``step.run_job``): its
    attempt ended, it holds no lease and no slot; ``waiting_for`` says what it waits for."""

    type: str = "run:waiting"
    step_name: str = ""
    waiting_for: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunWakeEvent(Event):
    """This worker woke waiting runs whose time had come (sleeps ended, event timeouts)."""

    type: str = "run:wake"
    count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCancelEvent(RunEvent):
    type: str = "run:cancel"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRetryEvent(RunEvent):
    type: str = "run:retry"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDeleteEvent(RunEvent):
    """The run is gone with its steps and logs. In process: ``delete_run`` removed it (purges by
    retention do not emit it). From the run feed (``subscribe``): its row vanished, by a delete or
    a purge anywhere."""

    type: str = "run:delete"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunProgressEvent(RunEvent):
    type: str = "run:progress"
    progress: Progress = field(default_factory=lambda: Progress(0))


@dataclass(frozen=True, slots=True, kw_only=True)
class _StepEvent(RunEvent):
    """What every step event carries: the step's name and its index in the run."""

    step_name: str = ""
    step_index: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStartEvent(_StepEvent):
    type: str = "step:start"


@dataclass(frozen=True, slots=True, kw_only=True)
class StepCompleteEvent(_StepEvent):
    type: str = "step:complete"
    output: Any = None
    duration: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFailEvent(_StepEvent):
    type: str = "step:fail"
    error: str = ""
    duration: float = 0.0
    traceback: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepCancelEvent(_StepEvent):
    """A step in flight ended without a result because its run was stopped: ``reason`` is
    ``cancelled`` (by an operator), ``lease-lost``, ``timeout`` (the run's) or ``stopping``."""

    type: str = "step:cancel"
    reason: str = "cancelled"
    duration: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LogWriteEvent(RunEvent):
    type: str = "log:write"
    step_name: str | None = None
    level: str = "info"
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerErrorEvent(Event):
    type: str = "worker:error"
    error: str = ""
    context: str = ""
    run_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleEvent(Event):
    """A schedule's run-time state changed through this process (pause, resume, automatic pause)."""

    schedule: str
    by: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulePauseEvent(ScheduleEvent):
    type: str = "schedule:pause"
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleResumeEvent(ScheduleEvent):
    type: str = "schedule:resume"
    paused_since: float | None = None
    """When the pause that ended began (Unix time)."""
    caught_up: int = 0
    """Paused fire times that ``catchup=True`` turned into runs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleAutoPauseEvent(ScheduleEvent):
    """A scheduler of this process paused the schedule after ``failures`` consecutive failed runs."""

    type: str = "schedule:auto-pause"
    reason: str = ""
    failures: int = 0
    last_failed_run_id: str | None = None


Listener = Callable[[Any], Any]
E = TypeVar("E", bound=Event)
On = Callable[[E], object]
"""A listener of events of type ``E`` (a coroutine function's result is scheduled as a task)."""
Off = Callable[[], None]
"""Unsubscribes the listener it was returned for."""


class Listens(Protocol):
    """``on(event_type, listener)``, typed per event type: a listener gets that type's event class
    (``"*"``: every event). ``_subscribe`` is where an implementation registers the listener."""

    def _subscribe(self, event_type: str, listener: Listener) -> Off: ...

    @overload
    def on(self, event_type: Literal["run:trigger"], listener: On[RunTriggerEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["run:coalesced"], listener: On[RunCoalescedEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["run:leased"], listener: On[RunLeasedEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["run:lease-renewed"], listener: On[RunLeaseRenewedEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["run:start"], listener: On[RunStartEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["run:complete"], listener: On[RunCompleteEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["run:fail"], listener: On[RunFailEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["run:cancel"], listener: On[RunCancelEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["run:retry"], listener: On[RunRetryEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["run:delete"], listener: On[RunDeleteEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["run:retry-scheduled"], listener: On[RunRetryScheduledEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["run:waiting"], listener: On[RunWaitingEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["run:wake"], listener: On[RunWakeEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["run:progress"], listener: On[RunProgressEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["step:start"], listener: On[StepStartEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["step:complete"], listener: On[StepCompleteEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["step:fail"], listener: On[StepFailEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["step:cancel"], listener: On[StepCancelEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["log:write"], listener: On[LogWriteEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["worker:error"], listener: On[WorkerErrorEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["schedule:pause"], listener: On[SchedulePauseEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["schedule:resume"], listener: On[ScheduleResumeEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["schedule:auto-pause"], listener: On[ScheduleAutoPauseEvent]) -> Off: ...
    @overload
    def on(self, event_type: Literal["*"], listener: On[Event]) -> Off: ...
    def on(self, event_type: str, listener: Listener) -> Off:
        """Subscribe to one event type, or ``"*"`` for all. Returns a function that unsubscribes."""
        return self._subscribe(event_type, listener)


class EventEmitter(Listens):
    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def _subscribe(self, event_type: str, listener: Listener) -> Off:
        if event_type != "*" and event_type not in EVENT_TYPES:
            raise InvalidArgumentError(f"unknown event type {event_type!r}; known: {', '.join(EVENT_TYPES)}")
        self._listeners.setdefault(event_type, []).append(listener)

        def unsubscribe() -> None:
            listeners = self._listeners.get(event_type, [])
            if listener in listeners:
                listeners.remove(listener)

        return unsubscribe

    def wants(self, event_type: str) -> bool:
        """Cheap check so hot paths build an event only when someone listens."""
        return bool(self._listeners.get(event_type) or self._listeners.get("*"))

    def emit(self, event: Event) -> None:
        for listener in (*self._listeners.get(event.type, ()), *self._listeners.get("*", ())):
            try:
                result = listener(event)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._task_done)
            except Exception as exc:
                self._listener_failed(event, exc)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            assert exc is not None
            log.error("async event listener failed: %r", exc)

    def _listener_failed(self, event: Event, exc: Exception) -> None:
        log.error("listener for %s raised %r", event.type, exc)
        if event.type != "worker:error":
            self.emit(
                WorkerErrorEvent(
                    error=f"{type(exc).__name__}: {exc}",
                    context=f"listener for {event.type}",
                    run_id=getattr(event, "run_id", None),
                )
            )

    async def drain(self) -> None:
        """Wait for async listeners still running (used on close)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
