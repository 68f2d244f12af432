"""The JSON API under ``/api`` and its server-sent event streams.

Errors are ``{"error": <code>, "detail": <one line>}``: 400 malformed request (bad JSON, unknown
field, bad query value, a library limit such as the run input's size; see ``_parse.py``), 401 no or
wrong token, 403 read-only token acting, a cross-site request or a foreign Host, 404 unknown run, job
or schedule, 409 the run's state forbids it (or a resume of a schedule that is not paused), 413 a
body over the limit (``_guard.py``), 422 input the job's model (or the schedule) rejects, 429 too
many wrong tokens from the client's address (``_throttle.py``), 503 the database cannot be used.
Nothing a client sends produces a 500 (``tests/web/test_fuzz.py``). Lists and streams carry large
values as markers (``_json.py``); the detail views carry them whole.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from functools import wraps
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..errors import (
    DurablyError,
    InputValidationError,
    InvalidStateError,
    RunNotFoundError,
    ScheduleNotFoundError,
    StoreError,
    UnknownJobError,
)
from ..schedule import manual, reloading
from ..schedule.config import ScheduleEntry
from ..schedule.cron import fire_key
from ..store.base import RunRecord
from ..stream import FeedDroppedEvent, RunListEvent, StoredLogWriteEvent
from . import _json
from . import _schedule_api as _defs
from ._context import WebContext, context
from ._parse import (
    MAX_LIMIT,
    ApiError,
    body_object,
    check_request_text,
    event_id,
    optional_str,
    parse_int,
    parse_time,
    run_query,
    shown,
)
from ._schedules import entries as _entries
from ._schedules import entry as _entry
from ._schedules import schedule_json, schedules_json
from ._schedules import stored as _stored
from ._sse import SharedFrames, sse, sse_frame, stream, stream_response

if TYPE_CHECKING:
    from ..ports import WebFacade

Handler = Callable[[Request], Awaitable[Response]]


def error_response(status: int, error: str, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": shown(detail)}, status, headers=headers or None)


def _mapped(exc: Exception) -> JSONResponse:
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.error, exc.detail)
    if isinstance(exc, (RunNotFoundError, UnknownJobError, ScheduleNotFoundError)):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, InvalidStateError):
        return error_response(409, "conflict", str(exc))
    if isinstance(exc, (InputValidationError, manual.ScheduleActionError)):
        return error_response(422, "invalid", str(exc))
    if isinstance(exc, StoreError):
        return error_response(503, "unavailable", str(exc))
    if isinstance(exc, (DurablyError, ValueError, OverflowError)):
        # InvalidArgumentError (a library limit, a bad key or label) names the field; a ValueError
        # from the library is about an argument too (UnicodeError included). Never a 500.
        return error_response(400, "bad_request", str(exc) or type(exc).__name__)
    if isinstance(exc, RecursionError):
        return error_response(400, "bad_request", "a value is nested too deeply")
    raise exc


def _throttled_bearer(ctx: WebContext, request: Request) -> Response | None:
    """429 while the client's address must wait after failed tokens (see ``_throttle.py``); a
    wrong bearer token counts as a failed login."""
    if not ctx.auth.enabled or "authorization" not in request.headers:
        return None
    client = ctx.auth.client_address(request)
    wait = ctx.throttle.wait(client)
    if wait > 0:
        seconds = str(math.ceil(wait))
        detail = f"too many wrong tokens from {client}: try again in {seconds} s"
        return error_response(429, "too_many_requests", detail, **{"Retry-After": seconds})
    if ctx.auth.bearer_role(request) is None:
        ctx.throttle.failed(client)
    return None


def endpoint(*, act: bool = False) -> Callable[[Handler], Handler]:
    """Authenticate (401), check the Host and cross-site rules and the role (403), map errors."""

    def wrap(handler: Handler) -> Handler:
        @wraps(handler)
        async def run(request: Request) -> Response:
            ctx = context(request)
            auth = ctx.auth
            problem = auth.host_problem(request)
            if problem is not None:
                return error_response(403, "forbidden", problem)
            refused = _throttled_bearer(ctx, request)
            if refused is not None:
                return refused
            role = auth.role(request)
            if role is None:
                return error_response(
                    401,
                    "unauthorized",
                    "this server needs its token: send Authorization: Bearer <token>",
                    **{"WWW-Authenticate": "Bearer"},
                )
            method = request.method
            problem = auth.cross_site_problem(request, method) or auth.csrf_problem(request, method)
            if problem is not None:
                return error_response(403, "forbidden", problem)
            if act and role != "admin":
                return error_response(403, "forbidden", "this token is read-only: it cannot change anything")
            try:
                check_request_text(request)
                return await handler(request)
            except Exception as exc:
                return _mapped(exc)

        return run

    return wrap


# -- jobs and runs -----------------------------------------------------------------------------------
@endpoint()
async def list_jobs(request: Request) -> Response:
    durably = context(request).durably
    jobs = []
    for name in sorted(durably.job_names):
        job = durably.job_by_name(name)
        jobs.append(
            {
                "name": job.name,
                "description": job.description,
                "input_schema": job.input.model_json_schema()
                if job.input is not None
                else {"type": "object"},
                "output_schema": job.output.model_json_schema() if job.output is not None else None,
            }
        )
    return JSONResponse({"jobs": jobs})


@endpoint(act=True)
async def trigger_job(request: Request) -> Response:
    durably = context(request).durably
    name = request.path_params["job"]
    durably.job_by_name(name)  # 404 before reading the body
    body = await body_object(request, {"input", "idempotency_key", "concurrency_key", "labels"})
    labels = body.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ApiError(400, "bad_request", "labels must be an object of strings")
    payload = body.get("input")
    run = await durably.trigger(
        name,
        {} if payload is None else payload,  # no input: an empty object, so models with defaults work
        idempotency_key=optional_str(body, "idempotency_key"),
        concurrency_key=optional_str(body, "concurrency_key"),
        labels=labels,
    )
    status = 201 if run.disposition == "created" else 200
    return JSONResponse({"run": _json.run(run.record), "disposition": run.disposition}, status)


@endpoint()
async def list_runs(request: Request) -> Response:
    store = context(request).durably
    query = run_query(request)
    page, (total, capped) = await asyncio.gather(store.list_runs_page(query), store.count_runs(query))
    return JSONResponse(
        {
            "runs": [_json.run_row(r) for r in page.runs],
            "total": total,
            "total_capped": capped,
            "next": page.next_cursor,
        }
    )


@endpoint()
async def get_run(request: Request) -> Response:
    ctx = context(request)
    return JSONResponse({"run": await _json.run_detail(ctx.durably, request.path_params["run_id"])})


@endpoint()
async def get_steps(request: Request) -> Response:
    steps = await context(request).durably.get_steps(request.path_params["run_id"])
    return JSONResponse({"steps": [_json.step(s) for s in steps]})


@endpoint()
async def get_logs(request: Request) -> Response:
    durably = context(request).durably
    run_id = request.path_params["run_id"]
    after = parse_int(request.query_params.get("after"), "after", 0, 0, 2**62)
    limit = parse_int(request.query_params.get("limit"), "limit", 1000, 1, 10_000)
    await durably.get_run(run_id)
    logs = await durably.get_logs(run_id, after_id=after, limit=limit)
    return JSONResponse(
        {"logs": [_json.log(e) for e in logs], "next": logs[-1].id if len(logs) == limit else None}
    )


def _run_action(act: Callable[[WebFacade, str], Awaitable[RunRecord]]) -> Handler:
    """``POST /api/runs/{run_id}/<action>``: the action's run as it is afterwards."""

    @endpoint(act=True)
    async def handle(request: Request) -> Response:
        record = await act(context(request).durably, request.path_params["run_id"])
        return JSONResponse({"run": _json.run(record)})

    return handle


