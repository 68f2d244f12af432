"""The JSON shapes of the HTTP API. Where the CLI's ``--json`` shows the same record (a step, a log
entry, a fire record, a schedule's state, a worker, an attempt) both use the one function that
writes its fields (``record_fields``, ``state_fields``, ``worker_fields``, ``attempt_fields``). Times
are UTC ISO 8601 with milliseconds and ``Z``.

Lists and event streams never carry a large value whole: a run's input, output or labels, a step's
output or a log's data whose JSON is over :data:`PREVIEW_BYTES` is replaced by the marker
``{"$truncated": <its size in bytes>}``, and long texts (an error, a traceback, a log message) are
cut at :data:`PREVIEW_CHARS` characters with a note. The detail views (``GET /api/runs/{id}``,
``/steps``, ``/logs``) carry every value whole; a client that meets the marker fetches it there."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..attempt_views import attempt_fields, not_recorded, retry_budget
from ..events import Event, StepCompleteEvent
from ..record_fields import fire_fields, log_fields, run_key_fields, step_fields, utc_text
from ..registry import worker_fields
from ..schedule.ownership import scheduler_fields
from ..schedule.pausing import state_fields
from ..store.base import (
    FireRecord,
    LogRecord,
    Progress,
    RunRecord,
    SchedulerRecord,
    ScheduleState,
    StepRecord,
    WorkerRecord,
)
from ..wait_views import children_fields, wait_fields, waiting_for_text

if TYPE_CHECKING:
    from ..ports import WebFacade

PREVIEW_BYTES = 4096
"""The largest value (as UTF-8 JSON) a list row or a streamed event carries whole."""
PREVIEW_CHARS = 2000
"""The longest text a list row or a streamed event carries whole."""
ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
"""Compact JSON, as the API's streams send it."""
ENCODE_ANY = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode
""":data:`ENCODE` for values JSON does not know (written as their ``str``)."""


def bounded(value: Any) -> Any:
    """``value``, or ``{"$truncated": size}`` when its JSON is over :data:`PREVIEW_BYTES`."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) and len(value) <= PREVIEW_BYTES // 4:
        return value
    size = len(ENCODE_ANY(value).encode("utf-8", "surrogatepass"))
    return value if size <= PREVIEW_BYTES else {"$truncated": size}


def clipped(text: str | None) -> str | None:
    """``text`` cut at :data:`PREVIEW_CHARS` characters, saying how much was left out."""
    if text is None or len(text) <= PREVIEW_CHARS:
        return text
    return text[:PREVIEW_CHARS] + f"\u2026 [{len(text) - PREVIEW_CHARS} more characters]"


utc = utc_text


def progress(value: Progress | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"current": value.current, "total": value.total, "message": value.message}


def duration(run: RunRecord) -> float | None:
    if run.started_at is None:
        return None
    end = run.completed_at or datetime.now(UTC)
    return max(0.0, (end - run.started_at).total_seconds())


def run(record: RunRecord) -> dict[str, Any]:
    return {
        **run_key_fields(record),
        "scheduled_for": record.labels.get("scheduled_for"),
        "input": record.input,
        "output": record.output,
        "error": record.error,
        "traceback": record.traceback,
        "failed_step_name": record.failed_step_name,
        "progress": progress(record.progress),
        "attempt": record.attempt,
        "failed_attempts": record.failed_attempts,
        "not_before": utc(record.not_before),
        "step_count": record.step_count,
        "worker_id": record.worker_id,
        "lease_expires_at": utc(record.lease_expires_at),
        "created_at": utc(record.created_at),
        "started_at": utc(record.started_at),
        "completed_at": utc(record.completed_at),
        "updated_at": utc(record.updated_at),
        "duration": duration(record),
        **wait_fields(record),
    }


async def run_detail(durably: WebFacade, run_id: str) -> dict[str, Any]:
    """A run with every attempt that ended (oldest first, as in ``runs show --json``), the most
    tries its retry policy allows (``max_attempts``, None without one) and how many attempts
    before the first recorded one were never recorded (they ended before the upgrade)."""
    return await detail_of(durably, await durably.get_run(run_id))


async def detail_of(durably: WebFacade, record: RunRecord) -> dict[str, Any]:
    """:func:`run_detail` of a run already read."""
    budget = retry_budget(durably, record)
    attempts = await durably.get_attempts(record.id)
    children = await durably.list_children(record.id)
    return {
        **run(record),
        "waiting_for_text": waiting_for_text(record),
        "children": children_fields(children),
        "max_attempts": budget,
        "attempts": [attempt_fields(a, utc, budget) for a in attempts],
        "attempts_not_recorded": not_recorded(attempts),
    }


def run_row(record: RunRecord) -> dict[str, Any]:
    """A run in a list (``GET /api/runs``, the dashboard's tables, a stream's snapshot): the detail
    shape with large values replaced by markers and long texts cut (see the module docstring)."""
    row = run(record)
    for name in ("input", "output", "labels"):
        row[name] = bounded(row[name])
    for name in ("error", "traceback"):
        row[name] = clipped(row[name])
    return row


def run_summary(record: RunRecord) -> dict[str, Any]:
    """A run as the run-list stream sends it: the list's columns, without input, output and labels
    (sent to every list subscriber on every change, so kept small)."""
    return {
        "id": record.id,
        "job_name": record.job_name,
        "status": record.status,
        "schedule": record.labels.get("schedule"),
        "idempotency_key": record.idempotency_key,
        "progress": progress(record.progress),
        "attempt": record.attempt,
        "step_count": record.step_count,
        "error": record.error[:200] if record.error else None,
        "failed_step_name": record.failed_step_name,
        "created_at": utc(record.created_at),
        "started_at": utc(record.started_at),
        "completed_at": utc(record.completed_at),
        "duration": duration(record),
    }


def step(record: StepRecord) -> dict[str, Any]:
    return step_fields(record)


def step_row(record: StepRecord) -> dict[str, Any]:
    """A step in a stream's snapshot: its output bounded."""
    return {**step(record), "output": bounded(json.loads(record.output_json))}


