"""The step values table in the docs (docs/jobs.md, "Step values"), run through real steps.

What users rely on: what the docs say a step gets back is what it gets back, on the first
execution and on replay alike (a retried run replays its completed steps from the database), and
what it says is refused fails the step with a line naming it, whatever the value's content.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from pydantic import BaseModel

from durably_sched import Durably, RunFailedError, Step, create_durably, define_job

PAGE = Path(__file__).resolve().parents[2] / "docs" / "jobs.md"


class Color(enum.Enum):
    RED = "red"


class Point(BaseModel):
    x: int
    y: int


@dataclasses.dataclass
class Size:
    w: int
    h: int


NAMES: dict[str, Any] = {
    "UTC": UTC, "date": date, "datetime": datetime, "time": time, "timedelta": timedelta,
    "Decimal": Decimal, "UUID": UUID, "Path": Path, "Color": Color, "Point": Point, "Size": Size,
}  # fmt: skip


def table() -> list[tuple[list[str], list[str] | None]]:
    """(expressions a step returns, what it gets back; None when refused) per row of the table."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("<!-- step-values:")
    rows = []
    for line in text[start:].splitlines()[3:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        returned = re.findall(r"`([^`]*)`", cells[0])
        back = None if cells[1] == "refused" else re.findall(r"`([^`]*)`", cells[1])
        assert back is None or len(back) == len(returned), line
        rows.append((returned, back))
    assert len(rows) >= 10
    return rows


ROWS = table()
KEPT = [
    (expr, want)
    for returned, back in ROWS
    if back is not None
    for expr, want in zip(returned, back, strict=True)
]
REFUSED = [expr for returned, back in ROWS if back is None for expr in returned]


@pytest.fixture
async def durably(tmp_path: Path) -> AsyncIterator[Durably]:
    d = create_durably(f"sqlite:///{tmp_path / 'values.db'}", polling_interval=0.05)
    yield d
    await d.close()


async def test_every_value_comes_back_as_the_readme_says_first_time_and_on_replay(durably: Durably) -> None:
    seen: dict[int, list[Any]] = {}

    async def job(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        got = seen.setdefault(step.attempt, [])
        for i, (expr, _) in enumerate(KEPT):
            got.append(await step.run(f"value-{i}", lambda expr=expr: eval(expr, dict(NAMES))))
        if step.attempt == 1:
            raise RuntimeError("fail once, so that the retry replays every step")
        return {}

    durably.register([define_job(name="values", run=job)])
    await durably.init()
    with pytest.raises(RunFailedError) as failed:
        await durably.job("values").trigger_and_wait({}, timeout=30)
    await durably.retry(failed.value.run_id)
    final = await durably.wait_for_run(failed.value.run_id, timeout=30)
    assert final.status == "completed" and final.attempt == 2
    expected = [eval(want, {}) for _, want in KEPT]
    assert seen[1] == expected  # first execution
    assert seen[2] == expected  # replay: read back from the database
    assert [type(v) for v in seen[2]] == [type(v) for v in expected]
    assert len(await durably.get_steps(final.id)) == len(KEPT)


@pytest.mark.parametrize("expr", REFUSED)
async def test_a_refused_value_fails_its_step_with_one_line(durably: Durably, expr: str) -> None:
    async def job(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("keep", lambda: 1)
        await step.run("refused", lambda: {"inside": [eval(expr, dict(NAMES))]})
        return {}

    durably.register([define_job(name="refused", run=job)])
    await durably.init()
    with pytest.raises(RunFailedError) as failed:
        await durably.job("refused").trigger_and_wait({}, timeout=30)
    error = failed.value.error or ""
    assert failed.value.failed_step_name == "refused"
    assert error.startswith("StepError: step 'refused' returned dict, which cannot be stored as JSON: "), (
        error
    )
    assert "\n" not in error
    assert "['inside'][0]" in error or "Unable to serialize unknown type" in error, error
    assert [s.name for s in await durably.get_steps(failed.value.run_id)] == ["keep"]  # nothing stored
