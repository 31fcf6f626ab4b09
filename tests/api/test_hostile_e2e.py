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
    with Daemon(config) as daemon:
        yield daemon


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


# -- limits ------------------------------------------------------------------------------

def _send(daemon: Daemon, method: str, path: str, user: str | None = None, **kwargs):
    import requests
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", **kwargs.pop("headers", {})}
    if user is not None:
        headers["x-memory-user-id"] = user
    return requests.request(method, daemon.url + path, headers=headers, timeout=30, **kwargs)


@pytest.mark.parametrize("method, path, kwargs, code", [
    ("POST", "/v1/memories", {"json": {"user_id": "lim", "content": "x" * 32_001}},
     "content_too_long"),
    ("POST", "/v1/memories", {"json": {"user_id": "lim", "memories": [{"content": "x"}] * 1001}},
     "invalid_memories"),
    ("POST", "/v1/memories", {"json": {"user_id": "u" * 129, "content": "x"}},
     "invalid_user_id"),
    ("POST", "/v1/memories", {"json": {"user_id": "lim", "content": "x",
                                       "metadata": {"k": "v" * 17_000}}}, "metadata_too_large"),
    ("POST", "/v1/memories/search", {"json": {"user_id": "lim", "query": "q" * 10_001}},
     "query_too_long"),
    ("POST", "/v1/chat/completions", {"json": {"model": "demo", "messages": [
        {"role": "user", "content": "x"}] * 10_001}}, "invalid_length"),
    ("POST", "/v1/chat/completions", {"headers": {"x-memory-user-id": "u" * 129}, "json": {
        "model": "demo", "messages": [{"role": "user", "content": "x"}]}}, "invalid_user_id"),
])
def test_each_limit_is_a_4xx_in_the_protocols_shape_and_writes_nothing(
        gateway, method, path, kwargs, code):
    resp = _send(gateway, method, path, **kwargs)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == code
    listed = _send(gateway, "GET", "/v1/memories", params={"user_id": "lim"})
    assert listed.json()["data"] == []


# -- isolation ---------------------------------------------------------------------------

CRAFTED_IDS = ["..", "../x", "%2e%2e%2fx", "x' OR '1'='1", "*", "1; DROP TABLE memories",
               "i" * 5000]
BAD_USERS = ["../alice", "alice/../bob", "alice\x00", ".", "..", "alice%2F..", "a" * 129,
             "alice bob", "-alice", ""]
FTS_QUERIES = ['"', "*", "alpha OR beta", "NEAR(launch code)", "user_id:iso-a", "content:*",
               "launch AND NOT x", "^launch", "(", "' OR 1=1 --", '"launch" *', "{user_id}:*",
               "launch*", "l%", "\\", "NOT", "iso-a"]


@pytest.fixture(scope="module")
def owner(gateway):
    """iso-a's memory: what iso-b must never reach."""
    resp = _send(gateway, "POST", "/v1/memories", json={
        "user_id": "iso-a", "content": "The launch code is PURPLE-HIPPO-42"})
    assert resp.status_code == 201
    return resp.json()["data"][0]["id"]


def _a_intact(gateway, memory_id: str) -> None:
    resp = _send(gateway, "GET", f"/v1/memories/{memory_id}", params={"user_id": "iso-a"})
    assert resp.status_code == 200 and "PURPLE" in resp.json()["content"]


def test_another_user_can_neither_read_nor_delete_nor_list_by_id(gateway, owner):
    for memory_id in [owner, *CRAFTED_IDS]:
        for method in ("GET", "DELETE"):
            resp = _send(gateway, method, f"/v1/memories/{memory_id}",
                         params={"user_id": "iso-b"})
            assert resp.status_code in (400, 404), (method, memory_id, resp.text)
    assert _send(gateway, "GET", "/v1/memories",
                 params={"user_id": "iso-b"}).json()["data"] == []
    assert _send(gateway, "DELETE", "/v1/memories",
                 params={"user_id": "iso-b", "all": "true"}).json()["deleted"] == 0
    _a_intact(gateway, owner)


