"""schedules.yaml: load it into validated models, and say exactly where any problem is.

Every problem raises :class:`~durably_sched.errors.ConfigError` whose text is one line::

    <file>:<line>: schedule '<name>': <field>: <what is wrong>

with the parts that do not apply left out. The line is the line of the offending key or value, found
in the position index that ``_yaml_index`` builds from PyYAML's node tree (which also rejects
duplicate keys, at every level).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar
from zoneinfo import ZoneInfo

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
from ..retry import Retry, RetryPolicyError
from ._yaml_index import Document, Path_, Problem, read_document
from .cron import SCHEDULE_NAME_PATTERN, CronSpec, parse_cron

__all__ = [
    "RetrySettings",
    "ScheduleDefaults",
    "ScheduleEntry",
    "SchedulesConfig",
    "entry_definition",
    "entry_of",
    "load_schedules",
    "parse_schedules",
    "validate_entry",
]

_UTC = ZoneInfo("UTC")
_M = TypeVar("_M", bound=BaseModel)
_SCHEDULE_NAME = re.compile(SCHEDULE_NAME_PATTERN, re.ASCII)


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


def _to_failure_count(value: object) -> int | None:
    if value is None:
        return None
    off = "leave it out to never pause automatically"
    if isinstance(value, bool) or not isinstance(value, int):
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        raise ValueError(f"expected a whole number of failed runs, at least 1 (got {shown}); {off}")
    if value < 1:
        raise ValueError(f"must be at least 1 (got {value}); {off}")
    return value


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

FailureCount = Annotated[int | None, PlainValidator(_to_failure_count)]
"""``pause_after_failures``: a whole number of at least 1, or absent (never pause automatically)."""

Catchup = Literal["all", "latest", "none"]
Overlap = Literal["queue", "skip", "allow"]


class RetrySettings(BaseModel):
    """A schedule's ``retry:`` mapping: the fields of the job's retry policy it changes.

    Fields left out keep the job's values (or the defaults of ``Retry`` for a job without a policy);
    which errors are retried is the job's to say. The combination is checked when the file is
    loaded (``retry.max_backoff: 1m is shorter than backoff (1h)``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int | None = None
    backoff: Duration | None = None
    max_backoff: Duration | None = None
    multiplier: float | None = None
    jitter: float | None = None

    def override(self) -> dict[str, Any]:
        """The changed fields in the stored form (durations as seconds)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is not None:
                out[name] = value.total_seconds() if isinstance(value, timedelta) else value
        return out


def _positive_timeout(value: timedelta | None) -> timedelta | None:
    if value is not None and value <= timedelta(0):
        raise ValueError("must be longer than 0 (leave it out for no limit)")
    return value


# --- models -----------------------------------------------------------------------------------------


class ScheduleDefaults(BaseModel):
    """The ``defaults:`` block: values for every entry that does not set them itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    catchup: Catchup = "all"
    catchup_window: Duration = timedelta(hours=24)
    overlap: Overlap = "queue"
    jitter: Duration = timedelta(0)
    enabled: bool = True
    pause_after_failures: FailureCount = None
    retry: RetrySettings | None = None
    timeout: Duration | None = None

    _check_timeout = field_validator("timeout")(_positive_timeout)


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
    pause_after_failures: FailureCount = None
    labels: dict[str, str] = Field(default_factory=dict)
    retry: RetrySettings | None = None
    """Changes to the job's retry policy for this schedule's runs (stored with each run)."""
    timeout: Duration | None = None
    """How long one attempt of this schedule's runs may take (instead of the job's timeout)."""
    line: int | None = None

    _check_timeout = field_validator("timeout")(_positive_timeout)

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
    ("entry", "retries"): "retries are set as 'retry: {max_attempts: 3, backoff: 30s}'",
    ("entry", "max_attempts"): "retries are set as 'retry: {max_attempts: 3, backoff: 30s}'",
}


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


def _validation_problems(exc: ValidationError, doc: Document, base: Path_) -> list[Problem]:
    """Every pydantic error as a Problem at its line, in the file's order."""
    errors = exc.errors(include_url=False)

    def position(item: tuple[int, ErrorDetails]) -> tuple[int, int]:
        return doc.line((*base, *item[1]["loc"])), item[0]

    problems: list[Problem] = []
    for _, error in sorted(enumerate(errors), key=position):
        loc, what = error["loc"], _error_text(error)
        if loc and loc[-1] == "[key]":  # pydantic's marker for a mapping key that is itself invalid
            loc, what = loc[:-1], f"invalid key: {what}"
        problems.append(doc.problem((*base, *loc), what))
    return problems


