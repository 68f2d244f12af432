"""What a waiting run waits for, and its parent and children: one JSON shape and one sentence for
``runs show`` (and ``--json``), the HTTP API and the dashboard's run page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .record_fields import utc_text
from .store.base import RunRecord

__all__ = ["children_fields", "wait_fields", "waiting_for_text"]


def wait_fields(run: RunRecord) -> dict[str, Any]:
    """``waiting_for`` (``{"kind", "until", "key", "children", "step"}`` while the run is
    ``waiting``, else None) and ``parent_run_id``."""
    waiting = run.waiting_for
    if waiting is not None and run.wait is not None:
        waiting = {**waiting, "until": utc_text(waiting["until"]), "step": run.wait.step}
    return {"waiting_for": waiting, "parent_run_id": run.parent_run_id}


def waiting_for_text(run: RunRecord, show: Callable[[datetime | None], Any] = utc_text) -> str | None:
    """``sleeping until T``, ``waiting for event KEY (until T)``, ``waiting for 3 child runs``;
    None unless the run is waiting. ``show`` writes a time."""
    wait = run.wait if run.status == "waiting" else None
    if wait is None:
        return None
    step = f" (step '{wait.step}')"
    if wait.kind == "sleep":
        return f"sleeping until {show(wait.until)}{step}"
    if wait.kind == "event":
        until = f" (until {show(wait.until)})" if wait.until is not None else ""
        return f"waiting for event {wait.key}{until}{step}"
    count = wait.children or 0
    return f"waiting for {count} child run{'' if count == 1 else 's'}{step}"


def children_fields(children: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """A parent's children, oldest first: id, job, status."""
    return [{"id": c.id, "job_name": c.job_name, "status": c.status} for c in children]
