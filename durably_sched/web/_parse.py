"""Reading what an HTTP client sends: JSON bodies, query parameters, times, cursors, event ids.

Every check answers with :class:`ApiError` (400 and one line naming the field), so nothing a
client sends reaches the library in a form that ends in a 500:

* a JSON body nested deeper than :data:`MAX_DEPTH` (Python's decoder and encoders recurse);
* text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, which UTF-8 cannot
  encode) or that holds a NUL character (PostgreSQL's text and jsonb refuse it), in a body, a query
  parameter or a path segment;
* times outside the supported range, the one slots and backfills use (``schedule.manual``: years
  2 to 9998 in UTC; zone offsets and cron arithmetic near the calendar's ends overflow datetime);
* whole numbers (cursors, ``Last-Event-ID``, limits) that are not ASCII digits or do not fit 64 bits
  (``str.isdigit`` accepts ``"²"``, and ``int`` accepts Arabic-Indic digits).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from ..schedule.manual import EARLIEST, LATEST, OUT_OF_RANGE
from ..store.base import RUN_STATUSES, RunQuery

__all__ = [
    "MAX_DEPTH",
    "ApiError",
    "body_object",
    "check_request_text",
    "event_id",
    "optional_str",
    "parse_int",
    "parse_time",
    "run_query",
    "shown",
]

MAX_DEPTH = 64
"""How deeply a JSON body may nest objects and arrays."""
INT64_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}", re.ASCII)
_INTEGER = re.compile(r"-?[0-9]{1,19}", re.ASCII)
_SUSPECT = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")  # escapes of surrogates or NUL


class ApiError(Exception):
    """An answer other than 2xx: ``{"error": error, "detail": detail}`` with ``status``."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def bad(detail: str) -> ApiError:
    return ApiError(400, "bad_request", detail)


def shown(text: str) -> str:
    """``text`` safe to put in an answer: one line, lone surrogates as ``\\udxxx`` escapes."""
    return " ".join(text.encode("utf-8", "backslashreplace").decode("utf-8").split())


# -- text --------------------------------------------------------------------------------------------
def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored (None: it can)."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode (a lone surrogate U+{ord(text[exc.start]):04X} at {exc.start})"
    return None


def check_request_text(request: Request) -> None:
    """Query parameters and path segments: valid Unicode without NUL (percent-encoding can carry it)."""
    for name, value in (*request.query_params.multi_items(), *request.path_params.items()):
        for part in (name, str(value)):
            problem = text_problem(part)
            if problem is not None:
                raise bad(f"{name[:64]!r} {problem}")


def _path(node: tuple[Any, ...] | None) -> str:
    keys: list[Any] = []
    while node is not None:
        node, key = node
        keys.append(key)
    if not keys:
        return "the body"
    keys.reverse()
    text = str(keys[0])
    for key in keys[1:]:
        text += f"[{key}]" if isinstance(key, int) else f".{key}"
    return text[:200]


def check_json(value: Any, *, text: bool) -> None:
    """Nesting depth (always) and strings (when ``text``: the raw body had a suspect escape),
    without recursion; the error names the field, e.g. ``input.items[3].name``."""
    stack: list[tuple[Any, tuple[Any, ...] | None, int]] = [(value, None, 0)]
    while stack:
        item, node, depth = stack.pop()
        if isinstance(item, dict):
            if depth >= MAX_DEPTH:
                raise bad(f"{_path(node)}: nested deeper than {MAX_DEPTH} levels")
            for key, child in item.items():
                if text:
                    problem = text_problem(key)
                    if problem is not None:
                        raise bad(f"{_path(node)}: a key {problem}")
                stack.append((child, (node, key), depth + 1))
        elif isinstance(item, list):
            if depth >= MAX_DEPTH:
                raise bad(f"{_path(node)}: nested deeper than {MAX_DEPTH} levels")
            stack.extend((child, (node, i), depth + 1) for i, child in enumerate(item))
        elif text and isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                raise bad(f"{_path(node)} {problem}")