class _Invalid(Exception):
    """Some problems were found; the caller records them and goes on with the next part."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems[0].message)
        self.problems = problems


def _validate(model: type[_M], values: Mapping[str, Any], doc: Document, base: Path_) -> _M:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _Invalid(_validation_problems(exc, doc, base)) from None


def _unknown_keys(
    doc: Document, raw: Mapping[Any, Any], path: Path_, allowed: tuple[str, ...], kind: str
) -> list[Problem]:
    problems: list[Problem] = []
    for key in raw:
        if key in allowed:
            continue
        hint = _HINTS.get((kind, doc.text((*path, key))), f"allowed: {', '.join(sorted(allowed))}")
        problems.append(doc.problem((*path, key), f"unknown key ({hint})", key=True))
    return problems


def _mapping(doc: Document, value: Any, path: Path_, what: str) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid([doc.problem(path, f"expected {what}")])
    return value


def _check_job(
    doc: Document, entry: ScheduleEntry, path: Path_, job_inputs: Mapping[str, type[BaseModel] | None]
) -> None:
    if entry.job not in job_inputs:
        known = ", ".join(sorted(job_inputs)) or "none are registered"
        raise _Invalid([doc.problem((*path, "job"), f"unknown job '{entry.job}' (known jobs: {known})")])
    model = job_inputs[entry.job]
    if model is not None:
        _validate(model, entry.input, doc, (*path, "input"))


def _check_retry(doc: Document, settings: RetrySettings | None, path: Path_) -> None:
    """The retry fields together must make a policy (e.g. backoff within max_backoff)."""
    if settings is None:
        return
    try:
        Retry().merged(settings.override())
    except RetryPolicyError as exc:
        where = (*path, "retry", exc.field) if (*path, "retry", exc.field) in doc.places else (*path, "retry")
        raise _Invalid([doc.problem(where, exc.message)]) from None


class _Builder:
    """Builds a SchedulesConfig part by part; a part that fails adds its problems and is skipped,
    so one pass reports every problem of the file (``schedules validate``)."""

    def __init__(self, doc: Document, job_inputs: Mapping[str, type[BaseModel] | None] | None) -> None:
        self.doc = doc
        self.job_inputs = job_inputs
        self.problems: list[Problem] = []

    def known(self, raw: dict[Any, Any], path: Path_, allowed: tuple[str, ...], kind: str) -> dict[Any, Any]:
        """``raw`` without its unknown keys, each of which is recorded as a problem."""
        unknown = _unknown_keys(self.doc, raw, path, allowed, kind)
        self.problems += unknown
        return raw if not unknown else {k: v for k, v in raw.items() if k in allowed}

    def zone(self, top: dict[Any, Any]) -> ZoneInfo:
        if "timezone" not in top:
            return _UTC
        try:
            return _to_zone(top["timezone"])
        except ValueError as exc:
            self.problems.append(self.doc.problem(("timezone",), str(exc)))
            return _UTC

    def defaults(self, top: dict[Any, Any]) -> ScheduleDefaults:
        try:
            raw = _mapping(self.doc, top.get("defaults"), ("defaults",), "a mapping of default values")
            raw = self.known(raw, ("defaults",), _DEFAULT_KEYS, "defaults")
            defaults = _validate(ScheduleDefaults, raw, self.doc, ("defaults",))
            _check_retry(self.doc, defaults.retry, ("defaults",))
        except _Invalid as exc:
            self.problems += exc.problems
            return ScheduleDefaults()
        return defaults

    def entry(
        self, key: Any, raw: Any, defaults: ScheduleDefaults, zone: ZoneInfo, seen: dict[str, ScheduleEntry]
    ) -> ScheduleEntry:
        doc = self.doc
        at: Path_ = ("schedules", key)
        name = doc.text(at)
        if not _SCHEDULE_NAME.fullmatch(name):
            raise _Invalid(
                [doc.problem((*at, "name"), "use only letters, digits, '_', '.' and '-'", key=True)]
            )
        if name in seen:  # e.g. '1:' and '"1":', different keys to YAML
            first = seen[name].line
            raise _Invalid(
                [doc.problem(at, f"duplicate schedule name (first defined on line {first})", key=True)]
            )
        if not isinstance(raw, dict):
            raise _Invalid([doc.problem(at, "expected a mapping with at least 'cron' and 'job'", key=True)])
        unknown = _unknown_keys(doc, raw, at, _ENTRY_KEYS, "entry")
        values: dict[str, Any] = {field: getattr(defaults, field) for field in _DEFAULT_KEYS}
        values["timezone"] = zone
        values.update((k, v) for k, v in raw.items() if k in _ENTRY_KEYS)
        values["name"] = name
        values["line"] = doc.line(at, key=True)
        try:
            entry = _validate(ScheduleEntry, values, doc, at)
            if "retry" in raw:
                _check_retry(doc, entry.retry, at)
            if self.job_inputs is not None:
                _check_job(doc, entry, at, self.job_inputs)
        except _Invalid as exc:
            raise _Invalid(unknown + exc.problems) from None
        if unknown:
            raise _Invalid(unknown)
        return entry

    def entries(
        self, top: dict[Any, Any], defaults: ScheduleDefaults, zone: ZoneInfo
    ) -> dict[str, ScheduleEntry]:
        doc = self.doc
        schedules = _mapping(doc, top["schedules"], ("schedules",), "a mapping of schedule names to entries")
        entries: dict[str, ScheduleEntry] = {}
        for key, raw in schedules.items():
            try:
                entry = self.entry(key, raw, defaults, zone, entries)
            except _Invalid as exc:
                self.problems += exc.problems
                continue
            entries[entry.name] = entry
        return entries


def _build(
    doc: Document, path: str, job_inputs: Mapping[str, type[BaseModel] | None] | None
) -> SchedulesConfig:
    """The configuration, or _Invalid with every problem found, in the file's order."""
    top = doc.data
    if top is None:  # '---' alone, or 'null'
        raise _Invalid([Problem("the file is empty; it needs a 'schedules' mapping", None)])
    if not isinstance(top, dict):
        raise _Invalid([Problem("expected a mapping with a 'schedules' key at the top level", doc.root_line)])
    build = _Builder(doc, job_inputs)
    top = build.known(top, (), _TOP_KEYS, "top")
    zone = build.zone(top)
    defaults = build.defaults(top)
    entries: dict[str, ScheduleEntry] = {}
    if "schedules" in top:
        try:
            entries = build.entries(top, defaults, zone)
        except _Invalid as exc:
            build.problems += exc.problems
    problems = sorted(build.problems, key=lambda problem: problem.line or 0)
    if "schedules" not in top:  # after the others: often the consequence of a misspelt key
        what = "missing 'schedules' (a mapping of schedule names to entries; {} for none)"
        problems.append(Problem(what, doc.root_line))
    if problems:
        raise _Invalid(problems)
    return SchedulesConfig(path=path, timezone=zone, defaults=defaults, schedules=entries)


