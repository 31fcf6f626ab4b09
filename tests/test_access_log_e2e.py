"""The access log of the real daemon: one JSON line per request at INFO with who, what, how
it ended and how long it took, never a body, query or key; off with ``[logging]
access_log = false``; a client that hangs up at a stream's end is an INFO line, not an ERROR
traceback."""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import openai
import pytest

from tests.conftest import write_config

SECRET = "sk-prompt-secret-0451"


def json_lines(daemon) -> list[dict]:
    return [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]


def access_lines(daemon, path: str, count: int = 1) -> list[dict]:
    deadline = time.monotonic() + 5
    while True:
        lines = [line for line in json_lines(daemon)
                 if line.get("logger") == "memproxyd.access" and line["path"] == path]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


@pytest.fixture
def json_daemon(tmp_path, openai_fake, start_daemon):
    def start(extra: str = "", memory: str = 'backend = "off"'):
        config = write_config(tmp_path, openai_fake.url, extra=extra, memory=memory)
        config.write_text(config.read_text().replace('log_format = "text"',
                                                     'log_format = "json"'))
        return start_daemon(config)
    return start


def test_one_json_line_per_request_with_who_what_and_timings(json_daemon):
    daemon = json_daemon()
    api = openai.OpenAI(base_url=daemon.url + "/v1", api_key=SECRET, max_retries=0,
                        default_headers={"x-memory-user-id": "carol"})
    reply = api.chat.completions.with_raw_response.create(model="gpt-ok", messages=[
        {"role": "user", "content": f"hello {SECRET}"}])
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    urllib.request.urlopen(daemon.url + "/health?key=" + SECRET).read()
    [ok, missing] = access_lines(daemon, "/v1/chat/completions", 2)
    assert ok["level"] == "INFO" and ok["message"] == "POST /v1/chat/completions 200"
    assert (ok["method"], ok["status"], ok["user_id"], ok["model"], ok["memory"]) == (
        "POST", 200, "carol", "gpt-ok", "off")
    assert ok["deployment"] == "openai/ok" and ok["project"] is None
    assert ok["overhead_ms"] >= 0 and ok["upstream_ms"] >= 0 and ok["duration_ms"] > 0
    assert ok["trace_id"] == reply.headers["x-memproxy-trace-id"]
    assert (missing["status"], missing["model"], missing["deployment"]) == (404, "nope", None)
    health = access_lines(daemon, "/health")[-1]       # wait_ready polled it too
    assert health["status"] == 200 and health["user_id"] == "default"
    assert SECRET not in daemon.log()          # no body, no query string, no key


def test_access_log_off_in_logging_section(json_daemon):
    daemon = json_daemon(extra="[logging]\naccess_log = false\n")
    urllib.request.urlopen(daemon.url + "/health").read()
    urllib.request.urlopen(daemon.url + "/v1/models").read()
    time.sleep(0.3)
    assert not [line for line in json_lines(daemon) if line.get("logger") == "memproxyd.access"]


def _hang_up_at_the_streams_end(url: str) -> None:
    """A streamed chat call read up to its last event, then the connection closed, as the
    openai SDK does at ``[DONE]``: often before the daemon has written the stream's end."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": "gpt-ok", "stream": True,
                       "messages": [{"role": "user", "content": "hang up"}]}).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                 b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
                 + body)
    seen = b""
    while b"[DONE]" not in seen:
        seen += sock.recv(65536)
    sock.close()


def test_a_client_hanging_up_at_a_streams_end_is_info_not_an_error(json_daemon):
    # memory on: remembering the exchange comes between the last event and the stream's
    # end, so about half of these hang-ups land before the end is written (10 of 20 logged
    # an ERROR traceback before)
    daemon = json_daemon(memory='backend = "sqlite"')
    for _ in range(20):
        _hang_up_at_the_streams_end(daemon.url)
    lines = access_lines(daemon, "/v1/chat/completions", 20)
    # 200: the upstream's stream had ended (the whole reply relayed); 499: it had not yet
    # when the client left, and the call was cancelled
    assert len(lines) == 20 and {line["status"] for line in lines} <= {200, 499}
    assert "client hung up path=/v1/chat/completions" in daemon.log()
    errors = [line for line in json_lines(daemon) if line["level"] in ("ERROR", "CRITICAL")]
    assert errors == []
    with urllib.request.urlopen(daemon.url + "/health") as answer:   # still serving
        assert answer.status == 200


def test_a_refused_request_is_logged_with_its_status(json_daemon):
    daemon = json_daemon()
    request = urllib.request.Request(daemon.url + "/v1/chat/completions", data=b"{not json",
                                     headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.code == 400
    [line] = access_lines(daemon, "/v1/chat/completions")
    assert line["status"] == 400 and line["deployment"] is None
