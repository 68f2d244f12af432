"""Attempts: each execution of a run that ended, kept with the run (schema v6, docs/attempts.md).

An attempt starts with a claim and ends with the write that takes the run from its holder:
``completed``, ``failed`` (for good, or to be retried later), ``released`` (a graceful stop gave it
back), ``cancelled`` (an operator cancelled it while it ran), ``lease_lost`` (its holder stopped
renewing the lease and a later claim took the run over) or ``suspended`` (the run waits durably:
a sleep, an event, child runs; a later attempt goes on after the wait).

Who records it: the database, in the very statement that ends the attempt (a trigger on ``runs``
in both backends), so the hot path of a completed run has no extra statement, round trip or
commit, and no writer can forget one. A lost lease is the one end its holder cannot write (fencing
rejects it): the claim that takes the run over records it, in the claim's own write.

A run's attempts are deleted with the run (``delete``, retention), by a trigger too. Tracebacks are
the run's, already cut to :data:`~durably_sched.store.rows.TRACEBACK_LIMIT` characters.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from ..errors import StoreError
from ._common import as_stored

__all__ = [
    "ATTEMPTS_SQL",
    "ATTEMPT_OUTCOMES",
    "AttemptOutcome",
    "AttemptReads",
    "AttemptRecord",
    "attempt_from_row",
]

AttemptOutcome = Literal["completed", "failed", "released", "cancelled", "lease_lost", "suspended"]
ATTEMPT_OUTCOMES: tuple[AttemptOutcome, ...] = get_args(AttemptOutcome)

ATTEMPTS_SQL = (
    "SELECT run_id, attempt, outcome, worker_id, started_at, ended_at, error, failed_step_name, "
    "traceback, failed_attempts FROM run_attempts WHERE run_id = {run} AND attempt > {after} ORDER BY attempt"
)
"""The attempts of one run after a number, in order (placeholders filled per backend)."""


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One ended attempt of a run."""

    run_id: str
    attempt: int
    """The run's ``attempt`` during that execution (claims are counted from 1)."""
    outcome: AttemptOutcome
    worker_id: str | None
    started_at: datetime | None
    """Its claim; None when not known (the last attempt of a run made before schema v6)."""
    ended_at: datetime
    """When it ended; for ``lease_lost``, when the holder's lease ran out."""
    failed_attempts: int = 0
    """The run's count of failed attempts once this one ended: for a failure, which failed try of
    the retry budget it was (an operator's retry starts the count again)."""
    error: str | None = None
    """``failed`` only: the one-line error, the step it failed in and the traceback."""
    failed_step_name: str | None = None
    traceback: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from its claim to its end (None when its start is not known)."""
        if self.started_at is None:
            return None
        return max(0.0, (self.ended_at - self.started_at).total_seconds())


def _same(value: Any) -> Any:
    return value


def attempt_from_row(row: Mapping[str, Any], time: Callable[[Any], datetime | None] = _same) -> AttemptRecord:
    """An attempt from its row; ``time`` turns a stored time into an aware UTC datetime."""
    ended = time(row["ended_at"])
    if ended is None:  # pragma: no cover - NOT NULL column
        raise StoreError("run_attempts.ended_at is NULL")
    return AttemptRecord(
        **as_stored(
            row,
            "run_id attempt outcome worker_id failed_attempts error failed_step_name traceback",
        ),
        started_at=time(row["started_at"]),
        ended_at=ended,
    )


class AttemptReads(abc.ABC):
    """The store contract's part about attempts (recorded by the database itself, read here)."""

    @abc.abstractmethod
    async def get_attempts(self, run_id: str, after: int = 0) -> list[AttemptRecord]:
        """The ended attempts of a run whose number is above ``after``, oldest first (an empty
        list for a run that never ended an attempt, or that does not exist)."""
