"""`durably-sched events send` and what `runs show` / `runs list --status waiting` say about
waiting runs, their parents and children (issue 24), through click's CliRunner on SQLite."""

from __future__ import annotations

import asyncio
import json

from durably_sched.store import open_store
from durably_sched.store.base import NewRun
from durably_sched.store.waits import NewWait
from tests.unit.test_cli import Project


async def _waiting_parent_and_child(url: str) -> tuple[str, str]:
    store = open_store(url)
    await store.connect()
    await store.migrate()
    try:
        [(parent, _)] = await store.create_runs([NewRun(id="p0000000-aaaa", job_name="parent", input={})])
        [claimed] = await store.claim("w1", ["parent"], 1, 30.0)
        [(child, _)] = await store.create_runs([NewRun(id="c0000000-bbbb", job_name="kid", input={})])
        await store.suspend_run(
            claimed.id, claimed.generation, NewWait("children", "kids", children=[child.id])
        )
        [(waiter, _)] = await store.create_runs([NewRun(id="e0000000-cccc", job_name="kid", input={})])
        [held] = await store.claim("w1", ["kid"], 2, 30.0, run_ids=[waiter.id])
        wait = NewWait("event", "approval", key="approve:2026-12-06", seconds=3600)
        await store.suspend_run(held.id, held.generation, wait)
        return parent.id, child.id
    finally:
        await store.close()


def test_runs_show_says_what_a_waiting_run_waits_for_and_links_parent_and_children(project: Project) -> None:
    url = f"sqlite:///{project.db}"
    parent, child = asyncio.run(_waiting_parent_and_child(url))
    shown = project.ok("runs", "show", parent).stdout
    assert "waiting        for 1 child run (step 'kids')" in shown and child[:8] in shown
    data = project.json("runs", "show", parent, "--json")
    assert data["status"] == "waiting"
    assert data["waiting_for"] == {
        "kind": "children",
        "until": None,
        "key": None,
        "children": 1,
        "step": "kids",
    }
    assert data["children"] == [{"id": child, "job_name": "kid", "status": "pending"}]
    assert project.json("runs", "show", child, "--json")["parent_run_id"] == parent
    event = project.json("runs", "show", "e0000000-cccc", "--json")["waiting_for"]
    assert event["kind"] == "event" and event["key"] == "approve:2026-12-06" and event["until"].endswith("Z")
    shown = project.ok("runs", "show", "e0000000-cccc").stdout
    assert "waiting        for event approve:2026-12-06 (until " in shown
    listed = project.json("runs", "list", "--status", "waiting", "--json")
    assert sorted(r["id"] for r in listed) == sorted([parent, "e0000000-cccc"])


def test_events_send_says_how_many_runs_it_woke(project: Project) -> None:
    url = f"sqlite:///{project.db}"
    asyncio.run(_waiting_parent_and_child(url))
    assert project.ok("events", "send", "approve:2026-12-06", "--data", '{"by": "ann"}').stdout == (
        "event approve:2026-12-06: woke 1 run\n"
    )
    assert json.loads(project.ok("events", "send", "approve:2026-12-06", "--json").stdout) == {
        "key": "approve:2026-12-06",
        "woken": 0,
    }
    assert project.json("runs", "show", "e0000000-cccc", "--json")["status"] == "pending"


def test_events_send_refuses_bad_input_in_one_line(project: Project) -> None:
    asyncio.run(_waiting_parent_and_child(f"sqlite:///{project.db}"))
    for args, what in (
        (["events", "send", "k", "--data", "{nope"], "--data: invalid JSON"),
        (["events", "send", "a\nb"], "event key"),
        (["events", "send", "   "], "event key"),
    ):
        result = project.run(*args)
        assert result.exit_code == 2, result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and what in lines[0]


def test_watching_a_waiting_run_says_what_it_waits_for(project: Project) -> None:
    asyncio.run(_waiting_parent_and_child(f"sqlite:///{project.db}"))
    result = project.run("runs", "watch", "e0000000-cccc", "--timeout", "0.5")
    assert result.exit_code == 124, (result.stdout, result.stderr)
    assert "waiting for event approve:2026-12-06 (until " in result.stderr, result.stderr
