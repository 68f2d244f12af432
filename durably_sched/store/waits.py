"""The store's part of durable waits (``step.sleep``, ``step.wait_for_event``, ``step.run_job``).

A waiting run has status ``waiting``: no lease, no worker, no slot. What it waits for is stored in
indexed columns of its row (``wait_kind``, ``wait_step``, ``wait_key``, ``wake_at``), so:

* **timers** are woken by :meth:`WaitStore.wake_due`, one range read of the ``runs_waking`` index
  per worker poll (no query per sleeping run; idle sleepers cost nothing), which also says how
  long until the next one is due (the producer's timer);
* **events** are written and their waiters woken in one transaction (:meth:`WaitStore.send_event`),
  each waiting run receiving an event once (``event_seq``); an event is kept, and a run that
  reaches its wait after the event was sent receives it if the run was created before it (an
  event sent before a run existed is not for that run);
* **children** wake their parent from a trigger of the database, in the transaction that finishes
  the last unfinished child.

Waking sets the run ``pending`` again and records how the wait ended (``wait_outcome``: due,
event, timeout, children; ``wait_data``: the event's data); the woken attempt's replay reads it
from the run record (the step's name says which wait it was), so a replay is deterministic.
Concurrency: on SQLite every write takes the database's write lock; on PostgreSQL a suspend
locks its run's row (a child's finish locks its parent's row too) and an event's key takes a
transaction advisory lock, so a wake-up cannot slip between a waiter's check and its suspend.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .records import NewLog, RunRecord, WaitKind

__all__ = ["SCHEDULE_WAITING", "WAITING_OR_ACTIVE_SQL", "NewWait", "Suspension", "WaitStore", "WakeResult"]

SCHEDULE_WAITING = "SELECT 1 FROM runs WHERE schedule_name = ? AND status = 'waiting' LIMIT 1"
"""The overlap policy treats a waiting run of a schedule as still running (the runs_schedule_waiting
index; ``?`` the schedule)."""
WAITING_OR_ACTIVE_SQL = "('pending', 'running', 'waiting')"
"""The statuses a cancel ends."""


@dataclass(frozen=True, slots=True)
class NewWait:
    """What a run is about to wait for."""

    kind: WaitKind
    step: str
    key: str | None = None
    """The event key (kind ``event``)."""
    until: datetime | None = None
    """When it may wake (a sleep's end, an event's timeout); None: no time (children, no timeout)."""
    seconds: float | None = None
    """Or: how long from now by the store's clock (``until`` is then computed by the store)."""
    children: Sequence[str] = ()
    """The child runs (kind ``children``): linked to the run in the same write."""


@dataclass(frozen=True, slots=True)
class Suspension:
    """How a suspend went: ``waiting`` (stored; the attempt ends), ``ready`` (nothing to wait for:
    the time has passed, the event was already sent -- ``data`` --, the children have finished),
    ``lost`` or ``cancelled`` (the fence refused: nothing written)."""

    result: Literal["waiting", "ready", "lost", "cancelled"]
    data: Any = None
    waiting_children: int = 0


@dataclass(frozen=True, slots=True)
class WakeResult:
    woken: int
    """Runs made pending by this call."""
    next_in: float | None
    """Seconds until the next timer is due (by the store's clock); None: no timer is set."""


class WaitStore(abc.ABC):
    """Durable waits: the contract (both backends)."""

    @abc.abstractmethod
    async def suspend_run(
        self, run_id: str, generation: int, wait: NewWait, logs: Sequence[NewLog] = ()
    ) -> Suspension:
        """Make a running run ``waiting`` (fenced on status running and generation), unless it
        need not wait (``ready``). The logs are stored in the same write."""

    @abc.abstractmethod
    async def wake_due(self, limit: int = 1000) -> WakeResult:
        """Make pending the waiting runs whose time has come (a sleep's end: outcome ``due``; an
        event's timeout: ``timeout``), at most ``limit``; one indexed statement when none is due."""

    @abc.abstractmethod
    async def send_event(self, key: str, data: Any = None) -> int:
        """Store an event and wake every run waiting for its key, in one transaction; returns how
        many runs it woke."""

    @abc.abstractmethod
    async def clear_wait(self, run_id: str, generation: int) -> None:
        """Forget how the run's last wait ended (fenced): a retried wait starts over."""

    @abc.abstractmethod
    async def list_children(self, run_id: str) -> list[RunRecord]:
        """The runs started by this run's ``step.run_job`` (linked to it), oldest first."""

    @abc.abstractmethod
    async def purge_events(self, older_than: datetime, batch_size: int = 500) -> int:
        """Delete up to ``batch_size`` events sent before ``older_than``; how many."""

    @abc.abstractmethod
    async def count_waiting(self) -> dict[tuple[str, str], int]:
        """{(job_name, wait kind): count} of the waiting runs, for metrics."""
