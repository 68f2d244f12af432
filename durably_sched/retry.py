"""Automatic retries: the policy a job (or a schedule, or a trigger) gives its runs.

A run whose attempt fails with a retryable error goes back to ``pending`` with a not-before time
(``now + delay``); no worker holds it while it waits, and the claim query skips it until then. Its
completed steps are kept, so the next attempt replays them and resumes after the last one. The
failures are counted on the run (``failed_attempts``), separately from ``attempt`` (which counts
claims, resumes after a crash included): ``max_attempts`` bounds *failed* attempts, and a crash or
a graceful stop in between never uses up the budget.

The delay after the n-th failure is ``backoff * multiplier ** (n - 1)``, capped at ``max_backoff``
(one day when not given), then multiplied by a random factor in ``[1 - jitter, 1]`` so that runs
that failed together do not retry together.

Which errors are retried: any ``Exception`` by default (``retry_on``), except those in
``give_up_on``, :class:`~durably_sched.errors.NonRetryableError`, and errors that would fail the
same way every time (an output that does not match the job's model, an input that no longer does,
misuse of steps). The classes may be given as classes or as dotted names
(``"myapp.errors.BadInput"``); a policy stored on a run (an override from a schedule or a trigger)
keeps them as names, matched against the error's class and its bases.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from ._durations import format_duration, parse_duration
from .errors import InputValidationError, NonRetryableError, StepError

__all__ = [
    "DEFAULT_MAX_BACKOFF",
    "Retry",
    "RetryPolicyError",
    "class_name",
    "parse_seconds",
    "timeout_seconds",
]

DEFAULT_MAX_BACKOFF = 24 * 3600.0
"""The cap on a delay when ``max_backoff`` is not given: one day."""
MAX_SECONDS = 36500 * 24 * 3600.0
"""The longest duration a policy or timeout may give (100 years): any time it adds to now stays
within the range of times Python and the databases keep."""
NEVER_RETRIED: tuple[type[BaseException], ...] = (NonRetryableError, InputValidationError, StepError)
"""Errors that fail a run at once, whatever the policy: retrying cannot change their outcome."""

ErrorClass = type[BaseException] | str


class RetryPolicyError(ValueError):
    """A retry or timeout value that makes no sense. ``field`` names it (``max_attempts``, ...)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def class_name(cls: type[BaseException]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def timeout_seconds(value: object) -> float | None:
    """A run's or a step's timeout as float seconds, None for none (RetryPolicyError names ``timeout``)."""
    return None if value is None else parse_seconds(value, "timeout", allow_zero=False)


def parse_seconds(value: object, field: str, *, allow_zero: bool = True) -> float:
    """A duration as float seconds: a timedelta, a number of seconds, or text such as ``30s``."""
    if isinstance(value, bool):
        raise RetryPolicyError(field, f"expected a duration such as 30s, 5m, 2h (got {value!r})")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value).total_seconds()
        except ValueError as exc:
            raise RetryPolicyError(field, str(exc)) from None
    else:
        raise RetryPolicyError(field, f"expected a duration such as 30s, 5m, 2h (got {value!r})")
    if not math.isfinite(seconds):
        raise RetryPolicyError(field, f"expected a finite duration (got {value!r})")
    if seconds < 0:
        shown = _shown(seconds) if seconds > -MAX_SECONDS else repr(value)
        raise RetryPolicyError(field, f"must not be negative (got {shown})")
    if seconds > MAX_SECONDS:
        raise RetryPolicyError(field, f"must be at most 36500d (100 years; got {value!r})")
    if not allow_zero and seconds == 0:
        raise RetryPolicyError(field, "must be longer than 0")
    return seconds


def _shown(seconds: float) -> str:
    if seconds < 0:
        return f"-{format_duration(timedelta(seconds=-seconds))}"
    return format_duration(timedelta(seconds=seconds))


def _error_classes(value: object, field: str) -> tuple[ErrorClass, ...]:
    items: Iterable[Any]
    if isinstance(value, type | str):
        items = (value,)
    elif isinstance(value, Iterable):
        items = value
    else:
        raise RetryPolicyError(field, f"expected exception classes (got {value!r})")
    out: list[ErrorClass] = []
    for item in items:
        if isinstance(item, type) and issubclass(item, BaseException):
            out.append(item)
        elif isinstance(item, str) and item.strip():
            out.append(item.strip())
        else:
            raise RetryPolicyError(field, f"expected exception classes or their dotted names (got {item!r})")
    return tuple(out)


def _matches(exc: BaseException, classes: tuple[ErrorClass, ...]) -> bool:
    names: set[str] | None = None
    for cls in classes:
        if isinstance(cls, type):
            if isinstance(exc, cls):
                return True
            continue
        if names is None:
            names = set()
            for base in type(exc).__mro__:
                names.add(class_name(base))
                names.add(base.__qualname__)
        if cls in names:
            return True
    return False


Duration = float | timedelta | str


