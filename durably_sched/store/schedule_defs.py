"""Schedules as data: the store's part (definitions, their versions, the change sequence).

Every schedule has one row of definition (its newest version) with a **source**: ``yaml`` (an
entry of schedules.yaml, synced by the serves that load the file) or ``api`` (created at run
time). Every change is a version: number, op, source, by, at, note, the whole definition and the
fields that changed. A delete keeps the row, marked deleted, so a name created again goes on
numbering its versions (and its fire-time keys, which hold the name only, cannot double a run).

The decisions (is this create allowed, which fields changed, is a sync a change at all) are made
here once, by :func:`decide`, on the row read inside the backend's write transaction; the
backends hold the SQL only. ``seq`` orders every change of every schedule, so a scheduler asks
"what changed since the seq I saw" (:meth:`ScheduleDefStore.schedule_defs_since`) after a cheap
read of the newest seq (:meth:`ScheduleDefStore.schedule_seq`).
"""

from __future__ import annotations

import abc
import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..errors import InvalidStateError, ScheduleNotFoundError

__all__ = [
    "DefChange",
    "ScheduleConflictError",
    "ScheduleDef",
    "ScheduleDefPage",
    "ScheduleDefQuery",
    "ScheduleDefStore",
    "ScheduleVersion",
    "SyncEntry",
    "SyncPlan",
    "SyncResult",
    "changed_fields",
    "cursor_move",
    "decide",
    "decode_cursor",
    "encode_cursor",
    "plan_sync",
    "sync_fingerprint",
    "synced_already",
]

Source = Literal["yaml", "api"]
Op = Literal["create", "update", "delete", "rollback", "sync", "pause", "resume"]


class ScheduleConflictError(InvalidStateError):
    """A change the schedule's source or existence forbids (a YAML schedule's definition changed
    through the API, a create of a name in use, an API name brought by schedules.yaml): 409 / exit 2."""


@dataclass(frozen=True, slots=True)
class ScheduleDef:
    """A schedule's newest version as stored."""

    name: str
    source: Source
    version: int
    definition: dict[str, Any]
    """The whole definition in the YAML's spellings (``cron``, ``job``, ``input``, ``"6h"``...)."""
    deleted: bool = False
    path: str | None = None
    line: int | None = None
    seq: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def location(self) -> str:
        """``schedules.yaml:12`` for a YAML schedule; ``the API`` otherwise."""
        if self.source != "yaml":
            return "the API"
        path = self.path or "schedules.yaml"
        return f"{path}:{self.line}" if self.line else path


@dataclass(frozen=True, slots=True)
class ScheduleVersion:
    """One change of one schedule."""

    name: str
    version: int
    op: Op
    source: Source
    by: str | None
    at: datetime
    note: str | None
    definition: dict[str, Any] | None
    changed: tuple[str, ...] = ()
    seq: int = 0

    @property
    def what_changed(self) -> str:
        """The changed fields in words: ``cron, input``; ``new`` for a first definition."""
        if self.op == "delete":
            return "deleted"
        given = {k for k, v in (self.definition or {}).items() if v is not None}
        if given and set(self.changed) >= given:
            return "new"
        return ", ".join(self.changed) or "-"


@dataclass(frozen=True, slots=True)
class DefChange:
    """A change to write: ``definition`` None for delete, pause and resume (which keep it)."""

    name: str
    op: Op
    source: Source
    definition: dict[str, Any] | None = None
    by: str | None = None
    note: str | None = None
    at: datetime | None = None
    """When the change is made (None: the database's now); a new cron fires from then on."""


@dataclass(frozen=True, slots=True)
class SyncEntry:
    """One entry of a schedules file to sync."""

    name: str
    definition: dict[str, Any]
    path: str | None
    line: int | None


@dataclass(frozen=True, slots=True)
class SyncResult:
    versions: list[ScheduleVersion] = field(default_factory=list)
    """The changes the sync made (one version each)."""
    refused: dict[str, str] = field(default_factory=dict)
    """Entries left out, with why (the name is an API schedule's)."""


