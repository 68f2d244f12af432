"""A run's attempts at the CLI: a line per attempt in ``runs show``, and the lines ``trigger --wait``
and ``runs watch`` print as attempts end (docs/attempts.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from ..attempt_views import OUTCOME_TEXT, failed_try, not_recorded
from ..durably import Durably
from ..jobs import JobDefinition
from ..store.attempts import AttemptRecord
from ..store.base import RunRecord
from ._base import one_line, settings
from ._loader import load_jobs
from ._output import seconds_text, show_time, table

__all__ = ["AttemptLines", "attempt_line", "attempts_section", "known_jobs"]


def known_jobs() -> dict[str, JobDefinition[Any, Any]]:
    """The project's jobs, for the retry budget a run's failures count against ("failed try 2 of
    5") in commands that only look; none when they do not load (the budget is then left out)."""
    try:
        return load_jobs(settings().jobs)
    except Exception:  # a courtesy: looking at a run never fails because the jobs do not load
        return {}


def attempt_line(record: AttemptRecord, max_attempts: int | None) -> str:
    """``attempt 2 failed (failed try 1 of 5) in step 'render' after 1.20s on w-1: ValueError: bad``."""
    parts = [f"attempt {record.attempt} {OUTCOME_TEXT[record.outcome]}"]
    if record.outcome == "failed":
        parts.append(f"({failed_try(record.failed_attempts, max_attempts)})")
        if record.failed_step_name:
            parts.append(f"in step '{record.failed_step_name}'")
    if record.duration is not None:
        parts.append(f"after {seconds_text(record.duration)}")
    if record.worker_id:
        parts.append(f"on {record.worker_id}")
    line = " ".join(parts)
    return f"{line}: {one_line(record.error)}" if record.error else line


def attempts_section(
    run: RunRecord, attempts: Sequence[AttemptRecord], max_attempts: int | None
) -> list[Any]:
    """``runs show``: a short line per ended attempt, then the one under way (if any)."""
    if not attempts and run.attempt == 0:
        return []
    grid: Table = table("#", "OUTCOME", "STARTED", "TOOK", "WORKER", "ERROR", wrap=("ERROR",))
    missing = not_recorded(attempts) if attempts else (run.attempt - (run.status == "running"))
    if missing > 0:
        grid.add_row(
            "1" if missing == 1 else f"1-{missing}",
            Text("not recorded (before the upgrade)", style="dim"),
            *"----",
        )
    for record in attempts:
        outcome = OUTCOME_TEXT[record.outcome]
        if record.outcome == "failed":
            outcome += f" ({failed_try(record.failed_attempts, max_attempts)})"
        style = {"failed": "red", "completed": "green"}.get(record.outcome, "yellow")
        step = f" (step '{record.failed_step_name}')" if record.failed_step_name else ""
        grid.add_row(
            str(record.attempt),
            Text(outcome, style=style),
            show_time(record.started_at),
            seconds_text(record.duration),
            record.worker_id or "-",
            one_line(record.error) + step if record.error else "-",
        )
    if run.status == "running":
        grid.add_row(str(run.attempt), Text("running", style="cyan"), "-", "-", run.worker_id or "-", "-")
    return [Text(""), Text("attempts", style="bold"), grid]


def _ended_in(attempt: AttemptRecord, record: RunRecord) -> bool:
    """Whether the record (read before the attempts) shows ``attempt`` as ended while the run goes
    on. The attempts are read after the record, so they may hold an attempt that ended since: the
    attempt the record shows running, or a later one. Those wait for the next look, and the last
    attempt of a finished run for the final report; else a run that completed between the two
    reads would print its completion twice."""
    if attempt.attempt > record.attempt:
        return False
    if attempt.attempt == record.attempt:
        return record.status != "running" and not record.is_finished
    return True


class AttemptLines:
    """What ``--wait`` and ``runs watch`` print as a run's attempts end: a line for each attempt
    that ended while the run goes on (a failure to be retried, a lost lease, a release). The last
    attempt of a finished run is left to the final report."""

    def __init__(self, durably: Durably, max_attempts: int | None) -> None:
        self.durably = durably
        self.max_attempts = max_attempts
        self.seen = 0
        self._mark: tuple[str, int, int] | None = None

    async def new_lines(self, record: RunRecord) -> list[str]:
        mark = (record.status, record.attempt, record.failed_attempts)
        if mark == self._mark:
            return []  # nothing that ends an attempt changed since the last look
        self._mark = mark
        found = await self.durably.get_attempts(record.id, after=self.seen)
        ended = [a for a in found if _ended_in(a, record)]
        if ended:
            self.seen = ended[-1].attempt
        return [attempt_line(a, self.max_attempts) for a in ended]
