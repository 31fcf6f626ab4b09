"""Malformed requests are the client's error: a 400 in the protocol's own shape from the real
daemon, before any upstream call, litellm import or memory write, on every endpoint."""
from __future__ import annotations

import json
import uuid

import aiohttp
import pytest

from tests.conftest import GATEWAY_KEY, Daemon, upstream_records, write_config

USER = {"role": "user", "content": "hello"}
# (path, body, code); "M" in a body is replaced by a fresh marker the upstream must never see
BAD = [
    ("/v1/chat/completions", {"model": "gpt-ok", "messages": [1, 2], "user": "M"}, "invalid_type"),
    ("/v1/chat/completions", {"model": "demo", "messages": [1, 2], "user": "M"}, "invalid_type"),
    ("/v1/chat/completions", {"model": "gpt-ok", "messages": [{"role": 5,
                              "content": "M"}]}, "invalid_type"),
    ("/v1/chat/completions", {"model": "gpt-ok", "messages": [{"role": "user",
                              "content": 42}], "user": "M"}, "invalid_type"),
    ("/v1/chat/completions", {"model": "gpt-ok", "messages": [{"role": "user", "content": [
        {"type": "text", "text": None}]}], "user": "M"}, "invalid_type"),
    ("/v1/chat/completions", {"model": "gpt-ok", "messages": [USER], "max_tokens": "10",
                              "user": "M"}, "invalid_type"),
    ("/v1/chat/completions", {"model": "via-litellm", "messages": [USER], "stream": "yes",
                              "user": "M"}, "invalid_type"),
    ("/v1/chat/completions", {"model": "gpt-ok", "messages": [USER], "temperature": "hot",
                              "user": "M"}, "invalid_type"),
    ("/v1/messages", {"model": "gpt-ok", "max_tokens": 5, "messages": [{"role": ["system"],
                      "content": "M"}]}, "invalid_type"),
    ("/v1/messages", {"model": "gpt-ok", "max_tokens": 5.5, "messages": [USER],
                      "metadata": {"user_id": "M"}}, "invalid_type"),
    ("/v1/messages", {"model": "demo", "max_tokens": 5, "messages": [{"role": "user",
                      "content": {"M": 1}}]}, "invalid_type"),
    ("/v1/messages", {"model": "gpt-ok", "max_tokens": 5, "messages": [USER], "system": 7,
                      "metadata": {"user_id": "M"}}, "invalid_type"),
    ("/v1/messages/count_tokens", {"model": "gpt-ok", "messages": ["M"]}, "invalid_type"),
    ("/v1/responses", {"model": "gpt-ok", "input": [{"role": "user", "content": 3}],
                       "user": "M"}, "invalid_input"),
    ("/v1/responses", {"model": "demo", "input": ["M"]}, "invalid_input"),
    ("/v1/responses", {"model": "gpt-ok", "input": "hi", "stream": 1, "user": "M"},
     "invalid_type"),
    ("/v1/completions", {"model": "gpt-ok", "prompt": [{"M": 1}]}, "invalid_type"),
    ("/v1/completions", {"model": "gpt-ok", "prompt": "M", "max_tokens": True},
     "invalid_type"),
    ("/v1/embeddings", {"model": "embed-ok", "input": {"M": 1}}, "invalid_type"),
    ("/v1/embeddings", {"model": "embed-ok", "input": [], "user": "M"}, "invalid_length"),
    ("/v1/embeddings", {"model": "embed-ok", "input": "M", "dimensions": "8"},
     "invalid_type"),
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, openai_fake):
    config = write_config(tmp_path_factory.mktemp("validation"), openai_fake.url,
                          auth=f'keys = ["{GATEWAY_KEY}"]', memory='backend = "sqlite"')
    with Daemon(config) as daemon:
        yield daemon


async def post(daemon, path: str, data: bytes, user: str, **headers) -> tuple[int, dict]:
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", "x-memory-user-id": user,
               "content-type": "application/json", **headers}
    async with aiohttp.ClientSession() as http:
        async with http.post(daemon.url + path, data=data, headers=headers) as resp:
            return resp.status, await resp.json()


async def stored(daemon, user: str) -> list:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{daemon.url}/v1/memories", params={"user_id": user},
                            headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as resp:
            return (await resp.json())["data"]


