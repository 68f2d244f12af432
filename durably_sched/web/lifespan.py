"""Durable jobs and schedules inside an existing Starlette or FastAPI app::

    durably = create_durably("sqlite:///app.db").register([report_job])
    durable = lifespan(durably, schedules="schedules.yaml")
    app = FastAPI(lifespan=durable)
    app.mount("/durably", create_app(durably, schedules=durable.current_schedules, scheduler=durable))

At start-up the lifespan migrates the schema, starts the worker (unless ``worker=False``) and the
scheduler (when schedules are given and ``scheduler=True``); at shut-down it stops the scheduler,
gives running steps ``stop_grace`` seconds to checkpoint, releases what is left and closes the
database. The host app's server owns the signals, as usual. durably-sched's own log lines (runs
fired and finished) go to stderr in serve's text format unless the host app configured logging
(``log=False`` leaves logging alone).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..ops.logging import log_unless_configured
from ..schedule.config import SchedulesConfig, load_schedules
from ..schedule.scheduler import Scheduler

if TYPE_CHECKING:
    from ..ports import WebFacade

__all__ = ["DurablyLifespan", "lifespan"]


class DurablyLifespan:
    """A Starlette/FastAPI lifespan (``lifespan=`` takes it as is) running ``durably``'s worker and
    (with ``schedules``, a path to a schedules file or a loaded config) a scheduler for the app's
    lifetime. With ``log`` (the default) durably-sched's log lines reach stderr when the host app
    has not configured logging. ``scheduler`` is the running scheduler between start-up and
    shut-down. :func:`lifespan` is this class."""

    def __init__(
        self,
        durably: WebFacade,
        *,
        schedules: str | SchedulesConfig | None = None,
        scheduler: bool = True,
        worker: bool = True,
        stop_grace: float = 10.0,
        log: bool = True,
    ) -> None:
        self.durably = durably
        self._schedules = schedules
        self.run_scheduler = scheduler
        self.run_worker = worker
        self.stop_grace = stop_grace
        self.log = log
        self.config: SchedulesConfig | None = schedules if isinstance(schedules, SchedulesConfig) else None
        self.scheduler: Scheduler | None = None

    def current_schedules(self) -> SchedulesConfig | None:
        """The loaded schedules (None before start-up when given as a path)."""
        return self.config

    def _load(self) -> SchedulesConfig | None:
        if isinstance(self._schedules, str):
            durably = self.durably
            inputs = {name: durably.job_by_name(name).input for name in durably.job_names}
            self.config = load_schedules(self._schedules, inputs)
        return self.config

    @contextlib.asynccontextmanager
    async def __call__(self, app: Any = None) -> AsyncIterator[None]:
        unlog = log_unless_configured() if self.log else (lambda: None)
        try:
            async with self._running():
                yield
        finally:
            unlog()

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        durably = self.durably
        config = self._load()
        await durably.migrate()
        await durably.start(worker=self.run_worker)
        if self.run_scheduler and config is not None:
            self.scheduler = Scheduler(durably, config)
            self.scheduler.start()
        try:
            yield
        finally:
            if self.scheduler is not None:
                await self.scheduler.stop()
            durably.feed.end_all()
            await durably.stop(grace=self.stop_grace)
            await durably.close()
            self.scheduler = None


lifespan = DurablyLifespan
"""``lifespan(durably, schedules=..., scheduler=True, worker=True, stop_grace=10.0, log=True)``."""
