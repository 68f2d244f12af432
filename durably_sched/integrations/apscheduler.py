"""APScheduler 3 bridge: APScheduler decides *when*, durably-sched makes each fire time one durable run.

```python
durably = create_durably(url).register([nightly_report])
async with durably:
    scheduler = AsyncIOScheduler(executors={"durably": DurablyExecutor(durably)})
    add_durable_job(scheduler, nightly_report, CronTrigger(hour=2), id="nightly-report",
                    input={"team": "data"})
    scheduler.start()
```

APScheduler computes the fire times (its triggers, its job stores, its misfire and coalescing rules)
and hands them to an executor (``BaseExecutor.submit_job(job, run_times)``). :class:`DurablyExecutor`
never calls the job itself: it turns each fire time into a trigger of a registered durable job, and
whichever durably-sched worker runs that job executes it (steps checkpointed, resumable, in the run
history).

Why it holds:

* **One run per fire time across processes.** The trigger carries the idempotency key
  ``apscheduler:<job id>:<UTC fire time, YYYY-MM-DDTHH:MM:SSZ>``; the store's unique index on
  (job, key) turns the second and every later trigger of the same fire time, from any process, into
  the existing run (disposition ``idempotent``). The bridge itself keeps no state.
* **Keys come from fire times only, never from "now".** A trigger whose fire times depend on when
  the process started would give each process keys of its own, so it is refused: jitter (drawn at
  random in each process) and fire times that are not whole seconds (an ``IntervalTrigger`` or
  ``DateTrigger`` without a fixed start, which APScheduler takes from the clock). The job id is
  required for the same reason (APScheduler's default is a random uuid).
* **What APScheduler calls success.** ``EVENT_JOB_EXECUTED`` means the durable run is stored (created
  here or already created by another process; ``event.retval`` is the :class:`~durably_sched.Run`),
  not that it finished: the run's outcome is in durably-sched's run history and events.
  ``EVENT_JOB_ERROR`` means no run could be stored for that fire time (database unreachable, input no
  longer valid, job not registered). ``EVENT_JOB_MISSED`` is APScheduler's misfire rule, applied here
  exactly as its own executors apply it: a fire time handled more than ``misfire_grace_time`` late
  makes no run *in this process*.
* **Only registered jobs run.** Every APScheduler job routed to the executor must be one made by
  :func:`add_durable_job` naming a job registered on the executor's Durably; anything else is refused
  with :class:`NotADurableJobError` naming the APScheduler job id and the function, at
  ``scheduler.start()`` for jobs added before it, and as an ``EVENT_JOB_ERROR`` per fire time after.

Two kinds of scheduler are supported. With ``AsyncIOScheduler`` the executor uses the app's started
Durably on the scheduler's event loop. With the thread-based ``BackgroundScheduler`` and
``BlockingScheduler`` the executor owns the Durably: it opens it (migrate, start) on an event loop
thread of its own at ``scheduler.start()`` and closes it at ``scheduler.shutdown()``. Other schedulers
(gevent, Tornado, Twisted, Qt) are refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
import traceback
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NoReturn, TypeAlias

try:
    from apscheduler.events import (
        EVENT_JOB_ERROR,
        EVENT_JOB_EXECUTED,
        EVENT_JOB_MISSED,
        JobExecutionEvent,
    )
    from apscheduler.executors.base import BaseExecutor
    from apscheduler.job import Job
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.schedulers.base import BaseScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.base import BaseTrigger
    from apscheduler.util import get_callable_name, obj_to_ref, undefined
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "durably_sched.integrations.apscheduler needs APScheduler 3 (>=3.10,<4): "
        "pip install 'durably-sched[apscheduler]'"
    ) from exc

from ..durably import Durably, JobHandle, Run
from ..errors import ArgumentTypeError, InputValidationError, InvalidArgumentError, UnknownJobError
from ..jobs import JobDefinition
from ..schedule.cron import fire_time_text, parse_timed_key

__all__ = [
    "KEY_PREFIX",
    "DurablyExecutor",
    "NotADurableJobError",
    "Overlap",
    "add_durable_job",
    "apscheduler_key",
    "durable_trigger",
    "parse_apscheduler_key",
]

log = logging.getLogger("durably_sched.apscheduler")

KEY_PREFIX = "apscheduler:"
LABEL_JOB = "apscheduler_job"
LABEL_SCHEDULED_FOR = "scheduled_for"
_RESERVED_LABELS = (LABEL_JOB, LABEL_SCHEDULED_FOR)
_KEY = re.compile(r"apscheduler:(.+):(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z", re.ASCII | re.DOTALL)

Overlap: TypeAlias = Literal["queue", "allow"]
"""``queue``: the runs of one APScheduler job get the concurrency key ``apscheduler:<job id>`` (one
runs at a time, the others wait in order), as ``overlap: queue`` in schedules.yaml. ``allow``: runs
may overlap."""
_OVERLAPS: tuple[Overlap, ...] = ("queue", "allow")


class NotADurableJobError(UnknownJobError):
    """An APScheduler job handed to the bridge whose function is not a registered durable job."""


# --- keys -----------------------------------------------------------------------------------------


def apscheduler_key(job_id: str, fire_time: datetime) -> str:
    """``apscheduler:<job id>:<UTC fire time, YYYY-MM-DDTHH:MM:SSZ>``: the idempotency key of one fire
    time of an APScheduler job. ``fire_time`` must be aware and a whole second."""
    if not isinstance(job_id, str) or not job_id:
        raise InvalidArgumentError(f"APScheduler job id must be a non-empty string, not {job_id!r}")
    return f"{KEY_PREFIX}{job_id}:{fire_time_text(fire_time)}"


def parse_apscheduler_key(key: str) -> tuple[str, datetime]:
    """The job id and the (UTC, aware) fire time of an :func:`apscheduler_key`."""
    return parse_timed_key(_KEY, key, "an APScheduler fire key")


# --- the APScheduler job's function -------------------------------------------------------------


def durable_trigger(
    job: str,
    input: Mapping[str, Any] | None = None,
    overlap: Overlap = "queue",
    labels: Mapping[str, str] | None = None,
) -> NoReturn:
    """The function of every APScheduler job made by :func:`add_durable_job`.

    It names the durable job and its trigger options (all plain, picklable values), so job stores
    that persist jobs store it as the textual reference
    ``durably_sched.integrations.apscheduler:durable_trigger``. Only :class:`DurablyExecutor` handles
    such jobs; any other executor that calls this function gets an error.
    """
    raise RuntimeError(
        f"durable job {job!r} was run by an APScheduler executor that is not a DurablyExecutor; "
        "add it with add_durable_job(..., executor=<the alias of a DurablyExecutor>)"
    )


def _describe(func: Any) -> str:
    """``module:qualname`` of a function, or a short repr of anything else."""
    try:
        return str(obj_to_ref(func))
    except Exception:
        pass
    try:
        return f"{type(func).__module__}:{get_callable_name(func)}"
    except Exception:
        text = repr(func)
        return text if len(text) <= 80 else text[:77] + "..."


def _trigger_problem(trigger: Any) -> str | None:
    """Why a trigger's fire times could differ between processes (None when they cannot)."""
    jitter = getattr(trigger, "jitter", None)
    if jitter:
        return (
            f"its {type(trigger).__name__} has jitter={jitter}: APScheduler draws that delay at random "
            "in each process, so processes would key one fire time differently; remove the jitter"
        )
    for inner in getattr(trigger, "triggers", None) or ():  # AndTrigger / OrTrigger
        problem = _trigger_problem(inner)
        if problem is not None:
            return problem
    return None


