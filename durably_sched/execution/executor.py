"""The executor: one attempt of a claimed run, from its replayed steps to its terminal write.

:func:`execute` runs the job and returns its :data:`~.outcome.Outcome` (decided in one place,
``outcome.decide``); :func:`finish` makes the outcome's write, the only place that writes one:
``complete_run``, ``retry_later``, ``fail_run``, ``release_run`` (every one fenced by the claim's
generation: a holder that lost the run writes nothing), or nothing for a lost lease.

* **Failures are explained and, if the job asks, retried.** A failed attempt stores its one-line
  error and its traceback; with a retry policy (the job's, or one stored on the run) a retryable
  error sends the run back to pending with a not-before time (``store.retry_later``), so no
  worker holds it while it waits and its completed steps replay.
* **Timeouts.** A run's timeout limits one attempt (from its claim): at the deadline the run's
  token is set and its task cancelled (``deadline.Deadline``), and the attempt fails with
  ``RunTimeoutError`` like any failure. A sync step's thread cannot be killed; its late result
  is dropped (see _step_threads) and the fenced failure is written at once.
* **A store that fails under a run** (a full disk, a lost connection) is reported and the run
  given back, the release retried with back-off while its lease would have lasted, so it resumes
  within seconds of the store healing rather than at the end of its lease.

Logs go to ``durably_sched.worker`` (the logger name operators filter on).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._tracebacks import error_line, format_traceback
from ..clock import Clock
from ..errors import RunSuspended, StepCancelled
from ..events import (
    EventEmitter,
    RunCompleteEvent,
    RunFailEvent,
    RunRetryScheduledEvent,
    RunStartEvent,
    RunWaitingEvent,
    run_scope,
)
from ..jobs import JobDefinition
from ..step import RunContext, Step
from ..store.base import RunRecord, Store
from .deadline import Deadline
from .outcome import (
    Cancelled,
    Completed,
    Failed,
    LeaseLost,
    Outcome,
    Released,
    Suspended,
    decide,
    effective_timeout,
)

__all__ = ["ExecutionEnv", "FinishedCallback", "execute", "finish", "release"]

log = logging.getLogger("durably_sched.worker")

FinishedCallback = Callable[[str, bool, Any], None]
"""``(run_id, completed, output)``: called when a run executed here finished: completed here (with
its output value), or failed for good (``completed`` False, output None). A failed attempt that
is retried later is not finished."""

RELEASE_RETRY_FIRST = 0.25
RELEASE_RETRY_MAX = 2.0
"""A release refused by a failing store is tried again after 0.25 s, 0.5 s, ... then every 2 s."""


@dataclass(slots=True)
class ExecutionEnv:
    """What execution is given: the store, the events, the clock, and the worker's settings."""

    store: Store
    events: EventEmitter
    clock: Clock
    lease_seconds: float
    report: Callable[[BaseException, str, str | None], None]
    """``(error, what was being done, run id)``: a failure of the store under a run."""
    stopping: Callable[[], bool]
    on_finished: FinishedCallback | None = None
    keep_steps: bool = True


async def execute(ctx: RunContext, job: JobDefinition[Any, Any], env: ExecutionEnv) -> Outcome:
    """Replay the run's completed steps and run its job: the attempt's outcome (not yet written).

    Raises only ``CancelledError`` (a cancellation of the task that is not this run's own)."""
    run = ctx.run
    timed_out = False
    try:
        if run.step_count > 0:
            steps = await env.store.get_steps(run.id)
            ctx.completed.update({s.name: s.output_json for s in steps})
            ctx.next_index = len(steps)
        if env.stopping():
            return Released()
        _started(ctx, env)
        payload = job.parse_input(run.input)
        timeout = effective_timeout(job, run)
        if timeout is None:
            result = await job.run(Step(ctx), payload)
        else:
            deadline = Deadline(timeout, ctx.token, env.clock)
            try:
                async with deadline:
                    result = await job.run(Step(ctx), payload)
            finally:
                timed_out = deadline.fired
        ctx.ensure_held()  # a run that finished its last step during a stop still completes
        value, stored = ctx.output(job, result)
        return Completed(value, stored)
    except asyncio.CancelledError:
        if ctx.lost:
            return LeaseLost()  # the lease renewal (or the stop) cancelled us: write nothing more
        raise
    except RunSuspended as exc:
        return Suspended(exc.why)
    except BaseException as exc:
        if not isinstance(exc, Exception | StepCancelled):
            raise
        outcome = decide(exc, job, run, lost=ctx.lost, timed_out=timed_out)
        if isinstance(outcome, Released) and outcome.store_failed:
            env.report(exc, "execute", run.id)
        return outcome


