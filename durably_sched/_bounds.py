"""Enforcing :class:`~durably_sched.limits.Limits` where values enter the store.

Triggers (the facade's trigger paths and schedule fire times) refuse what is over a limit or is not
valid Unicode with :class:`~durably_sched.errors.LimitExceededError` /
:class:`~durably_sched.errors.InvalidArgumentError` naming the field, before anything is written.
A job's own output is treated by its kind: a step value (or a job's output) over the limit fails the
step with :class:`~durably_sched.errors.StepValueTooLargeError`, which no retry policy retries; a log
line or a progress message over the limit is cut with a marker, and text that is not valid Unicode
in it gets U+FFFD in place of each lone surrogate -- a job's log call never fails its run.

Why text is checked at all: a lone surrogate (``"\\ud800"``, which JSON escapes and Python strings
allow) has no UTF-8 form, so the database driver refuses it deep inside a write. Sizes are bytes of
the UTF-8 JSON form of a value (compact, as the store writes it) or of the UTF-8 text of a key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

import pydantic_core

from .errors import InputValidationError, InvalidArgumentError, LimitExceededError, StepValueTooLargeError
from .limits import KIB, MIB, Limits


class ValidatesInput(Protocol):
    """What :func:`stored_input` needs of a job (``jobs.JobDefinition`` is one)."""

    def validate_input(self, raw: Any) -> dict[str, Any]: ...


__all__ = [
    "check_key",
    "check_labels",
    "check_text",
    "check_value_size",
    "clip_log",
    "clip_text",
    "plain_labels",
    "show_size",
    "stored_input",
    "utf8_size",
    "valid_text",
]

SYSTEM_LABELS: frozenset[str] = frozenset({"schedule", "scheduled_for", "apscheduler_job"})
"""Labels durably-sched sets itself; they do not count toward ``limits.labels``."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_DEPTH = 200


def show_size(n: int) -> str:
    """``256 KiB``, ``1.5 MiB``, ``600 bytes``."""
    for unit, factor in (("MiB", MIB), ("KiB", KIB)):
        if n >= factor:
            return f"{n // factor} {unit}" if n % factor == 0 else f"{n / factor:.1f} {unit}"
    return f"{n} byte{'' if n == 1 else 's'}"


def over_limit(field: str, size: int, limit: int, name: str, where: str = "") -> LimitExceededError:
    """``input: 300 KiB is over the limit of 256 KiB (limits.input)``."""
    shown, ceiling, verb = show_size(size), show_size(limit), "is"
    if name == "labels":
        shown, ceiling, verb = f"{size} labels", str(limit), "are"
    elif size < limit + limit // 100 + KIB:  # just over: exact figures, not two equal roundings
        shown, ceiling = f"{size:,} bytes", f"{limit:,} bytes"
    return LimitExceededError(
        f"{where}{field}: {shown} {verb} over the limit of {ceiling} (limits.{name})",
        field=field,
        size=size,
        limit=limit,
        limit_name=name,
    )


# -- text that is not valid Unicode --------------------------------------------------------------
def valid_text(text: str) -> bool:
    return text.isascii() or _SURROGATE.search(text) is None


def _bad_text_at(value: Any, depth: int = 0) -> str | None:
    """Where in a JSON-like value a string (or a key) is not valid Unicode; None if nowhere."""
    if isinstance(value, str):
        return None if valid_text(value) else ""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and not valid_text(key):
                return f" (a key: {key!r})"
            found = _bad_text_at(item, depth + 1)
            if found is not None:
                return f"[{key!r}]{found}"
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _bad_text_at(item, depth + 1)
            if found is not None:
                return f"[{i}]{found}"
    return None


def _not_unicode(field: str, where: str, at: str = "") -> InvalidArgumentError:
    return InvalidArgumentError(text_problem(field, where, at))


def text_problem(field: str, where: str = "", at: str = "") -> str:
    return f"{where}{field}{at}: not valid Unicode (a lone surrogate such as \\ud800 has no UTF-8 form)"


def bad_text_at(value: Any) -> str | None:
    """Where in a JSON-like value (``['a'][0]``) a string or a key is not valid Unicode: ``""``
    for the value itself, None when nowhere."""
    return _bad_text_at(value)


def check_text(field: str, value: Any, where: str = "") -> None:
    """Raise InvalidArgumentError naming ``field`` (and the place inside it) when a string in the
    JSON-like ``value`` is not valid Unicode."""
    at = _bad_text_at(value)
    if at is not None:
        raise _not_unicode(field, where, at)


def clean_text(text: str) -> str:
    """``text`` with U+FFFD in place of each lone surrogate."""
    return text if valid_text(text) else _SURROGATE.sub("\ufffd", text)


