"""How an attempt of a run ended: the one decision, from what the job's code returned or raised.

:func:`decide` is the only place that maps an exception escaping a job (or the signal a step
raised when the run had to stop: :class:`~durably_sched.errors.StepCancelled` with its reason) to
an outcome; ``finish`` (executor.py) is the only place that writes one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import RunTimeoutError, StepCancelled, StoreError
from ..jobs import JobDefinition
from ..retry import Retry
from ..store.base import RunRecord

__all__ = [
    "Cancelled",
    "Completed",
    "Failed",
    "LeaseLost",
    "Outcome",
    "Released",
    "Suspended",
    "decide",
    "effective_retry",
    "effective_timeout",
]


@dataclass(frozen=True, slots=True)
class Completed:
    value: Any
    """The output as listeners see it."""
    stored: Any
    """The output's JSON form, as stored."""


@dataclass(frozen=True, slots=True)
class Failed:
    error: BaseException
    failures: int
    """Failed attempts of the run, this one included."""
    policy: Retry | None
    retry_in: float | None
    """Seconds until the next try when the policy retries this failure, else None (failed for good)."""


@dataclass(frozen=True, slots=True)
class Released:
    why: str = ""
    """Appended to the "released run ..." log line."""
    store_failed: bool = False
    """The store failed under the run: a refused release is tried again while the lease lasts."""


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """Another holder may have the run now: nothing more is written."""


@dataclass(frozen=True, slots=True)
class Cancelled:
    """An operator cancelled the run (the store already says so)."""


@dataclass(frozen=True, slots=True)
class Suspended:
    """The run waits durably (a sleep, an event, child runs): the store already says so (status
    ``waiting``, no lease); nothing more is written by this attempt."""

    why: str


Outcome = Completed | Failed | Released | LeaseLost | Cancelled | Suspended


def effective_retry(job: JobDefinition[Any, Any] | None, run: RunRecord) -> Retry | None:
    """The retry policy of a run: the one stored on it (an override), else its job's."""
    if run.retry_policy is not None:
        return Retry.from_json(run.retry_policy)
    return None if job is None else job.retry


def effective_timeout(job: JobDefinition[Any, Any] | None, run: RunRecord) -> float | None:
    if run.timeout is not None:
        return run.timeout
    return None if job is None else job.timeout


def failed(exc: BaseException, job: JobDefinition[Any, Any], run: RunRecord) -> Failed:
    """A failed attempt, with the retry decision of the run's policy."""
    failures = run.failed_attempts + 1
    policy = effective_retry(job, run)
    retry_in = None
    if policy is not None and failures < policy.max_attempts and policy.retries(exc):
        retry_in = policy.delay(failures)
    return Failed(exc, failures, policy, retry_in)


def decide(
    exc: BaseException, job: JobDefinition[Any, Any], run: RunRecord, *, lost: bool, timed_out: bool
) -> Outcome:
    """The outcome of an attempt whose job raised ``exc``.

    ``lost``: this holder lost the run (its lease, or the run was deleted); ``timed_out``: the
    run's deadline fired. A store failure is not decided here (it is reported, then released).
    """
    if isinstance(exc, StoreError):
        return Released(" after a database error", store_failed=True)
    if isinstance(exc, StepCancelled):
        if exc.reason == "stopping":
            return Released()
        if exc.reason == "timeout" and timed_out:
            return failed(_timeout_error(run, job, None), job, run)
        return LeaseLost() if lost else Cancelled()
    if timed_out:
        return failed(_timeout_error(run, job, exc), job, run)
    return failed(exc, job, run)


def _timeout_error(
    run: RunRecord, job: JobDefinition[Any, Any], cause: BaseException | None
) -> RunTimeoutError:
    error = RunTimeoutError(run.id, effective_timeout(job, run) or 0.0)
    error.__cause__ = cause
    return error
