"""The dashboard: server-rendered pages (Jinja2 templates in the package) plus ``static/app.js``,
which adds live updates (EventSource on the API's streams) and the buttons (fetch on the API).
Every page works from the data the API serves; the pages read the same facade calls."""

from __future__ import annotations

import asyncio
import itertools
import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..errors import InvalidArgumentError, RunNotFoundError, ScheduleNotFoundError
from ..record_fields import clock_text
from ..schedule.config import entry_of
from ..schedule.cron import fire_key, fire_times
from ..schedule.ownership import OFFSET_WARN
from ..schedule.reloading import config_errors_shown
from ..store.base import FIRE_OUTCOMES, RUN_STATUSES
from . import _json
from ._context import app_root, context
from ._parse import ApiError, check_request_text, parse_time, run_query, shown
from ._pictures import schedule_pictures, sparklines
from ._schedule_api import version_json
from ._schedules import rows_json, schedule_json, schedules_json
from ._schedules import stored as stored_schedule
from .auth import SESSION_COOKIE, SESSION_SECONDS, safe_next

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("durably_sched.web", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


def _short(value: str | None) -> str:
    return (value or "")[:8]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "\u2013"  # an en dash
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return clock_text(seconds)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _pretty(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


_env.filters["short"] = _short
_env.filters["duration"] = _duration
_env.filters["pretty"] = _pretty
_env.filters["plural"] = _plural


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    ctx = context(request)
    root = app_root(request)
    html = _env.get_template(template).render(
        root=root,
        csrf=ctx.auth.csrf_token(request),
        auth_enabled=ctx.auth.enabled,
        role=ctx.auth.role(request),
        title=ctx.title,
        path=request.url.path,
        config_errors=getattr(request.state, "config_errors", ()),
        **values,
    )
    return HTMLResponse(html, status, headers=PAGE_HEADERS)


PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Scripts and styles from this app only (the step timeline sets inline style attributes).
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
}


def page(handler: Any) -> Any:
    """Host check, login redirect, and 404 pages for unknown runs and schedules."""

    async def run(request: Request) -> Response:
        ctx = context(request)
        problem = ctx.auth.host_problem(request)
        if problem is not None:
            return PlainTextResponse(problem + "\n", 403)
        if ctx.auth.role(request) is None:
            root = app_root(request)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{root}/login?next={quote(target)}", 303)
        request.state.config_errors = await config_errors_shown(ctx.durably)
        try:
            check_request_text(request)
            response: Response = await handler(request)
            return response
        except (RunNotFoundError, ApiError) as exc:
            status = exc.status if isinstance(exc, ApiError) else 404
            detail = exc.detail if isinstance(exc, ApiError) else str(exc)
            return render(request, "error.html", status, message=shown(detail))
        except (ValueError, OverflowError) as exc:  # an argument the library refused: the user's
            return render(request, "error.html", 400, message=shown(str(exc) or type(exc).__name__))

    return run


# -- pages -------------------------------------------------------------------------------------------
@page
async def home(request: Request) -> Response:
    """The Schedules page: one page (50) of the database's schedules by name, searched by name and
    filtered by job and source; the file's schedules while the database has none."""
    ctx = context(request)
    config = ctx.schedules()
    params = request.query_params
    search = {key: params.get(key, "").strip() for key in ("q", "job", "source")}
    searching = any(search.values()) or bool(params.get("cursor"))
    if not searching and config is not None:
        search["source"] = "api"  # the file's schedules (in its order), then a page of the API's
    listed = await ctx.durably.schedules.list(
        q=search["q"] or None, job=search["job"] or None, source=search["source"] or None,
        limit=HOME_PAGE, cursor=params.get("cursor") or None,
    )  # fmt: skip
    schedules = [] if searching else await schedules_json(ctx, api=False)
    shown_names = {s["name"] for s in schedules}
    schedules += await rows_json(ctx, [row for row in listed.items if row.name not in shown_names])
    next_query = None
    if listed.next_cursor is not None:
        kept = [(k, v) for k, v in search.items() if v] + [("cursor", listed.next_cursor)]
        next_query = "&".join(f"{quote(k)}={quote(v)}" for k, v in kept)
    if not searching:
        search["source"] = ""
    page_ = await ctx.durably.list_runs_page(run_query_for(limit=15))
    sparks = await sparklines(ctx.durably, [s["name"] for s in schedules]) if schedules else {}
    return render(
        request,
        "home.html",
        schedules=schedules,
        sparks=sparks,
        search=search,
        next_query=next_query,
        has_schedules=config is not None or bool(schedules) or any(search.values()),
        runs=[_json.run_row(r) for r in page_.runs],
        jobs=sorted(ctx.durably.job_names),
    )


def run_query_for(limit: int) -> Any:
    from ..store.base import RunQuery

    return RunQuery(limit=limit)


@page
async def runs_page(request: Request) -> Response:
    ctx = context(request)
    query = run_query(request)
    store = ctx.durably
    page_ = await store.list_runs_page(query)
    total, capped = await store.count_runs(query)
    params = request.query_params
    filters = {
        "job": params.getlist("job"),
        "status": params.getlist("status"),
        "schedule": params.get("schedule", ""),
        "labels": " ".join(f"{k}={v}" for k, v in query.labels.items()),
        "created_after": params.get("created_after", ""),
        "created_before": params.get("created_before", ""),
    }
    next_query = None
    if page_.next_cursor is not None:
        kept = [(k, v) for k, v in params.multi_items() if k != "cursor"]
        next_query = "&".join(f"{quote(k)}={quote(v)}" for k, v in [*kept, ("cursor", page_.next_cursor)])
    return render(
        request,
        "runs.html",
        runs=[_json.run_row(r) for r in page_.runs],
        total=total,
        capped=capped,
        next_query=next_query,
        first_page=query.cursor is None,
        filters=filters,
        jobs=sorted(ctx.durably.job_names),
        statuses=RUN_STATUSES,
    )


@page
async def run_page(request: Request) -> Response:
    durably = context(request).durably
    record = await durably.get_run(request.path_params["run_id"])
    steps = await durably.get_steps(record.id)
    logs = await durably.get_logs(record.id, limit=2000)
    run = await _json.detail_of(durably, record)
    run["failure"] = last_failure(run)
    start = record.started_at or record.created_at
    span = max([(s.completed_at - start).total_seconds() for s in steps] + [run["duration"] or 0.0, 0.001])
    timeline = [
        {
            **_json.step(s),
            "offset": max(0.0, (s.started_at - start).total_seconds()) / span * 100,
            "width": max(0.5, s.duration / span * 100),
        }
        for s in steps
    ]
    return render(request, "run.html", run=run, steps=timeline, logs=[_json.log(e) for e in logs])


def last_failure(run: dict[str, Any]) -> dict[str, Any] | None:
    """What the run page's error box is about: the newest failed attempt, and, while the run goes on
    (a retry waits or runs), that it is a previous attempt's error and what the run does now."""
    failed = [a for a in run["attempts"] if a["outcome"] == "failed"]
    if not run["error"] or not failed or failed[-1]["error"] != run["error"]:
        return None
    attempt = failed[-1]
    now = None
    if run["status"] == "running":
        now = f"retrying: attempt {run['attempt']} is running"
    elif run["status"] == "pending":
        now = "retrying: the next attempt waits for its backoff" if run["not_before"] else "retrying"
    return {**attempt, "now": now}


@page
async def schedule_page(request: Request) -> Response:
    ctx = context(request)
    name = request.path_params["name"]
    config = ctx.schedules()
    entry = config.schedules.get(name) if config is not None else None
    row = await stored_schedule(ctx, name)
    if row is not None and (entry is None or row.source == "api"):
        entry = entry_of(row.name, row.definition, row.line)
    versions = [version_json(v) for v in reversed(await _versions(ctx, name))]
    before_text = request.query_params.get("before")
    before = parse_time(before_text, "before") if before_text else None
    store = ctx.durably
    records = await store.list_fire_records(name, limit=50, before=before)
    if entry is None and not records:
        raise ApiError(404, "not_found", f"unknown schedule '{name}'")
    runs = await store.get_runs_by_id([r.run_id for r in records if r.run_id])
    statuses = {run_id: run.status for run_id, run in runs.items()}
    zone = entry.timezone if entry is not None else UTC
    history = [
        {
            **_json.fire(
                r, fire_key(r.schedule, r.fire_time), statuses.get(r.run_id, "purged") if r.run_id else None
            ),
            "local": r.fire_time.astimezone(zone).isoformat(sep=" ", timespec="seconds"),
        }
        for r in records
    ]
    info = (
        await schedule_json(ctx, entry, datetime.now(UTC), await ctx.durably.get_schedule_state(name), row)
        if entry is not None
        else None
    )
    upcoming = (
        [
            t.isoformat()
            for t in itertools.islice(fire_times(entry.cron, entry.timezone, datetime.now(UTC)), 3)
        ]
        if entry is not None
        else []
    )
    return render(
        request,
        "schedule.html",
        name=name,
        schedule=info,
        source=row,
        versions=versions,
        upcoming=upcoming,
        history=history,
        outcomes=FIRE_OUTCOMES,
        pictures=schedule_pictures(name, records, runs, zone, app_root(request)),
        older=history[-1]["fire_time"] if len(records) == 50 else None,
    )


@page
async def workers_page(request: Request) -> Response:
    durably = context(request).durably
    workers, schedulers, orphaned = await asyncio.gather(
        durably.list_workers(), durably.list_schedulers(), durably.jobs_without_worker()
    )
    return render(
        request,
        "workers.html",
        workers=[_json.worker(w) for w in workers],
        schedulers=[_json.scheduler(s) for s in schedulers],
        offset_warn=OFFSET_WARN,
        orphaned=[{"job": job, "pending_runs": n, "query": quote(job)} for job, n in orphaned.items()],
    )


@page
async def jobs_page(request: Request) -> Response:
    jobs = _job_forms(context(request))
    return render(request, "jobs.html", jobs=jobs, selected=request.query_params.get("job"))


def form_fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Form inputs for the top-level properties of a JSON schema (nested values: a JSON text box)."""
    required = set(schema.get("required", []))
    fields = []
    for name, prop in schema.get("properties", {}).items():
        kind = prop.get("type")
        if "anyOf" in prop:  # Optional[X]: take the non-null type
            kinds = [p.get("type") for p in prop["anyOf"] if p.get("type") != "null"]
            kind = kinds[0] if len(kinds) == 1 else None
        widget = {"integer": "integer", "number": "number", "boolean": "boolean", "string": "string"}.get(
            kind or "", "json"
        )
        if "enum" in prop:
            widget = "enum"
        default = prop.get("default")
        fields.append(
            {
                "name": name,
                "widget": widget,
                "title": prop.get("title", name),
                "description": prop.get("description"),
                "required": name in required,
                "default": default,
                "default_json": _pretty(default) if default is not None else "",
                "enum": prop.get("enum", []),
                "minimum": prop.get("minimum", prop.get("exclusiveMinimum")),
                "maximum": prop.get("maximum", prop.get("exclusiveMaximum")),
            }
        )
    return fields


# -- schedules as data: the create and edit forms -----------------------------------------------------
HOME_PAGE = 50
"""Schedules per page on the Schedules page."""
_NEW = {
    "cron": "", "timezone": "UTC", "catchup": "all", "overlap": "queue", "catchup_window": "1d",
    "jitter": "0s", "timeout": None, "pause_after_failures": None, "enabled": True,
}  # fmt: skip


def _job_forms(ctx: Any) -> list[dict[str, Any]]:
    """Each registered job with its input schema and the form fields made from it."""
    durably = ctx.durably
    forms = []
    for name in sorted(durably.job_names):
        job = durably.job_by_name(name)
        schema = (
            job.input.model_json_schema() if job.input is not None else {"type": "object", "properties": {}}
        )
        forms.append(
            {"name": name, "description": job.description, "fields": form_fields(schema), "schema": schema}
        )
    return forms


async def _versions(ctx: Any, name: str) -> list[Any]:
    try:
        return list(await ctx.durably.schedules.versions(name))
    except (ScheduleNotFoundError, InvalidArgumentError):
        return []  # a name the database never held (a schedule of the file not synced yet)


@page
async def new_schedule_page(request: Request) -> Response:
    ctx = context(request)
    jobs = _job_forms(ctx)
    first = jobs[0]["name"] if jobs else None
    values: dict[str, Any] = {**_NEW, "job": first, "input": {}, "labels_text": ""}
    return render(request, "schedule_form.html", jobs=jobs, d=values, editing=False, name=None)


@page
async def edit_schedule_page(request: Request) -> Response:
    ctx = context(request)
    name = request.path_params["name"]
    row = await stored_schedule(ctx, name)
    if row is None:
        raise ApiError(404, "not_found", f"unknown schedule '{name}'")
    if row.source == "yaml":
        raise ApiError(409, "conflict", f"schedule '{name}' is defined in {row.location}: change it there")
    labels = " ".join(f"{k}={v}" for k, v in (row.definition.get("labels") or {}).items())
    values = {**row.definition, "labels_text": labels}
    return render(request, "schedule_form.html", jobs=_job_forms(ctx), d=values, editing=True, name=name)


# -- login -------------------------------------------------------------------------------------------
async def login(request: Request) -> Response:
    ctx = context(request)
    root = app_root(request)
    problem = ctx.auth.host_problem(request)
    if problem is not None:
        return PlainTextResponse(problem + "\n", 403)
    if request.method == "GET":
        if not ctx.auth.enabled:
            return RedirectResponse(safe_next(request.query_params.get("next"), root), 303)
        return render(
            request, "login.html", next=request.query_params.get("next", ""), failed=False, wait=None
        )
    cross = ctx.auth.cross_site_problem(request, "POST")
    if cross is not None:
        return PlainTextResponse(cross + "\n", 403)
    client = ctx.auth.client_address(request)
    wait = ctx.throttle.wait(client)
    if wait > 0:  # too many failures from this address: the token is not even checked
        seconds = str(math.ceil(wait))
        refused = render(request, "login.html", 429, next="", failed=True, wait=seconds)
        refused.headers["Retry-After"] = seconds
        return refused
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    presented = (form.get("token") or [""])[0].strip()
    target = safe_next((form.get("next") or [""])[0], root)
    role = ctx.auth.role_for_token(presented) if ctx.auth.enabled and presented else None
    if role is None:
        ctx.throttle.failed(client)
        return render(request, "login.html", 401, next=target, failed=True, wait=None)
    cookie, session = ctx.auth.make_session(role)
    await ctx.durably.create_web_session(session, role, SESSION_SECONDS)
    response = RedirectResponse(target, 303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=SESSION_SECONDS,
        path=(root or "") + "/",
        httponly=True,
        samesite="strict",
        secure=ctx.auth.scheme(request) == "https",
    )
    return response


async def logout(request: Request) -> Response:
    """Ends the session in the database (every serve process sees it gone) and drops the cookie."""
    ctx = context(request)
    root = app_root(request)
    cross = ctx.auth.cross_site_problem(request, "POST")
    if cross is not None:
        return PlainTextResponse(cross + "\n", 403)
    cookie = request.cookies.get(SESSION_COOKIE)
    verified = ctx.auth.verify_session(cookie) if cookie and ctx.auth.enabled else None
    if verified is not None:
        await ctx.durably.delete_web_session(verified[1])
    response = RedirectResponse(f"{root}/login", 303)
    response.delete_cookie(SESSION_COOKIE, path=(root or "") + "/", httponly=True, samesite="strict")
    return response


def routes() -> list[BaseRoute]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/runs", runs_page, methods=["GET"]),
        Route("/runs/{run_id}", run_page, methods=["GET"]),
        Route("/new-schedule", new_schedule_page, methods=["GET"]),
        Route("/schedules/{name}", schedule_page, methods=["GET"]),
        Route("/schedules/{name}/edit", edit_schedule_page, methods=["GET"]),
        Route("/jobs", jobs_page, methods=["GET"]),
        Route("/workers", workers_page, methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
