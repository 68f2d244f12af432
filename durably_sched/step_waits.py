"""Durable waits, the part of :class:`~durably_sched.step.Step` that releases the run while it waits.

``step.sleep`` / ``step.sleep_until`` wait for a time, ``step.wait_for_event`` for an event sent
with ``durably.send_event`` (or ``events send``, ``POST /api/events``), ``step.run_job`` for a
child run. Each is a step: its name makes the replay deterministic, and its result is
checkpointed like ``step.run``'s.

* **Waiting holds nothing.** A wait that cannot end at once stores the run as ``waiting``
  (``Store.suspend_run``: fenced, with the logs buffered so far) and raises
  :class:`~durably_sched.errors.RunSuspended`: the attempt ends, the slot and the lease are given
  up. The store wakes the run (pending again) when its time comes, its event is sent or its
  children finish; any worker then claims it, and the replay reaches the same wait, which finds
  how it ended on the run record (``run.wait``: the step's name and the outcome) and returns.
* **Time** is the store's: a sleep of ``10m`` ends ten minutes after the suspend by the database's
  clock (PostgreSQL), and ``sleep_until`` at the given instant.
* **Event timeouts** raise :class:`~durably_sched.errors.EventTimeoutError` in the job, a step
  failure that the run's retry policy decides on; the timed-out outcome is forgotten first, so a
  retried wait starts over with its full timeout.
* **Children** are started with an idempotency key derived from the parent run and the step name
  (``child:<run id>:<step>``), so a replay finds the child it started instead of starting another.
  ``step.run_job`` calls gathered together (``asyncio.gather``) suspend once, for all of them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from ._bounds import valid_text
from .clock import Clock
from .errors import ChildRunFailedError, EventTimeoutError, RunSuspended, StepCancelled, StepError
from .retry import RetryPolicyError, parse_seconds, timeout_seconds
from .store.base import Store
from .store.records import NewLog, RunRecord, WaitState, WriteResult
from .store.waits import NewWait, Suspension

__all__ = ["ChildBatches", "ChildStarter", "WaitContext", "WaitSteps", "child_key"]

ChildStarter = Callable[[str, Any, str, Mapping[str, Any]], Awaitable[RunRecord]]
"""``(job name, input, idempotency key, trigger options)``: the child run, created or (the key's
run exists) found."""

TRIGGER_OPTIONS = frozenset({"concurrency_key", "labels", "coalesce", "retry", "run_timeout"})


def child_key(run_id: str, step_name: str) -> str:
    """The idempotency key of the child run a parent's ``step.run_job(step_name, ...)`` starts."""
    return f"child:{run_id}:{step_name}"


class ChildBatches:
    """The ``step.run_job`` calls of one attempt that are starting their children: the last one
    to have started its child suspends the run once for all of them."""

    def __init__(self) -> None:
        self.starting = 0
        self.ids: list[str] = []
        self.done: asyncio.Future[Suspension] | None = None

    def join(self) -> asyncio.Future[Suspension]:
        if self.done is None:
            self.done = asyncio.get_running_loop().create_future()
        return self.done

    def take(self) -> tuple[list[str], asyncio.Future[Suspension] | None]:
        """The children gathered so far and their future; the next call starts a new batch."""
        ids, done = self.ids, self.done
        self.ids, self.done = [], None
        return ids, done


class WaitContext(Protocol):
    """What the waits need of the run's context (``step.RunContext`` is one)."""

    run: RunRecord
    run_id: str
    generation: int
    store: Store
    clock: Clock
    completed: dict[str, str]
    next_index: int
    failed_step: str | None
    children: ChildBatches
    start_child: ChildStarter | None
    suspended_on: WaitState | None

    def use_name(self, name: object) -> None: ...
    def ensure_active(self) -> None: ...
    def take_logs(self) -> list[NewLog]: ...
    def encode_value(self, name: str, result: Any) -> tuple[str, Any]: ...
    def observe(self, result: WriteResult) -> None: ...


