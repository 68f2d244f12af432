"""The worker's timer for durable waits: it wakes the waiting runs whose time has come.

One call of ``Store.wake_due`` (one indexed read when nothing is due; sleeping runs cost nothing
else) at most once per polling interval, and at the moment the earliest timer is due (the store
says how long until then, by its own clock: the database's on PostgreSQL). Woken runs are pending
again and the same loop claims them right after.
"""

from __future__ import annotations

import logging

from .._ratelimit import RateLimitedLog
from ..clock import Clock
from ..events import EventEmitter, RunWakeEvent
from ..store.base import Store

__all__ = ["WakeTimer"]

log = logging.getLogger("durably_sched.worker")

TIMER_SLACK = 0.01
"""Seconds added to the time until the next timer, so that the store finds it due."""


class WakeTimer:
    def __init__(self, store: Store, events: EventEmitter, clock: Clock, interval: float) -> None:
        self.store = store
        self.events = events
        self.clock = clock
        self.interval = interval
        self.next_check = 0.0
        self._warnings = RateLimitedLog(log)

    async def poll(self) -> int:
        """Wake the due runs if it is time to look; how many were woken. A store failure is logged
        (rate-limited) and tried again at the next poll."""
        now = self.clock.monotonic()
        if now < self.next_check:
            return 0
        self.next_check = now + self.interval
        try:
            result = await self.store.wake_due()
        except Exception as exc:
            self._warnings.warning("could not wake due waiting runs: %s", exc, key="wake_due")
            return 0
        self._warnings.recovered("wake_due")
        if result.next_in is not None:
            self.next_check = min(self.next_check, self.clock.monotonic() + result.next_in + TIMER_SLACK)
        if result.woken and self.events.wants("run:wake"):
            self.events.emit(RunWakeEvent(count=result.woken))
        return result.woken

    def wait(self, longest: float) -> float:
        """How long the loop may wait before it must look again (at most ``longest``)."""
        return max(0.0, min(longest, self.next_check - self.clock.monotonic()))