@dataclass(frozen=True, slots=True)
class ScheduleDefQuery:
    job: str | None = None
    labels: Mapping[str, str] | None = None
    source: Source | None = None
    q: str | None = None
    """A part of the name (case-insensitive)."""
    paused: bool | None = None
    limit: int = 50
    after: str | None = None
    """The last name of the previous page (from the cursor)."""


@dataclass(frozen=True, slots=True)
class ScheduleDefPage:
    items: list[ScheduleDef]
    next_cursor: str | None


def _as_is(value: Any) -> Any:
    return value


def def_of(row: Any, time: Callable[[Any], datetime | None] = _as_is) -> ScheduleDef:
    """A ``schedule_defs`` row read back (``definition`` as JSON text); ``time`` reads the backend's
    timestamps (PostgreSQL's are datetimes already)."""
    return ScheduleDef(
        name=row["name"], source=row["source"], version=row["version"],
        definition=json.loads(row["definition"]), deleted=bool(row["deleted"]), path=row["path"],
        line=row["line"], seq=row["seq"], created_at=time(row["created_at"]),
        updated_at=time(row["updated_at"]),
    )  # fmt: skip


def version_of(row: Any, time: Callable[[Any], datetime | None] = _as_is) -> ScheduleVersion:
    """A ``schedule_versions`` row read back (``definition`` and ``changed`` as JSON text)."""
    at = time(row["at"])
    assert at is not None
    definition = row["definition"]
    return ScheduleVersion(
        name=row["name"], version=row["version"], op=row["op"], source=row["source"], by=row["by"],
        at=at, note=row["note"], definition=None if definition is None else json.loads(definition),
        changed=tuple(json.loads(row["changed"])), seq=row["seq"],
    )  # fmt: skip


def encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The name a cursor continues after; ValueError for a cursor this did not make."""
    try:
        padded = (cursor + "=" * (-len(cursor) % 4)).encode("ascii")
        name = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except Exception:
        name = ""
    if not name:
        raise ValueError(f"invalid cursor {cursor!r}: use the next_cursor of a previous page")
    return name


def canonical(definition: Mapping[str, Any] | None) -> str:
    return json.dumps(definition, sort_keys=True, separators=(",", ":"))


def changed_fields(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The top-level fields whose values differ (all of ``new``'s when there was none)."""
    before, after = old or {}, new or {}
    return tuple(sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)))


def _refuse(current: ScheduleDef | None, change: DefChange, replay: bool) -> bool:
    """Raise when the change is not allowed; True when it is a replay already applied."""
    live = current is not None and not current.deleted
    name = change.name
    if change.op == "create":
        if current is not None and live:
            if replay and canonical(current.definition) == canonical(change.definition):
                return True
            where = f"schedules.yaml ({current.location})" if current.source == "yaml" else "the API"
            raise ScheduleConflictError(
                f"schedule '{name}' already exists (a {current.source} schedule, from {where}); "
                "update it instead"
            )
        return False
    if change.op == "sync":
        if current is not None and live and current.source == "api":
            raise ScheduleConflictError(
                "the name is an API schedule's (created at run time); schedules.yaml cannot define it "
                "too: rename the entry, or delete the API schedule first"
            )
        return False
    if current is None or not live:
        if replay and change.op == "delete" and current is not None:
            return True
        raise ScheduleNotFoundError(f"unknown schedule '{name}'")
    redefines = change.op in ("update", "rollback", "delete")
    if redefines and change.source == "api" and current.source == "yaml":
        raise ScheduleConflictError(
            f"schedule '{name}' is defined in {current.location}: change it there (only pause, "
            "resume, trigger and backfill apply to a YAML schedule)"
        )
    return False


