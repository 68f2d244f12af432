"""``create_app``: the ASGI application (Starlette) with the JSON API, the dashboard and the probes.

Routes (all relative to where the app is mounted):

* ``/healthz``, ``/readyz`` (always open), ``/metrics`` (open or behind the token, see auth.py);
* ``/api/...``: the JSON API (docs/http-api.md), errors as ``{"error", "detail"}``;
* ``/``, ``/runs``, ``/runs/{id}``, ``/schedules/{name}``, ``/jobs``: the dashboard; ``/login``,
  ``/logout``; ``/static/...``: its CSS and JavaScript (part of the package, no build step).

The API and the pages are views over the facade (and the schedule actions in
``schedule/manual.py``): no SQL here, as none in the scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..ops.health import Health
from ._context import STREAM_SECONDS, SchedulerRef, WebContext, app_root, close_streams, context
from ._guard import RequestGuard
from .auth import Auth

if TYPE_CHECKING:
    from ..ops.metrics import Metrics
    from ..ports import WebFacade
    from ..schedule.config import SchedulesConfig
    from ..schedule.scheduler import Scheduler

__all__ = ["WebContext", "close_streams", "create_app"]

log = logging.getLogger("durably_sched.web")


def create_app(
    durably: WebFacade,
    *,
    schedules: SchedulesConfig | Callable[[], SchedulesConfig | None] | None = None,
    scheduler: Scheduler | SchedulerRef | Callable[[], Scheduler | None] | None = None,
    token: str | None = None,
    read_token: str | None = None,
    metrics: Metrics | None = None,
    metrics_public: bool | None = None,
    worker: bool | None = None,
    allowed_hosts: Sequence[str] | None = None,
    stream_seconds: float = STREAM_SECONDS,
    trust_proxy_headers: bool = False,
) -> Starlette:
    """The web app for ``durably``: API, dashboard, probes. Mount it anywhere::

        app.mount("/durably", create_app(durably, schedules=config, token=os.environ["TOKEN"]))

    ``schedules``: the loaded schedules (or a function returning the current ones, for reloads);
    ``scheduler``: the scheduler running in this process, if any (for readiness), or an object
    with a ``scheduler`` attribute such as :func:`~durably_sched.web.lifespan`'s.
    ``token``: required on every API and dashboard request when given; ``read_token``: may read
    but not act. ``metrics_public``: serve /metrics without the token (default: only when no
    token is set). ``allowed_hosts``: without a token, the Host names accepted besides loopback
    names (None: any, for apps mounted behind their own host checks). ``worker``: whether
    readiness requires this process's worker (default: once it has been seen running).
    ``trust_proxy_headers``: behind a reverse proxy, take the client's address (for login
    throttling) from ``X-Forwarded-For`` and the scheme from ``X-Forwarded-Proto``.
    Request bodies are limited by ``durably.limits`` (``request_body``, ``login_body``).
    """
    from ..ops.metrics import Metrics
    from . import api, pages

    if metrics is None:
        metrics = Metrics(durably, None)
    health = Health(durably, lambda: ctx.scheduler(), worker=worker)
    auth = Auth(token, read_token, metrics_public, allowed_hosts, trust_proxy_headers)
    ctx = WebContext(
        durably=durably,
        auth=auth,
        health=health,
        metrics=metrics,
        schedules_source=schedules,
        scheduler_source=scheduler,
        stream_seconds=stream_seconds,
    )
    metrics.registry.register(health.watcher)  # durably_event_loop_lag_seconds
    static = resources.files("durably_sched.web") / "static"
    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        Route("/readyz", readyz, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        Route("/metrics", metrics_endpoint, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        Mount("/api", routes=api.routes()),
        Mount("/static", app=StaticFiles(directory=str(static)), name="static"),
        *pages.routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_RootMarker), Middleware(RequestGuard, auth=auth, durably=durably)],
        exception_handlers={HTTPException: http_error, Exception: unexpected_error},
    )
    app.state.durably_web = ctx
    return app


# -- probes ------------------------------------------------------------------------------------------
def _probe_method(request: Request) -> Response | None:
    if request.method not in ("GET", "HEAD"):
        return PlainTextResponse("method not allowed\n", 405, headers={"Allow": "GET, HEAD"})
    return None


NO_STORE = {"Cache-Control": "no-store"}


async def healthz(request: Request) -> Response:
    refused = _probe_method(request)
    if refused is not None:
        return refused
    alive, reason = context(request).health.liveness()
    return PlainTextResponse(reason + "\n", 200 if alive else 503, headers=NO_STORE)


async def readyz(request: Request) -> Response:
    refused = _probe_method(request)
    if refused is not None:
        return refused
    ready, checks = await context(request).health.readiness()
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return JSONResponse(body, 200 if ready else 503, headers=NO_STORE)


async def metrics_endpoint(request: Request) -> Response:
    refused = _probe_method(request)
    if refused is not None:
        return refused
    ctx = context(request)
    if (
        not ctx.auth.metrics_open
        and ctx.auth.bearer_role(request) is None
        and ctx.auth.session_role(request) is None
    ):
        return PlainTextResponse(
            "unauthorized: /metrics needs the bearer token here\n",
            401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    await ctx.metrics.refresh()
    return Response(ctx.metrics.render(), 200, media_type=ctx.metrics.content_type, headers=NO_STORE)


# -- errors ------------------------------------------------------------------------------------------
class _RootMarker:
    """Records the app's mount point before routing (the /api mount changes ``root_path``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope["durably_root"] = scope.get("root_path", "")
        await self.app(scope, receive, send)


def _is_api(request: Request) -> bool:
    root = app_root(request)
    path = request.url.path
    return path.startswith(root + "/api/") or path == root + "/api"


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if _is_api(request):
        names = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
        return JSONResponse(
            {"error": names.get(exc.status_code, "error"), "detail": exc.detail},
            exc.status_code,
            headers=dict(exc.headers or {}),
        )
    if exc.status_code == 404:
        return PlainTextResponse("not found (try / for the dashboard, /healthz, /readyz or /metrics)\n", 404)
    return PlainTextResponse(f"{exc.detail}\n", exc.status_code, headers=dict(exc.headers or {}))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("web request %s %s failed", request.method, request.url.path)
    if _is_api(request):
        return JSONResponse({"error": "internal", "detail": "internal error (see the server log)"}, 500)
    return PlainTextResponse("internal error (see the server log)\n", 500)