@pytest.mark.parametrize("user", BAD_USERS)
def test_crafted_user_ids_are_refused_everywhere(gateway, owner, user):
    answers = [
        _send(gateway, "GET", "/v1/memories", params={"user_id": user}),
        _send(gateway, "POST", "/v1/memories/search", json={"user_id": user, "query": "launch"}),
        _send(gateway, "POST", "/v1/memories", json={"user_id": user, "content": "x"}),
        _send(gateway, "DELETE", f"/v1/memories/{owner}", params={"user_id": user}),
    ]
    for resp in answers:
        assert resp.status_code == 400, resp.text
    if user and "\x00" not in user:
        resp = _send(gateway, "POST", "/v1/chat/completions", user=user, json={
            "model": "demo", "messages": [{"role": "user", "content": "launch code?"}]})
        assert resp.status_code == 400
    _a_intact(gateway, owner)


@pytest.mark.parametrize("query", FTS_QUERIES)
def test_search_syntax_never_reaches_another_users_memory_nor_fails(gateway, owner, query):
    for user in ("iso-b", "iso-a"):
        resp = _send(gateway, "POST", "/v1/memories/search",
                     json={"user_id": user, "query": query})
        assert resp.status_code in (200, 400), resp.text
        if user == "iso-b" and resp.status_code == 200:
            assert "PURPLE" not in resp.text


async def test_concurrent_chats_never_receive_another_users_memory(gateway, openai_fake, owner):
    import aiohttp
    from tests.conftest import upstream_records

    async def ask(http, user: str, marker: str) -> None:
        async with http.post(gateway.url + "/v1/chat/completions", headers={
                "x-memory-user-id": user, "authorization": f"Bearer {GATEWAY_KEY}"}, json={
                "model": "gpt-ok", "messages": [{"role": "user", "content":
                                                 f"What is the launch code? {marker}"}]}) as resp:
            assert resp.status == 200

    markers = {f"iso-c{i}": f"m{i}-{time.time_ns()}" for i in range(12)}
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(ask(http, user, m) for user, m in markers.items()),
                             ask(http, "iso-a", "owner-asks"))
    records = upstream_records(openai_fake)
    for marker in markers.values():
        [record] = [r for r in records if marker in str(r["json"])]
        assert "PURPLE" not in str(record["json"])
    [mine] = [r for r in records if "owner-asks" in str(r["json"])]
    assert "PURPLE" in str(mine["json"])          # recall works: the check above can fail


# -- secrets -----------------------------------------------------------------------------

def test_keys_auth_headers_and_prompts_never_reach_the_log(gateway, openai_fake):
    from tests.conftest import UPSTREAM_KEY
    prompt = f"my private prompt {time.time_ns()}"
    user_msg = [{"role": "user", "content": prompt}]
    for model in ("gpt-ok", "gpt-500", "gpt-unreachable", "gpt-midstream", "via-litellm",
                  "needs-key", "nope"):
        for stream in (False, True):
            _send(gateway, "POST", "/v1/chat/completions",
                  json={"model": model, "messages": user_msg, "stream": stream})
    _send(gateway, "POST", "/v1/chat/completions", json={"model": "gpt-ok", "messages": [1]})
    _send(gateway, "POST", "/v1/memories", json={"user_id": "sec", "content": prompt})
    _send(gateway, "POST", "/v1/chat/completions", headers={"authorization": "Bearer sk-wrong-1"},
          json={"model": "gpt-ok", "messages": user_msg})
    log = gateway.log()
    for secret in (GATEWAY_KEY, UPSTREAM_KEY, "sk-wrong-1", "Bearer", prompt):
        assert secret not in log, secret


