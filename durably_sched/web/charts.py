"""Small server-rendered SVG pictures for the dashboard: a schedule's fire-time strip, its run
durations, and the home page's runs/failures sparkline per schedule.

Plain SVG text built here (no chart library, no script, works offline); colours come from CSS
classes (``k-<kind>``, see app.css) so the legend and the pictures share them. Every text that ends
up in the SVG is escaped; each picture has ``role="img"`` with an ``aria-label`` that says what it
shows in words, and each mark a ``<title>`` (its tooltip and its accessible name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from .._durations import format_duration
from ..store.base import ScheduleActivity

__all__ = ["Bar", "Cell", "duration_chart", "fire_strip", "sparkline"]

STRIP_KINDS = (
    "completed", "failed", "running", "pending", "cancelled", "purged",
    "deduplicated", "skipped", "missed", "paused", "disabled",
)  # fmt: skip
"""What a fire time became, as the strip colours it: its run's status for a triggered fire time,
the fire record's outcome otherwise (``purged``: the run was deleted by retention)."""


@dataclass(frozen=True, slots=True)
class Cell:
    """One fire time on the strip: its kind (see STRIP_KINDS), tooltip and link (its run)."""

    kind: str
    title: str
    href: str | None = None


@dataclass(frozen=True, slots=True)
class Bar:
    """One run on the durations chart: seconds so far (a running run's bar grows)."""

    seconds: float
    kind: str
    title: str
    href: str | None = None


def _rect(kind: str, x: float, y: float, w: float, h: float) -> str:
    return f'<rect class="k-{escape(kind)}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}"/>'


def _mark(shape: str, title: str, href: str | None) -> str:
    inner = f"<title>{escape(title)}</title>"
    mark = shape.replace("/>", f">{inner}</rect>") if shape.endswith("/>") else shape
    if href is None:
        return mark
    return f'<a href="{escape(href)}">{mark}</a>'


def _svg(width: float, height: float, label: str, body: str, css: str) -> Markup:
    return Markup(
        f'<svg class="{css}" xmlns="http://www.w3.org/2000/svg" role="img" width="{width:g}" '
        f'height="{height:g}" viewBox="0 0 {width:g} {height:g}" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>{body}</svg>"
    )


def _counted(kinds: Sequence[str]) -> str:
    counts = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
    return ", ".join(f"{n} {k}" for k, n in counts.items())


def fire_strip(cells: Sequence[Cell], *, label: str, size: int = 14, gap: int = 3) -> Markup:
    """Fire times oldest first, left to right, one coloured square each."""
    if not cells:
        return Markup("")
    marks = [
        _mark(_rect(c.kind, i * (size + gap), 0, size, size), c.title, c.href) for i, c in enumerate(cells)
    ]
    summary = f"{label}: {len(cells)} fire times, oldest first: {_counted([c.kind for c in cells])}"
    return _svg(len(cells) * (size + gap) - gap, size, summary, "".join(marks), "chart strip")


def seconds_text(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def duration_chart(bars: Sequence[Bar], *, label: str, height: int = 110, bar: int = 10) -> Markup:
    """Run durations oldest first; the tallest bar is the longest run (its value on the axis)."""
    if not bars:
        return Markup("")
    top, axis, gap = max(max(b.seconds for b in bars), 0.001), 56, 3
    plot = height - 16
    width = axis + len(bars) * (bar + gap)
    marks = []
    for i, b in enumerate(bars):
        h = max(1.0, b.seconds / top * plot)
        x = axis + i * (bar + gap)
        marks.append(_mark(_rect(b.kind, x, plot - h + 4, bar, h), b.title, b.href))
    grid = (
        f'<line class="axis" x1="{axis - 4}" y1="{plot + 4}" x2="{width}" y2="{plot + 4}"/>'
        f'<line class="axis faint" x1="{axis - 4}" y1="4" x2="{width}" y2="4"/>'
        f'<text class="tick" x="{axis - 8}" y="12" text-anchor="end">{escape(seconds_text(top))}</text>'
        f'<text class="tick" x="{axis - 8}" y="{plot + 8}" text-anchor="end">0</text>'
    )
    summary = (
        f"{label}: {len(bars)} runs, oldest first; longest {seconds_text(top)}, "
        f"shortest {seconds_text(min(b.seconds for b in bars))}"
    )
    return _svg(width, height, summary, grid + "".join(marks), "chart durations")


def sparkline(
    activity: ScheduleActivity | None, buckets: int, *, label: str, width: int = 120, height: int = 24
) -> Markup:
    """Runs per bucket as grey bars with the failed part in red, oldest left; an empty line when
    the schedule made no run in the window."""
    runs = activity.runs if activity is not None else (0,) * buckets
    failed = activity.failed if activity is not None else (0,) * buckets
    top = max(max(runs), 1)
    step = width / len(runs)
    marks = [f'<line class="axis faint" x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}"/>']
    for i, (n, bad) in enumerate(zip(runs, failed, strict=True)):
        if n == 0:
            continue
        x, w = i * step + 0.5, max(step - 1, 1)
        h = max(2.0, n / top * (height - 2))
        title = f"{n} run{'s' if n != 1 else ''}, {bad} failed"
        if activity is not None:
            start = activity.since + activity.bucket * i
            title = f"{start:%Y-%m-%d %H:%M} UTC + {format_duration(activity.bucket)}: {title}"
        marks.append(_mark(_rect("runs", x, height - h, w, h), title, None))
        if bad:
            fh = max(2.0, bad / top * (height - 2))
            marks.append(_mark(_rect("failed", x, height - fh, w, fh), title, None))
    summary = f"{label}: {sum(runs)} runs, {sum(failed)} failed"
    return _svg(width, height, summary, "".join(marks), "chart spark")