def _one_line(text: str) -> str:
    """The CLI prints ``str(error)`` on one line: no line break of any kind may get through."""
    return " ".join(text.splitlines())


def _error(problem: Problem, path: str) -> ConfigError:
    return ConfigError(_one_line(problem.message), path=_one_line(path), line=problem.line)


def _fail(problems: list[Problem], path: str) -> NoReturn:
    """The first problem as the error; ``problems`` on it holds every one (``schedules validate``)."""
    errors = [_error(problem, path) for problem in problems]
    errors[0].problems = tuple(errors)
    raise errors[0] from None


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
        return _build(read_document(text), path, job_inputs)
    except Problem as problem:
        _fail([problem], path)
    except _Invalid as invalid:
        _fail(invalid.problems, path)


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


def validate_entry(
    name: str, values: Mapping[str, Any], job_inputs: Mapping[str, type[BaseModel] | None] | None = None
) -> ScheduleEntry:
    """One schedule defined at run time (``durably.schedules.create``/``update``), checked as the
    YAML's entries are: ``InvalidArgumentError`` naming the field (``cron: ...``, ``input.n: ...``)."""
    from ..errors import InvalidArgumentError

    unknown = sorted(set(values) - set(_ENTRY_KEYS))
    if unknown:
        raise InvalidArgumentError(f"{unknown[0]}: unknown field (allowed: {', '.join(sorted(_ENTRY_KEYS))})")

    def refuse(exc: ValidationError, prefix: str = "") -> NoReturn:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"] if part != "[key]")
        field = f"{prefix}{where}" if where else (prefix.rstrip(".") or "schedule")
        raise InvalidArgumentError(f"schedule '{name}': {field}: {_error_text(error)}") from None

    try:
        entry = ScheduleEntry.model_validate({**values, "name": name})
    except ValidationError as exc:
        refuse(exc)
    if entry.retry is not None:
        try:
            Retry().merged(entry.retry.override())
        except RetryPolicyError as exc:
            raise InvalidArgumentError(f"schedule '{name}': retry.{exc.field}: {exc.message}") from None
    if job_inputs:
        if entry.job not in job_inputs:
            known = ", ".join(sorted(job_inputs))
            raise InvalidArgumentError(
                f"schedule '{name}': job: unknown job '{entry.job}' (known jobs: {known})"
            )
        model = job_inputs[entry.job]
        if model is not None:
            try:
                model.model_validate(entry.input)
            except ValidationError as exc:
                refuse(exc, "input.")
    return entry


def entry_of(name: str, definition: Mapping[str, Any], line: int | None = None) -> ScheduleEntry:
    """The schedule a stored definition makes (it was checked when it was written)."""
    return ScheduleEntry.model_validate({**definition, "name": name, "line": line})


def entry_definition(entry: ScheduleEntry) -> dict[str, Any]:
    """The whole definition as stored (the YAML's spellings: ``"6h"``, zone and cron as text)."""
    return entry.model_dump(mode="json", exclude={"name", "line"})