# -- what triggers store -------------------------------------------------------------------------
def json_size(field: str, value: Any, where: str = "") -> int:
    """Bytes of ``value``'s compact UTF-8 JSON; InvalidArgumentError for text that has none."""
    try:
        return len(pydantic_core.to_json(value))
    except (pydantic_core.PydanticSerializationError, ValueError) as exc:
        check_text(field, value, where)
        raise InvalidArgumentError(f"{where}{field}: cannot be stored as JSON: {exc}") from None


def stored_input(limits: Limits, job: ValidatesInput, raw: Any, where: str = "") -> dict[str, Any]:
    """The input a trigger stores (``job.validate_input``), within ``limits.input`` and valid Unicode."""
    try:
        stored = job.validate_input(raw)
    except InputValidationError:
        check_text("input", raw, where)  # the cause, when it is text: named as such
        raise
    size = json_size("input", stored, where)
    if size > limits.input:
        raise over_limit("input", size, limits.input, "input", where)
    return stored


def check_key(limits: Limits, field: str, key: object, where: str = "") -> None:
    """An idempotency or concurrency key: None, or text of at most ``limits.key`` bytes."""
    if key is None:
        return
    if not isinstance(key, str):
        raise InvalidArgumentError(f"{where}{field}: expected a string, got {type(key).__name__}")
    if not valid_text(key):
        raise _not_unicode(field, where)
    size = utf8_size(key)
    if size > limits.key:
        raise over_limit(field, size, limits.key, "key", where)


def check_labels(limits: Limits, labels: Mapping[str, str], where: str = "") -> dict[str, str]:
    """``labels`` (str -> str) as given, within ``limits.labels`` and ``limits.label``."""
    count = sum(1 for key in labels if key not in SYSTEM_LABELS)
    if count > limits.labels:
        raise over_limit("labels", count, limits.labels, "labels", where)
    for key, value in labels.items():
        for field, text in ((f"labels key {key[:40]!r}", key), (f"labels[{key[:40]!r}]", value)):
            if not valid_text(text):
                raise _not_unicode(field, where)
            size = utf8_size(text)
            if size > limits.label:
                raise over_limit(field, size, limits.label, "label", where)
    return dict(labels)


# -- what jobs produce -----------------------------------------------------------------------------
def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def check_value_size(limits: Limits, size: int, step_name: str | None, job_name: str) -> None:
    """A step's value (or, with ``step_name`` None, a job's output) of ``size`` bytes of JSON:
    raise StepValueTooLargeError when it is over ``limits.step_value``."""
    limit = limits.step_value
    if size <= limit:
        return
    what = f"step '{step_name}' returned" if step_name else f"job '{job_name}' returned an output of"
    raise StepValueTooLargeError(
        f"{what} {show_size(size)} of JSON, over the limit of {show_size(limit)} (limits.step_value); "
        "store large data elsewhere (a file, an object store) and return a reference to it",
        step_name=step_name,
        size=size,
        limit=limit,
    )


def clip_text(text: str, limit: int, budget: int | None = None) -> str:
    """``text`` (lone surrogates replaced) cut to at most ``budget`` (default ``limit``) UTF-8
    bytes, with a marker saying so: ``... [... cut from 4.9 KiB to limits.log_line (1 KiB)]``."""
    text = clean_text(text)
    budget = limit if budget is None else budget
    if len(text) <= budget // 4:
        return text
    data = text.encode()
    if len(data) <= budget:
        return text
    marker = f" [... cut from {show_size(len(data))} to limits.log_line ({show_size(limit)})]"
    keep = max(0, budget - len(marker.encode()))
    return data[:keep].decode("utf-8", "ignore") + marker


def clip_log(limits: Limits, message: str, data: Any, data_text: str) -> tuple[str, Any]:
    """A log line's message and data within ``limits.log_line`` bytes together. Data of at most
    half the limit is kept and the message cut to the rest; larger data is replaced by
    ``{"truncated": "..."}`` saying how large it was, and the message cut to what is left."""
    limit = limits.log_line
    data_size = utf8_size(data_text) if data else 0
    if len(message) + data_size <= limit // 4:
        return clean_text(message), data
    if data_size > limit // 2:
        data = {"truncated": f"{show_size(data_size)} of data over limits.log_line ({show_size(limit)})"}
        data_size = utf8_size(str(data)) + 8
    return clip_text(message, limit, max(0, limit - data_size)), data


def plain_labels(labels: Mapping[str, Any] | None) -> dict[str, str]:
    """Labels without a model: a mapping of strings to strings (TypeError naming the pair that is
    not), each valid Unicode (InvalidArgumentError)."""
    if not labels:
        return {}
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"labels must map strings to strings (got {key!r}: {value!r})")
        out[key] = value
    check_text("labels", out)
    return out
