"""The real daemon, the official anthropic SDK, a fake Anthropic upstream on loopback (and the
fake OpenAI upstream for the translation path). Memory is off: these tests pin down the wire."""
from __future__ import annotations

import copy
import json
import uuid

import aiohttp
import anthropic
import pytest

from tests.conftest import (GATEWAY_KEY, UPSTREAM_KEY, Daemon, free_port, upstream_records,
                            write_config)
from tests.fakes import anthropic_upstream
from tests.fakes.threaded import ThreadedServer

CLIENT_KEY = "sk-ant-client-own-key"


@pytest.fixture(scope="module")
def anthropic_fake():
    server = ThreadedServer(anthropic_upstream.create_app()).start()
    yield server
    server.stop()


def anthropic_models(url: str) -> str:
    entries = [("claude-*", "anthropic/*", url, ""),
               ("claude-exact", "anthropic/think-exact-target", url, ""),
               ("claude-v1base", "anthropic/v1base", url + "/v1", ""),
               ("claude-fwd", "anthropic/fwd-target", url, "forward_client_credentials = true\n"),
               ("claude-unreachable", "anthropic/x", f"http://127.0.0.1:{free_port()}", "")]
    return "\n".join(
        f'[[model_list]]\nmodel_name = "{name}"\n{extra}[model_list.litellm_params]\n'
        f'model = "{model}"\napi_base = "{base}"\napi_key = "{UPSTREAM_KEY}"\n'
        for name, model, base, extra in entries)


def _daemon(tmp_path_factory, openai_fake, anthropic_fake, auth: str):
    config = write_config(tmp_path_factory.mktemp("anthropic"), openai_fake.url, auth=auth,
                          extra=anthropic_models(anthropic_fake.url))
    with Daemon(config) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, openai_fake, anthropic_fake):
    """Gateway auth on: clients present GATEWAY_KEY."""
    yield from _daemon(tmp_path_factory, openai_fake, anthropic_fake,
                       f'keys = ["{GATEWAY_KEY}"]')


@pytest.fixture(scope="module")
def open_gateway(tmp_path_factory, openai_fake, anthropic_fake):
    """No gateway keys (loopback): the client's own credentials are its business."""
    yield from _daemon(tmp_path_factory, openai_fake, anthropic_fake, "")


def client(daemon, api_key: str | None = GATEWAY_KEY, **kwargs) -> anthropic.AsyncAnthropic:
    """The SDK (2.x) sends ``api_key`` as ``Authorization: Bearer``."""
    return anthropic.AsyncAnthropic(base_url=daemon.url, api_key=api_key, max_retries=0,
                                    timeout=20, **kwargs)


def x_api_key_client(daemon, key: str) -> anthropic.AsyncAnthropic:
    """A client presenting ``x-api-key`` as Claude Code does with ANTHROPIC_API_KEY."""
    return client(daemon, api_key=None, default_headers={"x-api-key": key})


def records(server, marker: str) -> list[dict]:
    found = server.call(lambda: list(server.app[anthropic_upstream.RECORDS]))
    return [r for r in found if marker in json.dumps(r["json"])]


def sent_events(record: dict) -> list[dict]:
    return [json.loads(line[6:]) for line in record["sent"].decode().split("\n")
            if line.startswith("data: ")]


def rich_request(marker: str) -> dict:
    """What Claude Code sends: cached system blocks, thinking, a tool round trip."""
    return {
        "model": "claude-exact", "max_tokens": 2048,
        "system": [{"type": "text", "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Project rules: be brief.",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "find the config",
                                          "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should look it up.", "signature": "c2ln"},
                {"type": "tool_use", "id": "toolu_01", "name": "lookup",
                 "input": {"query": "config", "nested": {"a": [1, 2]}}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01",
                 "content": [{"type": "text", "text": "etc/memproxyd.toml"}]},
                {"type": "text", "text": f"thanks {marker}"}]}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "lookup", "description": "Look things up.",
                   "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
                   "cache_control": {"type": "ephemeral"}}],
        "metadata": {"user_id": "user-123"},
    }


def send_kwargs(body: dict) -> dict:
    return {**body, "extra_headers": {"anthropic-beta": "interleaved-thinking-2025-05-14",
                                      "anthropic-version": "2023-06-01"},
            "extra_query": {"beta": "true"},
            "extra_body": {"vendor_extension": {"keep": [1, {"deep": True}]}}}


