"""Schedules as data over HTTP: create, change, delete, versions, rollback, and the paged list.

``POST /api/schedules`` takes the definition as the YAML spells it (durations as ``"6h"`` or a
number of seconds) plus a ``note``; ``PATCH /api/schedules/{name}`` the fields to change;
``DELETE`` an optional ``{"note"}``; ``POST .../rollback`` ``{"to", "note"}``. Only the full token
changes schedules (the read-only token sees them and their versions); the change is recorded as
made ``by`` ``http:<client address>``, as pauses are. Bad definitions are 400 naming the field, a
YAML schedule's definition or a name in use 409, an unknown schedule 404.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..record_fields import version_fields
from ..store.schedule_defs import ScheduleDef, ScheduleVersion
from ._context import context
from ._parse import ApiError, body_object, parse_int
from ._schedules import rows_json

FIELDS = {
    "cron", "job", "input", "timezone", "labels", "catchup", "catchup_window", "overlap", "jitter",
    "retry", "timeout", "enabled", "pause_after_failures",
}  # fmt: skip
"""The definition's fields (the YAML's names)."""


def version_json(version: ScheduleVersion) -> dict[str, Any]:
    return version_fields(version, what_changed=True)


def _note(body: dict[str, Any]) -> str | None:
    note = body.pop("note", None)
    if note is not None and not isinstance(note, str):
        raise ApiError(400, "bad_request", "note must be a string")
    return note


async def _one(request: Request, row: ScheduleDef, status: int = 200) -> Response:
    [item] = await rows_json(context(request), [row])
    return JSONResponse({"schedule": item}, status)


async def create_schedule(request: Request, by: str) -> Response:
    body = await body_object(request, FIELDS | {"name", "note"})
    note = _note(body)
    name = body.pop("name", None)
    if not isinstance(name, str):
        raise ApiError(400, "bad_request", "name: required, a string")
    for field in ("cron", "job"):
        if not isinstance(body.get(field), str):
            raise ApiError(400, "bad_request", f"{field}: required, a string")
    row = await context(request).durably.schedules.create(name, **body, note=note, by=by)
    return await _one(request, row, 201)


async def update_schedule(request: Request, by: str) -> Response:
    name = request.path_params["name"]
    body = await body_object(request, FIELDS | {"note"})
    note = _note(body)
    if not body:
        raise ApiError(400, "bad_request", "nothing to change: give at least one field of the definition")
    return await _one(
        request, await context(request).durably.schedules.update(name, **body, note=note, by=by)
    )


async def delete_schedule(request: Request, by: str) -> Response:
    name = request.path_params["name"]
    body = await body_object(request, {"note"})
    version = await context(request).durably.schedules.delete(name, note=_note(body), by=by)
    return JSONResponse({"deleted": name, "version": version_json(version)})


async def rollback_schedule(request: Request, by: str) -> Response:
    name = request.path_params["name"]
    body = await body_object(request, {"to", "note"})
    to = body.get("to")
    if isinstance(to, bool) or not isinstance(to, int):
        raise ApiError(400, "bad_request", "to: required, a version number")
    return await _one(
        request, await context(request).durably.schedules.rollback(name, to=to, note=_note(body), by=by)
    )


async def schedule_versions(request: Request) -> Response:
    versions = await context(request).durably.schedules.versions(request.path_params["name"])
    return JSONResponse({"versions": [version_json(v) for v in versions]})


def page_query(request: Request) -> dict[str, Any] | None:
    """The list's filters when any is given (then one page of the database's schedules)."""
    params = request.query_params
    keys = {"job", "label", "source", "q", "paused", "limit", "cursor"}
    if not keys & set(params):
        return None
    labels: dict[str, str] = {}
    for item in params.getlist("label"):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise ApiError(400, "bad_request", f"label must be KEY:VALUE, not '{item[:64]}'")
        labels[key] = value
    paused = params.get("paused")
    if paused not in (None, "true", "false"):
        raise ApiError(400, "bad_request", "paused must be true or false")
    return {
        "job": params.get("job") or None,
        "labels": labels or None,
        "source": params.get("source") or None,
        "q": params.get("q") or None,
        "paused": None if paused is None else paused == "true",
        "limit": parse_int(params.get("limit"), "limit", 50, 1, 1000),
        "cursor": params.get("cursor") or None,
    }


async def schedules_page(request: Request, query: dict[str, Any]) -> dict[str, Any]:
    ctx = context(request)
    page = await ctx.durably.schedules.list(**query)
    return {"schedules": await rows_json(ctx, page.items), "next_cursor": page.next_cursor}


__all__ = [
    "FIELDS",
    "create_schedule",
    "delete_schedule",
    "page_query",
    "rollback_schedule",
    "schedule_versions",
    "schedules_page",
    "update_schedule",
    "version_json",
]
