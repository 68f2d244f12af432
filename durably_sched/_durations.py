"""Short duration strings used in configuration: ``30s``, ``15m``, ``6h``, ``1d``, ``2w``, ``1h30m``.

A plain number (``90``, ``"90"``, ``1.5``) means seconds. Units must appear from largest to smallest,
each at most once. Durations are never negative.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from .errors import InvalidArgumentError

__all__ = ["format_duration", "parse_duration"]

_EXAMPLES = "use e.g. 30s, 15m, 6h, 1d"
_MICROSECONDS = {
    "w": 7 * 24 * 3600 * 1_000_000,
    "d": 24 * 3600 * 1_000_000,
    "h": 3600 * 1_000_000,
    "m": 60 * 1_000_000,
}
_UNITS = re.compile(
    r"(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?",
    re.ASCII,
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?", re.ASCII)
# timedelta's own limit, in microseconds.
_MAX_MICROSECONDS = timedelta.max // timedelta(microseconds=1)


def _invalid(text: object) -> InvalidArgumentError:
    shown = text if isinstance(text, str) else repr(text)
    return InvalidArgumentError(f"invalid duration '{shown}': {_EXAMPLES}")


def _from_microseconds(total: int, text: object) -> timedelta:
    if total > _MAX_MICROSECONDS:
        shown = text if isinstance(text, str) else repr(text)
        raise InvalidArgumentError(f"invalid duration '{shown}': too large")
    return timedelta(microseconds=total)


def _seconds_to_microseconds(seconds: str, text: object) -> int:
    try:
        return int(Decimal(seconds) * 1_000_000)
    except InvalidOperation:  # pragma: no cover - the regexes only let digits through
        raise _invalid(text) from None


def parse_duration(text: str | int | float) -> timedelta:
    """Parse a duration written as ``1h30m`` (units w, d, h, m, s) or as a number of seconds.

    Raises InvalidArgumentError (a ValueError) naming the bad value and showing valid examples.
    """
    if isinstance(text, bool):
        raise _invalid(text)
    if isinstance(text, int):
        if text < 0:
            raise InvalidArgumentError(f"invalid duration '{text}': must not be negative")
        return _from_microseconds(text * 1_000_000, text)
    if isinstance(text, float):
        if not math.isfinite(text):
            raise _invalid(text)
        if text < 0:
            raise InvalidArgumentError(f"invalid duration '{text}': must not be negative")
        return _from_microseconds(_seconds_to_microseconds(repr(text), text), text)
    if not isinstance(text, str):
        raise _invalid(text)
    cleaned = text.strip().lower()
    if _NUMBER.fullmatch(cleaned):
        return _from_microseconds(_seconds_to_microseconds(cleaned, text), text)
    match = _UNITS.fullmatch(cleaned)
    if cleaned == "" or match is None:
        if cleaned.startswith("-"):
            raise InvalidArgumentError(f"invalid duration '{text}': must not be negative")
        raise _invalid(text)
    total = 0
    for unit, factor in _MICROSECONDS.items():
        value = match.group(unit)
        if value is not None:
            total += int(value) * factor
    seconds = match.group("s")
    if seconds is not None:
        total += _seconds_to_microseconds(seconds, text)
    return _from_microseconds(total, text)


def format_duration(value: timedelta) -> str:
    """The short form that :func:`parse_duration` reads back: ``1h30m``, ``1d``, ``0s``, ``1.5s``."""
    total = value // timedelta(microseconds=1)
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    parts: list[str] = []
    for unit, factor in _MICROSECONDS.items():
        count, total = divmod(total, factor)
        if count:
            parts.append(f"{count}{unit}")
    if total:
        whole, fraction = divmod(total, 1_000_000)
        seconds = str(whole) if not fraction else f"{whole}.{fraction:06d}".rstrip("0")
        parts.append(f"{seconds}s")
    return sign + "".join(parts)
