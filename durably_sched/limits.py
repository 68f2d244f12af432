"""Size limits on what clients and jobs may hand to durably-sched.

Every value that is stored can later be read back by the dashboard, an HTTP client or an event
stream, so each has a ceiling that those readers can afford. One :class:`Limits` holds them all; it
is given to :func:`durably_sched.create_durably` (``limits=``) and set by ``serve`` options, and the
library, the CLI and the web layer read the same instance (``durably.limits``).

Sizes are bytes of the UTF-8 JSON form (a run input, a step value) or of the UTF-8 text (a key, a
label, a log line). ``parse_size`` reads ``"256KiB"``, ``"1MiB"``, ``"4096"`` for options and config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from .errors import InvalidArgumentError

__all__ = ["Limits", "parse_size"]

KIB = 1024
MIB = 1024 * KIB

_SIZE = re.compile(r"(?P<n>\d+)\s*(?P<unit>|b|kib|kb|k|mib|mb|m)", re.ASCII | re.IGNORECASE)
_FACTORS = {"": 1, "b": 1, "k": KIB, "kb": KIB, "kib": KIB, "m": MIB, "mb": MIB, "mib": MIB}


def parse_size(text: str | int) -> int:
    """Bytes from ``4096``, ``"64KiB"``, ``"1MiB"`` (KB/MB mean the binary units here too).

    Raises InvalidArgumentError (a ValueError) naming the text when it is not such a size or is not positive.
    """
    if isinstance(text, bool):
        raise InvalidArgumentError(f"invalid size {text!r}: use e.g. 4096, 64KiB, 1MiB")
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.fullmatch(text.strip())
        if match is None:
            raise InvalidArgumentError(f"invalid size '{text}': use e.g. 4096, 64KiB, 1MiB")
        value = int(match.group("n")) * _FACTORS[match.group("unit").lower()]
    if value <= 0:
        raise InvalidArgumentError(f"invalid size '{text}': must be positive")
    return value


@dataclass(frozen=True, slots=True)
class Limits:
    """The ceilings; every field is a count of bytes except ``labels`` (a count of labels)."""

    request_body: int = 1 * MIB
    """An HTTP API request body; larger ones get 413 before they are read."""
    login_body: int = 4 * KIB
    """The body of ``POST /login``."""
    input: int = 256 * KIB
    """A run's input, as JSON."""
    labels: int = 64
    """How many labels one run may carry."""
    label: int = 1 * KIB
    """One label's key or value."""
    key: int = 512
    """An idempotency or concurrency key, an event key."""
    log_line: int = 64 * KIB
    """One log line's message and data, as JSON."""
    step_value: int = 1 * MIB
    """A step's return value, as JSON (a larger one fails the step; retry policies do not retry it)."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidArgumentError(
                    f"limits.{field.name}: expected a positive whole number, got {value!r}"
                )
