"""schedules.yaml: load it into validated models, and say exactly where any problem is.

Every problem raises :class:`~durably_sched.errors.ConfigError` whose text is one line::

    <file>:<line>: schedule '<name>': <field>: <what is wrong>

with the parts that do not apply left out. The line is the line of the offending key or value, found
from the YAML node tree (PyYAML's composed nodes carry their positions). PyYAML keeps the last of two
equal keys without a word, so duplicate keys are looked for here, in every mapping.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from .._durations import format_duration, parse_duration
from ..errors import ConfigError
from .cron import SCHEDULE_NAME_PATTERN, CronSpec, parse_cron

__all__ = [
    "ScheduleDefaults",
    "ScheduleEntry",
    "SchedulesConfig",
    "load_schedules",
    "parse_schedules",
]

_UTC = ZoneInfo("UTC")
_SCHEDULE_NAME = re.compile(SCHEDULE_NAME_PATTERN, re.ASCII)
_MERGE_TAG = "tag:yaml.org,2002:merge"


# --- field types ------------------------------------------------------------------------------------


def _to_zone(value: object) -> ZoneInfo:
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("expected an IANA time zone name such as Europe/Berlin or UTC")
    try:
        return ZoneInfo(value)
    except Exception:  # not found, a directory, a path outside the database...
        raise ValueError(
            f"unknown time zone '{value}' (use an IANA name such as Europe/Berlin or UTC)"
        ) from None


def _to_duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError("a duration must not be negative")
        return value
    if isinstance(value, str | int | float):
        return parse_duration(value)
    raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 15m, 6h, 1d")


def _to_cron(value: object) -> CronSpec:
    if isinstance(value, CronSpec):
        return value
    if not isinstance(value, str):
        raise ValueError('expected a cron expression in quotes, e.g. "0 2 * * *"')
    return parse_cron(value)


def _zone_key(zone: ZoneInfo) -> str:
    return zone.key


def _cron_text(spec: CronSpec) -> str:
    return spec.expression


TimeZone = Annotated[ZoneInfo, PlainValidator(_to_zone), PlainSerializer(_zone_key, return_type=str)]
"""An IANA time zone, written by name."""
Duration = Annotated[
    timedelta, PlainValidator(_to_duration), PlainSerializer(format_duration, return_type=str)
]
"""A non-negative duration written like 30s, 15m, 6h, 1d, 1h30m, or a number of seconds."""
Cron = Annotated[CronSpec, PlainValidator(_to_cron), PlainSerializer(_cron_text, return_type=str)]
"""A cron expression, parsed and validated by :func:`parse_cron`."""

Catchup = Literal["all", "latest", "none"]
Overlap = Literal["queue", "skip", "allow"]


# --- models -----------------------------------------------------------------------------------------


class ScheduleDefaults(BaseModel):
    """The ``defaults:`` block: values for every entry that does not set them itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    catchup: Catchup = "all"
    catchup_window: Duration = timedelta(hours=24)
    overlap: Overlap = "queue"
    jitter: Duration = timedelta(0)
    enabled: bool = True


class ScheduleEntry(BaseModel):
    """One schedule. ``cron`` holds the parsed :class:`CronSpec` (``cron.expression`` as written).

    ``line`` is the line of the schedule's name in the file it came from (None when built in code).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    cron: Cron
    job: str
    input: dict[str, Any] = Field(default_factory=dict)
    timezone: TimeZone = _UTC
    catchup: Catchup = "all"
    catchup_window: Duration = timedelta(hours=24)
    overlap: Overlap = "queue"
    jitter: Duration = timedelta(0)
    enabled: bool = True
    labels: dict[str, str] = Field(default_factory=dict)
    line: int | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _SCHEDULE_NAME.fullmatch(value):
            raise ValueError("use only letters, digits, '_', '.' and '-'")
        return value

    @field_validator("job")
    @classmethod
    def _check_job(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("input", "labels", mode="before")
    @classmethod
    def _empty_when_null(cls, value: object) -> object:
        return {} if value is None else value


class SchedulesConfig(BaseModel):
    """A whole schedules file. ``schedules`` keeps the file's order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = "<string>"
    timezone: TimeZone = _UTC
    defaults: ScheduleDefaults = Field(default_factory=ScheduleDefaults)
    schedules: dict[str, ScheduleEntry] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_match_keys(self) -> SchedulesConfig:
        for key, entry in self.schedules.items():
            if key != entry.name:
                raise ValueError(f"schedule key '{key}' does not match the entry's name '{entry.name}'")
        return self


