"""Durable waits across real `durably-sched serve` processes (issue 24), on SQLite and PostgreSQL:
a serve killed with SIGKILL while its run sleeps or waits for an event is not needed for the run to
resume after the wait (on another serve) without re-running a completed step; an event sent by the
CLI from another process wakes a run on a serve; a parent with `--concurrency 1` completes with its
children (it holds no slot while it waits), and its replays start no child twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from .serve_procs import HERE, ROOT, wait_for

pytestmark = pytest.mark.system


class WaitServe:
    """One `durably-sched serve` of the wait jobs."""

    def __init__(self, database: str, workdir: Path, effects: Path, *extra: str) -> None:
        schedules = workdir / "schedules.yaml"
        if not schedules.exists():
            schedules.write_text("schedules: {}\n")
        self.log = workdir / f"serve-{len(list(workdir.glob('serve-*.log')))}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "durably_sched.cli", "--database", database, "--jobs", "wait_jobs",
             "--schedules", str(schedules), "serve", "--no-scheduler", "--polling-interval", "0.2", *extra],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, cwd=workdir, env=env(effects),
        )  # fmt: skip
        wait_for(
            lambda: "serve started" in self.output() or self.proc.poll() is not None, 30, "serve started"
        )
        assert self.proc.poll() is None, self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def env(effects: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}", "CHAOS_EFFECTS": str(effects)}


def cli(database: str, workdir: Path, effects: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durably_sched.cli", "--database", database, "--jobs", "wait_jobs", *args],
        capture_output=True, text=True, cwd=workdir, env=env(effects), timeout=60,
    )  # fmt: skip


def run_json(database: str, workdir: Path, effects: Path, run_id: str) -> dict[str, object]:
    shown = cli(database, workdir, effects, "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def trigger(database: str, workdir: Path, effects: Path, job: str, payload: dict[str, object]) -> str:
    made = cli(database, workdir, effects, "trigger", job, "--input", json.dumps(payload), "--json")
    assert made.returncode == 0, made.stderr
    return str(json.loads(made.stdout)["id"])


def effects_of(effects: Path) -> Counter[str]:
    lines = effects.read_text().splitlines() if effects.exists() else []
    return Counter(" ".join(line.split()[1:3]) for line in lines)


@pytest.fixture
def serves() -> Iterator[list[WaitServe]]:
    made: list[WaitServe] = []
    yield made
    for serve in made:
        serve.stop()


def test_kill_9_during_a_sleep_resumes_after_it_on_another_serve(
    database: str, tmp_path: Path, serves: list[WaitServe]
) -> None:
    effects = tmp_path / "effects.log"
    first = WaitServe(database, tmp_path, effects)
    serves.append(first)
    run_id = trigger(database, tmp_path, effects, "sleeper", {"seconds": 3})
    status = lambda: run_json(database, tmp_path, effects, run_id)  # noqa: E731
    wait_for(lambda: status()["status"] == "waiting", 30, "run sleeping")
    first.kill9()  # the sleeper holds nothing of the dead serve
    serves.append(WaitServe(database, tmp_path, effects))
    final = wait_for(lambda: (s := status())["status"] == "completed" and s, 30, "run completed")
    assert effects_of(effects) == Counter({f"{run_id} before": 1, f"{run_id} after": 1})
    assert final["output"] == {"pid": serves[1].proc.pid}


def test_kill_9_during_an_event_wait_resumes_when_the_cli_sends_the_event(
    database: str, tmp_path: Path, serves: list[WaitServe]
) -> None:
    effects = tmp_path / "effects.log"
    serves.append(WaitServe(database, tmp_path, effects))
    run_id = trigger(database, tmp_path, effects, "approval", {"key": "approve:2026-12-06"})
    status = lambda: run_json(database, tmp_path, effects, run_id)  # noqa: E731
    waiting = wait_for(lambda: (s := status())["status"] == "waiting" and s, 30, "run waiting")
    assert waiting["waiting_for"]["kind"] == "event"  # type: ignore[index]
    serves[0].kill9()
    serves.append(WaitServe(database, tmp_path, effects))
    sent = cli(database, tmp_path, effects, "events", "send", "approve:2026-12-06", "--data", '"yes"')
    assert (sent.returncode, sent.stdout) == (0, "event approve:2026-12-06: woke 1 run\n"), sent.stderr
    final = wait_for(lambda: (s := status())["status"] == "completed" and s, 30, "run completed")
    assert final["output"] == {"decision": "yes"}
    assert effects_of(effects) == Counter({f"{run_id} report": 1, f"{run_id} publish": 1})


def test_a_parent_with_one_slot_completes_with_its_children_started_once(
    database: str, tmp_path: Path, serves: list[WaitServe]
) -> None:
    effects = tmp_path / "effects.log"
    serves.append(WaitServe(database, tmp_path, effects, "--concurrency", "1"))
    run_id = trigger(database, tmp_path, effects, "parent", {"n": 3})
    status = lambda: run_json(database, tmp_path, effects, run_id)  # noqa: E731
    final = wait_for(lambda: (s := status())["status"] == "completed" and s, 60, "parent completed")
    assert final["output"] == {"sum": 0 + 1 + 2}
    children = final["children"]
    assert isinstance(children, list) and len(children) == 3
    assert all(c["status"] == "completed" for c in children)
    counted = effects_of(effects)
    assert counted[f"{run_id} parent-sum"] == 1
    assert sorted(k for k in counted if k.endswith(" child")) == sorted(f"{c['id']} child" for c in children)
    assert all(n == 1 for n in counted.values())
    # The parent replayed after its wait (a second attempt) and found its children by their keys.
    assert [a["outcome"] for a in final["attempts"]] == ["suspended", "completed"]  # type: ignore[union-attr]


def test_trigger_here_interrupted_while_its_run_sleeps_says_the_run_waits(
    database: str, tmp_path: Path
) -> None:
    """`trigger --here --wait` executes the run itself; Ctrl-C while the run sleeps ends the command
    and says the run sleeps (until when) and that a worker resumes it, not that it was released."""
    effects = tmp_path / "effects.log"
    migrated = cli(database, tmp_path, effects, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    err = tmp_path / "trigger.err"
    proc = subprocess.Popen(
        [sys.executable, "-m", "durably_sched.cli", "--database", database, "--jobs", "wait_jobs",
         "trigger", "sleeper", "--input", '{"seconds": 600}', "--here", "--wait"],
        stdout=subprocess.PIPE, stderr=err.open("wb"), cwd=tmp_path, env=env(effects),
    )  # fmt: skip
    try:
        wait_for(lambda: "suspended" in err.read_text(), 30, "the attempt to end in the sleep")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text()
    assert "is sleeping until " in text and "a worker (durably-sched serve) resumes it" in text, text
    assert "was released" not in text, text