def decide(current: ScheduleDef | None, change: DefChange, replay: bool = False) -> ScheduleVersion | None:
    """The version a change makes of the current row (``at`` is filled by the backend), None when
    it changes nothing, or the error that refuses it. ``replay``: the backend runs the change
    again after a lost commit, so finding it already made is success (PostgreSQL only)."""
    if _refuse(current, change, replay):
        return None
    live = current if current is not None and not current.deleted else None
    same = live is not None and canonical(live.definition) == canonical(change.definition)
    if change.op in ("sync", "update", "rollback") and same:
        return None
    if change.op == "delete":
        definition = None
    elif change.definition is not None:
        definition = change.definition
    else:
        definition = live.definition if live is not None else None
    if change.op in ("pause", "resume"):
        changed: tuple[str, ...] = ("paused",)
    elif change.op == "delete":
        changed = ()
    else:
        changed = changed_fields(live.definition if live is not None else None, definition)
    source: Source = "yaml" if change.op == "sync" else (live.source if live is not None else change.source)
    return ScheduleVersion(
        name=change.name,
        version=(current.version if current is not None else 0) + 1,
        op=change.op,
        source=source,
        by=change.by,
        at=change.at or datetime.min,
        note=change.note,
        definition=definition,
        changed=changed,
    )


