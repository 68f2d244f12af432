"""Start and stop real `durably-sched serve` processes for system tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

RUN_LINE = re.compile(r"INFO  \S+ [0-9a-f]{8} ")
"""A text log line about one run (``<job> <short id> ...``)."""
HERE = Path(__file__).parent
ROOT = HERE.parent.parent
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        time.sleep(0.05)


class Serve:
    """One `durably-sched serve` subprocess with its log file."""

    def __init__(
        self,
        database: str,
        schedules: Path,
        workdir: Path,
        *extra: str,
        env: dict[str, str],
        prefix: tuple[str, ...] = (),
    ) -> None:
        """``prefix``: a command the serve runs under (``faketime -f +20s``); it may fork, so the
        serve then gets a process group of its own and signals go to the group."""
        self.prefix = prefix
        self.database = database
        self.schedules = schedules
        self.workdir = workdir
        self.extra = extra
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0

    def start(self) -> Serve:
        self.generation += 1
        log = self.workdir / f"serve-{id(self)}-{self.generation}.log"
        self.log_path = log
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "durably_sched.cli",
                "--database",
                self.database,
                "--jobs",
                "chaos_jobs",
                "--schedules",
                str(self.schedules),
                "serve",
                *self.extra,
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}", **self.env},
            start_new_session=bool(self.prefix),
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.signal(signal.SIGKILL)
            self.proc.wait(10)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        if self.prefix:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def ready(self) -> bool:
        return "serve started" in self.output()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM once serve has started (its signal handlers are installed); returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            wait_for(lambda: self.ready() or self.proc.poll() is not None, 30, "serve started")  # type: ignore[union-attr]
            self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)
            lines = self.output().splitlines()
            since = next((i for i, line in enumerate(lines) if "received SIGTERM" in line), len(lines))
            stopping = [line for line in lines[since:] if not RUN_LINE.search(line)]  # the tail has them
            raise AssertionError(
                f"serve pid {self.proc.pid} did not stop within {timeout}s of SIGTERM; from the "
                "signal on, all but run lines:\n"
                + "\n".join(stopping[:60])[-6000:]
                + "\nlog tail:\n"
                + "\n".join(lines)[-2000:]
            ) from None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if hasattr(self, "log_path") else ""


def http_base(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> str:
    """The address a `serve --http 127.0.0.1:0` listens on, once its log says so (it must not exit)."""

    def port() -> int | None:
        assert proc.poll() is None, log.read_text()
        found = re.search(r"on http://127\.0\.0\.1:(\d+)", log.read_text())
        return int(found.group(1)) if found else None

    return f"http://127.0.0.1:{wait_for(port, timeout, 'serve listening')}"