async def test_request_reaches_upstream_unchanged_except_model(gateway, anthropic_fake):
    marker = uuid.uuid4().hex
    body = rich_request(marker)
    original = copy.deepcopy(body)
    raw = await client(gateway).messages.with_raw_response.create(**send_kwargs(body))
    [record] = records(anthropic_fake, marker)
    assert record["json"] == {**original, "model": "think-exact-target",
                              "vendor_extension": {"keep": [1, {"deep": True}]}}
    assert record["path"] == "/v1/messages" and record["query"] == "beta=true"
    headers = {k.lower(): v for k, v in record["headers"].items()}
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["x-api-key"] == UPSTREAM_KEY and "authorization" not in headers
    assert GATEWAY_KEY not in json.dumps(headers)
    assert await raw.read() == record["sent"]
    assert raw.headers["x-memproxy-memory"] == "off"
    assert raw.headers["x-memproxy-user-id"] == "default"
    message = await raw.parse()
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].signature == anthropic_upstream.SIGNATURE
    assert message.content[1].text == f"echo: thanks {marker}"
    assert message.content[2].input == {"query": f"echo: thanks {marker}", "limit": 3,
                                        "deep": {"ok": True}}
    assert message.stop_reason == "tool_use"


async def test_stream_bytes_reach_the_client_exactly_as_sent(gateway, anthropic_fake):
    marker = uuid.uuid4().hex
    body = {**rich_request(marker), "stream": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages?beta=true", json=body,
                             headers={"x-api-key": GATEWAY_KEY}) as resp:
            assert resp.status == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers["x-memproxy-user-id"] == "default"
            received = await resp.read()
    [record] = records(anthropic_fake, marker)
    assert record["query"] == "beta=true" and record["json"]["stream"] is True
    assert record["headers"]["anthropic-version"] == "2023-06-01"   # the default, when absent
    assert received == record["sent"]
    kinds = {e["type"] for e in sent_events(record)}
    assert kinds == {"message_start", "ping", "content_block_start", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"}
    deltas = {e["delta"]["type"] for e in sent_events(record)
              if e["type"] == "content_block_delta"}
    assert deltas == {"thinking_delta", "signature_delta", "text_delta", "input_json_delta"}


async def test_sdk_stream_events_equal_the_upstream_events(gateway, anthropic_fake):
    marker = uuid.uuid4().hex
    stream = await client(gateway).messages.create(**send_kwargs(rich_request(marker)),
                                                   stream=True)
    events = [event.to_dict() async for event in stream]
    [record] = records(anthropic_fake, marker)
    assert events == [e for e in sent_events(record) if e["type"] != "ping"]


async def test_sdk_stream_helper_assembles_thinking_text_and_tool_input(gateway):
    marker = uuid.uuid4().hex
    async with client(gateway).messages.stream(**rich_request(marker)) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == f"echo: thanks {marker}"
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].thinking == "Let me think. The user wants an echo."
    assert final.content[2].input["deep"] == {"ok": True}


def simple(model: str, text: str = "hi", **extra) -> dict:
    return {"model": model, "max_tokens": 256,
            "messages": [{"role": "user", "content": text}], **extra}


async def test_unknown_model_and_wrong_key_in_anthropic_shape(gateway):
    with pytest.raises(anthropic.NotFoundError) as info:
        await client(gateway).messages.create(**simple("no-such-model"))
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.AuthenticationError) as info:
        await x_api_key_client(gateway, "sk-wrong").messages.create(**simple("claude-exact"))
    assert info.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        await client(gateway, api_key="sk-wrong").messages.create(**simple("claude-exact"))


@pytest.mark.parametrize("payload, words", [
    (b"{not json", "JSON"),
    (json.dumps({"model": "claude-exact", "messages": [{"role": "user", "content": "x"}]}),
     "max_tokens"),
    (json.dumps({"model": "claude-exact", "max_tokens": 5, "messages": []}), "messages"),
    (json.dumps({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}), "model"),
])
async def test_invalid_requests_are_400_invalid_request_error(gateway, payload, words):
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages", data=payload,
                             headers={"x-api-key": GATEWAY_KEY,
                                      "content-type": "application/json"}) as resp:
            body = await resp.json()
    assert resp.status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert words in body["error"]["message"]


async def test_upstream_errors_pass_through_with_status_and_body(gateway, anthropic_fake):
    marker = uuid.uuid4().hex
    with pytest.raises(anthropic.RateLimitError) as info:
        await client(gateway).messages.create(**simple("claude-status-429", marker))
    [record] = records(anthropic_fake, marker)
    assert info.value.response.content == record["sent"]
    assert info.value.response.headers["retry-after"] == "7"
    with pytest.raises(anthropic.OverloadedError) as info:
        await client(gateway).messages.create(**simple("claude-status-529"))
    assert info.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.BadRequestError) as info:
        await client(gateway).messages.create(**simple("claude-status-400"), stream=True)
    assert info.value.body["error"]["message"] == "fake failure 400"


