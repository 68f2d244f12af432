"""The worker: claims runs with leases, executes them, renews leases, stops gracefully.

It is given what it needs and nothing more (as the TypeScript library's runtime is given its
storage, event emitter and clock): the store, the event emitter, the registered jobs (a live
mapping: jobs registered later are claimed from the next claim on) and a callback for runs that
finished here. It knows nothing about the facade that created it.

What it promises, and why each holds:

* **Failures are explained and, if the job asks, retried.** A failed attempt stores its one-line
  error and its traceback; with a retry policy (the job's, or one stored on the run) a retryable
  error sends the run back to pending with a not-before time (``store.retry_later``, fenced like
  every holder write), so no worker holds it while it waits and its completed steps replay.
* **Timeouts.** A run's timeout limits one attempt (one execution, from its claim): the run's task
  is cancelled at the deadline, its cancel token set first, and the attempt fails with
  ``RunTimeoutError`` through the same path as any failure. A sync step's thread cannot be killed;
  its late result is dropped (see _step_threads) and the fenced failure is written at once.
* **A stop that stops.** ``stop(grace)`` starts no new step in any run (``step.run`` raises
  ``RunStoppingSignal``, and the run is released at once, its completed steps kept); the steps in
  flight get the grace to finish and checkpoint; then every run still held has its token set, its
  task cancelled and its lease released. A claim in flight when the stop begins is not cancelled:
  the claim loop finishes it and releases what it returns (given up to ORPHAN_CLAIM_WAIT beyond the
  grace, for a database that is slow to answer), so no run is left ``running`` and held by nobody.
* **Registry and early takeover.** The worker registers itself (``workers`` table) and its
  heartbeat rides on the lease renewal. On start and at every heartbeat it looks for workers
  registered under its own host key whose process is certainly gone (see registry.py) and takes
  over their runs at once; anywhere else, a lease expires as before.
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
from datetime import UTC, datetime, timedelta
from typing import Any

from ._ratelimit import RateLimitedLog
from ._tracebacks import error_line, format_traceback
from .errors import (
    LeaseLostError,
    RunCancelledSignal,
    RunStoppingSignal,
    RunTimeoutError,
    StepCancelled,
    StoreError,
)
from .events import (
    EventEmitter,
    RunCompleteEvent,
    RunFailEvent,
    RunLeasedEvent,
    RunLeaseRenewedEvent,
    RunRetryScheduledEvent,
    RunStartEvent,
    WorkerErrorEvent,
)
from .jobs import JobDefinition
from .limits import Limits
from .registry import HostIdentity, found_gone, host_identity
from .retry import Retry
from .step import RunContext, Step
from .store.base import RunRecord, Store, WorkerInfo

log = logging.getLogger("durably_sched.worker")

FinishedCallback = Callable[[str, bool, Any], None]
"""``(run_id, completed, output)``: called when a run this worker executed finished: completed here
(with its output value), or failed for good (``completed`` False, output None). A failed attempt
that is retried later is not finished."""

REGISTRY_KEEP = timedelta(days=1)
"""Registry rows of workers that stopped beating are kept this long (``workers list`` shows them)."""
REGISTRY_PURGE_EVERY = 600.0
ORPHAN_CLAIM_WAIT = 5.0
"""At a stop, how long a claim still in flight after the grace may take before it is cancelled."""
RELEASE_RETRY_FIRST = 0.25
RELEASE_RETRY_MAX = 2.0
"""A release refused by a failing store is tried again after 0.25 s, 0.5 s, ... then every 2 s."""


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


def effective_retry(job: JobDefinition[Any, Any] | None, run: RunRecord) -> Retry | None:
    """The retry policy of a run: the one stored on it (an override), else its job's."""
    if run.retry_policy is not None:
        return Retry.from_json(run.retry_policy)
    return None if job is None else job.retry