def _started(ctx: RunContext, env: ExecutionEnv) -> None:
    run = ctx.run
    ctx.started = time.perf_counter()
    log.debug("run started", extra=ctx.log_extra)
    if env.events.wants("run:start"):
        env.events.emit(
            RunStartEvent(
                **run_scope(run),
                attempt=run.attempt,
                resumed_steps=len(ctx.completed),
            )
        )


async def finish(ctx: RunContext, outcome: Outcome, env: ExecutionEnv) -> None:
    """Write the outcome of an attempt (fenced); a store failing meanwhile releases the run."""
    try:
        if isinstance(outcome, Completed):
            await _complete(ctx, outcome, env)
        elif isinstance(outcome, Failed):
            await (_retry(ctx, outcome, env) if outcome.retry_in is not None else _fail(ctx, outcome, env))
        elif isinstance(outcome, Released):
            await _store_logs(ctx, env)
            await release(ctx, env, outcome.why, retry=outcome.store_failed)
        elif isinstance(outcome, Suspended):
            _suspended(ctx, outcome, env)
        else:
            if ctx.token.reason != "stopping":  # at a stop's end the stop releases it and says so
                log.info("run stopped: %s", "lease lost" if ctx.lost else "cancelled", extra=ctx.log_extra)
            if isinstance(outcome, Cancelled) and not ctx.lost:
                await _store_logs(ctx, env)
    except Exception as exc:
        env.report(exc, "execute", ctx.run_id)
        if not ctx.lost and not isinstance(outcome, Released | LeaseLost):
            await release(ctx, env, " after a database error", retry=True)


def _suspended(ctx: RunContext, outcome: Suspended, env: ExecutionEnv) -> None:
    """The run waits (stored by the step that waits): say so."""
    log.info("run %s", outcome.why, extra=ctx.log_extra)
    wait = ctx.suspended_on
    if env.events.wants("run:waiting") and wait is not None:
        event = RunWaitingEvent(**run_scope(ctx.run), step_name=wait.step, waiting_for=wait.describe())
        env.events.emit(event)


async def _complete(ctx: RunContext, outcome: Completed, env: ExecutionEnv) -> None:
    run = ctx.run
    result = await env.store.complete_run(run.id, ctx.generation, outcome.stored, ctx.take_logs())
    if result != "ok":
        log.info("run finished but was no longer held (%s); output dropped", result, extra=ctx.log_extra)
        return
    duration = time.perf_counter() - ctx.started
    log.info("run completed in %s", _took(run, duration, env.clock), extra=ctx.log_extra)
    if env.events.wants("run:complete"):
        env.events.emit(
            RunCompleteEvent(
                **run_scope(run),
                output=outcome.value,
                duration=duration,
            )
        )
    if env.on_finished is not None:
        env.on_finished(run.id, True, outcome.value)
    if not env.keep_steps:
        # A second write, after the completion: a crash in between only leaves the steps to
        # retention. delete_steps touches completed runs only.
        try:
            await env.store.delete_steps(run.id)
        except Exception as exc:
            env.report(exc, "delete steps", run.id)


def _took(run: RunRecord, attempt_seconds: float, clock: Clock) -> str:
    """How long a completed run took: this attempt (claim to completion), and for a resumed or
    retried run also the total since its first start, so the two are never confused."""
    if run.attempt <= 1 or run.started_at is None:
        return f"{attempt_seconds:.3f}s"
    total = (clock.now() - run.started_at).total_seconds()
    return f"{attempt_seconds:.3f}s this attempt (attempt {run.attempt}; {total:.1f}s since the first start)"


def _failure(ctx: RunContext, outcome: Failed) -> tuple[str, str, str | None, str]:
    """(error line, traceback, failed step, " in step '...'")."""
    exc = outcome.error
    step_name = ctx.failed_step or ctx.interrupted_step
    return error_line(exc), format_traceback(exc), step_name, f" in step '{step_name}'" if step_name else ""