def cursor_move(current: ScheduleDef | None, version: ScheduleVersion) -> Literal["keep", "start", "restart"]:
    """What a change does to the schedule's cursor (in its transaction, by the database's time):
    a new cron or zone, or a name created again after a delete, fires from the change on
    (``restart``: the cursor moves up to the change; no catch-up of the old expression's fire
    times); a first definition starts from the change unless a cursor exists (``start``: a
    schedule of an earlier release keeps its cursor, so its catch-up policy still applies)."""
    if version.definition is None or version.op in ("pause", "resume"):
        return "keep"
    if current is None:
        return "start"
    if current.deleted:
        return "restart"
    old, new = current.definition, version.definition
    if old.get("cron") != new.get("cron") or old.get("timezone") != new.get("timezone"):
        return "restart"
    return "keep"


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What a sync writes: versions (with the row they replace and the entry's place), moved lines."""

    writes: list[tuple[ScheduleDef | None, ScheduleVersion, tuple[str | None, int | None]]]
    moved: list[tuple[str, str | None, int | None]]
    refused: dict[str, str]


def plan_sync(
    rows: Mapping[str, ScheduleDef], entries: Sequence[SyncEntry], by: str | None, at: datetime | None
) -> SyncPlan:
    """The sync of ``entries`` against every stored row (see :meth:`ScheduleDefStore.sync_schedules`)."""
    plan = SyncPlan([], [], {})
    for entry in entries:
        current = rows.get(entry.name)
        try:
            version = decide(current, DefChange(entry.name, "sync", "yaml", entry.definition, by=by, at=at))
        except ScheduleConflictError as exc:
            plan.refused[entry.name] = str(exc)
            continue
        if version is not None:
            plan.writes.append((current, version, (entry.path, entry.line)))
        elif current is not None and (current.path, current.line) != (entry.path, entry.line):
            plan.moved.append((entry.name, entry.path, entry.line))
    if plan.refused:  # all or nothing, like any other error in the file
        return SyncPlan([], [], plan.refused)
    names = {entry.name for entry in entries}
    for name, current in rows.items():
        if current.source == "yaml" and not current.deleted and name not in names:
            removed = DefChange(name, "delete", "yaml", by=by, note="removed from schedules.yaml", at=at)
            gone = decide(current, removed)
            assert gone is not None
            plan.writes.append((current, gone, (None, None)))
    return plan


SyncMark = tuple[str, int]
"""The newest successful sync: its entries' fingerprint and the newest change's seq after it."""


def sync_fingerprint(entries: Sequence[SyncEntry]) -> str:
    """A digest of all a sync of ``entries`` reads from them: each entry's name, definition, file
    and line, in order."""
    digest = hashlib.sha256()
    for entry in entries:
        item = [entry.name, entry.path, entry.line, entry.definition]
        digest.update(json.dumps(item, sort_keys=True, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def synced_already(stored: SyncMark | None, fingerprint: str, seq: int) -> bool:
    """Whether a sync of the entries of ``fingerprint`` would write nothing, ``seq`` being the
    newest change now: the newest successful sync was of the very same entries and nothing has
    changed since. A sync makes the rows what its entries say (or refuses, and then leaves no
    mark); every change of a row is a version with a new seq; so with no version since, the rows
    are still what the same entries would make them, and :func:`plan_sync` would plan nothing."""
    return stored == (fingerprint, seq)


class ScheduleDefStore(abc.ABC):
    """The part of the store contract for schedules as data (see the module notes)."""

    @abc.abstractmethod
    async def save_schedule(self, change: DefChange) -> ScheduleVersion | None:
        """Apply one change atomically (:func:`decide` on the current row); the version it made,
        None when it changed nothing. Raises ScheduleConflictError / ScheduleNotFoundError."""

    @abc.abstractmethod
    async def sync_schedules(
        self, entries: Sequence[SyncEntry], *, by: str | None, at: datetime | None = None
    ) -> SyncResult:
        """Make the YAML schedules those of ``entries`` in one transaction: new or changed
        entries become a version (op ``sync``), YAML schedules not among them are deleted. An
        entry whose name is an API schedule's is refused, and then nothing is written (all or
        nothing, like any error of the file). A moved line is written without a version.
        ``at``: the sync's time (None: the database's now)."""

    @abc.abstractmethod
    async def get_schedule_def(self, name: str) -> ScheduleDef | None:
        """The schedule's row (a deleted one too, marked ``deleted``); None if never defined."""

    async def list_schedule_defs(self, query: ScheduleDefQuery) -> ScheduleDefPage:
        """Live schedules by name, filtered, one page after ``query.after``."""
        where: list[str] = ["NOT d.deleted"]
        params: list[Any] = []

        def add(condition: str, *values: Any) -> None:
            where.append(condition)
            params.extend(values)

        if query.after is not None:
            add("d.name > ?", query.after)
        if query.job is not None:
            add("d.job = ?", query.job)
        if query.source is not None:
            add("d.source = ?", query.source)
        if query.q:
            add(self._NAME_HAS, query.q.lower())
        for condition, values in self._labels_match(query.labels or {}):
            add(condition, *values)
        if query.paused is not None:
            test = "EXISTS" if query.paused else "NOT EXISTS"
            add(f"{test} (SELECT 1 FROM schedule_states s WHERE s.schedule = d.name AND s.paused)")
        found = await self._find_schedule_defs(" AND ".join(where), params, query.limit + 1)
        items = found[: query.limit]
        more = len(found) > query.limit
        return ScheduleDefPage(items, encode_cursor(items[-1].name) if more and items else None)

    _NAME_HAS: str
    """The backend's condition "the lower-cased ``d.name`` holds the parameter" (set by each backend)."""

    @abc.abstractmethod
    def _labels_match(self, labels: Mapping[str, str]) -> list[tuple[str, list[Any]]]:
        """The backend's conditions (with their parameters) for "``d.labels`` has these labels"."""

    @abc.abstractmethod
    async def _find_schedule_defs(self, where: str, params: list[Any], limit: int) -> list[ScheduleDef]:
        """Up to ``limit`` rows of ``schedule_defs d`` where ``where`` holds (``?`` marks the
        parameters), by name."""

    @abc.abstractmethod
    async def schedule_defs_since(self, seq: int) -> list[ScheduleDef]:
        """Every row (deleted ones too) changed after ``seq``, by seq."""

    @abc.abstractmethod
    async def schedule_versions(self, name: str) -> list[ScheduleVersion]:
        """The schedule's versions, oldest first."""

    @abc.abstractmethod
    async def schedule_seq(self) -> int:
        """The newest change's seq (0: none); cheap, for polling."""
