"""The worker: claims runs with leases, executes them, renews leases, stops gracefully.

It is given what it needs and nothing more (as the TypeScript library's runtime is given its
storage, event emitter and clock): the store, the event emitter, the registered jobs (a live
mapping: jobs registered later are claimed from the next claim on) and a callback for runs that
finished here. It knows nothing about the facade that created it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import LeaseLostError, RunCancelledSignal, StoreError
from .events import EventEmitter, RunCompleteEvent, RunFailEvent, RunStartEvent, WorkerErrorEvent
from .jobs import JobDefinition
from .step import RunContext, Step
from .store.base import RunRecord, Store

log = logging.getLogger("durably_sched.worker")

FinishedCallback = Callable[[str, bool, Any], None]
"""``(run_id, completed, output)``: called when a run this worker executed finished: completed here
(with its output value), or failed (``completed`` False, output None)."""


def _took(run: RunRecord, attempt_seconds: float) -> str:
    """How long a completed run took: this attempt (claim to completion), and for a resumed or
    retried run also the total since its first start, so the two are never confused."""
    if run.attempt <= 1 or run.started_at is None:
        return f"{attempt_seconds:.3f}s"
    total = (datetime.now(UTC) - run.started_at).total_seconds()
    return f"{attempt_seconds:.3f}s this attempt (attempt {run.attempt}; {total:.1f}s since the first start)"


def make_worker_id() -> str:
    """Host, pid and a random suffix: readable, and never reused after a restart."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class ActiveRun:
    """A run this worker holds: the state of its claimed generation and the task executing it."""

    ctx: RunContext
    task: asyncio.Task[None]


