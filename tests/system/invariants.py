"""Invariant checks for the chaos tests that say what went wrong, not only that something did."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from durably_sched.schedule.cron import parse_fire_key
from durably_sched.store.base import RunRecord


@dataclass
class ExactlyOnceReport:
    expected: list[datetime]
    missing: list[datetime]
    doubled: dict[datetime, int]
    unexpected: list[datetime]
    not_completed: dict[str, str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.doubled or self.unexpected or self.not_completed)

    def __str__(self) -> str:
        def times(items: Iterable[datetime]) -> str:
            shown = [t.strftime("%H:%M:%SZ") for t in items]
            return ", ".join(shown[:20]) + (f" … ({len(shown)} in all)" if len(shown) > 20 else "")

        lines = [f"{len(self.expected)} fire times expected"]
        if self.missing:
            lines.append(f"missing runs for: {times(self.missing)}")
        if self.doubled:
            lines.append(
                "doubled: " + ", ".join(f"{t:%H:%M:%SZ} x{n}" for t, n in sorted(self.doubled.items()))
            )
        if self.unexpected:
            lines.append(f"runs for fire times outside the range: {times(self.unexpected)}")
        if self.not_completed:
            lines.append(
                "not completed: "
                + ", ".join(f"{rid[:8]}={st}" for rid, st in list(self.not_completed.items())[:20])
            )
        return "; ".join(lines)


def check_exactly_once(
    runs: Sequence[RunRecord], schedule: str, first: datetime, last: datetime, period: timedelta
) -> ExactlyOnceReport:
    """Every fire time in [first, last] (every ``period``) has exactly one completed run."""
    expected = []
    t = first
    while t <= last:
        expected.append(t)
        t += period
    seen: Counter[datetime] = Counter()
    for run in runs:
        assert run.idempotency_key is not None, f"run {run.id} has no fire-time key"
        name, fire_time = parse_fire_key(run.idempotency_key)
        if name == schedule:
            seen[fire_time] += 1
    expected_set = set(expected)
    return ExactlyOnceReport(
        expected=expected,
        missing=[t for t in expected if seen[t] == 0],
        doubled={t: n for t, n in seen.items() if n > 1},
        unexpected=sorted(t for t in seen if t not in expected_set),
        not_completed={r.id: r.status for r in runs if r.status != "completed"},
    )


def steps_done_twice(effect_lines: Iterable[str]) -> dict[tuple[str, str], int]:
    """(run id, step) pairs whose side effect completed more than once."""
    done = Counter(
        (parts[1], parts[2]) for parts in (line.split() for line in effect_lines) if parts[-1] == "done"
    )
    return {key: n for key, n in done.items() if n > 1}


def effects_of(path: Path) -> list[str]:
    """The lines of a jobs' effects log (``CHAOS_EFFECTS``); none before the first was written."""
    return path.read_text().splitlines() if path.exists() else []
