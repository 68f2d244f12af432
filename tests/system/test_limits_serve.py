"""Limits in a real `durably-sched serve` process.

What users rely on: the limits given by `DURABLY_LIMITS` (or `--limit`) are the ones a running
serve enforces; an edit of schedules.yaml that puts a schedule past a limit is reported once and
changes nothing (the loaded schedules keep firing), exactly like a file that does not parse; a run
that a trigger from another process gives an input past the limit never exists.
"""

from __future__ import annotations

import json

import pytest

from .serve_procs import wait_for
from .test_cli_serve import EVERY_SECOND, Project, project, stop

pytestmark = pytest.mark.system

__all__ = ["project"]


def test_a_schedule_edited_past_a_limit_is_reported_once_and_the_loaded_ones_keep_firing(
    project: Project,
) -> None:
    project.schedules.write_text(EVERY_SECOND)
    project.env["DURABLY_LIMITS"] = "input=64"
    serve = project.serve()
    wait_for(lambda: project.completed("tick") >= 1, 10, "the first schedule to fire")

    big = "  big:\n    cron: '*/1 * * * * *'\n    job: other\n    input: {blob: '" + "x" * 100 + "'}\n"
    project.schedules.write_text(EVERY_SECOND + big)
    wait_for(lambda: "schedules not reloaded" in project.log(serve), 10, "the refused reload to be logged")
    before = project.completed("tick")
    wait_for(lambda: project.completed("tick") >= before + 3, 10, "the loaded schedule to keep firing")
    refused = [line for line in project.log(serve).splitlines() if "schedules not reloaded" in line]
    assert len(refused) == 1, refused  # once, not once a second
    assert "schedule 'big': input: 111 bytes is over the limit of 64 bytes (limits.input)" in refused[0]
    assert not project.runs("schedule_name = 'big'")

    # The trigger of another process, with the same limits: refused before the database.
    tried = project.cli("trigger", "other", "--input", json.dumps({"blob": "y" * 100}))
    assert tried.returncode == 2
    assert tried.stderr.strip().startswith("error: --input: input: 111 bytes is over the limit of 64 bytes")
    assert not project.runs("job_name = 'other'")
    assert stop(serve)[0] == 0
