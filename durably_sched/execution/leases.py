"""Lease renewal, the worker registry and early takeover: one service of the worker.

* **Leases.** Every ``interval`` seconds (the heartbeat) the leases of the runs this worker holds
  are renewed in one statement, fenced by each claim's generation. A run whose renewal finds it
  lost (expired and taken, or deleted) has its token set and its task cancelled: it writes
  nothing more; a run found cancelled by an operator starts no further step.
* **Registry.** The worker registers itself (``workers`` table) when its claim loop starts; its
  heartbeat rides on the renewal (or a beat of its own when it holds nothing). Rows of workers
  that stopped beating are purged after REGISTRY_KEEP, checked every REGISTRY_PURGE_EVERY.
* **Early takeover.** At the start and at every heartbeat it looks for workers registered under
  its own host key whose process is certainly gone (see registry.py) and makes their runs
  claimable at once; anywhere else, a lease expires as before.

Every failure is reported (the worker's ``env.report``) and the next heartbeat tries again; the
service base restarts the loop should anything escape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from ..events import RunLeaseRenewedEvent
from ..registry import HostIdentity, found_gone, host_identity
from ..step import RunContext
from ..store.base import WorkerInfo
from .executor import ExecutionEnv
from .service import Service

__all__ = ["REGISTRY_KEEP", "REGISTRY_PURGE_EVERY", "ActiveRun", "Leases"]

log = logging.getLogger("durably_sched.worker")

REGISTRY_KEEP = timedelta(days=1)
"""Registry rows of workers that stopped beating are kept this long (``workers list`` shows them)."""
REGISTRY_PURGE_EVERY = 600.0


@dataclass(slots=True)
class ActiveRun:
    """A run this worker holds: the state of its claimed generation and the task executing it."""

    ctx: RunContext
    task: asyncio.Task[None]


class Leases(Service):
    """The heartbeat of one worker (see the module docstring)."""

    def __init__(
        self,
        env: ExecutionEnv,
        *,
        worker_id: str,
        active: dict[str, ActiveRun],
        interval: float,
        describe: Callable[[HostIdentity], WorkerInfo],
        wake: Callable[[], None],
    ) -> None:
        super().__init__("heartbeat", interval=interval, first_after=interval, clock=env.clock, logger=log)
        self.env = env
        """The worker's store, events, clock, lease length and error report."""
        self.worker_id = worker_id
        self.active = active
        self._describe = describe
        self._wake = wake
        self.identity: HostIdentity | None = None
        self.registered = False
        self.lease_losses = 0
        self.takeovers = 0
        """Workers on this host found gone, whose runs this worker made claimable at once."""
        self.registry_checks = 0
        """Passes that looked for gone workers on this host (one at start, one per heartbeat)."""
        self._last_purge: float | None = None

    async def run_once(self) -> None:
        await self.beat()
        await self.maintain_registry()
        now = self.clock.monotonic()
        if self._last_purge is None or now - self._last_purge >= REGISTRY_PURGE_EVERY:
            self._last_purge = now
            try:
                await self.env.store.purge_workers(self.clock.now() - REGISTRY_KEEP)
            except Exception as exc:
                self.env.report(exc, "registry", None)

    # -- registry ----------------------------------------------------------------------------------
    def _identity(self) -> HostIdentity:
        self.identity = self.identity or host_identity()
        return self.identity

    async def register(self) -> None:
        try:
            await self.env.store.register_worker(self._describe(self._identity()))
            self.registered = True
        except Exception as exc:
            self.env.report(exc, "register", None)

    async def deregister(self) -> None:
        if not self.registered:
            return
        try:
            await self.env.store.deregister_worker(self.worker_id)
            self.registered = False
        except Exception as exc:
            log.warning("could not remove worker %s from the registry: %s", self.worker_id, exc)

    async def take_over_gone_workers(self) -> list[str]:
        """Runs of workers on this host whose process is certainly gone become claimable now.

        Returns the ids of the workers taken over. See registry.py for when a process counts as
        gone; a worker on another host is never taken over early.
        """
        identity = self._identity()
        if identity.host_key is None:
            return []
        taken: list[str] = []
        for worker in await self.env.store.list_workers():
            if worker.id == self.worker_id or not found_gone(worker, identity):
                continue
            runs = await self.env.store.take_over_worker(worker.id, self.worker_id)
            self.takeovers += 1
            taken.append(worker.id)
            held = "it held no run"
            if runs:
                held = "its run resumes now" if len(runs) == 1 else f"its {len(runs)} runs resume now"
            log.warning(
                "worker %s (pid %d on this host) is gone: %s%s",
                worker.id, worker.pid, held, f" ({', '.join(runs)})" if runs else "",
            )  # fmt: skip
            if runs:
                self._wake()
        return taken

    async def maintain_registry(self) -> None:
        try:
            await self.take_over_gone_workers()
        except Exception as exc:
            self.env.report(exc, "takeover", None)
        self.registry_checks += 1

    # -- leases ------------------------------------------------------------------------------------
    async def beat(self) -> None:
        """Renew the leases of the runs held here (the registry's heartbeat rides on it)."""
        held = self.active.items()
        contexts = {run_id: e.ctx for run_id, e in held if not e.ctx.lost and e.ctx.suspended_on is None}
        try:
            if not contexts:
                if not await self.env.store.heartbeat_worker(self.worker_id, 0):
                    await self.register()  # the row went away (purged, or the database restored)
                return
            results = await self.env.store.renew_leases(
                [(run_id, ctx.generation) for run_id, ctx in contexts.items()],
                self.env.lease_seconds,
                worker=(self.worker_id, len(contexts)),
            )
        except Exception as exc:
            self.env.report(exc, "heartbeat", None)
            return
        renewed = self.env.events.wants("run:lease-renewed")
        for run_id, outcome in results.items():
            ctx = contexts[run_id]
            entry = self.active.get(run_id)
            if entry is None or entry.ctx is not ctx or ctx.suspended_on is not None:
                continue  # finished (or began to wait) while the renewal was in flight: not a loss
            if outcome == "ok" and renewed:
                self.env.events.emit(
                    RunLeaseRenewedEvent(
                        run_id=run_id,
                        job_name=ctx.run.job_name,
                        labels=ctx.run.labels,
                        worker_id=self.worker_id,
                        lease_seconds=self.env.lease_seconds,
                    )
                )
            if outcome == "lost":
                log.warning("lease lost; stopping the run", extra=ctx.log_extra)
                ctx.lost = True
                self.lease_losses += 1
                entry.task.cancel()
            elif outcome == "cancelled":
                ctx.cancelled = True
