"""A stream's end, in the real app (``create_app``): an error raised after its headers went out
ends it with the protocol's error event and closes the connection, never writing a second
response (a 500) into the stream; a client that hangs up after the last event had the whole
reply."""
from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time

import pytest
from aiohttp import ClientSession, web

from memproxyd.app import create_app
from memproxyd.config import Config, MemoryConfig, ServerConfig, load_config
from memproxyd.errors import ApiError
from tests.conftest import write_config

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


async def test_a_client_that_hangs_up_at_the_last_event_had_the_whole_reply(
        tmp_path, openai_fake, aiohttp_server):
    """The openai SDK closes a stream's connection as soon as it reads ``[DONE]``, while the
    gateway is still remembering the exchange before the stream's end (here held up by
    another connection's write lock on the memory file), and the hang-up cancels the handler.
    The call was complete: its usage row says 200, and its exchange is remembered."""
    config = load_config(write_config(tmp_path, openai_fake.url, memory='backend = "sqlite"'))
    server = await aiohttp_server(create_app(config))
    body = json.dumps({"model": "gpt-ok", "stream": True, "messages": [
        {"role": "user", "content": "hang up at the last event"}]}).encode()

    def ask() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"x-memory-user-id: hangup\r\nContent-Length: {len(body)}\r\n\r\n"
                         .encode() + body)
            got = b""
            while b"data: [DONE]" not in got and (piece := sock.recv(65536)):
                got += piece
            return got          # and hang up

    lock = sqlite3.connect(config.state_dir / "memory.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        assert b"data: [DONE]" in await asyncio.to_thread(ask)
        await asyncio.sleep(0.3)        # the hang-up reaches the gateway, which is waiting
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    usage = server.make_url("/v1/usage").with_query(rows="10")
    memories = server.make_url("/v1/memories").with_query(user_id="hangup")
    async with ClientSession() as http:
        deadline = time.monotonic() + 5
        while True:
            async with http.get(usage, headers={"x-memory-user-id": "hangup"}) as resp:
                rows = (await resp.json())["rows"]
            async with http.get(memories) as resp:
                stored = [m["content"] for m in (await resp.json())["data"]]
            if (rows and stored) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    assert [(row["status"], row["model"]) for row in rows] == [(200, "gpt-ok")]
    assert stored == ["User: hang up at the last event\nAssistant: echo: hang up at the last event"]