@pytest.mark.parametrize("path, body, code", BAD)
async def test_malformed_request_is_a_400_in_its_protocols_shape_and_reaches_nothing(
        gateway, openai_fake, path, body, code):
    marker, user = uuid.uuid4().hex, f"v-{uuid.uuid4().hex[:8]}"
    raw = json.dumps(body).replace('"M"', json.dumps(marker)).encode()
    status, reply = await post(gateway, path, raw, user)
    assert status == 400, reply
    if path.startswith("/v1/messages"):
        assert reply["type"] == "error"
        assert reply["error"]["type"] == "invalid_request_error"
    else:
        assert reply["error"]["type"] == "invalid_request_error"
        assert reply["error"]["code"] == code
    message = reply["error"]["message"]
    assert "'" in message and "expected" in message     # names the field and what it wants
    assert not [r for r in upstream_records(openai_fake) if marker in json.dumps(r["json"])]
    assert await stored(gateway, user) == []
    # every refusal is in the log (its code and field, never the body) and the usage ledger
    assert f"request refused status=400 path={path} user_id={user} code=" in gateway.log()
    assert marker not in gateway.log()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.url}/v1/usage", params={"rows": "10", "project": user},
                            headers={"authorization": f"Bearer {GATEWAY_KEY}",
                                     "x-memory-user-id": user}) as resp:
            rows = (await resp.json())["rows"]
    assert [(r["status"], r["model"], r["endpoint"]) for r in rows] == [
        (400, body["model"], path)]


async def test_roles_memproxyd_does_not_know_reach_a_native_upstream_unchanged(gateway,
                                                                            openai_fake):
    """Never stricter than the provider: the upstream judges roles it may know."""
    marker = uuid.uuid4().hex
    messages = [{"role": "user", "content": marker}, {"role": "critic", "content": "be brief"}]
    body = {"model": "gpt-ok", "messages": messages}
    status, reply = await post(gateway, "/v1/chat/completions", json.dumps(body).encode(),
                               "v-roles")
    assert status == 200, reply
    [record] = [r for r in upstream_records(openai_fake) if marker in json.dumps(r["json"])]
    assert record["json"]["messages"] == messages


@pytest.mark.parametrize("raw, words", [
    (b'{"model": "gpt-ok", "messages": [{"role": "user", "content": "x"}], "top_p": NaN}',
     "JSON"),
    (b'{"model": "gpt-ok", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
    (b'{"model": "gpt-ok", "messages": [{"role": "user", "content": "\\ud800 x"}]}',
     "surrogate"),
    (b'{"model": "gpt-ok", "messages": [{"role": "user", "content": "\xff\xfe"}]}', "JSON"),
    (b'[{"model": "gpt-ok"}]', "object"),
    # beyond a double's range: Infinity by another name (#23 item 5)
    (b'{"model": "gpt-ok", "messages": [{"role": "user", "content": "x"}], "temperature": 1e400}',
     "JSON"),
    (b'{"model": "gpt-ok", "messages": [{"role": "user", "content": "x"}], "top_p": -1E999}',
     "JSON"),
])
async def test_bodies_no_parser_should_accept_are_400(gateway, raw, words):
    status, reply = await post(gateway, "/v1/chat/completions", raw, "v-raw")
    assert status == 400 and words in reply["error"]["message"]


async def test_too_many_messages_is_a_400(gateway):
    body = {"model": "demo", "messages": [USER] * 10_001}
    status, reply = await post(gateway, "/v1/chat/completions", json.dumps(body).encode(), "v-n")
    assert status == 400 and reply["error"]["code"] == "invalid_length"


async def test_valid_requests_with_unknown_fields_still_pass(gateway, openai_fake):
    marker = uuid.uuid4().hex
    body = {"model": "gpt-ok", "messages": [{"role": "user", "content": [
        {"type": "text", "text": marker}, {"type": "future_part", "blob": [1]}]}],
        "max_tokens": 5, "stream": False, "vendor_field": {"x": [None]}, "stop": None}
    status, reply = await post(gateway, "/v1/chat/completions", json.dumps(body).encode(),
                               "v-ok")
    assert status == 200, reply
    [record] = [r for r in upstream_records(openai_fake) if marker in json.dumps(r["json"])]
    assert record["json"]["vendor_field"] == {"x": [None]}
    assert record["json"]["messages"][-1]["content"][1] == {"type": "future_part", "blob": [1]}


async def test_responses_without_input_pass_natively_but_not_through_litellm(gateway):
    status, reply = await post(gateway, "/v1/responses", b'{"model": "demo"}', "v-in")
    assert status == 400 and reply["error"]["code"] == "missing_input"
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/responses",
                             json={"model": "gpt-ok", "prompt": {"id": "pmpt_1"}},
                             headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as resp:
            # forwarded: the fake OpenAI upstream has no /responses route, its 404 comes back
            assert resp.status == 404 and "json" not in resp.headers["content-type"]


def test_a_chat_part_litellm_does_not_translate_is_the_clients_400(gateway):
    """Found by the fuzzer: an ``input_text`` part (the Responses API's) in a chat message
    to a litellm-routed model made litellm raise inside the call, which read as a 502."""
    import requests
    resp = requests.post(f"{gateway.url}/v1/chat/completions", timeout=30, json={
        "model": "demo", "messages": [{"role": "user", "content": [{"type": "input_text"}]}]},
        headers={"authorization": f"Bearer {GATEWAY_KEY}"})
    assert resp.status_code == 400
    assert "Invalid user message at index 0" in resp.json()["error"]["message"]