def test_the_state_dir_is_0700_and_its_files_0600(gateway, owner):
    import stat
    state = gateway.config.parent / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.name == "memory.db" for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize("peer, headers, allowed", [
    ("127.0.0.1", {}, True),
    ("::1", {}, True),
    ("203.0.113.7", {}, False),
    ("203.0.113.7", {"x-admin-key": "wrong"}, False),
    ("203.0.113.7", {"x-admin-key": "admin-secret"}, True),
])
def test_the_admin_api_is_loopback_only_or_key_protected(peer, headers, allowed):
    from unittest import mock
    from aiohttp.test_utils import make_mocked_request
    from memproxyd.auth import Guard
    from memproxyd.errors import ApiError
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default)
    request = make_mocked_request("GET", "/admin/status", transport=transport,
                                  headers={"host": "127.0.0.1:8764", **headers})
    guard = Guard((GATEWAY_KEY,), "admin-secret")
    if allowed:
        guard.check_admin(request, on_gateway_port=True)
    else:
        with pytest.raises(ApiError) as info:
            guard.check_admin(request, on_gateway_port=True)
        assert info.value.status == 403


# -- #23 item 4: input that answered 500 --------------------------------------------------

@pytest.mark.parametrize("header", [b"authorization: Bearer \xff\xfe", b"x-api-key: \xff",
                                    b"x-admin-key: \xc3\x28"])
def test_a_key_header_that_is_not_utf8_is_a_wrong_key_not_a_500(gateway, header):
    path = b"/admin/projects" if header.startswith(b"x-admin") else b"/v1/models"
    reply = raw_request(gateway, b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header +
                        b"\r\nConnection: close\r\n\r\n")
    status = int(reply.split(b" ", 2)[1])
    # a loopback peer needs no admin key: the admin route answers; the gateway's refuses
    assert status == (200 if path == b"/admin/projects" else 401), reply[:300]


@pytest.mark.parametrize("name", [b"x-memproxy-conversation-id", b"x-claude-code-session-id"])
def test_a_conversation_header_that_is_not_utf8_is_a_400_and_stores_nothing(gateway, name):
    user = "conv-" + name.decode()[2:8]
    body = (b'{"model": "gpt-ok", "messages": [{"role": "user", "content": '
            b'"remember the blue door"}]}')
    reply = raw_request(gateway, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        + f"authorization: Bearer {GATEWAY_KEY}\r\nx-memory-user-id: {user}\r\n"
                        .encode() + name + b": conv-\xff\xfe\r\ncontent-type: application/json"
                        + f"\r\ncontent-length: {len(body)}\r\nConnection: close\r\n\r\n"
                        .encode() + body)
    assert reply.startswith(b"HTTP/1.1 400 ") and b"invalid_header" in reply, reply[:300]
    listed = raw_request(gateway, f"GET /v1/memories?user_id={user} HTTP/1.1\r\nHost: 127.0.0.1"
                         f"\r\nauthorization: Bearer {GATEWAY_KEY}\r\nConnection: close\r\n\r\n"
                         .encode())
    assert b'"data": []' in listed or b'"data":[]' in listed, listed[-300:]


@pytest.mark.parametrize("path", ["/v1/memories", "/admin/memories"])
def test_a_crafted_cursor_is_a_400(gateway, path):
    import base64
    for raw in (b"v1:99999999999999999999999", b"v1:-5", b"v1:\xc2\xb2"):
        cursor = base64.urlsafe_b64encode(raw).decode()
        reply = _send(gateway, "GET", path, params={"user_id": "lim", "cursor": cursor})
        assert reply.status_code == 400, (raw, reply.text)


def test_a_rows_count_that_is_a_digit_but_no_number_is_a_400(gateway):
    reply = _send(gateway, "GET", "/v1/usage", params={"rows": "\u00b2"})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_rows"


# -- #23 item 5: non-finite numbers -------------------------------------------------------

def test_a_number_beyond_a_doubles_range_is_refused_and_stores_nothing(gateway):
    body = b'{"user_id": "inf", "content": "x", "metadata": {"n": 1e400}}'
    reply = _send(gateway, "POST", "/v1/memories", data=body,
                  headers={"content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_json"
    listed = _send(gateway, "GET", "/v1/memories", params={"user_id": "inf"})
    assert listed.status_code == 200 and listed.json()["data"] == []


@pytest.mark.parametrize("since", ["nan", "inf", "-Infinity"])
def test_usage_since_must_be_a_finite_time(gateway, since):
    reply = _send(gateway, "GET", "/v1/usage", params={"since": since})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_since"