class Retry:
    """How a job's failed runs are retried.

    ``max_attempts``: attempts in all, the first included (``Retry(max_attempts=1)`` never retries).
    ``backoff``: the delay before the first retry; each further retry waits ``multiplier`` times
    longer, up to ``max_backoff`` (one day when not given). Durations are seconds, timedeltas or
    text (``"30s"``, ``"5m"``); they are kept as float seconds.
    ``jitter``: each delay is multiplied by a random factor between ``1 - jitter`` and 1.
    ``retry_on``: only these errors are retried (default: any Exception); ``give_up_on``: these
    fail the run at once (checked first). Classes, or their dotted names.

    Immutable; equal when all fields are equal. Raises :class:`RetryPolicyError` (a ValueError
    naming the field) for values that make no sense.
    """

    __slots__ = ("backoff", "give_up_on", "jitter", "max_attempts", "max_backoff", "multiplier", "retry_on")

    max_attempts: int
    backoff: float
    max_backoff: float | None
    multiplier: float
    jitter: float
    retry_on: tuple[ErrorClass, ...]
    give_up_on: tuple[ErrorClass, ...]

    def __init__(
        self,
        max_attempts: int = 3,
        backoff: Duration = 10.0,
        max_backoff: Duration | None = None,
        multiplier: float = 2.0,
        jitter: float = 0.2,
        retry_on: ErrorClass | Iterable[ErrorClass] = (Exception,),
        give_up_on: ErrorClass | Iterable[ErrorClass] = (),
    ) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise RetryPolicyError("max_attempts", f"expected a whole number (got {max_attempts!r})")
        if max_attempts < 1:
            raise RetryPolicyError(
                "max_attempts", f"must be at least 1 (the first attempt counts; got {max_attempts})"
            )
        base = parse_seconds(backoff, "backoff")
        cap: float | None = None
        if max_backoff is None:
            if base > DEFAULT_MAX_BACKOFF:
                raise RetryPolicyError(
                    "backoff", f"{_shown(base)} is more than a day; set max_backoff as well if you mean it"
                )
        else:
            cap = parse_seconds(max_backoff, "max_backoff")
            if cap < base:
                raise RetryPolicyError(
                    "max_backoff", f"{_shown(cap)} is shorter than backoff ({_shown(base)})"
                )
        if (
            isinstance(multiplier, bool)
            or not isinstance(multiplier, int | float)
            or not math.isfinite(multiplier)
        ):
            raise RetryPolicyError("multiplier", f"expected a number (got {multiplier!r})")
        if multiplier < 1:
            raise RetryPolicyError("multiplier", f"must be at least 1 (got {multiplier:g})")
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
            raise RetryPolicyError("jitter", f"must be a fraction from 0 to 1 (got {jitter!r})")
        values = {
            "max_attempts": max_attempts,
            "backoff": base,
            "max_backoff": cap,
            "multiplier": float(multiplier),
            "jitter": float(jitter),
            "retry_on": _error_classes(retry_on, "retry_on"),
            "give_up_on": _error_classes(give_up_on, "give_up_on"),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Retry is immutable; use merged() for a changed copy")

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Retry) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"Retry({shown})"

    # -- decisions ------------------------------------------------------------------------------
    @property
    def cap(self) -> float:
        """The longest delay, in seconds."""
        return DEFAULT_MAX_BACKOFF if self.max_backoff is None else self.max_backoff

    def retries(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth another attempt (the attempt count is checked by the caller)."""
        if isinstance(exc, NEVER_RETRIED):
            return False
        if _matches(exc, self.give_up_on):
            return False
        return _matches(exc, self.retry_on)

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1 for the first), jittered."""
        base = self.backoff
        exponent = max(0, failures - 1)
        try:
            raw = base * self.multiplier**exponent
        except OverflowError:
            raw = math.inf
        delay = min(raw, self.cap)
        if self.jitter:
            delay *= 1 - self.jitter * (rng or random).random()
        return delay

    # -- the stored form (overrides kept on a run) -----------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "backoff": self.backoff,
            "max_backoff": self.max_backoff,
            "multiplier": self.multiplier,
            "jitter": self.jitter,
            "retry_on": [c if isinstance(c, str) else class_name(c) for c in self.retry_on],
            "give_up_on": [c if isinstance(c, str) else class_name(c) for c in self.give_up_on],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Retry:
        return cls(
            max_attempts=value.get("max_attempts", 3),
            backoff=value.get("backoff", 10.0),
            max_backoff=value.get("max_backoff"),
            multiplier=value.get("multiplier", 2.0),
            jitter=value.get("jitter", 0.2),
            retry_on=tuple(value.get("retry_on", ("Exception",))),
            give_up_on=tuple(value.get("give_up_on", ())),
        )

    def merged(self, override: Mapping[str, Any]) -> Retry:
        """This policy with some fields replaced (a schedule's ``retry:`` mapping, say)."""
        unknown = sorted(set(override) - set(_FIELDS))
        if unknown:
            raise RetryPolicyError(unknown[0], f"unknown retry setting (known: {', '.join(_FIELDS)})")
        values: dict[str, Any] = {name: getattr(self, name) for name in _FIELDS}
        values.update({k: v for k, v in override.items() if v is not None})
        if "backoff" in override and "max_backoff" not in override and self.max_backoff is not None:
            # A new backoff above the inherited cap raises the cap with it, rather than failing.
            backoff = parse_seconds(values["backoff"], "backoff")
            if backoff > self.max_backoff:
                values["max_backoff"] = backoff
        return Retry(**values)

    def describe(self) -> str:
        """``3 attempts, backoff 10s x2 up to 1d``: for logs and ``runs show``."""
        if self.max_attempts == 1:
            return "no retries (1 attempt)"
        cap = "" if self.max_backoff is None else f" up to {_shown(self.cap)}"
        growth = f" x{self.multiplier:g}" if self.multiplier != 1 else ""
        return f"{self.max_attempts} attempts, backoff {_shown(self.backoff)}{growth}{cap}"


_FIELDS = ("max_attempts", "backoff", "max_backoff", "multiplier", "jitter", "retry_on", "give_up_on")