_TOP_KEYS = ("timezone", "defaults", "schedules")
_DEFAULT_KEYS = tuple(ScheduleDefaults.model_fields)
_ENTRY_KEYS = tuple(name for name in ScheduleEntry.model_fields if name not in ("name", "line"))
_HINTS = {
    ("defaults", "timezone"): "set the default time zone with the top-level 'timezone' key",
    ("entry", "name"): "the schedule's name is its key under 'schedules'",
}


# --- where things are in the file ---------------------------------------------------------------------

Path_ = tuple[Any, ...]


@dataclass(frozen=True)
class _Place:
    key_text: str  # the key as written (``on``, where the document holds True)
    key_line: int
    value_line: int
    nested: bool  # the value is a mapping or a sequence


class _Problem(Exception):
    """Raised while reading the document; turned into a ConfigError with the file's path."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _message(path: Path_, what: str, places: Mapping[Path_, _Place]) -> str:
    """``schedule '<name>': <field>: <what>`` for a path of keys from the document root."""
    parts: list[str] = []
    for depth in range(1, len(path) + 1):
        place = places.get(path[:depth])
        part = path[depth - 1]
        if place is not None:
            parts.append(place.key_text)
        elif isinstance(part, int) and not isinstance(part, bool):
            parts.append(f"[{part}]")
        else:
            parts.append(str(part))
    prefix = ""
    if len(parts) >= 2 and path[0] == "schedules":
        prefix = f"schedule '{parts[1]}': "
        parts = parts[2:]
    field = ""
    for part in parts:
        field += part if not field or part.startswith("[") else f".{part}"
    return f"{prefix}{field}: {what}" if field else f"{prefix}{what}"


def _key_of(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """A mapping key as the constructed document will hold it (its text when it cannot be a key)."""
    if isinstance(node, yaml.ScalarNode):
        try:
            key = loader.construct_object(node)
            hash(key)
        except (yaml.YAMLError, TypeError):
            return node.value
        return key
    return ("<complex key>", node.start_mark.line)


def _index_nodes(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, places: dict[Path_, _Place]) -> None:
    """Record where every key and value is, and reject duplicate keys (at every level)."""
    if isinstance(node, yaml.MappingNode):
        first_lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # '<<: *anchor'; explicit keys may override merged ones
                continue
            key = _key_of(loader, key_node)
            line = key_node.start_mark.line + 1
            if key in first_lines:
                first = first_lines[key]
                if path == ("schedules",):
                    what = f"duplicate schedule name (first defined on line {first})"
                else:
                    what = f"duplicate key (first on line {first})"
                raise _Problem(_message((*path, key), what, places), line)
            first_lines[key] = line
            places[(*path, key)] = _Place(
                key_text=key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key),
                key_line=line,
                value_line=value_node.start_mark.line + 1,
                nested=isinstance(value_node, yaml.MappingNode | yaml.SequenceNode),
            )
            _index_nodes(loader, value_node, (*path, key), places)
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            line = item.start_mark.line + 1
            places[(*path, position)] = _Place(
                key_text=f"[{position}]",
                key_line=line,
                value_line=line,
                nested=isinstance(item, yaml.MappingNode | yaml.SequenceNode),
            )
            _index_nodes(loader, item, (*path, position), places)


class _Document:
    """The constructed YAML data plus the position of every key and value in it."""

    def __init__(self, data: Any, places: dict[Path_, _Place], root_line: int) -> None:
        self.data = data
        self.places = places
        self.root_line = root_line

    def line(self, path: Path_, *, key: bool = False) -> int:
        """The line of the value at ``path`` (of its key if asked, or if the value is nested).

        A path that is not in the file (a missing field, a key merged in with '<<') falls back to the
        nearest parent's key.
        """
        while path:
            place = self.places.get(path)
            if place is not None:
                return place.key_line if key or place.nested else place.value_line
            path = path[:-1]
            key = True
        return self.root_line

    def text(self, path: Path_) -> str:
        """The last key of ``path`` as written in the file."""
        place = self.places.get(path)
        return place.key_text if place is not None else str(path[-1])

    def problem(self, path: Path_, what: str, *, key: bool = False) -> _Problem:
        return _Problem(_message(path, what, self.places), self.line(path, key=key))


def _yaml_problem(exc: yaml.YAMLError, text: str) -> _Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "cannot be parsed"
        if exc.problem and exc.context:
            what = f"{exc.problem} ({exc.context})"
        return _Problem(f"invalid YAML: {what}", None if mark is None else mark.line + 1)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        return _Problem(f"invalid YAML: {exc.reason} (character {exc.character!r})", line)
    return _Problem(f"invalid YAML: {exc}", None)  # pragma: no cover - PyYAML raises the two above


def _read_document(text: str) -> _Document:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, text) from None
    try:
        root = loader.get_single_node()
        if root is None:
            raise _Problem("the file is empty; it needs a 'schedules' mapping", None)
        places: dict[Path_, _Place] = {}
        # Index before constructing: construction applies '<<' merges to the node tree itself.
        _index_nodes(loader, root, (), places)
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, text) from None
    finally:
        loader.dispose()
    return _Document(data, places, root.start_mark.line + 1)


# --- validation -------------------------------------------------------------------------------------


def _shown(value: object) -> str | None:
    if value is None or isinstance(value, bool | int | float | str):
        text = repr(value)
        return text if len(text) <= 60 else None
    return None


def _error_text(error: ErrorDetails) -> str:
    """One pydantic error as a short phrase: no URL, no input dump, no line breaks."""
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown key"
    context = error.get("ctx") or {}
    if kind == "value_error" and "error" in context:
        return str(context["error"])
    got = _shown(error.get("input"))
    return f"{error['msg']} (got {got})" if got is not None else error["msg"]


def _validation_problem(exc: ValidationError, doc: _Document, base: Path_) -> _Problem:
    """The error that comes first in the file (pydantic's order among errors on one line)."""
    errors = exc.errors(include_url=False)

    def position(item: tuple[int, ErrorDetails]) -> tuple[int, int]:
        return doc.line((*base, *item[1]["loc"])), item[0]

    _, first = min(enumerate(errors), key=position)
    loc, what = first["loc"], _error_text(first)
    if loc and loc[-1] == "[key]":  # pydantic's marker for a mapping key that is itself invalid
        loc, what = loc[:-1], f"invalid key: {what}"
    return doc.problem((*base, *loc), what)


def _check_keys(
    doc: _Document, raw: Mapping[Any, Any], path: Path_, allowed: tuple[str, ...], kind: str
) -> None:
    for key in raw:
        if key in allowed:
            continue
        hint = _HINTS.get((kind, doc.text((*path, key))), f"allowed: {', '.join(sorted(allowed))}")
        raise doc.problem((*path, key), f"unknown key ({hint})", key=True)


def _mapping(doc: _Document, value: Any, path: Path_, what: str) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.problem(path, f"expected {what}")
    return value


def _check_job(
    doc: _Document, entry: ScheduleEntry, path: Path_, job_inputs: Mapping[str, type[BaseModel] | None]
) -> None:
    if entry.job not in job_inputs:
        known = ", ".join(sorted(job_inputs)) or "none are registered"
        raise doc.problem((*path, "job"), f"unknown job '{entry.job}' (known jobs: {known})")
    model = job_inputs[entry.job]
    if model is None:
        return
    try:
        model.model_validate(entry.input)
    except ValidationError as exc:
        raise _validation_problem(exc, doc, (*path, "input")) from None


def _build(
    doc: _Document, path: str, job_inputs: Mapping[str, type[BaseModel] | None] | None
) -> SchedulesConfig:
    top = doc.data
    if top is None:  # '---' alone, or 'null'
        raise _Problem("the file is empty; it needs a 'schedules' mapping", None)
    if not isinstance(top, dict):
        raise _Problem("expected a mapping with a 'schedules' key at the top level", doc.root_line)
    _check_keys(doc, top, (), _TOP_KEYS, "top")

    zone = _UTC
    if "timezone" in top:
        try:
            zone = _to_zone(top["timezone"])
        except ValueError as exc:
            raise doc.problem(("timezone",), str(exc)) from None

    raw_defaults = _mapping(doc, top.get("defaults"), ("defaults",), "a mapping of default values")
    _check_keys(doc, raw_defaults, ("defaults",), _DEFAULT_KEYS, "defaults")
    try:
        defaults = ScheduleDefaults.model_validate(raw_defaults)
    except ValidationError as exc:
        raise _validation_problem(exc, doc, ("defaults",)) from None

    if "schedules" not in top:
        raise _Problem(
            "missing 'schedules' (a mapping of schedule names to entries; {} for none)", doc.root_line
        )
    schedules = _mapping(doc, top["schedules"], ("schedules",), "a mapping of schedule names to entries")

    entries: dict[str, ScheduleEntry] = {}
    for key, raw in schedules.items():
        at: Path_ = ("schedules", key)
        name = doc.text(at)
        line = doc.line(at, key=True)
        if not _SCHEDULE_NAME.fullmatch(name):
            raise doc.problem((*at, "name"), "use only letters, digits, '_', '.' and '-'", key=True)
        if name in entries:  # e.g. '1:' and '"1":', different keys to YAML
            first = entries[name].line
            raise doc.problem(at, f"duplicate schedule name (first defined on line {first})", key=True)
        if not isinstance(raw, dict):
            raise doc.problem(at, "expected a mapping with at least 'cron' and 'job'", key=True)
        _check_keys(doc, raw, at, _ENTRY_KEYS, "entry")
        values: dict[str, Any] = {field: getattr(defaults, field) for field in _DEFAULT_KEYS}
        values["timezone"] = zone
        values.update(raw)
        values["name"] = name
        values["line"] = line
        try:
            entry = ScheduleEntry.model_validate(values)
        except ValidationError as exc:
            raise _validation_problem(exc, doc, at) from None
        if job_inputs is not None:
            _check_job(doc, entry, at, job_inputs)
        entries[name] = entry
    return SchedulesConfig(path=path, timezone=zone, defaults=defaults, schedules=entries)


def _one_line(text: str) -> str:
    """The CLI prints ``str(error)`` on one line: no line break of any kind may get through."""
    return " ".join(text.splitlines())


def _fail(problem: _Problem, path: str) -> NoReturn:
    raise ConfigError(_one_line(problem.message), path=_one_line(path), line=problem.line) from None


def parse_schedules(
    text: str,
    path: str = "<string>",
    job_inputs: Mapping[str, type[BaseModel] | None] | None = None,
) -> SchedulesConfig:
    """Parse the text of a schedules file; ``path`` is what errors and the result call it.

    With ``job_inputs`` (registered job name -> its input model, or None for a job without one),
    unknown job names are errors and each ``input`` is validated against its job's model.
    """
    try:
        return _build(_read_document(text), path, job_inputs)
    except _Problem as problem:
        _fail(problem, path)


def load_schedules(
    path: str | os.PathLike[str],
    job_inputs: Mapping[str, type[BaseModel] | None] | None = None,
) -> SchedulesConfig:
    """Read a schedules file (UTF-8) and parse it; see :func:`parse_schedules`."""
    where = os.fspath(path)
    try:
        content = Path(where).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            _one_line(f"cannot read the schedules file: {reason}"), path=_one_line(where)
        ) from None
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"the file is not UTF-8 text: {exc.reason}", path=_one_line(where), line=line
        ) from None
    return parse_schedules(text, path=where, job_inputs=job_inputs)