def log_row(entry: LogRecord) -> dict[str, Any]:
    """A log in a stream's snapshot: its message cut and its data bounded."""
    return {**log(entry), "message": clipped(entry.message), "data": bounded(entry.data)}


def log(entry: LogRecord) -> dict[str, Any]:
    return log_fields(entry)


def fire(record: FireRecord, key: str, run_status: str | None) -> dict[str, Any]:
    return fire_fields(record, key, run_status)


_EVENT_FIELDS: dict[type, tuple[str, ...]] = {}


def _event_fields(kind: type) -> tuple[str, ...]:
    """An event class's fields after ``type`` and ``timestamp``, in declaration order."""
    names = _EVENT_FIELDS.get(kind)
    if names is None:  # once per event class
        names = tuple(n for n in getattr(kind, "__dataclass_fields__", {}) if n not in ("type", "timestamp"))
        _EVENT_FIELDS[kind] = names
    return names


def event(value: Event) -> dict[str, Any]:
    """An event of the run feed: its fields, JSON-ready."""
    out: dict[str, Any] = {"type": value.type, "timestamp": value.timestamp}
    for name in _event_fields(type(value)):
        item = getattr(value, name)
        if isinstance(item, (Progress, datetime)):
            item = progress(item) if isinstance(item, Progress) else utc(item)
        out[name] = item
    return out


_TEXTS = ("message", "error", "traceback")
_VALUES = ("input", "output", "data", "skipped_input", "labels")


def streamed_event(value: Event) -> dict[str, Any]:
    """An event as a stream sends it: :func:`event` with large values bounded, long texts cut."""
    out = event(value)
    for name in _TEXTS:
        if isinstance(out.get(name), str):
            out[name] = clipped(out[name])
    for name in _VALUES:
        if name in out:
            out[name] = bounded(out[name])
    return out


# -- a streamed event's JSON, written field by field -----------------------------------------------------
# A stream sends every step of every watched run, so an event's encoding is on the hot path of a busy
# server (benchmark 9a): building the dict of ``streamed_event`` and handing it to the encoder cost
# about three times what writing the text directly does. ``streamed_event_json`` writes the same text.
_STRING = json.encoder.encode_basestring  # what ENCODE writes a string with (ensure_ascii=False)
_PLAIN, _TEXT, _VALUE, _LABELS = 0, 1, 2, 3
_PLANS: dict[type, tuple[tuple[str, str, int], ...]] = {}


