"""`serve --http` against hostile clients: slow headers and big bodies (issue 20).

What users rely on: an orchestrator's liveness probe keeps getting 200 from /healthz while anyone
who can reach the port holds hundreds of connections that trickle their headers in, from the same
(loopback) address as the probe; a request body over the limit gets 413 JSON without being read into
memory, and the server stays small and answering.
"""

from __future__ import annotations

import errno
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from durably_sched.web._protocol import HEAD_SECONDS

from .serve_procs import wait_for
from .test_web_serve import _port, start, stop

pytestmark = pytest.mark.system

SLOW_CONNECTIONS = 600


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    from .test_web_serve import JOBS

    (tmp_path / "webjobs.py").write_text(JOBS)
    return tmp_path


@pytest.fixture
def served(workdir: Path) -> Iterator[tuple[int, int]]:
    """A real `serve --http` on loopback without a token: (port, pid)."""
    proc, log = start(
        workdir, f"sqlite:///{workdir / 'web.db'}", "web", "--no-scheduler", "--http", "127.0.0.1:0"
    )
    try:
        port = wait_for(lambda: _port(proc, log), 60, "serve listening")
        yield port, proc.pid
    finally:
        code = stop(proc, log)
    assert code == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


class SlowHeaders:
    """Keeps ``count`` connections open that each send one more header line every half second and
    never finish their head; a connection the server closes is opened again at once."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.socks: list[socket.socket | None] = [None] * count
        self.opened = 0
        self.reopened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        except OSError:
            return None
        sock.setblocking(False)
        self.opened += 1
        return sock

    def _alive(self, sock: socket.socket) -> bool:
        try:
            if sock.recv(4096) == b"":
                return False
        except BlockingIOError:
            pass
        except OSError:
            return False
        try:
            sock.send(b"X-Slow: 1\r\n")
        except BlockingIOError:
            pass
        except OSError as exc:
            return exc.errno in (errno.EAGAIN,)
        return True

    def _run(self) -> None:
        while not self.stop.is_set():
            for i, sock in enumerate(self.socks):
                if sock is not None and self._alive(sock):
                    continue
                if sock is not None:
                    sock.close()
                    self.reopened += 1
                self.socks[i] = self._open()
            self.stop.wait(0.5)

    def __enter__(self) -> SlowHeaders:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        for sock in self.socks:
            if sock is not None:
                sock.close()


def test_slow_header_connections_do_not_starve_the_health_probe(served: tuple[int, int]) -> None:
    port, _ = served
    probe = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=20, limits=httpx.Limits(max_keepalive_connections=0)
    )
    with probe, SlowHeaders(port, SLOW_CONNECTIONS) as attack:
        wait_for(lambda: attack.opened >= SLOW_CONNECTIONS, 60, f"{SLOW_CONNECTIONS} slow connections open")
        answers = []
        slowest = 0.0
        started = time.monotonic()
        # Probe while the attack holds its connections, through more than one head deadline (the
        # server closes them; the attacker opens them again at once).
        while len(answers) < 5 or time.monotonic() - started < HEAD_SECONDS * 2:
            sent = time.monotonic()
            answers.append(probe.get("/healthz").status_code)
            slowest = max(slowest, time.monotonic() - sent)
            time.sleep(0.2)
        print(
            f"{len(answers)} probes in {time.monotonic() - started:.1f}s, slow connections "
            f"opened {attack.opened}, closed by the server {attack.reopened}, "
            f"slowest probe {slowest * 1000:.0f} ms"
        )
    assert answers and set(answers) == {200}, answers
    assert attack.reopened >= SLOW_CONNECTIONS  # the server did close them (the attacker reopened)


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _answer(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one HTTP response on ``sock`` (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1]
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), body


BIG = 200 * 1024 * 1024


def test_a_big_body_gets_413_and_the_server_stays_small(served: tuple[int, int]) -> None:
    port, pid = served
    probe = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20)
    with probe:
        assert probe.get("/healthz").status_code == 200
        before = _peak_rss(pid)
        # A declared size over the limit: refused at once, nothing of the body sent.
        for path in ("/login", "/api/jobs/slow/trigger"):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Durably-CSRF: 1\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {BIG}\r\n\r\n".encode()
                )
                status, body = _answer(sock)
                assert status == 413 and json.loads(body)["error"] == "too_large", body
        # A chunked body (no declared size): refused while it streams in.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /api/jobs/slow/trigger HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Durably-CSRF: 1\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
            sent = 0
            sock.setblocking(False)
            while sent < BIG:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                try:
                    sock.send(chunk)
                    sent += 65536
                except BlockingIOError:
                    select.select([sock], [sock], [], 1)
            sock.setblocking(True)
            status, body = _answer(sock)
            assert status == 413 and json.loads(body)["error"] == "too_large", body
            print(f"chunked body refused after {sent / 1024 / 1024:.1f} MiB sent")
        assert probe.get("/healthz").status_code == 200
        grown = _peak_rss(pid) - before
        print(f"peak memory of serve grew by {grown / 1024 / 1024:.1f} MiB")
        assert grown < 64 * 1024 * 1024  # far below the 200 MiB bodies: they were never held


def test_logout_and_throttling_across_real_serves(workdir: Path) -> None:
    """Two `serve --http` on one database with one token: a session made in one works in the
    other, and a logout in either ends it in both; behind a trusted proxy, failed logins are
    throttled per forwarded client address."""
    token = "a-long-enough-token-123"
    (workdir / "token.txt").write_text(token + "\n")
    database = f"sqlite:///{workdir / 'web.db'}"
    args = ("--no-scheduler", "--http", "127.0.0.1:0", "--http-token-file", "token.txt")
    first, first_log = start(workdir, database, "first", *args, "--trust-proxy-headers")
    try:
        first_port = wait_for(lambda: _port(first, first_log), 60, "first serve listening")
        second, second_log = start(workdir, database, "second", *args)
        try:
            second_port = wait_for(lambda: _port(second, second_log), 60, "second serve listening")
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            one = httpx.Client(base_url=f"http://127.0.0.1:{first_port}", timeout=20)
            two = httpx.Client(base_url=f"http://127.0.0.1:{second_port}", timeout=20)
            with one, two:
                login = one.post("/login", content=f"token={token}", headers=form)
                assert login.status_code == 303, login.text
                cookie = {"Cookie": f"durably_session={login.cookies['durably_session']}"}
                one.cookies.clear()
                assert two.get("/api/runs", headers=cookie).status_code == 200
                assert two.post("/logout", headers=cookie).status_code == 303
                assert one.get("/api/runs", headers=cookie).status_code == 401
                assert two.get("/api/runs", headers=cookie).status_code == 401
                guesser = {**form, "X-Forwarded-For": "203.0.113.9"}
                # The delays double with each counted failure, so a 429 comes however slow the machine.
                answers = [one.post("/login", content="token=guess", headers=guesser) for _ in range(12)]
                codes = [a.status_code for a in answers]
                assert codes[:5] == [401] * 5 and 429 in codes, codes
                assert all(a.headers["retry-after"].isdigit() for a in answers if a.status_code == 429)
                other = {**form, "X-Forwarded-For": "198.51.100.4"}
                assert one.post("/login", content=f"token={token}", headers=other).status_code == 303
        finally:
            assert stop(second, second_log) == 0
    finally:
        assert stop(first, first_log) == 0
