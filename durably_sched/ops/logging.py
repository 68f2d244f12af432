"""Log lines for a service: one line per record, in text (for people) or JSON (for machines).

The code passes what identifies a run as ``extra`` on its log calls (``run_id``, ``job``, and for a
scheduled run ``schedule`` and ``scheduled_for``; step logs add ``step`` and ``data``). Both formats
render whichever of those a record carries, then any other ``extra`` given by job code::

    2026-11-21 06:30:02+01:00 INFO  report 0b6e0c1e [nightly 06:30:00+01:00]: run completed in 0.012s
    {"ts": "2026-11-21T05:30:02.123+00:00", "level": "INFO", "logger": "durably_sched.worker",
     "message": "run completed in 0.012s", "run_id": "0b6e0c1e-...", "job": "report",
     "schedule": "nightly", "scheduled_for": "2026-11-21T05:30:00Z"}

Text is meant to be read at a terminal, 80-120 columns wide: the time to the second in the display
zone (this machine's zone, or UTC with ``utc=True``; the offset always written), the level, then the
run it is about as ``<job> <first 8 characters of the run id>`` (what ``runs show`` accepts) and, for
a scheduled run, ``[<schedule> <fire time>]``, then the message. durably-sched's own logger names are
left out (the message says what happened); other loggers are named. A step log's data and other
extras follow as ``key=value`` (text with spaces, quotes or ``=`` JSON-quoted; a mapping or list as
compact JSON, not quoted again: ``rates={"eur":1.08}``). Line breaks inside
the message are escaped so one record stays one line (a traceback follows on its own lines).

JSON is one object per line with every field whole: ``ts`` in UTC with milliseconds, the full
``run_id``, and ``scheduled_for`` as UTC with ``Z`` (the form of the run's label) whatever form the
caller passed, so one search finds the scheduler's line about a fire time and the worker's lines
about its run.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from .._tracebacks import format_traceback
from ..errors import InvalidArgumentError

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "log_unless_configured", "parse_level"]

OWN_LOGGERS = "durably_sched"
"""Loggers under this name are not named in the text format."""
SHORT_ID = 8

LogFormat = Literal["text", "json"]

RUN_FIELDS = ("run_id", "job", "schedule", "scheduled_for", "step")
"""Rendered first, in this order, when a record carries them; ``data`` follows."""
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_STANDARD_ATTRS = frozenset(
    {
        *logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
        "taskName",
    }
)
_QUIET_LOGGERS = ("aiosqlite",)
"""Libraries that log every statement at DEBUG: kept at INFO or above whatever the level is."""


def parse_level(level: str) -> int:
    """``"info"`` (any case) -> ``logging.INFO``; ValueError naming the accepted levels otherwise."""
    number = _LEVELS.get(level.strip().lower()) if isinstance(level, str) else None
    if number is None:
        raise InvalidArgumentError(
            f"invalid log level {level!r}: use one of debug, info, warning, error, critical"
        )
    return number


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def _utc_text(value: Any) -> Any:
    """A UTC instant (datetime or ISO text) as ``2026-11-21T02:00:00Z``, the form of the run labels."""
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        return value
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S" + (".%f" if utc.microsecond else "") + "Z")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The record's structured fields: run fields first, then ``data``, then other extras."""
    out: dict[str, Any] = {}
    attrs = record.__dict__
    for name in RUN_FIELDS:
        value = attrs.get(name)
        if value is not None:
            out[name] = _utc_text(value) if name == "scheduled_for" else value
    data = attrs.get("data")
    if data is not None and data != {}:
        out["data"] = data
    for name in sorted(attrs.keys() - _STANDARD_ATTRS - out.keys() - {"data", *RUN_FIELDS}):
        if not name.startswith("_") and attrs[name] is not None:
            out[name] = attrs[name]
    return out


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _logfmt_value(value: Any) -> str:
    if isinstance(value, bool | int | float):
        return _compact(value)
    if isinstance(value, dict | list | tuple):
        # Compact JSON is one delimited token already: quoting it again would escape every quote.
        text = _compact(value)
        return text if text.isprintable() else json.dumps(value, separators=(",", ":"), default=str)
    text = value if isinstance(value, str) else _compact(value)
    if not text or any(ch.isspace() or ch in '"=\\' or not ch.isprintable() for ch in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _moment(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value
    return None


def exception_text(exc_info: Any) -> str:
    """A logged exception's traceback as runs store it (durably-sched's own frames left out, see
    ``_tracebacks.format_traceback``), without the final newline."""
    exc = exc_info[1] if isinstance(exc_info, tuple) else None
    if isinstance(exc, BaseException):
        return format_traceback(exc).rstrip("\n")
    return logging.Formatter().formatException(exc_info)


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> [<job> <run id[:8]>] [[<schedule> <fire time>]] [<step>]: <message> key=value ...``

    Times are in this machine's time zone, or in UTC with ``utc=True``, offset always written.
    """

    def __init__(self, *, utc: bool = False) -> None:
        super().__init__()
        self.utc = utc

    def _zoned(self, moment: datetime) -> datetime:
        return moment.astimezone(UTC) if self.utc else moment.astimezone()

    def format(self, record: logging.LogRecord) -> str:
        when = self._zoned(datetime.fromtimestamp(record.created, UTC))
        head = f"{when.isoformat(sep=' ', timespec='seconds')} {record.levelname:<5}"
        fields = _extras(record)
        about = self._about(fields, when)
        if record.name != OWN_LOGGERS and not record.name.startswith(OWN_LOGGERS + "."):
            about = f"{record.name} {about}" if about else record.name
        parts = [
            head,
            f"{about}: {_one_line(record.getMessage())}" if about else _one_line(record.getMessage()),
        ]
        for key, value in fields.items():
            if key == "data" and isinstance(value, dict):  # a step log's own fields, unprefixed
                parts.extend(f"{k}={_logfmt_value(v)}" for k, v in value.items())
            else:
                parts.append(f"{key}={_logfmt_value(value)}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + exception_text(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line

    def _about(self, fields: dict[str, Any], when: datetime) -> str:
        """The run (and schedule slot, and step) a record is about; removes those fields."""
        run_id, job = fields.pop("run_id", None), fields.pop("job", None)
        schedule, scheduled_for = fields.pop("schedule", None), fields.pop("scheduled_for", None)
        step = fields.pop("step", None)
        words: list[str] = []
        if job is not None:
            words.append(str(job))
        if run_id is not None:
            words.append(str(run_id)[:SHORT_ID] if job is not None else f"run {str(run_id)[:SHORT_ID]}")
        if schedule is not None:
            slot = str(schedule)
            moment = _moment(scheduled_for)
            if moment is not None:
                fired = self._zoned(moment)
                same_day = fired.date() == when.date() and fired.utcoffset() == when.utcoffset()
                slot += " " + (
                    fired.timetz().isoformat("seconds") if same_day else fired.isoformat(" ", "seconds")
                )
            elif scheduled_for is not None:
                slot += f" {scheduled_for}"
            words.append(f"[{slot}]")
        if step is not None:
            words.append(str(step))
        return " ".join(words)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the structured fields, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            obj.setdefault(key, value)  # an extra never replaces ts/level/logger/message
        if record.exc_info:
            obj["exc_info"] = exception_text(record.exc_info)
        if record.stack_info:
            obj["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(obj, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time of each record (as logging.lastResort does)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # StreamHandler.setStream; the stream is always the current sys.stderr


def configure_logging(fmt: LogFormat, level: str, *, utc: bool = False) -> None:
    """Send all logging (durably-sched's and the jobs') to stderr in ``fmt`` at ``level`` and above.

    ``utc`` writes the text format's times in UTC instead of this machine's time zone (the JSON
    format is always UTC). Calling it again replaces the handler it installed before (never a second
    one); handlers installed by others are left alone. Raises ValueError for an unknown format or
    level.
    """
    if fmt == "text":
        formatter: logging.Formatter = TextFormatter(utc=utc)
    elif fmt == "json":
        formatter = JsonFormatter()
    else:
        raise InvalidArgumentError(f"invalid log format {fmt!r}: use text or json")
    number = parse_level(level)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(number)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(number, logging.INFO))
    logging.captureWarnings(True)


def log_unless_configured(level: int = logging.INFO) -> Callable[[], None]:
    """Show durably-sched's log lines (runs fired, finished, failed) inside another app whose logging
    would drop them, and return the function that undoes it.

    A host server such as uvicorn configures its own loggers only: the root logger has no handler and
    stays at WARNING, so durably-sched's INFO lines vanish and its warnings come out bare through
    ``logging.lastResort``. When no handler would receive a record of the ``durably_sched`` logger
    (none on it or on any ancestor), this gives that logger one that writes the text format to stderr
    and, if it has no level of its own, the level ``level``. Where logging is configured already
    (serve's :func:`configure_logging`, the host app's ``basicConfig`` or ``dictConfig``) it changes
    nothing, so no line is ever written twice.
    """
    own = logging.getLogger(OWN_LOGGERS)
    if own.hasHandlers():
        return lambda: None
    handler = _StderrHandler()
    handler.setFormatter(TextFormatter())
    own.addHandler(handler)
    set_level = own.level == logging.NOTSET
    if set_level:
        own.setLevel(level)

    def undo() -> None:
        own.removeHandler(handler)
        if set_level:
            own.setLevel(logging.NOTSET)

    return undo
