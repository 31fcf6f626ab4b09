"""Hostile input against the real daemon: requests the HTTP parser rejects, limits, isolation
between users, and secrets kept out of the logs."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest

from tests.conftest import GATEWAY_KEY, Daemon, write_config


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, openai_fake):
    config = write_config(tmp_path_factory.mktemp("hostile"), openai_fake.url,
                          auth=f'keys = ["{GATEWAY_KEY}"]', memory='backend = "sqlite"')
    daemon = Daemon(config)
    try:
        yield daemon.wait_ready()
    finally:
        daemon.stop()


def raw_request(daemon: Daemon, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def wait_for_log(daemon: Daemon, words: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if words in daemon.log():
            return daemon.log()
        time.sleep(0.05)
    return daemon.log()


@pytest.mark.parametrize("header", [
    b"x-memory-user-id: ali\x00ce-SECRET",
    b"authorization: Bearer sk-" + b"S" * 9000,
])
def test_a_request_the_parser_rejects_is_a_400_and_one_info_line(gateway, header):
    secret = header.split(b": ", 1)[1][:20]
    before = gateway.log()
    answer = raw_request(gateway, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  + header + b"\r\ncontent-length: 2\r\n\r\n{}")
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    log = wait_for_log(gateway, "rejected by the HTTP parser")[len(before):]
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) == 1 and " INFO " in lines[0], log
    assert "rejected by the HTTP parser" in lines[0]
    assert "Traceback" not in log and "ERROR" not in log
    assert secret.decode(errors="replace") not in log


async def test_the_daemon_keeps_serving_after_rejected_requests(gateway):
    await asyncio.to_thread(raw_request, gateway, b"GET / HTTP/1.1\r\nHost: \x00\r\n\r\n")
    answer = await asyncio.to_thread(raw_request, gateway, b"GET /health HTTP/1.1\r\n"
                                     b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