def _whole_second_problem(what: str, fire_time: datetime) -> str | None:
    if fire_time.microsecond == 0:
        return None
    return (
        f"{what} fires at {fire_time.isoformat()}, not on a whole second: such fire times come from "
        "the clock of the process that made the trigger, so every process would make runs of its own; "
        "give it a fixed start (IntervalTrigger(..., start_date=...), DateTrigger(run_date=...)) or "
        "use a CronTrigger"
    )


def _definition(job: Any, job_id: str) -> JobDefinition[Any, Any]:
    if isinstance(job, JobHandle):
        return job.job
    if isinstance(job, JobDefinition):
        return job
    raise NotADurableJobError(
        f"APScheduler job {job_id!r}: {_describe(job)} is not a durable job; "
        "pass a job made by define_job (or a handle, durably.jobs.<name>)"
    )


def _user_labels(labels: Mapping[str, str] | None, job_id: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (labels or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ArgumentTypeError(f"APScheduler job {job_id!r}: labels must map strings to strings")
        if key in _RESERVED_LABELS:
            raise InvalidArgumentError(
                f"APScheduler job {job_id!r}: label {key!r} is set by the bridge on every run; "
                "choose another name"
            )
        out[key] = value
    return out


def add_durable_job(
    scheduler: BaseScheduler,
    job: JobDefinition[Any, Any] | JobHandle[Any],
    trigger: BaseTrigger | str,
    *,
    id: str,
    input: Any = None,
    overlap: Overlap = "queue",
    labels: Mapping[str, str] | None = None,
    executor: str = "durably",
    name: str | None = None,
    misfire_grace_time: int | None = undefined,
    coalesce: bool = undefined,
    max_instances: int = undefined,
    next_run_time: datetime | None = undefined,
    jobstore: str = "default",
    replace_existing: bool = False,
    **trigger_args: Any,
) -> Job:
    """Add an APScheduler job whose every fire time triggers the durable ``job`` once, with ``input``.

    ``trigger`` and ``trigger_args`` are APScheduler's (a trigger instance, or ``"cron"`` /
    ``"interval"`` / ``"date"`` with its arguments); ``id`` is required and must be the same in every
    process, since it is part of each fire time's key. ``input`` defaults to ``{}`` (the input
    model's defaults). The other options are ``scheduler.add_job``'s.
    Everything is checked here, before anything is added: the job is a durable job, the input fits
    its model (it is stored in the validated JSON form), the trigger's fire times are the same in
    every process. Whether the job is registered on the executor's Durably is checked at
    ``scheduler.start()`` (or at its first fire time when added later).
    """
    if not isinstance(id, str) or not id:
        raise InvalidArgumentError(
            f"add_durable_job: id must be a non-empty string (not {id!r}): it is part of the key of "
            "every fire time, so it must be the same in every process"
        )
    definition = _definition(job, id)
    if overlap not in _OVERLAPS:
        raise InvalidArgumentError(
            f"APScheduler job {id!r}: overlap must be 'queue' or 'allow', not {overlap!r}"
        )
    try:
        stored_input = definition.validate_input({} if input is None else input)
    except InputValidationError as exc:
        raise InputValidationError(f"APScheduler job {id!r}: {exc}") from None
    label_map = _user_labels(labels, id)
    if isinstance(trigger, BaseTrigger) and trigger_args:
        raise ArgumentTypeError(
            f"APScheduler job {id!r}: trigger arguments {', '.join(sorted(trigger_args))} given with a "
            "trigger instance; pass them to the trigger"
        )
    trigger_obj = scheduler._create_trigger(trigger, dict(trigger_args))
    problem = _trigger_problem(trigger_obj)
    if problem is None:
        first = trigger_obj.get_next_fire_time(None, datetime.now(scheduler.timezone))
        if first is not None:
            problem = _whole_second_problem(f"its {type(trigger_obj).__name__}", first)
    if problem is None and isinstance(next_run_time, datetime):
        problem = _whole_second_problem("next_run_time", next_run_time)
    if problem is not None:
        raise InvalidArgumentError(f"APScheduler job {id!r}: {problem}")
    existing = getattr(scheduler, "_executors", {}).get(executor)
    if existing is not None and not isinstance(existing, DurablyExecutor):
        raise InvalidArgumentError(
            f"APScheduler job {id!r}: executor {executor!r} is a {type(existing).__name__}, "
            "not a DurablyExecutor"
        )
    return scheduler.add_job(
        durable_trigger,
        trigger_obj,
        kwargs={"job": definition.name, "input": stored_input, "overlap": overlap, "labels": label_map},
        id=id,
        name=name if name is not None else definition.name,
        misfire_grace_time=misfire_grace_time,
        coalesce=coalesce,
        max_instances=max_instances,
        next_run_time=next_run_time,
        jobstore=jobstore,
        executor=executor,
        replace_existing=replace_existing,
    )


# --- the executor ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    """What one APScheduler job triggers, read once per submission (the job may be modified later)."""

    job_name: str
    input: Any
    concurrency_key: str | None
    labels: dict[str, str]


class DurablyExecutor(BaseExecutor):  # type: ignore[misc]  # APScheduler 3 is untyped
    """An APScheduler 3 executor that turns each fire time into one durable run.

    ``durably``: with ``AsyncIOScheduler``, the app's Durably, started before ``scheduler.start()``
    (``async with durably:`` or ``await durably.init()``) on the scheduler's loop; the app closes it
    after the scheduler (``scheduler.shutdown(); await executor.drain(); await durably.close()``).
    With ``BackgroundScheduler``/``BlockingScheduler``, a Durably that is *not* started: the executor
    opens it on its own event loop thread (migrate, then start, with its worker unless
    ``worker=False``) and closes it at ``scheduler.shutdown()``.
    """

    def __init__(self, durably: Durably, *, worker: bool | None = None) -> None:
        super().__init__()
        if not isinstance(durably, Durably):
            raise ArgumentTypeError(f"DurablyExecutor needs a Durably (create_durably(...)), not {durably!r}")
        self.durably = durably
        self._worker = worker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None  # thread mode: the loop thread we own
        self._pending: set[Any] = set()
        self._pending_lock = threading.Lock()
        self._alias = "durably"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, scheduler: BaseScheduler, alias: str) -> None:
        """Called by ``scheduler.start()`` (or ``add_executor`` on a running scheduler)."""
        threaded = _threaded(scheduler)
        self._alias = alias
        for job in scheduler.get_jobs():  # before start: the jobs added so far
            if job.executor == alias:
                self._target(job)  # raises on the first job that is not a registered durable job
        if threaded:
            if self.durably.connected:
                raise RuntimeError(
                    f"DurablyExecutor: with {type(scheduler).__name__} the executor opens the Durably "
                    "on an event loop thread of its own and closes it at shutdown; pass a Durably that "
                    "is not started (or use AsyncIOScheduler)"
                )
            loop = self._start_thread(alias)
        else:
            if self._worker is not None:
                raise InvalidArgumentError(
                    "DurablyExecutor: worker= applies to thread-based schedulers; with AsyncIOScheduler "
                    "start the Durably yourself (durably.start(worker=False) for no worker)"
                )
            if not self.durably.connected:
                raise RuntimeError(
                    "DurablyExecutor: start the Durably before the AsyncIOScheduler "
                    "(async with durably: ..., or await durably.init())"
                )
            loop = scheduler._eventloop
        super().start(scheduler, alias)
        self._loop = loop

    def shutdown(self, wait: bool = True) -> None:
        """Called by ``scheduler.shutdown(wait)``.

        Thread mode: waits for the fire times in flight (``wait=True``) or cancels them, then closes
        the Durably (its worker gets the usual grace to checkpoint; none with ``wait=False``: running
        steps are cancelled and their runs released for another worker). AsyncIOScheduler: this runs on
        the event loop and cannot wait; ``wait=False`` cancels the fire times in flight,
        ``await executor.drain()`` waits for them.
        """
        pending = self._snapshot()
        if self._thread is None:
            if not wait:
                for fut in pending:
                    fut.cancel()
            return
        on_own_thread = threading.current_thread() is self._thread
        if wait and not on_own_thread:
            concurrent.futures.wait(pending)
        elif not wait:
            for fut in pending:
                fut.cancel()
        self._stop_thread(grace=None if wait else 0.0, block=not on_own_thread)

    async def drain(self) -> None:
        """Wait until every fire time submitted so far is stored as a durable run or reported as an
        error (its APScheduler events dispatched). Call it after ``scheduler.shutdown()`` and before
        closing the Durably: the scheduler's shutdown, queued on the loop, runs first."""
        await asyncio.sleep(0)  # callbacks AsyncIOScheduler queued on this loop (shutdown, wakeup)
        while pending := self._snapshot():
            await asyncio.wait(
                [fut if isinstance(fut, asyncio.Future) else asyncio.wrap_future(fut) for fut in pending]
            )

    def _snapshot(self) -> list[Any]:
        with self._pending_lock:
            return list(self._pending)

    def _start_thread(self, alias: str) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=_run_loop, args=(loop,), name=f"durably-apscheduler-{alias}", daemon=True
        )
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open_owned(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            raise
        self._thread = thread
        return loop

    async def _open_owned(self) -> None:
        try:
            await self.durably.migrate()
            await self.durably.start(worker=self._worker is not False)
        except BaseException:
            await self.durably.close()
            raise

    async def _close_owned(self, grace: float | None) -> None:
        if grace is not None:
            await self.durably.stop(grace)
        await self.durably.close()

    def _stop_thread(self, grace: float | None, block: bool) -> None:
        loop, thread = self._loop, self._thread
        assert loop is not None and thread is not None
        self._thread = self._loop = None  # later submissions are refused: "shut down"
        closing = asyncio.run_coroutine_threadsafe(self._close_owned(grace), loop)
        closing.add_done_callback(lambda _: loop.call_soon_threadsafe(loop.stop))
        if not block:  # called on the loop thread itself: it stops once the Durably is closed
            return
        try:
            closing.result()
        except Exception as exc:
            log.warning("DurablyExecutor %r: closing the Durably failed: %s", self._alias, exc)
        thread.join()

    # -- submissions -----------------------------------------------------------------------------------
    def _target(self, job: Job) -> _Target:
        """What ``job`` triggers; NotADurableJobError / ValueError when it must not run."""
        if job.func is not durable_trigger:
            raise NotADurableJobError(
                f"APScheduler job {job.id!r} is routed to DurablyExecutor {self._alias!r} but its function "
                f"{_describe(job.func)} is not a durable job; add it with "
                f"add_durable_job(scheduler, <a job made by define_job>, trigger, id={job.id!r})"
            )
        kwargs = job.kwargs
        job_name = kwargs.get("job")
        if not isinstance(job_name, str) or job_name not in self.durably.job_names:
            registered = ", ".join(sorted(self.durably.job_names)) or "none"
            raise NotADurableJobError(
                f"APScheduler job {job.id!r}: durable job {job_name!r} is not registered on this "
                f"Durably (registered: {registered})"
            )
        overlap = kwargs.get("overlap", "queue")
        if overlap not in _OVERLAPS:
            raise InvalidArgumentError(
                f"APScheduler job {job.id!r}: overlap must be 'queue' or 'allow', not {overlap!r}"
            )
        problem = _trigger_problem(job.trigger)
        if problem is not None:
            raise InvalidArgumentError(f"APScheduler job {job.id!r}: {problem}")
        return _Target(
            job_name=job_name,
            input=kwargs.get("input"),
            concurrency_key=f"{KEY_PREFIX}{job.id}" if overlap == "queue" else None,
            labels=dict(kwargs.get("labels") or {}),
        )

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError(f"DurablyExecutor {self._alias!r} is shut down")
        target: _Target | Exception
        try:
            target = self._target(job)
        except (NotADurableJobError, ValueError) as exc:
            target = exc  # reported per fire time, from the loop, like any other outcome
        coro = self._trigger_all(job.id, job._jobstore_alias, target, list(run_times), job.misfire_grace_time)
        self._schedule(job.id, coro, loop)

    def _schedule(
        self, job_id: str, coro: Coroutine[Any, Any, list[Any]], loop: asyncio.AbstractEventLoop
    ) -> None:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        fut: Any
        try:
            fut = loop.create_task(coro) if running is loop else asyncio.run_coroutine_threadsafe(coro, loop)
        except BaseException:
            coro.close()
            raise
        with self._pending_lock:
            self._pending.add(fut)
        fut.add_done_callback(lambda done: self._finished(job_id, done))

    def _finished(self, job_id: str, fut: Any) -> None:
        with self._pending_lock:
            self._pending.discard(fut)
        if fut.cancelled():
            self._run_job_success(job_id, [])  # shut down mid-write: no events, the instance ends
            return
        exc = fut.exception()
        if exc is not None:
            self._run_job_error(job_id, exc, exc.__traceback__)
        else:
            self._run_job_success(job_id, fut.result())

    async def _trigger_all(
        self,
        job_id: str,
        jobstore: str | None,
        target: _Target | Exception,
        run_times: list[datetime],
        grace_seconds: float | None,
    ) -> list[Any]:
        events: list[Any] = []
        for run_time in run_times:
            if grace_seconds is not None and not isinstance(target, Exception):
                late = datetime.now(UTC) - run_time
                if late > timedelta(seconds=grace_seconds):
                    events.append(JobExecutionEvent(EVENT_JOB_MISSED, job_id, jobstore, run_time))
                    log.warning(
                        "APScheduler job %r: fire time %s missed by %s (misfire_grace_time %ss): no run",
                        job_id,
                        run_time.isoformat(),
                        late,
                        grace_seconds,
                    )
                    continue
            try:
                if isinstance(target, Exception):
                    raise target
                run = await self._trigger(job_id, target, run_time)
            except Exception as exc:
                events.append(
                    JobExecutionEvent(
                        EVENT_JOB_ERROR,
                        job_id,
                        jobstore,
                        run_time,
                        exception=exc,
                        traceback="".join(traceback.format_tb(exc.__traceback__)),
                    )
                )
                message = str(exc)
                if not message.startswith("APScheduler job "):
                    message = f"APScheduler job {job_id!r}: {message}"
                log.error(
                    "%s (fire time %s: no durable run)",
                    message,
                    run_time.isoformat(),
                    exc_info=not isinstance(exc, NotADurableJobError | ValueError | InputValidationError),
                )
            else:
                events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job_id, jobstore, run_time, retval=run))
                scheduled_for = run.record.labels.get(LABEL_SCHEDULED_FOR, "")
                log.info(  # as the scheduler logs a fire time: every process, every outcome
                    "APScheduler job %s fire time %s: %s (run %s)",
                    job_id,
                    scheduled_for,
                    "triggered" if run.disposition == "created" else "deduplicated",
                    run.id,
                    extra={
                        "run_id": run.id,
                        "job": run.job_name,
                        "scheduled_for": scheduled_for,
                        LABEL_JOB: job_id,
                    },
                )
        return events

    async def _trigger(self, job_id: str, target: _Target, run_time: datetime) -> Run:
        try:
            when = fire_time_text(run_time)
        except ValueError:
            raise InvalidArgumentError(
                _whole_second_problem("its trigger", run_time) or "invalid fire time"
            ) from None
        return await self.durably.trigger(
            target.job_name,
            target.input,
            idempotency_key=f"{KEY_PREFIX}{job_id}:{when}",
            concurrency_key=target.concurrency_key,
            labels={**target.labels, LABEL_JOB: job_id, LABEL_SCHEDULED_FOR: when},
        )


def _threaded(scheduler: Any) -> bool:
    """True for thread-based schedulers, False for AsyncIOScheduler; others are refused."""
    if isinstance(scheduler, AsyncIOScheduler):
        return False
    names = {cls.__name__ for cls in type(scheduler).__mro__}
    if isinstance(scheduler, BlockingScheduler) and "GeventScheduler" not in names:
        return True
    raise ArgumentTypeError(
        "DurablyExecutor works with AsyncIOScheduler, BackgroundScheduler and BlockingScheduler, "
        f"not {type(scheduler).__name__}"
    )


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