async def test_unreachable_upstream_is_502_api_error(gateway):
    with pytest.raises(anthropic.APIStatusError) as info:
        await client(gateway).messages.create(**simple("claude-unreachable"))
    assert info.value.status_code == 502
    assert info.value.body["error"]["type"] == "api_error"


async def test_midstream_failure_ends_with_an_error_event(gateway, anthropic_fake):
    marker = uuid.uuid4().hex
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages",
                             json=simple("claude-midstream", marker, stream=True),
                             headers={"x-api-key": GATEWAY_KEY}) as resp:
            received = await resp.read()
    [record] = records(anthropic_fake, marker)
    assert received.startswith(record["sent"])
    tail = received[len(record["sent"]):].decode()
    assert tail.startswith("event: error\ndata: ") and tail.endswith("\n\n")
    assert json.loads(tail.split("data: ", 1)[1])["error"]["type"] == "api_error"
    stream = await client(gateway).messages.create(**simple("claude-midstream"), stream=True)
    with pytest.raises(anthropic.APIStatusError, match="upstream stream failed"):
        async for _ in stream:
            pass


async def test_gateway_key_as_x_api_key_or_bearer_never_goes_upstream(gateway, anthropic_fake):
    for api in (x_api_key_client(gateway, GATEWAY_KEY), client(gateway)):
        marker = uuid.uuid4().hex
        reply = await api.messages.create(**simple("claude-exact", marker))
        assert reply.content[-2].text == f"echo: {marker}"
        [record] = records(anthropic_fake, marker)
        headers = {k.lower(): v for k, v in record["headers"].items()}
        assert headers["x-api-key"] == UPSTREAM_KEY and "authorization" not in headers
        assert GATEWAY_KEY not in json.dumps(headers)


async def test_forward_client_credentials_sends_the_clients_key_only_there(open_gateway,
                                                                          anthropic_fake):
    async def upstream_headers(api: anthropic.AsyncAnthropic, model: str) -> dict:
        marker = uuid.uuid4().hex
        await api.messages.create(**simple(model, marker))
        [record] = records(anthropic_fake, marker)
        return {k.lower(): v for k, v in record["headers"].items()}

    by_key = await upstream_headers(x_api_key_client(open_gateway, CLIENT_KEY), "claude-fwd")
    assert by_key["x-api-key"] == CLIENT_KEY and "authorization" not in by_key
    oauth = await upstream_headers(client(open_gateway, api_key=None, auth_token="oauth-tok-1"),
                                   "claude-fwd")
    assert oauth["authorization"] == "Bearer oauth-tok-1" and "x-api-key" not in oauth
    for model in ("claude-exact", "claude-sonnet-4-5"):
        for api in (x_api_key_client(open_gateway, CLIENT_KEY), client(open_gateway, CLIENT_KEY)):
            normal = await upstream_headers(api, model)
            assert normal["x-api-key"] == UPSTREAM_KEY and "authorization" not in normal
            assert CLIENT_KEY not in json.dumps(normal)


async def test_forwarded_credentials_never_include_the_gateway_key(gateway, anthropic_fake):
    async def upstream_headers(headers: dict) -> dict:
        marker = uuid.uuid4().hex
        api = client(gateway, api_key=None, default_headers=headers)
        await api.messages.create(**simple("claude-fwd", marker))
        [record] = records(anthropic_fake, marker)
        return {k.lower(): v for k, v in record["headers"].items()}

    # Claude Code with a subscription: its OAuth token upstream, the gateway key in its own header
    sent = await upstream_headers({"authorization": "Bearer oauth-tok-2",
                                   "x-memproxy-api-key": GATEWAY_KEY})
    assert sent["authorization"] == "Bearer oauth-tok-2"
    assert GATEWAY_KEY not in json.dumps(sent)
    # the gateway key as x-api-key, the client's own key as a bearer token
    sent = await upstream_headers({"x-api-key": GATEWAY_KEY,
                                   "authorization": f"Bearer {CLIENT_KEY}"})
    assert sent["authorization"] == f"Bearer {CLIENT_KEY}" and "x-api-key" not in sent
    with pytest.raises(anthropic.AuthenticationError):
        await client(gateway, api_key=None, default_headers={
            "authorization": "Bearer oauth-tok-3"}).messages.create(**simple("claude-fwd", "x"))


async def test_wildcard_routes_the_requested_name_and_exact_names_win(gateway, anthropic_fake):
    async def upstream_of(model: str) -> dict:
        marker = uuid.uuid4().hex
        await client(gateway).messages.create(**simple(model, marker))
        [record] = records(anthropic_fake, marker)
        return record

    assert (await upstream_of("claude-sonnet-4-5-20250929"))["json"]["model"] == \
        "claude-sonnet-4-5-20250929"
    assert (await upstream_of("claude-exact"))["json"]["model"] == "think-exact-target"
    v1 = await upstream_of("claude-v1base")
    assert (v1["path"], v1["json"]["model"]) == ("/v1/messages", "v1base")