retry_run = _run_action(lambda durably, run_id: durably.retry(run_id))
cancel_run = _run_action(lambda durably, run_id: durably.cancel(run_id))


@endpoint(act=True)
async def retrigger_run(request: Request) -> Response:
    run = await context(request).durably.retrigger(request.path_params["run_id"])
    return JSONResponse({"run": _json.run(run.record), "disposition": run.disposition}, 201)


@endpoint(act=True)
async def delete_run(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    await context(request).durably.delete_run(run_id)
    return JSONResponse({"deleted": run_id})


@endpoint(act=True)
async def send_event(request: Request) -> Response:
    """``POST /api/events`` with ``{"key", "data"}``: the runs it woke (``step.wait_for_event``)."""
    body = await body_object(request, {"key", "data"})
    key = optional_str(body, "key")
    if not key:
        raise ApiError(400, "bad_request", "key is required: the event's key, such as approve:2026-12-06")
    woken = await context(request).durably.send_event(key, body.get("data"))
    return JSONResponse({"key": key, "woken": woken})


# -- live streams ------------------------------------------------------------------------------------
@endpoint()
async def run_events(request: Request) -> Response:
    """One run: a ``run:snapshot`` (run, steps, logs), then its events until it finishes. A log's
    event carries its id as the SSE id, so a reconnecting EventSource resumes after it."""
    ctx = context(request)
    durably = ctx.durably
    run_id = request.path_params["run_id"]
    after = event_id(request)
    record = await durably.get_run(run_id)
    steps = await durably.get_steps(run_id)
    logs = await durably.get_logs(run_id, after_id=after, limit=1000)
    last_log = logs[-1].id if logs else after
    snapshot = {  # large values as markers: every client of the stream gets its own copy
        "run": _json.run_row(record),
        "steps": [_json.step_row(s) for s in steps],
        "logs": [_json.log_row(e) for e in logs],
    }
    first = [sse("run:snapshot", snapshot, last_log if last_log else None)]
    if record.is_finished:
        return stream_response(stream(ctx, _empty(), first, lambda _: None))
    if len(steps) != record.step_count:  # steps written between the two reads: they are in the snapshot
        record = dataclasses.replace(record, step_count=len(steps))
    subscription = durably.subscribe(run_id, since=record, after_log_id=last_log)
    return stream_response(stream(ctx, subscription, first, _render_run_event))


async def _empty() -> AsyncIterator[Any]:
    return
    yield  # pragma: no cover


def _render_run_event(event: Any) -> str:
    text = _json.streamed_event_json(event)
    if isinstance(event, FeedDroppedEvent):
        return sse_frame("feed:dropped", text)
    if isinstance(event, StoredLogWriteEvent):
        return sse_frame(event.type, text, event.log_id)
    return sse_frame(event.type, text)


def _render_list_event(event: RunListEvent) -> str:
    if event.type == "feed:reset":
        return sse("feed:reset", {})
    if event.run is None:
        return sse(event.type, {"id": event.run_id})
    return sse(event.type, {"run": _json.run_summary(event.run)})


# The feed hands the same list event to every list stream: one frame for all. A run's events are
# made per subscriber (their own view of the run), so each stream writes its own.
_list_frame = SharedFrames(_render_list_event)


@endpoint()
async def list_events(request: Request) -> Response:
    """The run list: one event per changed run (its latest state as a list row, see
    ``_json.run_summary``), at most one per run per 100 ms."""
    ctx = context(request)
    subscription = ctx.durably.subscribe_runs()
    return stream_response(stream(ctx, subscription, [], _list_frame))


# -- schedules ---------------------------------------------------------------------------------------
@endpoint()
async def list_schedules(request: Request) -> Response:
    """Without filters: every schedule (the file's, then the API schedules). With ``job``,
    ``label`` (``K:V``, repeatable), ``source``, ``q``, ``paused``, ``limit`` or ``cursor``: one
    page of the database's schedules by name, and its ``next_cursor``."""
    ctx = context(request)
    errors = await reloading.config_errors_json(ctx.durably, _json.utc)
    query = _defs.page_query(request)
    if query is not None:
        return JSONResponse({**await _defs.schedules_page(request, query), "config_errors": errors})
    return JSONResponse(
        {"schedules": await schedules_json(ctx), "next_cursor": None, "config_errors": errors}
    )


def _changing(change: Callable[[Request, str], Awaitable[Response]]) -> Handler:
    @endpoint(act=True)
    async def handle(request: Request) -> Response:
        return await change(request, actor(request))

    return handle


create_schedule = _changing(_defs.create_schedule)
update_schedule = _changing(_defs.update_schedule)
delete_schedule = _changing(_defs.delete_schedule)
rollback_schedule = _changing(_defs.rollback_schedule)
schedule_versions = endpoint()(_defs.schedule_versions)


@endpoint()
async def get_schedule(request: Request) -> Response:
    ctx = context(request)
    entry = await _entry(ctx, request.path_params["name"])
    state = await ctx.durably.get_schedule_state(entry.name)
    row = await _stored(ctx, entry.name)
    return JSONResponse({"schedule": await schedule_json(ctx, entry, datetime.now(UTC), state, row)})


def actor(request: Request) -> str:
    """Who a pause or resume over HTTP is recorded as: ``http:<client address>`` (the address the
    connection comes from: behind a reverse proxy, the proxy's). Only the full-access token may
    act, so the token names no one further; clients cannot choose the name (no ``by`` field)."""
    client = request.client
    if client is None or not client.host:
        return "http"
    host = client.host
    return f"http:[{host}]" if ":" in host else f"http:{host}"


def _facade_knows_schedules(ctx: WebContext) -> None:
    """A Durably without a scheduler in this process (an app given only ``schedules=``) learns the
    schedules in use, so it checks names and can catch up, as a Scheduler would tell it."""
    config = ctx.schedules()
    if config is not None and ctx.durably.schedules_config is None:
        ctx.durably.use_schedules(config)


@endpoint(act=True)
async def pause_schedule(request: Request) -> Response:
    """Body ``{"reason"}`` (optional). Pausing a paused schedule changes nothing: 200 with
    ``changed: false`` and the pause in force (as the CLI's no-op)."""
    ctx = context(request)
    entry = await _entry(ctx, request.path_params["name"])
    body = await body_object(request, {"reason"})
    _facade_knows_schedules(ctx)
    change = await ctx.durably.pause_schedule(entry.name, reason=body.get("reason"), by=actor(request))
    return JSONResponse(
        {
            "schedule": await schedule_json(ctx, entry, datetime.now(UTC), change.state),
            "changed": change.changed,
        }
    )


@endpoint(act=True)
async def resume_schedule(request: Request) -> Response:
    """Body ``{"catchup"}`` (optional, false). 409 when the schedule is not paused and nothing was
    caught up; ``catchup: true`` on a schedule no longer paused catches up its last pause (as
    ``schedules resume --catchup``), and answers 200 with ``changed: false`` if that ran anything."""
    ctx = context(request)
    entry = await _entry(ctx, request.path_params["name"])
    body = await body_object(request, {"catchup"})
    catchup = body.get("catchup", False)
    if not isinstance(catchup, bool):
        raise ApiError(400, "bad_request", "catchup must be true or false")
    _facade_knows_schedules(ctx)
    try:
        result = await ctx.durably.resume_schedule(entry.name, catchup=catchup, by=actor(request))
    except UnknownJobError as exc:
        raise ApiError(
            409, "conflict", f"cannot catch up schedule '{entry.name}' in this process: {exc}"
        ) from None
    if not result.changed and result.triggered == 0:
        raise ApiError(409, "conflict", f"schedule '{entry.name}' is not paused; nothing to resume")
    return JSONResponse(
        {
            "schedule": await schedule_json(ctx, entry, datetime.now(UTC), result.state),
            "changed": result.changed,
            "caught_up": [
                {
                    "fire_time": _json.utc(t),
                    "outcome": r.outcome,
                    "run_id": r.run.id if r.run is not None else None,
                }
                for t, r in result.caught_up
            ],
        }
    )


# -- workers -----------------------------------------------------------------------------------------
@endpoint()
async def list_workers(request: Request) -> Response:
    """The worker registry, the scheduler registry (buckets owned, clock offsets) and the pending
    runs of jobs no live worker has (by job)."""
    durably = context(request).durably
    workers, schedulers, orphaned = await asyncio.gather(
        durably.list_workers(), durably.list_schedulers(), durably.jobs_without_worker()
    )
    return JSONResponse(
        {
            "workers": [_json.worker(w) for w in workers],
            "schedulers": [_json.scheduler(s) for s in schedulers],
            "jobs_without_worker": [{"job": job, "pending_runs": n} for job, n in orphaned.items()],
        }
    )


@endpoint()
async def schedule_history(request: Request) -> Response:
    ctx = context(request)
    name = request.path_params["name"]
    limit = parse_int(request.query_params.get("limit"), "limit", 50, 1, MAX_LIMIT)
    before_text = request.query_params.get("before")
    before = parse_time(before_text, "before") if before_text else None
    store = ctx.durably
    records = await store.list_fire_records(name, limit=limit, before=before)
    if not records and name not in _entries(ctx) and before is None and await _stored(ctx, name) is None:
        raise ApiError(404, "not_found", f"unknown schedule '{name}': not defined and no fire times recorded")
    statuses = await store.get_run_statuses([r.run_id for r in records if r.run_id])
    items = [
        _json.fire(
            r, fire_key(r.schedule, r.fire_time), statuses.get(r.run_id, "purged") if r.run_id else None
        )
        for r in records
    ]
    return JSONResponse({"records": items, "next": items[-1]["fire_time"] if len(records) == limit else None})


@endpoint(act=True)
async def trigger_schedule(request: Request) -> Response:
    ctx = context(request)
    entry = await _entry(ctx, request.path_params["name"])
    body = await body_object(request, {"at"})
    at_text = optional_str(body, "at")
    at = _in_zone(at_text, "at", entry) if at_text else None  # naive: the schedule's zone
    fire_time = manual.slot_time(entry, at)
    slot = await manual.trigger_slot(ctx.durably, entry, fire_time)
    run = slot.result.run
    return JSONResponse(
        {
            "schedule": entry.name,
            "fire_time": _json.utc(fire_time),
            "idempotency_key": slot.key,
            "outcome": slot.outcome,
            "recorded": slot.recorded,
            "run": _json.run(run) if run is not None else None,
        },
        201 if slot.outcome == "triggered" else 200,
    )


def _has_offset(text: str) -> bool:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return True


def _in_zone(text: str, name: str, entry: ScheduleEntry) -> datetime:
    value = parse_time(text, name)
    if not _has_offset(text):
        value = value.replace(tzinfo=entry.timezone)
    return value


@endpoint(act=True)
async def backfill_schedule(request: Request) -> Response:
    """Body ``{"from", "to", "dry_run", "force"}``; times without an offset are in the schedule's
    zone. A dry run lists the fire times and writes nothing."""
    ctx = context(request)
    entry = await _entry(ctx, request.path_params["name"])
    body = await body_object(request, {"from", "to", "dry_run", "force"})
    start, end = optional_str(body, "from"), optional_str(body, "to")
    if not start or not end:
        raise ApiError(400, "bad_request", "from and to are required (ISO 8601 times)")
    for flag in ("dry_run", "force"):
        if not isinstance(body.get(flag, False), bool):
            raise ApiError(400, "bad_request", f"{flag} must be true or false")
    times = await manual.plan_backfill(
        entry,
        _in_zone(start, "from", entry),
        _in_zone(end, "to", entry),
        force=bool(body.get("force")),
        names=("from", "to", '"force": true'),
    )
    planned = [
        {"fire_time": _json.utc(t), "local": t.isoformat(), "idempotency_key": fire_key(entry.name, t)}
        for t in times
    ]
    if body.get("dry_run"):
        return JSONResponse({"schedule": entry.name, "dry_run": True, "fire_times": planned})
    results = await manual.backfill(ctx.durably, entry, times)
    counts: dict[str, int] = {}
    for item, result in zip(planned, results, strict=True):
        item["outcome"] = result.outcome
        item["run_id"] = result.run.id if result.run else None
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    return JSONResponse({"schedule": entry.name, "dry_run": False, "fire_times": planned, "counts": counts})


def routes() -> list[BaseRoute]:
    return [
        Route("/jobs", list_jobs, methods=["GET"]),
        Route("/events", send_event, methods=["POST"]),
        Route("/jobs/{job}/trigger", trigger_job, methods=["POST"]),
        Route("/runs", list_runs, methods=["GET"]),
        Route("/runs/events", list_events, methods=["GET"]),
        Route("/runs/{run_id}", get_run, methods=["GET"]),
        Route("/runs/{run_id}", delete_run, methods=["DELETE"]),
        Route("/runs/{run_id}/steps", get_steps, methods=["GET"]),
        Route("/runs/{run_id}/logs", get_logs, methods=["GET"]),
        Route("/runs/{run_id}/events", run_events, methods=["GET"]),
        Route("/runs/{run_id}/retry", retry_run, methods=["POST"]),
        Route("/runs/{run_id}/retrigger", retrigger_run, methods=["POST"]),
        Route("/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
        Route("/schedules", list_schedules, methods=["GET"]),
        Route("/schedules", create_schedule, methods=["POST"]),
        Route("/schedules/{name}", get_schedule, methods=["GET"]),
        Route("/schedules/{name}", update_schedule, methods=["PATCH"]),
        Route("/schedules/{name}", delete_schedule, methods=["DELETE"]),
        Route("/schedules/{name}/versions", schedule_versions, methods=["GET"]),
        Route("/schedules/{name}/rollback", rollback_schedule, methods=["POST"]),
        Route("/schedules/{name}/history", schedule_history, methods=["GET"]),
        Route("/schedules/{name}/trigger", trigger_schedule, methods=["POST"]),
        Route("/schedules/{name}/backfill", backfill_schedule, methods=["POST"]),
        Route("/schedules/{name}/pause", pause_schedule, methods=["POST"]),
        Route("/schedules/{name}/resume", resume_schedule, methods=["POST"]),
        Route("/workers", list_workers, methods=["GET"]),
    ]


__all__ = ["routes"]
