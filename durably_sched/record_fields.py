"""Stored records as JSON fields, one shape for the CLI's ``--json`` and the HTTP API.

Like :func:`~durably_sched.schedule.pausing.state_fields` and the worker and attempt fields, they
are written once, so the CLI and the API say the same thing about a step, a log entry or a fire
time by construction. Times are UTC ISO 8601 with milliseconds and ``Z``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .store.base import FireRecord, LogRecord, RunRecord, StepRecord
from .store.schedule_defs import ScheduleVersion


def utc_text(value: datetime | None) -> str | None:
    """``2026-11-21T04:30:02.123Z``: every time in ``--json`` and the API (UTC, milliseconds)."""
    if value is None:
        return None
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def attributes(record: object, *names: str) -> dict[str, Any]:
    """``{name: record.name}`` for each name, in the order given."""
    return {name: getattr(record, name) for name in names}


def utc_attributes(record: object, *names: str) -> dict[str, str | None]:
    """``{name: utc_text(record.name)}`` for each name: the record's times as JSON text."""
    return {name: utc_text(getattr(record, name)) for name in names}


def step_fields(step: StepRecord) -> dict[str, Any]:
    return {
        "name": step.name,
        "index": step.index,
        "started_at": utc_text(step.started_at),
        "completed_at": utc_text(step.completed_at),
        "duration": step.duration,
        "output": json.loads(step.output_json),
    }


def log_fields(entry: LogRecord) -> dict[str, Any]:
    return {
        "id": entry.id,
        "created_at": utc_text(entry.created_at),
        "level": entry.level,
        "step_name": entry.step_name,
        "message": entry.message,
        "data": entry.data,
    }


def run_key_fields(run: RunRecord) -> dict[str, Any]:
    """What a run is and where it came from: the first fields of a run in ``--json`` and the API."""
    return {
        **attributes(run, "id", "job_name", "status", "idempotency_key", "concurrency_key"),
        "labels": dict(run.labels),
        "schedule": run.labels.get("schedule"),
        "schedule_version": run.schedule_version,
    }


def version_fields(version: ScheduleVersion, *, what_changed: bool = False) -> dict[str, Any]:
    """One version of a schedule's definition; ``what_changed`` adds the changes in words."""
    fields: dict[str, Any] = {
        "version": version.version,
        "op": version.op,
        "source": version.source,
        "by": version.by,
        "at": utc_text(version.at),
        "note": version.note,
        "changed": list(version.changed),
    }
    if what_changed:
        fields["what_changed"] = version.what_changed
    fields["definition"] = version.definition
    return fields


def fire_fields(record: FireRecord, key: str, run_status: str | None) -> dict[str, Any]:
    return {
        "schedule": record.schedule,
        "fire_time": utc_text(record.fire_time),
        "idempotency_key": key,
        "outcome": record.outcome,
        "run_id": record.run_id,
        "run_status": run_status,
        "recorded_at": utc_text(record.recorded_at),
    }


def clock_text(seconds: float) -> str:
    """A duration of a minute or more as ``4m05s`` or ``2h03m`` (the CLI's tables and the pages)."""
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