async def test_count_tokens_native_and_through_litellm(gateway, anthropic_fake, openai_fake):
    api = client(gateway)
    marker = uuid.uuid4().hex
    messages = [{"role": "user", "content": f"count me {marker}"}]
    counted = await api.messages.count_tokens(model="claude-exact", messages=messages)
    [record] = records(anthropic_fake, marker)
    assert record["path"] == "/v1/messages/count_tokens"
    assert record["json"] == {"model": "think-exact-target", "messages": messages}
    assert counted.input_tokens == len(json.dumps(messages)) // 4
    other = uuid.uuid4().hex
    local = await api.messages.count_tokens(
        model="gpt-ok", system="Be terse.", messages=[{"role": "user", "content": other}])
    assert 3 <= local.input_tokens <= 60
    assert other not in json.dumps([r["json"] for r in upstream_records(openai_fake)])


async def test_translation_to_an_openai_deployment(gateway, openai_fake):
    api = client(gateway)
    marker = uuid.uuid4().hex
    reply = await api.messages.create(**simple("gpt-ok", f"hello {marker}",
                                               system="Be terse."))
    assert reply.type == "message" and reply.role == "assistant"
    assert reply.content[0].type == "text"
    assert reply.content[0].text == f"echo: hello {marker}"
    assert reply.stop_reason == "end_turn"
    [sent] = [r for r in upstream_records(openai_fake) if marker in json.dumps(r["json"])]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent["json"]["messages"][0]["role"] == "system"


async def test_translation_streams_anthropic_events(gateway):
    marker = uuid.uuid4().hex
    async with client(gateway).messages.stream(**simple("gpt-ok", f"stream {marker}")) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds and "message_delta" in kinds
    assert final.content[0].text.strip() == f"echo: stream {marker}"


async def test_offline_demo_model_answers_anthropic_clients(gateway):
    api = client(gateway)
    reply = await api.messages.create(**simple("demo"))
    assert reply.content[0].text == "offline hello"
    async with api.messages.stream(**simple("demo")) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text == "offline hello"


async def test_translation_errors_in_anthropic_shape(gateway):
    with pytest.raises(anthropic.RateLimitError) as info:
        await client(gateway).messages.create(**simple("gpt-429"))
    assert info.value.body["error"]["type"] == "rate_limit_error"
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages",
                             json=simple("gpt-midstream", "one two three", stream=True),
                             headers={"x-api-key": GATEWAY_KEY}) as resp:
            received = (await resp.read()).decode()
    assert received.startswith("event: message_start\n")
    assert received.rsplit("\n\n", 2)[-2].startswith("event: error\ndata: ")


# Claude Code's default model sends system-role messages inside ``messages`` (recorded in
# tests/fixtures/agents/claude-code-default-model.jsonl); Anthropic takes them.
def with_system_message(marker: str, role: str = "system") -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": f"hello {marker}"}]},
            {"role": role, "content": f"Available agent types {marker}"}]


async def test_system_messages_inside_messages_reach_anthropic_unchanged(gateway,
                                                                         anthropic_fake):
    marker = uuid.uuid4().hex
    messages = with_system_message(marker)
    reply = await client(gateway).messages.create(model="claude-exact", max_tokens=64,
                                                  messages=messages)
    assert reply.type == "message"
    [record] = records(anthropic_fake, marker)
    assert record["json"]["messages"] == messages


async def test_system_messages_are_folded_into_system_through_litellm(gateway, openai_fake):
    marker = uuid.uuid4().hex
    reply = await client(gateway).messages.create(
        model="gpt-ok", max_tokens=64, system="Be terse.", messages=with_system_message(marker))
    assert reply.content[0].text == f"echo: hello {marker}"
    [sent] = [r for r in upstream_records(openai_fake) if marker in json.dumps(r["json"])]
    system = [m for m in sent["json"]["messages"] if m["role"] == "system"]
    assert "Be terse." in json.dumps(system) and f"Available agent types {marker}" in \
        json.dumps(system)
    assert sent["json"]["messages"][-1]["role"] == "user"


async def test_a_role_litellm_cannot_translate_is_a_clear_400(gateway, openai_fake):
    marker = uuid.uuid4().hex
    with pytest.raises(anthropic.BadRequestError) as info:
        await client(gateway).messages.create(model="gpt-ok", max_tokens=64,
                                              messages=with_system_message(marker, "critic"))
    assert "'messages[1].role'" in info.value.body["error"]["message"]
    assert "cannot be translated" in info.value.body["error"]["message"]
    assert not [r for r in upstream_records(openai_fake) if marker in json.dumps(r["json"])]