class Worker:
    def __init__(
        self,
        *,
        store: Store,
        events: EventEmitter,
        jobs: Mapping[str, JobDefinition[Any, Any]],
        on_finished: FinishedCallback | None = None,
        concurrency: int,
        polling_interval: float,
        heartbeat_interval: float,
        stale_threshold: float,
        worker_id: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("max_concurrent_runs must be at least 1")
        if heartbeat_interval >= stale_threshold:
            raise ValueError("heartbeat_interval must be shorter than stale_threshold")
        self.store = store
        self.events = events
        self.jobs = jobs
        self.on_finished = on_finished
        self.concurrency = concurrency
        self.polling_interval = polling_interval
        self.heartbeat_interval = heartbeat_interval
        self.stale_threshold = stale_threshold
        self.worker_id = worker_id or make_worker_id()
        self.active: dict[str, ActiveRun] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.only_run_ids: frozenset[str] | None = None
        """When set, claim only these runs (``trigger --here`` executes exactly the run it made)."""
        self.last_claim_at = 0.0
        self.lease_losses = 0

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    def wake(self) -> None:
        self._wake.set()

    def mark_cancelled(self, run_id: str) -> bool:
        """The run was cancelled (by an operator): start no further step. False if not held here."""
        entry = self.active.get(run_id)
        if entry is None:
            return False
        entry.ctx.cancelled = True
        return True

    def start(self) -> None:
        if self.running:
            return
        self._stopping = False
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._claim_loop(), name="durably-worker")
        self._heartbeat_task = loop.create_task(self._heartbeat_loop(), name="durably-heartbeat")

    async def stop(self, grace: float) -> None:
        """Stop claiming; let running steps finish for up to ``grace`` seconds; release the rest."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        tasks = [entry.task for entry in self.active.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        leftovers = list(self.active.values())
        for entry in leftovers:
            entry.ctx.lost = True  # nothing more from this holder once we give the run back
            entry.task.cancel()
        if leftovers:
            await asyncio.gather(*(entry.task for entry in leftovers), return_exceptions=True)
            for ctx in (entry.ctx for entry in leftovers):
                try:
                    await self.store.release_run(ctx.run_id, ctx.generation)
                except Exception as exc:
                    log.warning("could not release run %s: %s", ctx.run_id, exc)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        self._loop_task = self._heartbeat_task = None

    # -- claiming ----------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        failures = 0
        while not self._stopping:
            free = self.concurrency - len(self.active)
            claimed: list[RunRecord] = []
            if free > 0:
                self._wake.clear()
                try:
                    claimed = await self.store.claim(
                        self.worker_id,
                        list(self.jobs),
                        free,
                        self.stale_threshold,
                        run_ids=None if self.only_run_ids is None else sorted(self.only_run_ids),
                    )
                    self.last_claim_at = time.monotonic()
                    failures = 0
                except Exception as exc:
                    failures += 1
                    self._report(exc, "claim")
                    await self._sleep(min(self.polling_interval * 2**failures, 30.0))
                    continue
                for run in claimed:
                    self._launch(run)
            if free > 0 and len(claimed) == free:
                continue  # there may be more work right away
            await self._sleep(self.polling_interval)

    async def _sleep(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _launch(self, run: RunRecord) -> None:
        ctx = RunContext(run, self.store, self.events, {})
        task = asyncio.get_running_loop().create_task(self._execute(ctx), name=f"durably-run-{run.id}")
        self.active[run.id] = ActiveRun(ctx, task)

    # -- leases ----------------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if not self.active:
                continue
            contexts = {run_id: e.ctx for run_id, e in self.active.items() if not e.ctx.lost}
            try:
                results = await self.store.renew_leases(
                    [(run_id, ctx.generation) for run_id, ctx in contexts.items()], self.stale_threshold
                )
            except Exception as exc:
                self._report(exc, "heartbeat")
                continue
            for run_id, outcome in results.items():
                ctx = contexts[run_id]
                entry = self.active.get(run_id)
                if entry is None or entry.ctx is not ctx:
                    continue  # finished while the renewal was in flight: "lost" means completed
                if outcome == "lost":
                    log.warning("lease lost; stopping the run", extra=ctx.log_extra)
                    ctx.lost = True
                    self.lease_losses += 1
                    entry.task.cancel()
                elif outcome == "cancelled":
                    ctx.cancelled = True

    # -- execution --------------------------------------------------------------------------------
    async def _execute(self, ctx: RunContext) -> None:
        run = ctx.run
        try:
            if run.step_count > 0:
                steps = await self.store.get_steps(run.id)
                ctx.completed.update({s.name: s.output_json for s in steps})
                ctx.next_index = len(steps)
            await self._run_job(ctx)
        except asyncio.CancelledError:
            if not ctx.lost:
                raise
        except Exception as exc:
            # The store failed under us: write nothing more; the lease expires and the run resumes.
            self._report(exc, "execute", run.id)
        finally:
            # Free the slot first: a cancellation arriving during close() must not leak it.
            entry = self.active.get(run.id)
            if entry is not None and entry.ctx is ctx:
                del self.active[run.id]
            self._wake.set()
            await ctx.close()

    async def _run_job(self, ctx: RunContext) -> None:
        run = ctx.run
        job = self.jobs[run.job_name]  # claims ask only for registered jobs
        events = self.events
        log.debug("run started", extra=ctx.log_extra)
        if events.wants("run:start"):
            events.emit(
                RunStartEvent(
                    run_id=run.id,
                    job_name=run.job_name,
                    labels=run.labels,
                    attempt=run.attempt,
                    resumed_steps=len(ctx.completed),
                )
            )
        started = time.perf_counter()
        step = Step(ctx)
        try:
            payload = job.parse_input(run.input)
            result = await job.run(step, payload)
            ctx.ensure_active()
            value, stored = job.validate_output(result)
        except StoreError:
            raise
        except (LeaseLostError, RunCancelledSignal):
            log.info("run stopped: %s", "lease lost" if ctx.lost else "cancelled", extra=ctx.log_extra)
            if not ctx.lost and ctx.pending_logs:
                await self._store_logs(ctx)
            return
        except Exception as exc:
            await self._fail(ctx, exc, time.perf_counter() - started)
            return
        outcome = await self.store.complete_run(run.id, ctx.generation, stored, ctx.take_logs())
        if outcome != "ok":
            log.info("run finished but was no longer held (%s); output dropped", outcome, extra=ctx.log_extra)
            return
        duration = time.perf_counter() - started
        log.info("run completed in %s", _took(run, duration), extra=ctx.log_extra)
        if events.wants("run:complete"):
            events.emit(
                RunCompleteEvent(
                    run_id=run.id, job_name=run.job_name, labels=run.labels, output=value, duration=duration
                )
            )
        if self.on_finished is not None:
            self.on_finished(run.id, True, value)

    async def _store_logs(self, ctx: RunContext) -> None:
        try:
            await self.store.append_logs(ctx.run_id, ctx.generation, ctx.take_logs())
        except Exception as exc:
            self._report(exc, "logs", ctx.run_id)

    async def _fail(self, ctx: RunContext, exc: BaseException, duration: float) -> None:
        run = ctx.run
        error = f"{type(exc).__name__}: {exc}"
        step_name = ctx.failed_step
        outcome = await self.store.fail_run(run.id, ctx.generation, error, step_name, ctx.take_logs())
        if outcome != "ok":
            return
        log.warning(
            "run failed%s: %s", f" in step '{step_name}'" if step_name else "", error, extra=ctx.log_extra
        )
        events = self.events
        if events.wants("run:fail"):
            events.emit(
                RunFailEvent(
                    run_id=run.id,
                    job_name=run.job_name,
                    labels=run.labels,
                    error=error,
                    failed_step_name=step_name,
                    duration=duration,
                )
            )
        if self.on_finished is not None:
            self.on_finished(run.id, False, None)

    def _report(self, exc: BaseException, context: str, run_id: str | None = None) -> None:
        log.error("worker error during %s: %s", context, exc, extra={"run_id": run_id} if run_id else {})
        self.events.emit(
            WorkerErrorEvent(error=f"{type(exc).__name__}: {exc}", context=context, run_id=run_id)
        )