def _failed_fields(
    ctx: RunContext, error: str, step_name: str | None, trace: str, failures: int
) -> dict[str, Any]:
    """The fields a run:fail and a run:retry-scheduled event share."""
    return {
        **run_scope(ctx.run),
        "error": error,
        "failed_step_name": step_name,
        "traceback": trace,
        "failed_attempts": failures,
        "duration": time.perf_counter() - ctx.started,
    }


async def _retry(ctx: RunContext, outcome: Failed, env: ExecutionEnv) -> None:
    run, exc, policy, delay = ctx.run, outcome.error, outcome.policy, outcome.retry_in
    assert policy is not None and delay is not None
    error, trace, step_name, in_step = _failure(ctx, outcome)
    result = await env.store.retry_later(
        run.id, ctx.generation, error, step_name, delay, ctx.take_logs(), traceback=trace
    )
    if result != "ok":
        return
    log.warning(
        "run failed%s (failed try %d of %d); retrying in %s: %s",
        in_step, outcome.failures, policy.max_attempts, _seconds(delay), error,
        exc_info=(type(exc), exc, exc.__traceback__), extra=ctx.log_extra,
    )  # fmt: skip
    if env.events.wants("run:retry-scheduled"):
        env.events.emit(
            RunRetryScheduledEvent(
                **_failed_fields(ctx, error, step_name, trace, outcome.failures),
                max_attempts=policy.max_attempts,
                delay=delay,
            )
        )


async def _fail(ctx: RunContext, outcome: Failed, env: ExecutionEnv) -> None:
    run, exc, policy, failures = ctx.run, outcome.error, outcome.policy, outcome.failures
    error, trace, step_name, in_step = _failure(ctx, outcome)
    result = await env.store.fail_run(
        run.id, ctx.generation, error, step_name, ctx.take_logs(), traceback=trace
    )
    if result != "ok":
        return
    if policy is None or policy.max_attempts == 1:
        why = ""
    elif failures >= policy.max_attempts:
        why = f" after {failures} attempts"
    else:
        why = f" ({type(exc).__name__} is not retried)"
    log.error(
        "run failed%s%s: %s", in_step, why, error,
        exc_info=(type(exc), exc, exc.__traceback__), extra=ctx.log_extra,
    )  # fmt: skip
    if env.events.wants("run:fail"):
        env.events.emit(RunFailEvent(**_failed_fields(ctx, error, step_name, trace, failures)))
    if env.on_finished is not None:
        env.on_finished(run.id, False, None)


async def _store_logs(ctx: RunContext, env: ExecutionEnv) -> None:
    if not ctx.pending_logs or ctx.lost:
        return
    try:
        await env.store.append_logs(ctx.run_id, ctx.generation, ctx.take_logs())
    except Exception as exc:
        env.report(exc, "logs", ctx.run_id)


async def release(ctx: RunContext, env: ExecutionEnv, why: str = "", *, retry: bool = False) -> None:
    """Give a run back (fenced): pending again at once, completed steps kept; log it.

    With ``retry`` (the store failed under the run), a release the store refuses too is tried
    again, backing off up to RELEASE_RETRY_MAX, for as long as the lease would have lasted (the
    run keeps its slot and its renewal meanwhile); without, or once the worker stops, a refused
    release is logged and the run resumes when its lease expires.
    """
    clock = env.clock
    deadline = clock.monotonic() + env.lease_seconds
    delay = RELEASE_RETRY_FIRST
    while True:
        try:
            result = await env.store.release_run(ctx.run_id, ctx.generation)
            break
        except Exception as exc:
            if not retry or env.stopping() or clock.monotonic() + delay > deadline:
                log.warning(
                    "could not release run %s (it resumes when its lease expires): %s",
                    ctx.run_id, exc, extra=ctx.log_extra,
                )  # fmt: skip
                return
        await clock.sleep(delay)
        delay = min(delay * 2, RELEASE_RETRY_MAX)
    if result == "ok":
        log.info("released run %s at step %d%s", ctx.run_id, len(ctx.completed), why, extra=ctx.log_extra)


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f}s"
    return f"{value / 60:.1f}min" if value < 3600 else f"{value / 3600:.1f}h"
