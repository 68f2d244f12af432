"""Every code block in README.md and in the documentation site's pages (docs/*.md) works as written.

What users rely on: they can copy any block of the README or the docs and it does what the text
around it says. The README's blocks come first (its first is the quick start), then each page's, in
the order of the file names; blocks that depend on each other (files written, then used) sit on
one page.
A line ``<!-- readme-test: KIND ... -->`` before a block says how it is checked; Python blocks
without one are run:

* ``python`` (run): written to a file and run as a script in an empty directory; exit 0.
* ``schedules``: a schedules file; `durably-sched schedules validate` accepts it against the
  example jobs.
* ``shell``: run by bash in a copy of the repository whose ``.venv/bin`` points at the interpreter
  running the tests; a ``durably-sched ... serve`` line runs in the background until it has
  logged "serve started" and is stopped with SIGTERM at the end of the block (it must stop
  gracefully). ``with-serve``: a `serve` of the example is started first, as the quick start does.
  ``runs-complete``: after the block, every run in its database completes (none fails or is left
  waiting), as the text around such a block promises.
  ``terminal``: the block runs on a pseudo-terminal and must draw a progress bar that advances.
* ``install``: only in :func:`test_install_blocks_work_in_a_fresh_copy`, as written, with real
  virtualenvs and ``pip install`` (slow; ``DURABLY_README_INSTALL=0`` skips it).
* ``file PATH``: the block is the content of PATH (relative to the repository root); it is written
  there for the blocks that follow. Python files must compile; YAML files must parse.
* ``synopsis``: the CLI synopsis; every command and option it names exists.
* ``log-sample``: sample serve output; every line has the text log's shape.
* ``skip REASON``: not checked, for the reason given (the test command, which runs this test).
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml

from durably_sched.cli import main

from .serve_procs import ROOT, wait_for

pytestmark = pytest.mark.system

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
MARK = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
SERVE_LINE = re.compile(r"durably-sched\b.*\bserve\b(?!.*--help)")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
KINDS = {"run", "schedules", "shell", "install", "file", "synopsis", "log-sample", "skip"}


@dataclass
class Block:
    lang: str
    kind: str
    options: list[str]
    text: str
    line: int
    page: str = "README.md"

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ({self.lang or 'text'} block, {self.kind})"


def read_blocks(path: Path) -> list[Block]:
    page = str(path.relative_to(ROOT))
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        mark = MARK.match(before)
        words = mark.group(1).split() if mark else []
        lang = fence.group(1)
        kind = words[0] if words else ("run" if lang == "python" else "")
        assert kind in KINDS, (
            f"{page}:{start + 1}: a {lang or 'plain'} block needs a <!-- readme-test: KIND --> line "
            f"before it (one of {', '.join(sorted(KINDS))})"
        )
        if kind == "skip":
            assert len(words) > 1, f"{page}:{start + 1}: readme-test: skip needs a reason"
        blocks.append(Block(lang, kind, words[1:], "\n".join(body) + "\n", start + 1, page))
    return blocks


BLOCKS = [block for path in PAGES for block in read_blocks(path)]


def test_the_readme_blocks_are_all_classified() -> None:
    kinds = {b.kind for b in BLOCKS}
    assert {"run", "schedules", "shell", "install", "file", "synopsis"} <= kinds, kinds
    assert BLOCKS[0].kind == "install" and "serve" in BLOCKS[0].text, "the first command is the quick start"
    assert BLOCKS[0].page == "README.md"
    pages = {b.page for b in BLOCKS}
    assert {"README.md", "docs/getting-started.md", "docs/schedules.md"} <= pages, pages
    # A page that repeats a README block (skipped as "the README's ...") repeats it exactly.
    readme = {b.text for b in BLOCKS if b.page == "README.md"}
    for block in BLOCKS:
        if block.kind == "skip" and block.options[:2] == ["the", "README's"]:
            assert block.text in readme, f"{block}: differs from the README's block it repeats"


# --- the environment blocks run in ------------------------------------------------------------------


def copy_repository(target: Path) -> Path:
    """The repository's files as a fresh clone of this working tree has them (untracked files that
    git would commit included, ignored ones such as .venv and databases left out)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DURABLY_", "VIRTUAL_ENV", "PYTHON"))}
    env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "100", "TERM": "xterm-256color"})
    return env


