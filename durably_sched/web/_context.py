"""What every route of the web app shares: its :class:`WebContext` (``app.state.durably_web``), how
a route finds it, where the app is mounted, and the end of its live streams. The routes' modules
(api, pages) and the app that wires them all import it; it imports none of them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request

from ._throttle import LoginThrottle
from .auth import Auth

if TYPE_CHECKING:
    from ..ops.health import Health
    from ..ops.metrics import Metrics
    from ..ports import WebFacade
    from ..schedule.config import SchedulesConfig
    from ..schedule.scheduler import Scheduler

STREAM_SECONDS = 60.0
"""A live stream ends after this long; the browser's EventSource reconnects by itself (and resumes
after the last log it saw). It keeps a host app's shut-down from waiting on open streams."""


class SchedulerRef(Protocol):
    """Anything that knows the scheduler once it runs, e.g. :func:`durably_sched.web.lifespan`."""

    @property
    def scheduler(self) -> Scheduler | None: ...


@dataclass
class WebContext:
    """Everything the routes need; ``app.state.durably_web``."""

    durably: WebFacade
    auth: Auth
    health: Health
    metrics: Metrics
    schedules_source: Any = None
    scheduler_source: Any = None
    stream_seconds: float = STREAM_SECONDS
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    streams: set[Callable[[], None]] = field(default_factory=set)
    """The ``_end`` of every live stream's source, called by :func:`close_streams`."""
    title: str = "durably-sched"
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    """Failed logins and wrong bearer tokens, per client address."""

    def schedules(self) -> SchedulesConfig | None:
        source = self.schedules_source
        if source is None:
            return None
        if callable(source):
            found: SchedulesConfig | None = source()
            return found
        return source  # type: ignore[no-any-return]

    def scheduler(self) -> Scheduler | None:
        source = self.scheduler_source
        if source is None:
            return None
        if hasattr(source, "scheduler") and not hasattr(source, "tick"):
            return source.scheduler  # type: ignore[no-any-return]
        if callable(source) and not hasattr(source, "tick"):
            return source()  # type: ignore[no-any-return]
        return source  # type: ignore[no-any-return]


def context(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.durably_web
    return ctx


def close_streams(app: Any) -> None:
    """End the app's live streams (server-sent events) now; used when the server stops."""
    state = getattr(getattr(app, "state", None), "durably_web", None)
    if isinstance(state, WebContext):
        state.closing.set()
        for end in list(state.streams):
            end()


def app_root(request: Request) -> str:
    """Where this app is mounted ("" at the top), also inside its own /api mount."""
    scope = request.scope
    return str(scope.get("durably_root", scope.get("root_path", "")))