class WaitSteps:
    """``sleep``, ``sleep_until``, ``wait_for_event`` and ``run_job`` (mixed into ``Step``)."""

    _ctx: WaitContext

    async def _checkpoint(
        self, name: str, index: int, text: str, value: Any, started_at: datetime, duration: float
    ) -> Any:
        raise NotImplementedError  # pragma: no cover - Step's

    async def sleep(self, name: str, duration: float | timedelta | str) -> None:
        """Wait ``duration`` (seconds, a timedelta or text such as ``"10m"``) without holding a worker:
        the run is released and resumes after the time, on any worker. On replay a passed sleep
        returns at once."""
        try:
            seconds = parse_seconds(duration, "duration")
        except RetryPolicyError as exc:
            raise StepError(f"step '{name}': {exc}") from None
        await self._sleep(name, NewWait("sleep", name, seconds=seconds))

    async def sleep_until(self, name: str, when: datetime) -> None:
        """Wait until ``when`` (a timezone-aware datetime) without holding a worker (see :meth:`sleep`)."""
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise StepError(f"step '{name}': sleep_until needs a timezone-aware datetime (got {when!r})")
        await self._sleep(name, NewWait("sleep", name, until=when))

    async def _sleep(self, name: str, wait: NewWait) -> None:
        ctx = self._ctx
        if self._replayed(name):
            return
        ctx.ensure_active()
        if _ended(ctx, name) is None:
            await self._suspend(wait, f"sleeping in step '{name}'")
        await self._complete_wait(name, None)

    async def wait_for_event(
        self, name: str, key: str, timeout: float | timedelta | str | None = None
    ) -> Any:
        """Wait for an event of ``key`` (``durably.send_event(key, data)``) without holding a worker;
        return its data. Each waiting run receives an event once. An event sent before the run
        reached this wait is received if the run was created before it was sent. After ``timeout``
        (None: none) without one, raise :class:`~durably_sched.errors.EventTimeoutError` (a step
        failure; a retried wait starts over with its full timeout)."""
        ctx = self._ctx
        if not isinstance(key, str) or not key or not valid_text(key):
            raise StepError(f"step '{name}': the event key must be non-empty text (got {key!r})")
        try:
            seconds = timeout_seconds(timeout)
        except RetryPolicyError as exc:
            raise StepError(f"step '{name}': {exc}") from None
        if self._replayed(name):
            return json.loads(ctx.completed[name])
        ctx.ensure_active()
        ended = _ended(ctx, name)
        if ended is not None and ended.outcome == "timeout":
            await ctx.store.clear_wait(ctx.run_id, ctx.generation)
            ctx.failed_step = name
            raise EventTimeoutError(name, key, seconds or 0.0)
        if ended is not None and ended.outcome == "event":
            data = ended.data
        else:
            wait = NewWait("event", name, key=key, seconds=seconds)
            data = (await self._suspend(wait, f"waiting in step '{name}' for event '{key}'")).data
        return await self._complete_wait(name, data)

    async def run_job(self, name: str, job: Any, input: Any = None, **options: Any) -> Any:
        """Start a child run of ``job`` (a job handle, definition or name) with ``input`` and wait for
        it without holding a worker; return its output, or raise
        :class:`~durably_sched.errors.ChildRunFailedError` with its error.

        ``options`` are ``trigger``'s (concurrency_key, labels, coalesce, retry, run_timeout);
        the idempotency key derives from this run and ``name``, so a replay never starts the child
        twice. Calls gathered with ``asyncio.gather`` are waited for together."""
        ctx = self._ctx
        job_name = _job_name(name, job)
        unknown = sorted(set(options) - TRIGGER_OPTIONS)
        if unknown:
            raise StepError(f"step '{name}': run_job does not take {', '.join(unknown)} (the key is derived)")
        if self._replayed(name):
            return json.loads(ctx.completed[name])
        ctx.ensure_active()
        if ctx.start_child is None:
            raise StepError(f"step '{name}': run_job needs a run executed by a Durably worker")
        batches = ctx.children
        batches.starting += 1
        try:
            child = await ctx.start_child(job_name, input, child_key(ctx.run_id, name), options)
        except BaseException:
            batches.starting -= 1
            if batches.starting == 0:
                _, done = batches.take()
                if done is not None:
                    done.set_exception(StepError(f"not waited for: step '{name}' could not start its child"))
            raise
        batches.starting -= 1
        batches.ids.append(child.id)
        done = batches.join()
        if batches.starting == 0:
            ids, _ = batches.take()
            why = f"waiting in step '{name}' for {_count(len(ids))}"
            try:
                done.set_result(await self._suspend(NewWait("children", name, children=ids), why))
            except asyncio.CancelledError:
                done.cancel()  # the gathered calls stop too
                raise
            except BaseException as exc:
                done.set_exception(exc)
        await asyncio.shield(done)
        return await self._child_result(name, child.id)

    async def _child_result(self, name: str, child_id: str) -> Any:
        ctx = self._ctx
        child = await ctx.store.get_run(child_id)
        if child is None:
            raise StepError(f"step '{name}': child run {child_id} no longer exists")
        if child.status != "completed":
            ctx.failed_step = name
            raise ChildRunFailedError(child.id, child.status, child.error, child.failed_step_name)
        return await self._complete_wait(name, child.output)

    def _replayed(self, name: str) -> bool:
        ctx = self._ctx
        ctx.use_name(name)
        return name in ctx.completed

    async def _suspend(self, wait: NewWait, why: str) -> Suspension:
        """Store the run as waiting and end the attempt (RunSuspended), or return: nothing to wait for."""
        ctx = self._ctx
        result = await ctx.store.suspend_run(ctx.run_id, ctx.generation, wait, ctx.take_logs())
        if result.result in ("lost", "cancelled"):
            ctx.observe(result.result)  # raises StepCancelled for a lost run
            raise StepCancelled("cancelled")
        if result.result == "waiting":
            until = wait.until
            if until is None and wait.seconds is not None:
                until = ctx.clock.now() + timedelta(seconds=wait.seconds)
            ctx.suspended_on = WaitState(
                kind=wait.kind, step=wait.step, key=wait.key, until=until, children=result.waiting_children
            )
            raise RunSuspended(why)
        return result

    async def _complete_wait(self, name: str, value: Any) -> Any:
        """Checkpoint a wait that ended, with its value (None for a sleep)."""
        ctx = self._ctx
        text, decoded = ctx.encode_value(name, value)
        index = ctx.next_index
        ctx.next_index += 1
        return await self._checkpoint(name, index, text, decoded, ctx.clock.now(), 0.0)


def _ended(ctx: WaitContext, name: str) -> WaitState | None:
    """How this step's wait ended, when the run was woken from it; None: it has not waited yet."""
    wait = ctx.run.wait
    if wait is None or wait.step != name or wait.outcome is None:
        return None
    return wait


def _job_name(step_name: str, job: Any) -> str:
    if isinstance(job, str) and job:
        return job
    name = getattr(job, "name", None)
    if isinstance(name, str) and name:
        return name
    raise StepError(f"step '{step_name}': run_job needs a job handle, definition or name (got {job!r})")


def _count(n: int) -> str:
    return "1 child run" if n == 1 else f"{n} child runs"
