"""Run ids as the CLI takes them, through CliRunner.

What users rely on: the 8-character ids that tables and logs show work wherever a run id is taken
(a mistake or an ambiguous prefix is one line, exit 2); `runs retry|retrigger --wait` behave as
`trigger --wait`.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from durably_sched.store.base import NewRun
from durably_sched.store.sqlite import SqliteStore
from tests.unit.test_cli import Project, error_line

# --- short run ids ----------------------------------------------------------------------------------


def _insert_runs(p: Project, *ids: str, job: str = "plain") -> None:
    """Runs with chosen ids (uuid4 ids sharing a 6-character prefix would need ~5,000 runs)."""

    async def insert() -> None:
        store = SqliteStore(f"sqlite:///{p.db}")
        await store.connect()
        try:
            await store.create_runs([NewRun(id=run_id, job_name=job, input={}) for run_id in ids])
        finally:
            await store.close()

    asyncio.run(insert())


def test_a_short_id_names_the_run_in_every_runs_command(migrated: Project) -> None:
    p = migrated
    run_id = p.json("trigger", "plain", "--input", '{"n": 1}', "--here", "--json")["id"]
    short = p.ok("runs", "list").stdout.splitlines()[1].split()[0]
    assert short == run_id[:8]  # what the table shows is what the commands take
    assert p.json("runs", "show", short, "--json")["id"] == run_id
    assert p.json("runs", "show", run_id[:6], "--json")["id"] == run_id
    assert json.loads(p.ok("runs", "watch", short).stdout) == {"got": {"n": 1}}
    copy = p.ok("runs", "retrigger", short).stdout
    assert f"retrigger of {run_id}" in copy
    copy_id = copy.split()[1]
    assert p.ok("runs", "cancel", copy_id[:7]).stdout.strip() == f"run {copy_id} cancelled"
    assert p.ok("runs", "retry", copy_id[:8]).stdout.startswith(f"run {copy_id} is pending again")
    p.ok("runs", "cancel", copy_id[:8])
    assert p.ok("runs", "delete", copy_id[:8]).stdout.strip() == f"run {copy_id} deleted"


@pytest.mark.parametrize("command", ["show", "watch", "retry", "retrigger", "cancel", "delete"])
def test_short_id_mistakes_are_one_line_exit_2(migrated: Project, command: str) -> None:
    _insert_runs(migrated, "33fc6f80-aaaa", "33fc6f80-bbbb", "33fc6f9a-cccc")
    result = migrated.run("runs", command, "33fc6")
    assert result.exit_code == 2
    assert error_line(result) == "error: no run with id '33fc6' (a short id needs at least 6 characters)"
    result = migrated.run("runs", command, "33fc6f80")
    assert result.exit_code == 2
    assert error_line(result) == (
        "error: run id prefix '33fc6f80' matches 2 runs: 33fc6f80-aaaa, 33fc6f80-bbbb; give more characters"
    )
    result = migrated.run("runs", command, "44fc6f80")
    assert result.exit_code == 2
    assert error_line(result) == "error: no run with id or id prefix '44fc6f80'"


def test_an_ambiguous_prefix_lists_at_most_ten_candidates(migrated: Project) -> None:
    _insert_runs(migrated, *(f"abcdef-{i:02d}" for i in range(12)))
    line = error_line(migrated.run("runs", "show", "abcdef"))
    assert (
        "matches 10+ runs: abcdef-00, abcdef-01," in line and "abcdef-09, ...; give more characters" in line
    )
    assert "abcdef-10" not in line
    assert migrated.json("runs", "show", "abcdef-11", "--json")["id"] == "abcdef-11"


# --- runs retry / retrigger --wait -----------------------------------------------------------------


def test_retry_and_retrigger_wait_like_trigger_wait(migrated: Project) -> None:
    p = migrated
    failed = json.loads(p.run("trigger", "boom", "--here", "--json").stdout)["id"]
    # Nothing executes runs here: --wait follows the run and gives up at --timeout with 124.
    result = p.run("runs", "retry", failed[:8], "--wait", "--timeout", "0.3")
    assert result.exit_code == 124, result.output
    assert result.stdout == ""  # stdout is kept for the run's output
    assert f"run {failed} is pending again" in result.stderr
    assert "timed out waiting; run" in result.stderr and f"runs watch {failed}" in result.stderr

    p.ok("runs", "cancel", failed[:8])
    result = p.run("runs", "retrigger", failed[:8], "--wait", "--timeout", "0.3", "--json")
    assert result.exit_code == 124
    shown = json.loads(result.stdout)
    assert shown["status"] == "pending" and shown["action"] == "retrigger" and shown["retrigger_of"] == failed
    assert p.json("runs", "retry", failed[:8], "--json") == {
        "id": failed,
        "job_name": "boom",
        "status": "pending",
        "action": "retry",
    }
    result = p.run("runs", "retry", failed[:8], "--timeout", "3")
    assert result.exit_code == 2 and "--timeout only applies with --wait" in error_line(result)