def effective_timeout(job: JobDefinition[Any, Any] | None, run: RunRecord) -> float | None:
    if run.timeout is not None:
        return run.timeout
    return None if job is None else job.timeout


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
        limits: Limits | None = None,
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
        self.limits = limits or Limits()
        self.active: dict[str, ActiveRun] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._in_claim = False
        self._reserved = 0
        self.only_run_ids: frozenset[str] | None = None
        """When set, claim only these runs (``trigger --here`` executes exactly the run it made)."""
        self.last_claim_at = 0.0
        self.lease_losses = 0
        self.takeovers = 0
        """Workers on this host found gone, whose runs this worker made claimable at once."""
        self.registry_checks = 0
        """Passes that looked for gone workers on this host (one at start, one per heartbeat)."""
        self.identity: HostIdentity | None = None
        self.registered = False
        self._warnings = RateLimitedLog(log)

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    @property
    def stopping(self) -> bool:
        """:meth:`stop` was called (and no start or one-shot processing since)."""
        return self._stopping

    def wake(self) -> None:
        self._wake.set()

    def free_slots(self) -> int:
        """Runs this worker could start now: its concurrency less the runs it executes and the
        slots reserved by triggers of this process (see :meth:`reserve`)."""
        return self.concurrency - len(self.active) - self._reserved

    def reserve(self, job_name: str) -> bool:
        """Reserve a slot for a run that a trigger of this process is about to create already
        claimed by this worker (``Store.create_and_claim``). True if the claim loop is running,
        not stopping, the job is registered here and a slot is free; the caller then passes the
        created run to :meth:`adopt`, or calls :meth:`unreserve` if it was not claimed."""
        if (
            self._stopping
            or self.only_run_ids is not None
            or job_name not in self.jobs
            or not self.running
            or self.free_slots() <= 0
        ):
            return False
        self._reserved += 1
        return True

    def unreserve(self) -> None:
        self._reserved -= 1
        self._wake.set()  # the slot is free again; the run (if any) is pending

    async def adopt(self, run: RunRecord) -> None:
        """Execute a run claimed for this worker by a trigger of this process (in the reserved
        slot). A run claimed while the worker began to stop is given back at once."""
        self._reserved -= 1
        if self._stopping or not self.running:
            ctx = RunContext(run, self.store, self.events, {}, self.limits)
            await self._release(ctx, " (claimed as the worker stopped)")
            return
        self._launch(run)

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
        """Start no new step; let steps in flight finish for up to ``grace`` seconds; release the rest."""
        if self._loop_task is None and self._heartbeat_task is None:
            await self._deregister()  # one-shot processing (process()) registered without a loop
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, grace)
        self._stopping = True
        for entry in self.active.values():
            entry.ctx.stopping = True
        self._wake.set()
        # 1. The claim loop finishes the claim it may be making (and releases what it returns).
        #    Cancelling a claim could lose its answer after its commit (runs left running, held by
        #    nobody), so one in flight gets ORPHAN_CLAIM_WAIT more when the grace is over.
        if self._loop_task is not None:
            done, _ = await asyncio.wait([self._loop_task], timeout=max(0.0, deadline - loop.time()))
            if not done and self._in_claim:
                done, _ = await asyncio.wait([self._loop_task], timeout=ORPHAN_CLAIM_WAIT)
                if not done:
                    log.warning(
                        "a claim was still unanswered at stop; runs it took resume when their leases expire"
                    )
            if not done:
                self._loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._loop_task
        # 2. Steps in flight get the rest of the grace; a run reaching its next step is released.
        tasks = [entry.task for entry in self.active.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
        # 3. Whatever still runs is stopped and given back.
        leftovers = list(self.active.values())
        for entry in leftovers:
            entry.ctx.token.cancel("stopping")
            entry.ctx.lost = True  # nothing more from this holder once we give the run back
            entry.task.cancel()
        if leftovers:
            await asyncio.gather(*(entry.task for entry in leftovers), return_exceptions=True)
            for ctx in (entry.ctx for entry in leftovers):
                step = ctx.interrupted_step
                why = f"; its step '{step}' did not finish within the grace" if step else ""
                await self._release(ctx, why)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        self._loop_task = self._heartbeat_task = None
        await self._deregister()

    async def _release(self, ctx: RunContext, why: str = "", *, retry: bool = False) -> None:
        """Give a run back (fenced): pending again at once, completed steps kept; log it.

        With ``retry`` (the store failed under the run: a full disk, a lost connection), a release
        the store refuses too is tried again, backing off up to RELEASE_RETRY_MAX, for as long as
        the lease would have lasted (the run keeps its slot and the heartbeat meanwhile), so the run
        resumes within seconds of the store healing rather than at the end of its lease.
        """
        done = len(ctx.completed)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stale_threshold
        delay = RELEASE_RETRY_FIRST
        while True:
            try:
                outcome = await self.store.release_run(ctx.run_id, ctx.generation)
                break
            except Exception as exc:
                if not retry or self._stopping or loop.time() + delay > deadline:
                    log.warning(
                        "could not release run %s (it resumes when its lease expires): %s",
                        ctx.run_id,
                        exc,
                        extra=ctx.log_extra,
                    )
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RELEASE_RETRY_MAX)
        if outcome == "ok":
            log.info("released run %s at step %d%s", ctx.run_id, done, why, extra=ctx.log_extra)

    # -- registry --------------------------------------------------------------------------------
    def _info(self) -> WorkerInfo:
        from . import __version__

        identity = self.identity = self.identity or host_identity()
        jobs = () if self.only_run_ids is not None else tuple(sorted(self.jobs))
        return WorkerInfo(
            id=self.worker_id,
            host=identity.host,
            host_key=identity.host_key,
            pid=identity.pid,
            process_start=identity.process_start,
            version=__version__,
            jobs=jobs,
            concurrency=self.concurrency,
            lease_seconds=self.stale_threshold,
        )

    async def _register(self) -> None:
        try:
            await self.store.register_worker(self._info())
            self.registered = True
        except Exception as exc:
            self._report(exc, "register")

    async def _deregister(self) -> None:
        if not self.registered:
            return
        try:
            await self.store.deregister_worker(self.worker_id)
            self.registered = False
        except Exception as exc:
            log.warning("could not remove worker %s from the registry: %s", self.worker_id, exc)

    async def take_over_gone_workers(self) -> list[str]:
        """Runs of workers on this host whose process is certainly gone become claimable now.

        Returns the ids of the workers taken over. See registry.py for when a process counts as
        gone; a worker on another host is never taken over early.
        """
        identity = self.identity = self.identity or host_identity()
        if identity.host_key is None:
            return []
        taken: list[str] = []
        for worker in await self.store.list_workers():
            if worker.id == self.worker_id or not found_gone(worker, identity):
                continue
            runs = await self.store.take_over_worker(worker.id, self.worker_id)
            self.takeovers += 1
            taken.append(worker.id)
            held = "it held no run"
            if runs:
                held = "its run resumes now" if len(runs) == 1 else f"its {len(runs)} runs resume now"
            log.warning(
                "worker %s (pid %d on this host) is gone: %s%s",
                worker.id,
                worker.pid,
                held,
                f" ({', '.join(runs)})" if runs else "",
            )
            if runs:
                self._wake.set()
        return taken

    async def _maintain_registry(self) -> None:
        try:
            await self.take_over_gone_workers()
        except Exception as exc:
            self._report(exc, "takeover")
        self.registry_checks += 1

    # -- claiming ----------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        await self._register()
        await self._maintain_registry()
        failures = 0
        while not self._stopping:
            free = self.free_slots()
            claimed: list[RunRecord] = []
            if free > 0:
                self._wake.clear()
                try:
                    claimed = await self._claim(free)
                    self.last_claim_at = time.monotonic()
                    if failures:
                        log.info("claiming works again")
                        self._warnings.recovered("claim")
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    self._report(exc, "claim")
                    await self._sleep(min(self.polling_interval * 2**failures, 30.0))
                    continue
                if self._stopping:  # the stop began while the claim was in flight: give them back
                    for run in claimed:
                        ctx = RunContext(run, self.store, self.events, {}, self.limits)
                        await self._release(ctx, " (claimed as the worker stopped)")
                    return
                for run in claimed:
                    self._launch(run)
            if free > 0 and len(claimed) == free:
                continue  # there may be more work right away
            await self._sleep(self.polling_interval)

    async def _claim(self, limit: int) -> list[RunRecord]:
        self._in_claim = True  # stop() does not cancel a claim in flight (see there)
        try:
            return await self.store.claim(
                self.worker_id,
                list(self.jobs),
                limit,
                self.stale_threshold,
                run_ids=None if self.only_run_ids is None else sorted(self.only_run_ids),
            )
        finally:
            self._in_claim = False

    async def _sleep(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _launch(self, run: RunRecord) -> asyncio.Task[None]:
        ctx = RunContext(run, self.store, self.events, {}, self.limits)
        self._log_claimed(ctx)
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
        if not self.registered:
            # As the claim loop does: visible in `workers list`, and runs of a worker of this host
            # that died (e.g. the previous one-shot invocation, killed) resume now.
            await self._register()
            await self._maintain_registry()
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
                room = self.free_slots()
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

    def _log_claimed(self, ctx: RunContext) -> None:
        run = ctx.run
        if run.attempt <= 1:
            return
        previous = run.previous_worker_id
        notes = []
        if run.failed_attempts:  # "try 2 of 3" says it all unless resumes made more attempts
            policy = effective_retry(self.jobs.get(run.job_name), run)
            budget = f" of {policy.max_attempts}" if policy is not None else ""
            notes.append(f"try {run.failed_attempts + 1}{budget}")
        if run.attempt != run.failed_attempts + 1:
            notes.append(f"attempt {run.attempt}" + (", resumes included" if notes else ""))
        if previous and previous != self.worker_id:
            notes.append(f"previous holder {previous}")
        log.info(
            "resumed run %s at step %d (%s)", run.id, run.step_count, "; ".join(notes), extra=ctx.log_extra
        )

    # -- leases ----------------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        last_purge = 0.0
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self._beat()
            await self._maintain_registry()
            now = time.monotonic()
            if now - last_purge >= REGISTRY_PURGE_EVERY:
                last_purge = now
                try:
                    await self.store.purge_workers(datetime.now(UTC) - REGISTRY_KEEP)
                except Exception as exc:
                    self._report(exc, "registry")

    async def _beat(self) -> None:
        contexts = {run_id: e.ctx for run_id, e in self.active.items() if not e.ctx.lost}
        try:
            if not contexts:
                if not await self.store.heartbeat_worker(self.worker_id, 0):
                    await self._register()  # the row went away (purged, or the database restored)
                return
            results = await self.store.renew_leases(
                [(run_id, ctx.generation) for run_id, ctx in contexts.items()],
                self.stale_threshold,
                worker=(self.worker_id, len(contexts)),
            )
        except Exception as exc:
            self._report(exc, "heartbeat")
            return
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
            if self._stopping:
                raise RunStoppingSignal(run.id)
            await self._run_job(ctx)
        except RunStoppingSignal:
            if ctx.pending_logs:
                await self._store_logs(ctx)
            await self._release(ctx)
        except asyncio.CancelledError:
            if not ctx.lost:
                raise
        except Exception as exc:
            # The store failed under us: give the run back if the store takes that write (fenced);
            # else it resumes when its lease expires.
            self._report(exc, "execute", run.id)
            if not ctx.lost:
                await self._release(ctx, " after a database error", retry=True)
        finally:
            # Free the slot first: a cancellation arriving during close() must not leak it.
            full = self.free_slots() <= 0
            entry = self.active.get(run.id)
            if entry is not None and entry.ctx is ctx:
                del self.active[run.id]
            if full or run.concurrency_key is not None or self.only_run_ids is not None:
                # A claim now may find what the last one could not take (no slot was free) or what
                # this run held back (its key's next run). Otherwise the last claim found every
                # run there was, and newer ones wake the worker themselves.
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
        timeout = effective_timeout(job, run)
        scope: asyncio.Timeout | None = None
        handle: asyncio.TimerHandle | None = None
        if timeout is not None:
            loop = asyncio.get_running_loop()
            scope = asyncio.timeout(None)

            def expire(scope: asyncio.Timeout = scope) -> None:
                ctx.token.cancel("timeout")  # first, so that the step in flight sees why
                scope.reschedule(loop.time())

            handle = loop.call_later(timeout, expire)
        try:
            payload = job.parse_input(run.input)
            if scope is None:
                result = await job.run(step, payload)
            else:
                async with scope:
                    result = await job.run(step, payload)
            ctx.ensure_held()  # a run that finished its last step during a stop still completes
            value, stored = ctx.output(job, result)
        except StoreError:
            raise
        except RunStoppingSignal:
            raise
        except StepCancelled as exc:
            # step.check_cancelled() in the job's own code (outside a step): stop as the reason says.
            if exc.reason == "stopping":
                raise RunStoppingSignal(run.id) from None
            if exc.reason == "timeout" and timeout is not None:
                await self._fail(ctx, job, RunTimeoutError(run.id, timeout), time.perf_counter() - started)
                return
            log.info("run stopped: %s", "lease lost" if ctx.lost else "cancelled", extra=ctx.log_extra)
            return
        except (LeaseLostError, RunCancelledSignal):
            log.info("run stopped: %s", "lease lost" if ctx.lost else "cancelled", extra=ctx.log_extra)
            if not ctx.lost and ctx.pending_logs:
                await self._store_logs(ctx)
            return
        except Exception as exc:
            if scope is not None and scope.expired() and timeout is not None:
                timed_out = RunTimeoutError(run.id, timeout)
                timed_out.__cause__ = exc
                exc = timed_out
            await self._fail(ctx, job, exc, time.perf_counter() - started)
            return
        finally:
            if handle is not None:
                handle.cancel()
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

    async def _fail(
        self, ctx: RunContext, job: JobDefinition[Any, Any], exc: BaseException, duration: float
    ) -> None:
        """A failed attempt: retried later if the run's policy says so, else the run fails."""
        run = ctx.run
        error = error_line(exc)
        trace = format_traceback(exc)
        step_name = ctx.failed_step or ctx.interrupted_step
        in_step = f" in step '{step_name}'" if step_name else ""
        failures = run.failed_attempts + 1
        policy = effective_retry(job, run)
        if policy is not None and failures < policy.max_attempts and policy.retries(exc):
            delay = policy.delay(failures)
            outcome = await self.store.retry_later(
                run.id, ctx.generation, error, step_name, delay, ctx.take_logs(), traceback=trace
            )
            if outcome != "ok":
                return
            log.warning(
                "run failed%s (failed try %d of %d); retrying in %s: %s",
                in_step,
                failures,
                policy.max_attempts,
                _seconds(delay),
                error,
                exc_info=(type(exc), exc, exc.__traceback__),
                extra=ctx.log_extra,
            )
            if self.events.wants("run:retry-scheduled"):
                self.events.emit(
                    RunRetryScheduledEvent(
                        run_id=run.id,
                        job_name=run.job_name,
                        labels=run.labels,
                        error=error,
                        failed_step_name=step_name,
                        traceback=trace,
                        failed_attempts=failures,
                        max_attempts=policy.max_attempts,
                        delay=delay,
                        duration=duration,
                    )
                )
            return
        outcome = await self.store.fail_run(
            run.id, ctx.generation, error, step_name, ctx.take_logs(), traceback=trace
        )
        if outcome != "ok":
            return
        if policy is None or policy.max_attempts == 1:
            why = ""
        elif failures >= policy.max_attempts:
            why = f" after {failures} attempts"
        else:
            why = f" ({type(exc).__name__} is not retried)"
        log.error(
            "run failed%s%s: %s",
            in_step,
            why,
            error,
            exc_info=(type(exc), exc, exc.__traceback__),
            extra=ctx.log_extra,
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
                    traceback=trace,
                    failed_attempts=failures,
                )
            )
        if self.on_finished is not None:
            self.on_finished(run.id, False, None)

    def _report(self, exc: BaseException, context: str, run_id: str | None = None) -> None:
        self._warnings.error(
            "worker error during %s: %s",
            context,
            exc,
            key=f"{context}: {exc}",
            extra={"run_id": run_id} if run_id else {},
        )
        self.events.emit(WorkerErrorEvent(error=error_line(exc), context=context, run_id=run_id))


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f}s"
    return f"{value / 60:.1f}min" if value < 3600 else f"{value / 3600:.1f}h"


__all__ = [
    "ActiveRun",
    "FinishedCallback",
    "Worker",
    "effective_retry",
    "effective_timeout",
    "make_worker_id",
]