def shim_venv(repo: Path) -> None:
    """``.venv/bin/durably-sched`` and ``.venv/bin/python`` of the interpreter running the tests."""
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    script = bin_dir / "durably-sched"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m durably_sched.cli "$@"\n')
    script.chmod(0o755)


@dataclass
class Background:
    command: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def background_serves(repo: Path, env: dict[str, str], commands: list[str], timeout: float) -> Iterator[None]:
    """Start each command in its own process group; wait for "serve started"; SIGTERM at the end."""
    started: list[Background] = []
    try:
        for n, command in enumerate(commands):
            log = repo.parent / f"background-{n}-{time.monotonic_ns()}.log"
            proc = subprocess.Popen(
                ["bash", "-c", command],
                cwd=repo,
                env=env,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            job = Background(command, proc, log)
            started.append(job)
            wait_for(
                lambda job=job: "serve started" in job.output() or job.proc.poll() is not None,  # type: ignore[misc]
                timeout,
                f"`{command}` to log 'serve started'",
            )
            assert job.proc.poll() is None, f"`{command}` exited:\n{job.output()[-3000:]}"
        yield
    finally:
        for job in started:
            if job.proc.poll() is None:
                os.killpg(job.proc.pid, signal.SIGTERM)
        for job in started:
            try:
                job.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(job.proc.pid, signal.SIGKILL)
                job.proc.wait(10)
    for job in started:
        assert "INFO  stopped" in job.output(), (
            f"`{job.command}` did not stop gracefully:\n{job.output()[-3000:]}"
        )


def run_script(script: str, cwd: Path, env: dict[str, str], timeout: float, what: Block) -> str:
    done = subprocess.run(
        ["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"{what}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout + done.stderr


def run_on_terminal(script: str, cwd: Path, env: dict[str, str], timeout: float, what: Block) -> str:
    """Run with stdin, stdout and stderr on a pseudo-terminal (as at a real terminal); the output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        ["bash", "-e", "-c", script], cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the terminal closed: every process on it has exited
                    data = b""
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
            assert time.monotonic() < deadline, f"{what}: still running after {timeout}s"
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    output = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, f"{what}: exit {proc.returncode}\n{output[-3000:]}"
    return output


def split_serves(text: str) -> tuple[list[str], str]:
    """A shell block's `serve` lines (run in the background) and the rest, as one script."""
    serves, rest = [], []
    for line in text.splitlines():
        (serves if SERVE_LINE.search(line) and not line.lstrip().startswith("#") else rest).append(line)
    return serves, "\n".join(rest)


# --- the checks per kind ------------------------------------------------------------------------------


def check_python(block: Block, scratch: Path, env: dict[str, str]) -> None:
    scratch.mkdir()
    (scratch / "example.py").write_text(block.text)
    done = subprocess.run(
        [sys.executable, "example.py"], cwd=scratch, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{block}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def check_schedules(block: Block, repo: Path, env: dict[str, str]) -> None:
    path = repo.parent / f"{Path(block.page).stem}-{block.line}.yaml"
    path.write_text(block.text)
    out = run_script(f'.venv/bin/durably-sched schedules validate "{path}"', repo, env, 60, block)
    assert "ok:" in out, out


def check_file(block: Block, repo: Path) -> None:
    path = (repo / block.options[0]).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block.text)
    if path.suffix == ".py":
        compile(block.text, str(path), "exec")
    elif path.suffix in (".yaml", ".yml"):
        yaml.safe_load(block.text)


def check_shell(block: Block, repo: Path, env: dict[str, str]) -> None:
    serves, script = split_serves(block.text)
    if "with-serve" in block.options:
        serves.insert(0, ".venv/bin/durably-sched --database sqlite:///durably.db serve")
    with background_serves(repo, env, serves, timeout=60):
        if "terminal" in block.options:
            output = ANSI.sub("", run_on_terminal(script, repo, env, 180, block))
            check_progress_bar(block, output)
        elif script.strip():
            run_script(script, repo, env, 180, block)
        if "runs-complete" in block.options:
            check_runs_complete(block, repo, env)


def check_runs_complete(block: Block, repo: Path, env: dict[str, str]) -> None:
    """The runs the block made (not those the example's schedules fire meanwhile) all complete."""
    command = ".venv/bin/durably-sched --database sqlite:///durably.db runs list --json"
    statuses: dict[str, str] = {}

    def all_completed() -> bool:
        runs = json.loads(run_script(command, repo, env, 60, block))
        statuses.update({run["id"]: run["status"] for run in runs if "schedule" not in run["labels"]})
        return bool(statuses) and all(status == "completed" for status in statuses.values())

    try:
        wait_for(all_completed, 60, f"{block}: every run to complete")
    except AssertionError as failed:
        raise AssertionError(f"{failed}; the runs: {statuses}") from None


def check_progress_bar(block: Block, output: str) -> None:
    """The demo's point: a progress bar that visibly advances before the run completes."""
    counts = {(int(a), int(b)) for a, b in re.findall(r"━\s*(\d+)/(\d+)", output)}
    totals = {total for _, total in counts}
    assert len(totals) == 1, f"{block}: no single progress bar in:\n{output[-3000:]}"
    (total,) = totals
    between = {done for done, _ in counts if 0 < done < total}
    assert len(between) >= 3, f"{block}: the bar showed only {sorted(between)} of {total}:\n{output[-3000:]}"
    assert re.search(r"run \S+ completed in \d", output), output[-3000:]


def check_synopsis(block: Block) -> None:
    """Each line starts with command words (``a|b`` for alternatives, ``group a|b`` for
    subcommands); every ``--option`` on the line exists on each of the commands it names."""
    ctx = click.Context(main)

    def command(path: list[str]) -> click.Command:
        found: click.Command = main
        for name in path:
            sub = found.get_command(ctx, name) if isinstance(found, click.Group) else None
            assert sub is not None, f"{block}: no command `durably-sched {' '.join(path)}`"
            found = sub
        return found

    def options(cmd: click.Command) -> set[str]:
        return {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}

    lines = block.text.strip().splitlines()
    assert lines[0].split()[0] == "durably-sched", lines[0]
    for flag in re.findall(r"--[a-z-]+", lines[0]):
        assert flag in options(main), f"{block}: durably-sched has no {flag}"
    for line in lines[1:]:
        text = re.sub(r"\s*\|\s*", "|", line.strip())
        words = []
        for word in text.split():
            if not re.fullmatch(r"[a-z|]+", word):
                break
            words.append(word.split("|"))
        assert words, f"{block}: no command in {line!r}"
        paths = [[first] for first in words[0]]
        if len(words) > 1:
            paths = [[first, second] for first in words[0] for second in words[1]]
        for path in paths:
            found = command(path)
            for flag in re.findall(r"--[a-z-]+", line):
                assert flag in options(found), f"{block}: `durably-sched {' '.join(path)}` has no {flag}"


def check_log_sample(block: Block) -> None:
    shape = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d (INFO |WARNING|ERROR|DEBUG) \S")
    for line in block.text.strip().splitlines():
        assert shape.match(line), f"{block}: not a text log line: {line}"


# --- the tests -----------------------------------------------------------------------------------------


def test_every_block_works_as_written(tmp_path: Path) -> None:
    repo = copy_repository(tmp_path / "durably-sched")
    shim_venv(repo)
    env = clean_env()
    checked: list[str] = []
    for block in BLOCKS:
        if block.kind in ("install", "skip"):
            continue
        if block.kind == "run":
            check_python(block, tmp_path / f"python-{Path(block.page).stem}-{block.line}", env)
        elif block.kind == "schedules":
            check_schedules(block, repo, env)
        elif block.kind == "file":
            check_file(block, repo)
        elif block.kind == "shell":
            check_shell(block, repo, env)
        elif block.kind == "synopsis":
            check_synopsis(block)
        elif block.kind == "log-sample":
            check_log_sample(block)
        checked.append(str(block))
    assert len(checked) >= 6, checked


@pytest.mark.skipif(os.environ.get("DURABLY_README_INSTALL") == "0", reason="DURABLY_README_INSTALL=0")
def test_install_blocks_work_in_a_fresh_copy(tmp_path: Path) -> None:
    """The quick start on a fresh copy of the repository (its first command: a virtualenv, `pip
    install -e .`, `serve`), then using the package from a project next to it, all as written."""
    repo = copy_repository(tmp_path / "durably-sched")
    env = clean_env()
    ran = 0
    for block in BLOCKS:
        if block.kind == "file":
            check_file(block, repo)
        if block.kind != "install":
            continue
        serves, script = split_serves(block.text)
        with background_serves(repo, env, serves, timeout=900):
            if script.strip():
                out = run_script(script, repo, env, 900, block)
                if "trigger hello" in script:
                    assert '"greeting": "hello, you"' in out, out
        ran += 1
    assert ran >= 3