async def body_object(request: Request, allowed: set[str]) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` fields ({} when empty)."""
    raw = await request.body()  # bounded by the app's body limit (413 past it, see _limits.py)
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise bad(f"the body: nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(value, dict):
        raise bad("the body must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        shown = ", ".join(u[:80] for u in unknown[:10])
        raise bad(f"unknown field(s) {shown}; allowed: {', '.join(sorted(allowed))}")
    check_json(value, text=_SUSPECT.search(raw) is not None)
    return value


def optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise bad(f"{name} must be a string")
    return value


# -- numbers and times -------------------------------------------------------------------------------
def parse_time(text: str, name: str) -> datetime:
    """ISO 8601; a time without an offset is UTC. Within EARLIEST..LATEST once in UTC."""
    stripped = text.strip()
    try:
        value = datetime.fromisoformat(stripped[:-1] + "+00:00" if stripped.endswith("Z") else stripped)
    except ValueError:
        raise bad(f"{name}: '{text[:64]}' is not an ISO 8601 time (e.g. 2026-05-01T02:00:00Z)") from None
    value = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        in_utc = value.astimezone(UTC)
    except OverflowError:
        in_utc = None
    if in_utc is None or not EARLIEST <= in_utc <= LATEST:
        raise bad(f"{name}: '{text[:64]}' {OUT_OF_RANGE}")
    return value


def parse_int(text: str | None, name: str, default: int, low: int, high: int) -> int:
    """An integer of ASCII digits (optional minus) within ``low``..``high``; ``default`` when absent."""
    if text is None or text == "":
        return default
    if _INTEGER.fullmatch(text) is None:
        raise bad(f"{name} must be an integer, not '{text[:64]}'")
    value = int(text)
    if not low <= value <= high:
        raise bad(f"{name} must be between {low} and {high}")
    return value


def event_id(request: Request) -> int:
    """The ``Last-Event-ID`` a reconnecting EventSource sends (0 when absent)."""
    header = request.headers.get("last-event-id", "").strip()
    if not header:
        return 0
    if _DIGITS.fullmatch(header) is None or int(header) > INT64_MAX:
        raise bad(f"Last-Event-ID must be a log id (ASCII digits, at most {INT64_MAX}), not '{header[:64]}'")
    return int(header)


def _cursor(text: str | None) -> str | None:
    if not text:
        return None
    if _DIGITS.fullmatch(text) is None or int(text) > INT64_MAX:
        raise bad(f"invalid cursor '{text[:64]}' (use the `next` value of a previous page)")
    return text


# -- the run list's query ----------------------------------------------------------------------------
_RUN_PARAMS = ("job", "status", "schedule", "created_after", "created_before", "limit", "cursor", "labels")
MAX_LIMIT = 500


def _label_filters(request: Request) -> tuple[dict[str, str], bool]:
    """``label.KEY=VALUE`` parameters and the dashboard's ``labels=team=ops env=prod``; the flag
    says two values were asked for one key (then nothing matches)."""
    params = request.query_params
    pairs = [(k[len("label.") :], v) for k, v in params.multi_items() if k.startswith("label.")]
    for text in params.getlist("labels"):
        for pair in text.split():
            name, sep, value = pair.partition("=")
            if not sep or not name:
                raise bad(f"labels: '{pair[:64]}' is not KEY=VALUE")
            pairs.append((name, value))
    labels: dict[str, str] = {}
    conflicting = False
    for name, value in pairs:
        if not name:
            raise bad("label filters are written label.KEY=VALUE")
        conflicting = conflicting or labels.get(name, value) != value
        labels[name] = value
    return labels, conflicting


def run_query(request: Request) -> RunQuery:
    params = request.query_params
    unknown = sorted(k for k in params if k not in _RUN_PARAMS and not k.startswith("label."))
    if unknown:
        shown = ", ".join(u[:80] for u in unknown[:10])
        raise bad(f"unknown query parameter(s) {shown}; known: {', '.join(sorted(_RUN_PARAMS))}, label.KEY")
    statuses = params.getlist("status")
    wrong = [s for s in statuses if s not in RUN_STATUSES]
    if wrong:
        raise bad(f"status '{wrong[0][:64]}' is not one of {', '.join(RUN_STATUSES)}")
    labels, conflicting = _label_filters(request)
    after, before = params.get("created_after"), params.get("created_before")
    return RunQuery(
        statuses=tuple(statuses),  # type: ignore[arg-type]
        job_names=tuple(dict.fromkeys(params.getlist("job"))),
        job_name="" if conflicting else None,  # no job is named "": nothing matches
        schedule=params.get("schedule") or None,
        labels=labels,
        created_after=parse_time(after, "created_after") if after else None,
        before_created=parse_time(before, "created_before") if before else None,
        limit=parse_int(params.get("limit"), "limit", 50, 1, MAX_LIMIT),
        cursor=_cursor(params.get("cursor")),
    )
