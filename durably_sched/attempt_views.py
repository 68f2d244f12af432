"""How a run's attempts are shown, the same way everywhere: one JSON mapping (``runs show --json``
and the HTTP API, each with its own time format), the retry budget a run counts its failures
against, and "failed try 3 of 5".

"failed try k of n" counts *failures* against the retry policy's maximum (``Retry.max_attempts``),
not claims: a resume after a crash or a graceful stop is an attempt too, but uses no budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .execution.outcome import effective_retry
from .store.attempts import AttemptRecord
from .store.base import RunRecord

if TYPE_CHECKING:
    from .ports import JobsFacade

__all__ = ["attempt_fields", "failed_try", "not_recorded", "retry_budget"]

OUTCOME_TEXT = {
    "completed": "completed",
    "failed": "failed",
    "released": "released (a graceful stop)",
    "cancelled": "cancelled while running",
    "lease_lost": "lease lost (taken over)",
    "suspended": "suspended (waited durably)",
}


def attempt_fields(
    record: AttemptRecord, time: Callable[[datetime | None], str | None], max_attempts: int | None
) -> dict[str, Any]:
    """An attempt as JSON: ``failed_try`` ("failed try 3 of 5") only on a failure."""
    failed = record.outcome == "failed"
    return {
        "attempt": record.attempt,
        "outcome": record.outcome,
        "worker_id": record.worker_id,
        "started_at": time(record.started_at),
        "ended_at": time(record.ended_at),
        "duration": record.duration,
        "error": record.error,
        "failed_step_name": record.failed_step_name,
        "traceback": record.traceback,
        "failed_attempts": record.failed_attempts,
        "failed_try": failed_try(record.failed_attempts, max_attempts) if failed else None,
    }


def failed_try(failures: int, max_attempts: int | None) -> str:
    """``failed try 3 of 5`` (``failed try 3`` when the run has no retry policy to count against)."""
    return f"failed try {failures}" + (f" of {max_attempts}" if max_attempts else "")


def retry_budget(durably: JobsFacade, run: RunRecord) -> int | None:
    """The most tries the run's retry policy allows (its own override, else its job's, when this
    process has the job); None without a policy or when neither is known here."""
    job = durably.job_by_name(run.job_name) if run.job_name in durably.job_names else None
    policy = effective_retry(job, run)
    return None if policy is None else policy.max_attempts


def not_recorded(attempts: Sequence[AttemptRecord]) -> int:
    """How many attempts before the first recorded one were never recorded (they ended before the
    database was upgraded to keep attempts)."""
    return attempts[0].attempt - 1 if attempts else 0