def value_json(value: Any) -> str:
    """``value`` as :data:`ENCODE` writes it inside a document (:data:`ENCODE_ANY` when it holds a
    value JSON does not know); scalars without the encoder's call."""
    kind = type(value)
    if kind is str:
        return _STRING(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    if value is None:
        return "null"
    try:
        return ENCODE(value)
    except TypeError:
        return ENCODE_ANY(value)


_LABELS_JSON: dict[int, tuple[Any, dict[Any, Any], str]] = {}


def _labels_json(value: Any) -> str:
    """``value_json(bounded(value))`` of an event's labels, remembered by identity: the events made
    from one read of a run share its labels dict. The entry holds the dict (so its id stays its own)
    and a copy (a dict changed in place since is written again)."""
    if type(value) is not dict:
        return value_json(bounded(value))
    if not value:
        return "{}"
    known = _LABELS_JSON.get(id(value))
    if known is not None and known[0] is value and known[1] == value:
        return known[2]
    text = value_json(bounded(value))
    if len(_LABELS_JSON) >= 256:
        _LABELS_JSON.clear()
    _LABELS_JSON[id(value)] = (value, dict(value), text)
    return text


def _treatment(name: str) -> int:
    if name == "labels":
        return _LABELS
    return _TEXT if name in _TEXTS else _VALUE if name in _VALUES else _PLAIN


def _plan(kind: type) -> tuple[tuple[str, str, int], ...]:
    plan = _PLANS.get(kind)
    if plan is None:  # once per event class: each field's key, and what streamed_event does to it
        plan = tuple((name, f",{_STRING(name)}:", _treatment(name)) for name in _event_fields(kind))
        _PLANS[kind] = plan
    return plan


def streamed_event_json(value: Event) -> str:
    """``ENCODE(streamed_event(value))``, written without building the dict."""
    if type(value) is StepCompleteEvent and _usual_step(value):
        return _step_complete_json(value)
    parts = ['{"type":', value_json(value.type), ',"timestamp":', value_json(value.timestamp)]
    for name, key, treatment in _plan(type(value)):
        item = getattr(value, name)
        if isinstance(item, (Progress, datetime)):
            item = progress(item) if isinstance(item, Progress) else utc(item)
        if treatment == _LABELS:
            parts += (key, _labels_json(item))
            continue
        if treatment == _VALUE:
            item = bounded(item)
        elif treatment == _TEXT and isinstance(item, str):
            item = clipped(item)
        parts += (key, value_json(item))
    parts.append("}")
    return "".join(parts)


def schedule_state(state: ScheduleState | None) -> dict[str, Any]:
    """A schedule's run-time state, as in ``schedules list --json`` (see ``state_fields``)."""
    return state_fields(state, utc)


def worker(record: WorkerRecord) -> dict[str, Any]:
    """A row of the worker registry, as ``workers list --json`` writes it."""
    return worker_fields(record, utc)


def scheduler(record: SchedulerRecord) -> dict[str, Any]:
    """A row of the scheduler registry (who owns how many schedule buckets, its clock's offset)."""
    return scheduler_fields(record, utc)


def _usual_step(value: StepCompleteEvent) -> bool:
    """Fields of the types a stored step's event has (a value of another type, as a test or an
    in-process caller may make, takes the general loop)."""
    return (
        type(value.timestamp) is float
        and type(value.run_id) is str
        and type(value.job_name) is str
        and type(value.labels) is dict
        and type(value.step_name) is str
        and type(value.step_index) is int
        and type(value.duration) is float
        and not isinstance(value.output, (Progress, datetime))
    )


def _step_complete_json(value: StepCompleteEvent) -> str:
    """:func:`streamed_event_json` of a completed step (the event a busy stream carries most) with
    the usual field types: the same text, without the general loop's per-field checks."""
    return "".join(
        (
            '{"type":',
            value_json(value.type),
            ',"timestamp":',
            value_json(value.timestamp),
            ',"run_id":',
            _STRING(value.run_id),
            ',"job_name":',
            _STRING(value.job_name),
            ',"labels":',
            _labels_json(value.labels),
            ',"step_name":',
            _STRING(value.step_name),
            ',"step_index":',
            int.__repr__(value.step_index),
            ',"output":',
            value_json(bounded(value.output)),
            ',"duration":',
            value_json(value.duration),
            "}",
        )
    )
