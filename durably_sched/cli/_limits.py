"""``--limit NAME=SIZE``: the size limits (:class:`~durably_sched.limits.Limits`) of a command.

One repeatable option rather than one flag per limit: the names are the fields of ``Limits`` (as
error messages name them: ``limits.input``), there are eight of them that few deployments change,
and the environment variable ``DURABLY_LIMITS`` (``"input=1MiB step_value=4MiB"``) gives every
process of a deployment (``serve``, ``work``, ``trigger``) the same set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .._bounds import show_size
from ..limits import Limits, parse_size

__all__ = ["LIMIT_NAMES", "limit_option", "limits_from"]

LIMIT_NAMES: tuple[str, ...] = tuple(field.name for field in fields(Limits))
_COUNTS = frozenset({"labels"})
"""Limits that are counts, not sizes: a plain number."""

if TYPE_CHECKING:
    _LimitParam = click.ParamType[tuple[str, int]]
else:
    _LimitParam = click.ParamType


class LimitType(_LimitParam):
    """``NAME=SIZE``: ``input=1MiB``, ``log_line=16KiB``, ``labels=128`` (``-`` or ``_`` in names)."""

    name = "name=size"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        name, sep, size = text.partition("=")
        name = name.strip().lower().replace("-", "_")
        if not sep or not name:
            self.fail(f"'{text}': expected NAME=SIZE, e.g. input=1MiB", param, ctx)
        if name not in LIMIT_NAMES:
            self.fail(f"'{text}': unknown limit '{name}' (limits: {', '.join(LIMIT_NAMES)})", param, ctx)
        count = size.strip()
        if name in _COUNTS and not (count.isascii() and count.isdigit()):
            self.fail(f"'{text}': {name} is a count of labels, e.g. {name}=128", param, ctx)
        try:
            return name, parse_size(size)
        except ValueError as exc:
            self.fail(f"'{text}': {exc}", param, ctx)


F = TypeVar("F", bound=Callable[..., Any])


def limit_option(fn: F) -> F:
    """``--limit NAME=SIZE`` (repeatable; env DURABLY_LIMITS), passed to the command as ``limits``."""
    defaults = Limits()
    shown = ", ".join(
        f"{name} {getattr(defaults, name) if name in _COUNTS else _size(getattr(defaults, name))}"
        for name in LIMIT_NAMES
    )
    return click.option(
        "--limit",
        "limits",
        type=LimitType(),
        multiple=True,
        envvar="DURABLY_LIMITS",
        metavar="NAME=SIZE",
        help=f"Change a size limit, e.g. --limit input=1MiB (repeatable; env DURABLY_LIMITS, "
        f"space-separated). Defaults: {shown}. See docs/limits.md.",
    )(fn)


def limits_from(values: Sequence[tuple[str, int]]) -> Limits:
    """The Limits with the given changes (the last of a name repeated wins)."""
    return Limits(**dict(values))


def _size(n: int) -> str:
    """``1MiB``, ``64KiB``, ``512``: as ``--limit`` reads it."""
    return show_size(n).replace(" ", "") if n % 1024 == 0 else str(n)
