"""``durably.schedules``: schedules as data, created, changed and deleted at run time.

Every schedule lives in the database with a source: ``yaml`` (an entry of schedules.yaml, synced by
the serves that load the file; the file stays its source of truth, so its definition cannot be
changed here) or ``api`` (made through this manager, the CLI, the HTTP API or the dashboard). Each
change is a version (:meth:`ScheduleManager.versions`) and every running scheduler applies it
within a second. Definitions are checked as the YAML's entries are (the same model and messages),
raised as :class:`~durably_sched.errors.InvalidArgumentError` naming the field; with jobs
registered in this process, the job must be one of them and the input must fit its model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InputValidationError, InvalidArgumentError, ScheduleNotFoundError
from ..schedule.config import ScheduleEntry, entry_definition, validate_entry
from ..schedule.cron import SCHEDULE_NAME_PATTERN
from ..store.schedule_defs import (
    DefChange,
    Op,
    ScheduleDef,
    ScheduleDefPage,
    ScheduleDefQuery,
    ScheduleVersion,
    decide,
    decode_cursor,
)

if TYPE_CHECKING:
    from ..jobs import JobDefinition
    from ..store.base import NewRun, Store


class _Clock(Protocol):
    def now(self) -> datetime: ...


class Durably(Protocol):
    """What the manager uses of the facade."""

    store: Store
    schedule_clock: _Clock | None

    @property
    def job_names(self) -> list[str]: ...
    def job_by_name(self, name: str) -> JobDefinition[Any, Any]: ...
    def scheduled_run(self, schedule: str, run: NewRun) -> NewRun: ...


__all__ = ["MAX_PAGE", "ScheduleManager"]

MAX_PAGE = 1000
"""The longest page :meth:`ScheduleManager.list` returns."""
_UNSET: Any = object()
_SOURCES = ("yaml", "api")


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not re.fullmatch(SCHEDULE_NAME_PATTERN, name, re.ASCII):
        raise InvalidArgumentError(
            f"name: invalid schedule name {name!r} (use only letters, digits, '_', '.' and '-')"
        )
    return name


class ScheduleManager:
    """Create, change, delete and list schedules; their versions and rollbacks (module notes)."""

    def __init__(self, durably: Durably) -> None:
        self._durably = durably

    # -- checks ----------------------------------------------------------------------------------
    def _entry(self, name: str, values: Mapping[str, Any]) -> ScheduleEntry:
        durably = self._durably
        jobs = {job: durably.job_by_name(job).input for job in durably.job_names}
        entry = validate_entry(name, values, jobs or None)
        for field in ("input", "labels"):  # PostgreSQL's jsonb cannot hold NUL: refused on every backend
            if _has_nul(getattr(entry, field)):
                raise InvalidArgumentError(f"schedule '{name}': {field}: a NUL character cannot be stored")
        if entry.job in jobs:
            from ..schedule.firing import CHECK_TIME, scheduled_run

            try:  # the limits of a stored run (input size, labels, keys), as at every fire time
                durably.scheduled_run(name, scheduled_run(entry, CHECK_TIME))
            except InputValidationError as exc:
                raise InvalidArgumentError(str(exc)) from None
        return entry

    def _words(self, note: object, by: object) -> tuple[str | None, str]:
        from ..schedule.pausing import check_actor, check_reason

        try:
            return check_reason(note), check_actor(by)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(str(exc).replace("the pause reason", "note")) from None

    async def _live(self, name: str) -> ScheduleDef:
        row = await self._durably.store.get_schedule_def(_check_name(name))
        if row is None or row.deleted:
            raise ScheduleNotFoundError(f"unknown schedule '{name}'")
        return row

    async def _save(
        self, name: str, op: Op, entry: ScheduleEntry | None, note: str | None, by: str | None
    ) -> ScheduleVersion | None:
        text, actor = self._words(note, by)
        definition = None if entry is None else entry_definition(entry)
        clock = self._durably.schedule_clock
        at = clock.now() if clock is not None else None
        return await self._durably.store.save_schedule(
            DefChange(name, op, "api", definition, actor, text, at)
        )

    # -- changes ---------------------------------------------------------------------------------
    async def create(
        self,
        name: str,
        *,
        cron: str,
        job: str,
        input: Mapping[str, Any] | None = None,
        timezone: str | None = None,
        labels: Mapping[str, str] | None = None,
        catchup: str = _UNSET,
        catchup_window: str | float | timedelta = _UNSET,
        overlap: str = _UNSET,
        jitter: str | float | timedelta = _UNSET,
        retry: Mapping[str, Any] | None = None,
        timeout: str | float | timedelta | None = None,
        enabled: bool = True,
        pause_after_failures: int | None = None,
        note: str | None = None,
        by: str | None = None,
    ) -> ScheduleDef:
        """Create an API schedule (version 1); it fires from its next fire time after now.

        Parameters left out take the YAML's defaults (``catchup: all``, ``catchup_window: 24h``,
        ``overlap: queue``, no jitter, UTC). A name in use (by either source) is refused with
        :class:`~durably_sched.store.schedule_defs.ScheduleConflictError`."""
        values: dict[str, Any] = {"cron": cron, "job": job, "enabled": enabled}
        optional = {
            "input": input, "timezone": timezone, "labels": labels, "retry": retry, "timeout": timeout,
            "pause_after_failures": pause_after_failures,
        }  # fmt: skip
        values.update((k, v) for k, v in optional.items() if v is not None)
        given = {"catchup": catchup, "catchup_window": catchup_window, "overlap": overlap, "jitter": jitter}
        values.update((k, v) for k, v in given.items() if v is not _UNSET)
        await self._save(name, "create", self._entry(_check_name(name), values), note, by)
        return await self._live(name)

    async def update(
        self, name: str, *, note: str | None = None, by: str | None = None, **changes: Any
    ) -> ScheduleDef:
        """Change some fields of an API schedule (``cron="0 3 * * *"``, ``timeout=None`` to
        remove one); a new version when anything changed. A new cron or zone fires from the
        change on: fire times of the old expression that were not yet due are not caught up."""
        current = await self._live(name)
        decide(current, DefChange(name, "update", "api", current.definition))  # refuses a YAML schedule
        values = {k: v for k, v in {**current.definition, **changes}.items() if v is not None}
        await self._save(name, "update", self._entry(name, values), note, by)
        return await self._live(name)

    async def delete(self, name: str, *, note: str | None = None, by: str | None = None) -> ScheduleVersion:
        """Delete an API schedule: it fires nothing more (its history and versions stay)."""
        await self._live(name)
        version = await self._save(name, "delete", None, note, by)
        assert version is not None
        return version

    async def rollback(
        self, name: str, *, to: int, note: str | None = None, by: str | None = None
    ) -> ScheduleDef:
        """Make version ``to``'s definition the newest (a new version, op ``rollback``)."""
        if isinstance(to, bool) or not isinstance(to, int):
            raise InvalidArgumentError(f"to: expected a version number, got {to!r}")
        await self._live(name)
        versions = {v.version: v for v in await self._durably.store.schedule_versions(name)}
        target = versions.get(to)
        if target is None or target.definition is None:
            known = ", ".join(str(n) for n, v in versions.items() if v.definition is not None)
            raise InvalidArgumentError(
                f"to: schedule '{name}' has no version {to} to roll back to (versions: {known})"
            )
        entry = self._entry(name, target.definition)
        await self._save(name, "rollback", entry, note or f"rollback to version {to}", by)
        return await self._live(name)

    # -- reads -----------------------------------------------------------------------------------
    async def get(self, name: str) -> ScheduleDef | None:
        """The schedule's newest version; None when there is none (or it was deleted)."""
        row = await self._durably.store.get_schedule_def(_check_name(name))
        return None if row is None or row.deleted else row

    async def versions(self, name: str) -> list[ScheduleVersion]:
        """Every version of the schedule (a deleted one's too), oldest first."""
        versions = await self._durably.store.schedule_versions(_check_name(name))
        if not versions:
            raise ScheduleNotFoundError(f"unknown schedule '{name}'")
        return versions

    async def list(
        self,
        *,
        job: str | None = None,
        labels: Mapping[str, str] | None = None,
        source: str | None = None,
        q: str | None = None,
        paused: bool | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ScheduleDefPage:
        """One page of schedules by name; ``next_cursor`` continues it (None: the last page)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidArgumentError(f"limit: expected a whole number from 1 to {MAX_PAGE}, got {limit!r}")
        if source is not None and source not in _SOURCES:
            raise InvalidArgumentError(f"source: expected 'yaml' or 'api', got {source!r}")
        try:
            after = decode_cursor(cursor) if cursor is not None else None
        except ValueError as exc:
            raise InvalidArgumentError(f"cursor: {exc}") from None
        query = ScheduleDefQuery(
            job=job, labels=dict(labels) if labels else None, source=source,  # type: ignore[arg-type]
            q=q or None, paused=paused, limit=limit, after=after,
        )  # fmt: skip
        return await self._durably.store.list_schedule_defs(query)
