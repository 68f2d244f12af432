"""Pausing schedules at run time: checking the arguments, who did it, and the catch-up on resume.

The rules (docs/schedules.md, "Pause and resume at run time", says the same for users):

* The pause lives in the database (``schedule_states``), so every scheduler process sees it at its
  next tick and it survives restarts and reloads of schedules.yaml. A fire time at or after the
  moment of the pause is recorded ``paused`` by whichever scheduler handles it; fire times from
  before the pause (a scheduler catching up after downtime) keep the catch-up policy.
* ``enabled: false`` in the file wins: its fire times are ``disabled``, paused or not. A pause of a
  disabled schedule is kept and takes effect when the file enables it again.
* Resuming clears the pause and moves the schedule's cursor to the moment of the resume, in one
  transaction: nothing of the paused span is caught up unless asked for. With ``catchup`` the
  schedule's own policy and window apply to the fire times of the span: ``all`` fires every one in
  the window, ``latest`` the newest, ``none`` nothing. A fire time recorded ``paused`` is turned
  into a run atomically (the record is the authority: two resumes never make two runs).
* An automatic pause (``pause_after_failures: N``) happens when a scheduler finds N failed runs of
  the schedule since its last resume (the database counts them as runs finish); the count is
  checked again in the statement that pauses, so one process pauses and announces it.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._bounds import valid_text
from ..errors import InvalidArgumentError
from ..store.base import FireResult, ScheduleState
from .config import ScheduleEntry
from .cron import fire_times

__all__ = [
    "AUTO_PAUSE_BY",
    "MAX_BY",
    "MAX_REASON",
    "ResumeResult",
    "catchup_fire_times",
    "check_actor",
    "check_reason",
    "default_actor",
]

AUTO_PAUSE_BY = "pause_after_failures"
"""``paused_by`` of an automatic pause."""
MAX_REASON = 500
MAX_BY = 200
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class ResumeResult:
    """What ``Durably.resume_schedule`` did.

    ``state`` is the schedule's state after the call (None: it was never paused nor ran). ``changed``
    is False when it was not paused. ``caught_up`` holds each fire time that ``catchup=True`` handled,
    with its result (``triggered``; ``deduplicated`` when another resume or a scheduler got there
    first; ``skipped`` under ``overlap: skip``).
    """

    state: ScheduleState | None
    changed: bool
    caught_up: list[tuple[datetime, FireResult]] = field(default_factory=list)

    @property
    def triggered(self) -> int:
        return sum(1 for _, result in self.caught_up if result.outcome == "triggered")


def default_actor() -> str:
    """``user@host`` of this process (who paused or resumed, unless the caller says)."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def _one_line(value: object, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be text, not {type(value).__name__}")
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in value):
        raise InvalidArgumentError(f"{what} must not contain control characters")
    if not valid_text(value):
        raise InvalidArgumentError(f"{what} is not valid Unicode (it holds a lone surrogate)")
    text = _SPACES.sub(" ", value).strip()
    if len(text) > limit:
        raise InvalidArgumentError(f"{what} is {len(text)} characters long; at most {limit} are kept")
    return text or None


def check_reason(reason: object) -> str | None:
    """A pause reason as stored: one line (line breaks and runs of spaces become one space)."""
    return _one_line(reason, "the pause reason", MAX_REASON)


def check_actor(by: object) -> str:
    """Who pauses or resumes: the given text on one line, or :func:`default_actor`."""
    return _one_line(by, "'by'", MAX_BY) or default_actor()


def catchup_fire_times(
    entry: ScheduleEntry, paused_at: datetime, resumed_at: datetime, now: datetime
) -> list[datetime]:
    """The fire times of a paused span that ``resume(catchup=True)`` fires, per the entry's policy.

    The span is [paused_at, resumed_at]; only fire times within the catch-up window before ``now``
    count (``catchup_window``), then ``all`` keeps them all, ``latest`` the newest, ``none`` none.
    A schedule disabled in the file catches up nothing (its fire times are ``disabled``).
    """
    if not entry.enabled or entry.catchup == "none":
        return []
    start = max(paused_at, now - entry.catchup_window)
    if start > resumed_at:
        return []
    # fire_times is exclusive of its start: begin a microsecond earlier to include a fire time at it.
    found = [
        t.astimezone(UTC)
        for t in fire_times(entry.cron, entry.timezone, start.replace(microsecond=0) - _TINY, resumed_at)
        if t >= start
    ]
    if entry.catchup == "latest":
        return found[-1:]
    return found


_TINY = datetime.resolution


def state_fields(
    state: ScheduleState | None, time: Callable[[datetime | None], str | None]
) -> dict[str, Any]:
    """A schedule's run-time state as JSON fields (``schedules list --json`` and the HTTP API), its
    times written by ``time``. None (never paused, no run of it finished) reads as not paused.
    ``paused_*`` describe the pause in force, or the last one when ``paused`` is false (then
    ``resumed_*`` say when it ended)."""
    if state is None:
        return {
            "paused": False,
            **dict.fromkeys(("paused_at", "paused_by", "pause_reason")),
            "auto_paused": False,
            **dict.fromkeys(("resumed_at", "resumed_by")),
            "consecutive_failures": 0,
            **dict.fromkeys(("last_success_at", "last_failure_at", "last_failed_run_id")),
        }
    return {
        "paused": state.paused,
        "paused_at": time(state.paused_at),
        "paused_by": state.paused_by,
        "pause_reason": state.pause_reason,
        "auto_paused": state.auto_paused,
        "resumed_at": time(state.resumed_at),
        "resumed_by": state.resumed_by,
        "consecutive_failures": state.consecutive_failures,
        "last_success_at": time(state.last_success_at),
        "last_failure_at": time(state.last_failure_at),
        "last_failed_run_id": state.last_failed_run_id,
    }
