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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import LeaseLostError, RunCancelledSignal, StoreError
from .events import (
    EventEmitter,
    RunCompleteEvent,
    RunFailEvent,
    RunLeasedEvent,
    RunLeaseRenewedEvent,
    RunStartEvent,
    WorkerErrorEvent,
)
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
        keep_steps: bool = True,
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
        self.keep_steps = keep_steps
        """False (``preserve_steps=False``): drop a run's step rows once it completed here."""
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

    @property
    def stopping(self) -> bool:
        """:meth:`stop` was called (and no start or one-shot processing since)."""
        return self._stopping

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

    def _launch(self, run: RunRecord) -> asyncio.Task[None]:
        ctx = RunContext(run, self.store, self.events, {})
        task = asyncio.get_running_loop().create_task(self._execute(ctx), name=f"durably-run-{run.id}")
        self.active[run.id] = ActiveRun(ctx, task)
        if self.events.wants("run:leased"):
            self.events.emit(
                RunLeasedEvent(
                    run_id=run.id,
                    job_name=run.job_name,
                    labels=run.labels,
                    input=run.input,
                    worker_id=self.worker_id,
                    lease_expires_at=run.lease_expires_at,
                    generation=run.generation,
                    attempt=run.attempt,
                )
            )
        return task

    # -- one-shot processing ---------------------------------------------------------------------
    async def process(
        self, *, max_runs: int | None = None, job_names: Sequence[str] | None = None
    ) -> list[RunRecord]:
        """Claim and execute runs until none is claimable now; return the runs claimed, as claimed.

        The claims and the execution are the claim loop's own (``store.claim``, :meth:`_launch`);
        only the loop around them differs: up to ``concurrency`` runs at once, a new claim whenever
        a slot frees (a finished run may unblock the next run of its concurrency key) or the worker
        is woken, and a return -- instead of a poll -- once a claim finds nothing and no run
        claimed here is still executing. "Idle" therefore means idle *for this worker now*: runs
        held under another worker's live lease, runs of jobs not in ``job_names`` (default: every
        registered job), runs waiting for their concurrency key behind a run executing elsewhere,
        and runs not claimable before a later time are not waited for.

        Ends early after ``max_runs`` claims (once those finished) or when :meth:`stop` is called
        (which then gives the runs still executing their grace and releases them). Not while the
        claim loop runs (:meth:`start`): both would compete for the same slots.
        """
        if self.running:
            raise RuntimeError("the worker's claim loop is running; stop it before processing runs one-shot")
        self._stopping = False
        names = list(self.jobs) if job_names is None else list(job_names)
        claimed_all: list[RunRecord] = []
        mine: list[asyncio.Task[None]] = []  # the runs claimed here that are still executing
        heartbeat = self._heartbeat_task
        if heartbeat is None or heartbeat.done():
            heartbeat = self._heartbeat_task = asyncio.get_running_loop().create_task(
                self._heartbeat_loop(), name="durably-heartbeat"
            )
            owns_heartbeat = True
        else:
            owns_heartbeat = False
        try:
            while not self._stopping:
                room = self.concurrency - len(self.active)
                if max_runs is not None:
                    room = min(room, max_runs - len(claimed_all))
                claimed: list[RunRecord] = []
                if room > 0:
                    self._wake.clear()
                    claimed = await self._claim_for_process(names, room)
                    for run in claimed:
                        mine.append(self._launch(run))
                    claimed_all.extend(claimed)
                if claimed and len(claimed) == room:
                    continue  # there may be more right away
                busy = mine = [task for task in mine if not task.done()]
                if not busy:
                    # Idle, unless a run finished (its key's next run may be claimable now) or a
                    # run was made while the claim was in flight: both set the wake-up.
                    if room > 0 and self._wake.is_set():
                        continue
                    break
                if room <= 0:
                    self._wake.clear()  # nothing to claim until a run of ours finishes
                woken = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait([*busy, woken], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
        finally:
            if owns_heartbeat and self._heartbeat_task is heartbeat and not self.active:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
                self._heartbeat_task = None
        return claimed_all

    async def _claim_for_process(self, job_names: list[str], limit: int) -> list[RunRecord]:
        """One claim that a cancellation of the caller cannot strand: runs it took after all are
        given back at once (a run claimed by a commit nobody executes would otherwise wait for its
        lease to expire)."""
        claim = asyncio.ensure_future(
            self.store.claim(
                self.worker_id,
                job_names,
                limit,
                self.stale_threshold,
                run_ids=None if self.only_run_ids is None else sorted(self.only_run_ids),
            )
        )
        try:
            claimed = await asyncio.shield(claim)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                for run in await claim:
                    await self.store.release_run(run.id, run.generation)
            raise
        self.last_claim_at = time.monotonic()
        return claimed

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
            renewed = self.events.wants("run:lease-renewed")
            for run_id, outcome in results.items():
                ctx = contexts[run_id]
                entry = self.active.get(run_id)
                if entry is None or entry.ctx is not ctx:
                    continue  # finished while the renewal was in flight: "lost" means completed
                if outcome == "ok" and renewed:
                    self.events.emit(
                        RunLeaseRenewedEvent(
                            run_id=run_id,
                            job_name=ctx.run.job_name,
                            labels=ctx.run.labels,
                            worker_id=self.worker_id,
                            lease_seconds=self.stale_threshold,
                        )
                    )
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
        if not self.keep_steps:
            # A second write, after the completion: a crash in between only leaves the steps to
            # retention. delete_steps touches completed runs only.
            try:
                await self.store.delete_steps(run.id)
            except Exception as exc:
                self._report(exc, "delete steps", run.id)

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
