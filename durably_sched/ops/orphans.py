"""A warning when runs wait for a job that no live worker has.

A ``serve`` registers the jobs its code defines when it starts; a job added (or renamed) later is
unknown to it until it is restarted, and its runs would stay pending without a word. Every
:data:`CHECK_INTERVAL` seconds this asks the database for pending runs whose job no live worker
(in the registry) has, and logs one warning per job name, repeated at most every
:data:`REPEAT_EVERY` seconds while it lasts; when a worker with the job appears, it says so once.
The same numbers are the ``durably_runs_without_worker`` metric (ops/metrics.py), and ``runs show``
and ``trigger --wait`` name the reason on the run itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._ratelimit import RateLimitedLog
from ..clock import Clock
from ..execution.service import Service

if TYPE_CHECKING:
    from ..durably import Durably

__all__ = ["CHECK_INTERVAL", "REPEAT_EVERY", "OrphanedJobsWatch"]

log = logging.getLogger("durably_sched.serve")

CHECK_INTERVAL = 30.0
REPEAT_EVERY = 300.0


class OrphanedJobsWatch(Service):
    """A service (``execution.service``): ``start()`` on the loop, ``await stop()`` on shutdown;
    ``check()`` runs one pass, the first ``first_after`` seconds after the start."""

    def __init__(
        self,
        durably: Durably,
        *,
        interval: float = CHECK_INTERVAL,
        first_after: float = 10.0,
        repeat_every: float = REPEAT_EVERY,
        clock: Clock | None = None,
    ) -> None:
        # first_after: let the workers starting with us register first
        super().__init__(
            "orphan watch",
            interval=interval,
            first_after=first_after,
            clock=clock,
            backoff_max=interval,
            logger=log,
        )
        self.durably = durably
        self._warnings = RateLimitedLog(log, every=repeat_every, count=False)
        self.orphaned: dict[str, int] = {}
        """The last pass's pending runs per job that no live worker has."""

    async def run_once(self) -> dict[str, int]:
        return await self.check()

    def on_error(self, exc: Exception) -> None:
        log.debug("could not look for runs without a worker: %s", exc)  # the worker and scheduler say so

    async def check(self) -> dict[str, int]:
        found = await self.durably.jobs_without_worker()
        for job, count in found.items():
            self._warnings.warning(
                "%d pending run%s of job '%s' wait: no live worker has this job (a serve loads "
                "its jobs at start: restart serve after adding or changing job code)",
                count,
                "s" if count != 1 else "",
                job,
                key=f"job {job}",
                extra={"job": job},
            )
        for job in self.orphaned.keys() - found.keys():
            self._warnings.recovered(f"job {job}")
            log.info("job '%s' has a live worker again (or no pending run)", job, extra={"job": job})
        self.orphaned = found
        return found
