"""The HTTP server's read deadlines (``web/_protocol.py``), in process with short deadlines.

What users rely on: a client cannot hold a connection by trickling a request's head or body in,
on a fresh connection or on a kept-alive one after a first quick request; a client that sends its
request at once is served as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from durably_sched.web._protocol import GuardedH11Protocol
from durably_sched.web.server import WebServer, start_server


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"{len(await request.body())}")


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[WebServer]:
    monkeypatch.setattr(GuardedH11Protocol, "head_seconds", 0.5)
    monkeypatch.setattr(GuardedH11Protocol, "body_seconds", 0.5)
    served = await start_server(Starlette(routes=[Route("/", echo, methods=["GET", "POST"])]), "127.0.0.1", 0)
    yield served
    await served.close()


async def _closed_while_trickling(
    writer: asyncio.StreamWriter, reader: asyncio.StreamReader, line: bytes
) -> int:
    """Send ``line`` every 0.1 s until the server closes the connection; returns how many were sent."""
    for sent in range(1, 200):
        writer.write(line)
        try:
            await writer.drain()
            data = await asyncio.wait_for(reader.read(4096), 0.1)
        except TimeoutError:
            continue
        except ConnectionError:
            return sent
        if data == b"":
            return sent
    raise AssertionError("the server kept a trickling connection open for 20 s")


async def test_a_head_that_trickles_in_is_cut_off(server: WebServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    sent = await _closed_while_trickling(writer, reader, b"X-Slow: 1\r\n")
    assert sent < 50  # cut off near the 0.5 s deadline, though every 0.1 s a line arrived
    writer.close()


async def test_a_kept_alive_connection_gets_a_new_deadline_and_a_slow_body_is_cut_off(
    server: WebServer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    assert await reader.readexactly(1) == b"0"
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the next request on the same connection, slowly
    assert await _closed_while_trickling(writer, reader, b"X-Slow: 1\r\n") < 50
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    assert await _closed_while_trickling(writer, reader, b"x") < 50
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")  # at once: served
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    assert await reader.readexactly(1) == b"5"
    writer.close()
