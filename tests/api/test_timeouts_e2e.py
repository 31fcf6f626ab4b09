"""Read timeouts against the real daemon, on raw sockets: a connection that sends nothing,
stops mid-headers or mid-body, or idles after a response is closed; a request whose answer
takes longer than those bounds is not cut."""
from __future__ import annotations

import socket
import time

import openai
import pytest

from tests.conftest import GATEWAY_KEY, Daemon, write_config

IDLE = 1.0      # [server] idle_timeout and body_timeout for these tests

SLOW = ('[[model_list]]\nmodel_name = "gpt-1500ms"\n[model_list.litellm_params]\n'
        'model = "openai/slow-1500"\napi_base = "{url}/v1"\napi_key = "k"\n')


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, openai_fake):
    config = write_config(tmp_path_factory.mktemp("timeouts"), openai_fake.url,
                          auth=f'keys = ["{GATEWAY_KEY}"]',
                          server_extra=f"idle_timeout = {IDLE}\nbody_timeout = {IDLE}",
                          extra=SLOW.format(url=openai_fake.url))
    with Daemon(config) as running:
        yield running


def closed_after(daemon: Daemon, data: bytes) -> tuple[float, bytes]:
    """Send ``data``, then wait: seconds until the daemon closed the connection, and what it
    answered before."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=IDLE * 6) as sock:
        started = time.monotonic()
        if data:
            sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return time.monotonic() - started, received


HEAD = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"authorization: Bearer {GATEWAY_KEY}\r\ncontent-type: application/json\r\n").encode()


@pytest.mark.parametrize("data", [b"", b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127",
                                  HEAD], ids=["nothing", "mid-request-line", "mid-headers"])
def test_a_connection_that_never_completes_its_headers_is_closed(daemon, data):
    seconds, received = closed_after(daemon, data)
    assert IDLE * 0.8 <= seconds < IDLE * 4 and received == b""


def test_a_body_that_stalls_gets_a_408_and_the_connection_closes(daemon):
    seconds, received = closed_after(daemon, HEAD + b"content-length: 100\r\n\r\n{\"model\"")
    assert IDLE * 0.8 <= seconds < IDLE * 4
    assert received.startswith(b"HTTP/1.1 408 ") and b"body_timeout" in received
    assert b"Connection: close" in received or b"connection: close" in received.lower()


def test_an_idle_keep_alive_connection_is_closed_after_its_response(daemon):
    body = b'{"model": "gpt-ok", "messages": [{"role": "user", "content": "hi"}]}'
    seconds, received = closed_after(
        daemon, HEAD + f"content-length: {len(body)}\r\n\r\n".encode() + body)
    assert received.startswith(b"HTTP/1.1 200 ") and b"echo: hi" in received
    assert seconds < IDLE * 4


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_that_takes_longer_than_the_bounds_is_not_cut(daemon, stream):
    api = openai.OpenAI(base_url=daemon.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
    asked = {"model": "gpt-1500ms", "messages": [{"role": "user", "content": "take your time"}]}
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in
                       api.chat.completions.create(**asked, stream=True) if c.choices)
    else:
        text = api.chat.completions.create(**asked).choices[0].message.content
    assert text.strip() == "echo: take your time"
