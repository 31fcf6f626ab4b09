"""An error raised after a stream's headers went out: the real app (``create_app``) ends the
stream with the protocol's error event and closes the connection, never writing a second
response (a 500) into the stream."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from aiohttp import web

from memproxyd.app import create_app
from memproxyd.config import Config, MemoryConfig, ServerConfig
from memproxyd.errors import ApiError

FIRST = b'data: {"first": true}\n\n'


def failing_stream(error: Exception):
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(FIRST)
        raise error
    return handler


@pytest.fixture
async def server(tmp_path, aiohttp_server):
    config = Config(server=ServerConfig(state_dir=str(tmp_path)),
                    memory=MemoryConfig(backend="off"))
    app = create_app(config)
    app.router.add_post("/v1/chat/completions/bug", failing_stream(KeyError("late")))
    app.router.add_post("/v1/messages/bug", failing_stream(ValueError("late")))
    app.router.add_post("/v1/responses/bug", failing_stream(ApiError(502, "went away")))
    return await aiohttp_server(app)


def exchange(port: int, path: str) -> tuple[bytes, float]:
    """One keep-alive request on a raw socket, read to EOF: (bytes, seconds to EOF)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
                     f"Connection: keep-alive\r\n\r\n{{}}".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data, time.monotonic() - started


def unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, body = body.split(b"\r\n", 1)
        if int(size, 16) == 0:
            return out
        out, body = out + body[:int(size, 16)], body[int(size, 16) + 2:]
    raise AssertionError("stream not terminated")


@pytest.mark.parametrize("path, last", [
    ("/v1/chat/completions/bug", {"error": {"message": "internal error in memproxyd",
                                            "type": "api_error", "param": None,
                                            "code": "api_error"}}),
    ("/v1/messages/bug", {"type": "error", "error": {"type": "api_error",
                                                     "message": "internal error in memproxyd"}}),
    ("/v1/responses/bug", {"type": "error", "code": "api_error", "message": "went away",
                           "param": None, "sequence_number": 0}),
])
async def test_a_late_error_ends_the_stream_with_its_error_event_and_closes(server, path, last):
    data, seconds = await asyncio.to_thread(exchange, server.port, path)
    assert seconds < 3, "the connection was kept open"
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 500" not in body
    events = unchunk(body).split(b"\n\n")
    assert events[0] + b"\n\n" == FIRST and events[-1] == b""
    assert json.loads(events[-2].split(b"data: ", 1)[1]) == last
