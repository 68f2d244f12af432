"""The producer: the worker's slots and its claim loop, the one loop in two modes.

It is given what it needs and nothing more (as the TypeScript library's runtime is given its
storage, event emitter and clock): the store, the event emitter, the registered jobs (a live
mapping: jobs registered later are claimed from the next claim on), a clock and a callback for
runs that finished here. It knows nothing about the facade that created it.

* **One loop, two modes.** :meth:`Producer.start` runs the claim loop until :meth:`stop`;
  :meth:`Producer.process` runs the same loop until idle (nothing claimable now and no run
  claimed by it still executing). A claim takes as many runs as there are free slots; a full
  claim claims again at once; otherwise the loop waits for a wake-up (a trigger, a run that
  finished) or, until stopped, the polling interval.
* **Hand-off.** A trigger of this process may create a run already claimed by this worker
  (``Store.create_and_claim``): :meth:`Producer.hand_off` holds a slot for it, and the run is
  executed in that slot (or given back at once if the worker began to stop meanwhile).
* **A stop that stops.** ``stop(grace)`` starts no new step in any run (the next ``step.run``
  raises ``StepCancelled("stopping")`` and the run is released, its completed steps kept); the
  steps in flight get the grace to finish and checkpoint; then every run still held has its
  token set, its task cancelled and its lease released. A claim in flight when the stop begins is
  not cancelled: the loop finishes it and releases what it returns (given up to
  ORPHAN_CLAIM_WAIT beyond the grace), so no run is left ``running`` and held by nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from .._ratelimit import RateLimitedLog
from .._tracebacks import error_line
from .._version import __version__
from ..clock import Clock, SystemClock
from ..events import EventEmitter, RunLeasedEvent, WorkerErrorEvent, run_scope
from ..jobs import JobDefinition
from ..limits import Limits
from ..registry import HostIdentity
from ..step import RunContext
from ..step_waits import ChildStarter
from ..store.base import RunRecord, Store, WorkerInfo
from .executor import ExecutionEnv, FinishedCallback, execute, finish, release
from .leases import ActiveRun, Leases
from .outcome import effective_retry
from .timers import WakeTimer

__all__ = ["ORPHAN_CLAIM_WAIT", "HandOff", "Producer", "make_worker_id"]

log = logging.getLogger("durably_sched.worker")

ORPHAN_CLAIM_WAIT = 5.0
"""At a stop, how long a claim still in flight after the grace may take before it is cancelled."""
CLAIM_BACKOFF_MAX = 30.0


def make_worker_id() -> str:
    """Host, pid and a random suffix: readable, and never reused after a restart."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class HandOff:
    """A slot held for a run a trigger of this process creates already claimed by this worker.

    ``async with producer.hand_off(job) as slot:`` (None: no slot; create the run as usual), then
    ``await slot.take(run)`` with the run the store claimed for ``slot.worker_id``. Leaving the
    block without taking one frees the slot and wakes the claim loop."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self.worker_id = producer.worker_id
        self.lease_seconds = producer.env.lease_seconds
        self._open = True

    async def take(self, run: RunRecord) -> None:
        """Execute the run in this slot; given back at once if the worker began to stop."""
        producer = self._producer
        self._close()
        if producer.stopping or not producer.running:
            ctx = producer.context(run)
            await release(ctx, producer.env, " (claimed as the worker stopped)")
            return
        producer.launch(run)

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._producer._reserved -= 1

    async def __aenter__(self) -> HandOff:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._open:
            self._close()
            self._producer.wake()  # the slot is free again; the run (if any) is pending


class Producer:
    """The worker: slots, the claim loop (until stopped or until idle), leases (see the module)."""

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
        clock: Clock | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("max_concurrent_runs must be at least 1")
        if heartbeat_interval >= stale_threshold:
            raise ValueError("heartbeat_interval must be shorter than stale_threshold")
        self.jobs = jobs
        self.concurrency = concurrency
        self.polling_interval = polling_interval
        self.worker_id = worker_id or make_worker_id()
        self.limits = limits or Limits()
        self.clock: Clock = clock or SystemClock()
        self.env = ExecutionEnv(
            store=store,
            events=events,
            clock=self.clock,
            lease_seconds=stale_threshold,
            report=self._report,
            stopping=lambda: self._stopping,
            on_finished=on_finished,
            keep_steps=keep_steps,
        )
        """What execution and the heartbeat share: the store, the events, the clock, the lease length
        (``stale_threshold``) and the error report. ``keep_steps`` False (``preserve_steps=False``): a
        run's step rows go once it completed."""
        self.active: dict[str, ActiveRun] = {}
        self.only_run_ids: frozenset[str] | None = None
        """When set, claim only these runs (``trigger --here`` executes exactly the run it made)."""
        self.last_claim_at = 0.0
        self.leases = Leases(
            self.env,
            worker_id=self.worker_id,
            active=self.active,
            interval=heartbeat_interval,
            describe=self._describe,
            wake=self.wake,
        )
        self.timers = WakeTimer(store, events, self.clock, polling_interval)
        """Wakes waiting runs whose time came (durable sleeps, event timeouts)."""
        self.start_child: ChildStarter | None = None
        """How ``step.run_job`` starts a child run (set by the Durably facade)."""
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[list[RunRecord]] | None = None
        self._in_claim = False
        self._reserved = 0
        self._warnings = RateLimitedLog(log)

    # -- state -------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    @property
    def stopping(self) -> bool:
        """:meth:`stop` was called (and no start or one-shot processing since)."""
        return self._stopping

    @property
    def lease_losses(self) -> int:
        """Runs whose lease a renewal found lost (expired and taken, or deleted): the heartbeat's count."""
        return self.leases.lease_losses

    @property
    def takeovers(self) -> int:
        """Gone workers on this host whose runs this worker made claimable at once (the heartbeat's)."""
        return self.leases.takeovers

    def wake(self) -> None:
        self._wake.set()

    def free_slots(self) -> int:
        """Runs this worker could start now: its concurrency less the runs it executes and the
        slots held for hand-offs (see :meth:`hand_off`)."""
        return self.concurrency - len(self.active) - self._reserved

    def hand_off(self, job_name: str) -> HandOff | None:
        """A slot for a run a trigger of this process is about to create already claimed by this
        worker: None unless the claim loop runs, is not stopping, the job is registered here and
        a slot is free (see :class:`HandOff`)."""
        if (
            self._stopping
            or self.only_run_ids is not None
            or job_name not in self.jobs
            or not self.running
            or self.free_slots() <= 0
        ):
            return None
        self._reserved += 1
        return HandOff(self)

    def mark_cancelled(self, run_id: str) -> bool:
        """The run was cancelled (by an operator): start no further step. False if not held here."""
        entry = self.active.get(run_id)
        if entry is None:
            return False
        entry.ctx.cancelled = True
        return True

    async def take_over_gone_workers(self) -> list[str]:
        return await self.leases.take_over_gone_workers()

    # -- start and stop ----------------------------------------------------------------------------
    def start(self) -> None:
        if self.running:
            return
        self._stopping = False
        self._loop_task = asyncio.get_running_loop().create_task(self._run_loop(), name="durably-worker")
        self.leases.start()

    async def _run_loop(self) -> list[RunRecord]:
        await self._register()
        return await self._loop(until_idle=False, names=None, max_runs=None)

    async def _register(self) -> None:
        await self.leases.register()
        await self.leases.maintain_registry()

    async def stop(self, grace: float) -> None:
        """Start no new step; let steps in flight finish for up to ``grace`` seconds; release the rest."""
        if self._loop_task is None and not self.leases.running:
            await self.leases.deregister()  # one-shot processing registered without a loop
            return
        deadline = self.clock.monotonic() + max(0.0, grace)
        self._stopping = True
        for entry in self.active.values():
            entry.ctx.stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._end_loop(deadline)
        # Steps in flight get the rest of the grace; a run reaching its next step is released.
        tasks = [entry.task for entry in self.active.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - self.clock.monotonic()))
        # Whatever still runs is stopped and given back.
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
                await release(ctx, self.env, why)
        await self.leases.stop()
        self._loop_task = None
        await self.leases.deregister()

    async def _end_loop(self, deadline: float) -> None:
        """The claim loop finishes the claim it may be making (and releases what it returns).
        Cancelling a claim could lose its answer after its commit (runs left running, held by
        nobody), so one in flight gets ORPHAN_CLAIM_WAIT more when the grace is over."""
        task = self._loop_task
        assert task is not None
        done, _ = await asyncio.wait([task], timeout=max(0.0, deadline - self.clock.monotonic()))
        if not done and self._in_claim:
            done, _ = await asyncio.wait([task], timeout=ORPHAN_CLAIM_WAIT)
            if not done:
                log.warning(
                    "a claim was still unanswered at stop; runs it took resume when their leases expire"
                )
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- one-shot processing -----------------------------------------------------------------------
    async def process(
        self, *, max_runs: int | None = None, job_names: Sequence[str] | None = None
    ) -> list[RunRecord]:
        """Claim and execute runs until none is claimable now; return the runs claimed, as claimed.

        The claim loop's own loop in its until-idle mode: up to ``concurrency`` runs at once, a new
        claim whenever a slot frees (a finished run may unblock the next run of its concurrency
        key) or the worker is woken, and a return -- instead of a poll -- once a claim finds
        nothing and no run claimed here is still executing. "Idle" therefore means idle *for this
        worker now*: runs held under another worker's live lease, runs of jobs not in
        ``job_names`` (default: every registered job), runs waiting for their concurrency key
        behind a run executing elsewhere, and runs not claimable before a later time are not
        waited for. Ends early after ``max_runs`` claims (once those finished) or when
        :meth:`stop` is called. Not while the claim loop runs (:meth:`start`).
        """
        if self.running:
            raise RuntimeError("the worker's claim loop is running; stop it before processing runs one-shot")
        self._stopping = False
        if not self.leases.registered:
            # As the claim loop does: visible in `workers list`, and runs of a worker of this host
            # that died (e.g. the previous one-shot invocation, killed) resume now.
            await self._register()
        owns_leases = not self.leases.running
        self.leases.start()
        try:
            return await self._loop(until_idle=True, names=job_names, max_runs=max_runs)
        finally:
            if owns_leases and not self.active:
                await self.leases.stop()

    # -- the loop ----------------------------------------------------------------------------------
    async def _loop(
        self, *, until_idle: bool, names: Sequence[str] | None, max_runs: int | None
    ) -> list[RunRecord]:
        """Claim into the free slots until stopped, or until idle (see :meth:`process`)."""
        claimed_all: list[RunRecord] = []
        mine: list[asyncio.Task[None]] = []  # until idle: the runs claimed here still executing
        failures = 0
        while not self._stopping:
            await self.timers.poll()
            room = self.free_slots()
            if max_runs is not None:
                room = min(room, max_runs - len(claimed_all))
            claimed: list[RunRecord] = []
            if room > 0:
                self._wake.clear()
                try:
                    claimed = await self._claim(names, room, give_back_if_cancelled=until_idle)
                except Exception as exc:
                    if until_idle:
                        raise
                    failures += 1
                    self._report(exc, "claim")
                    await self.clock.wait(
                        self._wake, min(self.polling_interval * 2**failures, CLAIM_BACKOFF_MAX)
                    )
                    continue
                if failures:
                    failures = 0
                    log.info("claiming works again")
                    self._warnings.recovered("claim")
                if self._stopping and not until_idle:  # the stop began while the claim was in flight
                    for run in claimed:
                        await release(self.context(run), self.env, " (claimed as the worker stopped)")
                    break
                mine.extend(self.launch(run) for run in claimed)
                claimed_all.extend(claimed)
            if claimed and len(claimed) == room:
                continue  # there may be more work right away
            if room <= 0:
                self._wake.clear()  # nothing to claim until a slot frees (that wakes the loop)
            if not until_idle:
                await self.clock.wait(self._wake, self.timers.wait(self.polling_interval))
                continue
            mine = [task for task in mine if not task.done()]
            if not mine:
                # Idle, unless a run finished (its key's next run may be claimable now) or a run
                # was made while the claim was in flight: both set the wake-up.
                if room > 0 and self._wake.is_set():
                    continue
                break
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait([*mine, woken], return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
        return claimed_all

    async def _claim(
        self, names: Sequence[str] | None, limit: int, *, give_back_if_cancelled: bool
    ) -> list[RunRecord]:
        """One claim. Until stopped, a stop does not cancel it while in flight (see :meth:`stop`);
        until idle, a cancellation of the caller cannot strand it: runs it took after all are
        given back at once."""
        claim = self.env.store.claim(
            self.worker_id,
            list(self.jobs) if names is None else list(names),
            limit,
            self.env.lease_seconds,
            run_ids=None if self.only_run_ids is None else sorted(self.only_run_ids),
        )
        self._in_claim = True
        try:
            if not give_back_if_cancelled:
                claimed = await claim
            else:
                answer = asyncio.ensure_future(claim)
                try:
                    claimed = await asyncio.shield(answer)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        for run in await answer:
                            await self.env.store.release_run(run.id, run.generation)
                    raise
        finally:
            self._in_claim = False
        self.last_claim_at = self.clock.monotonic()
        return claimed

    # -- runs ----------------------------------------------------------------------------------------
    def context(self, run: RunRecord) -> RunContext:
        ctx = RunContext(run, self.env.store, self.env.events, {}, self.limits, self.clock)
        ctx.start_child = self.start_child
        return ctx

    def launch(self, run: RunRecord) -> asyncio.Task[None]:
        """Execute a run claimed for this worker in a slot of its own."""
        ctx = self.context(run)
        self._log_claimed(ctx)
        task = asyncio.get_running_loop().create_task(self._execute(ctx), name=f"durably-run-{run.id}")
        self.active[run.id] = ActiveRun(ctx, task)
        if self.env.events.wants("run:leased"):
            self.env.events.emit(
                RunLeasedEvent(
                    **run_scope(run),
                    input=run.input,
                    worker_id=self.worker_id,
                    lease_expires_at=run.lease_expires_at,
                    generation=run.generation,
                    attempt=run.attempt,
                )
            )
        return task

    async def _execute(self, ctx: RunContext) -> None:
        run = ctx.run
        try:
            job = self.jobs[run.job_name]  # claims ask only for registered jobs
            await finish(ctx, await execute(ctx, job, self.env), self.env)
        finally:
            # Free the slot first: a cancellation arriving during close() must not leak it.
            full = self.free_slots() <= 0
            entry = self.active.get(run.id)
            if entry is not None and entry.ctx is ctx:
                del self.active[run.id]
            if (
                full
                or run.concurrency_key is not None
                or run.parent_run_id is not None
                or self.only_run_ids is not None
            ):
                # A claim now may find what the last one could not take (no slot was free) or what
                # this run held back (its key's next run, its parent). Otherwise the last claim found every
                # run there was, and newer ones wake the worker themselves.
                self._wake.set()
            await ctx.close()

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

    def _describe(self, identity: HostIdentity) -> WorkerInfo:

        return WorkerInfo(
            id=self.worker_id,
            host=identity.host,
            host_key=identity.host_key,
            pid=identity.pid,
            process_start=identity.process_start,
            version=__version__,
            jobs=() if self.only_run_ids is not None else tuple(sorted(self.jobs)),
            concurrency=self.concurrency,
            lease_seconds=self.env.lease_seconds,
        )

    def _report(self, exc: BaseException, context: str, run_id: str | None = None) -> None:
        self._warnings.error(
            "worker error during %s: %s",
            context,
            exc,
            key=f"{context}: {exc}",
            extra={"run_id": run_id} if run_id else {},
        )
        self.env.events.emit(WorkerErrorEvent(error=error_line(exc), context=context, run_id=run_id))
