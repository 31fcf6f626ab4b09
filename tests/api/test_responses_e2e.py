"""The Responses API and legacy completions on the wire: the real daemon, the official openai
SDK, a fake upstream that speaks both APIs (``tests/fakes/responses_upstream.py``). Memory is
off here; ``test_responses_memory_e2e.py`` covers memory."""
from __future__ import annotations

import json
import uuid

import aiohttp
import openai
import pytest
from yarl import URL

from tests.conftest import GATEWAY_KEY, UPSTREAM_KEY, Daemon, write_config
from tests.fakes import anthropic_upstream, responses_upstream
from tests.fakes.threaded import ThreadedServer


@pytest.fixture(scope="module")
def responses_fake():
    server = ThreadedServer(responses_upstream.create_app()).start()
    yield server
    server.stop()


def responses_models(url: str) -> str:
    """Deployments on the Responses fake; they come first in model_list, so ``gpt-resp`` is
    the first OpenAI-wire deployment (the default for the stored-response routes)."""
    entries = [("gpt-resp", "openai/ok", ""), ("gpt-resp-tools", "openai/tool-call", ""),
               ("gpt-resp-500", "openai/status-500", ""),
               ("gpt-resp-midstream", "openai/midstream-fail", ""),
               ("resp-litellm", "openai/ok", 'wire = "litellm"\n')]
    return "\n".join(
        f'[[model_list]]\nmodel_name = "{name}"\n{extra}[model_list.litellm_params]\n'
        f'model = "{model}"\napi_base = "{url}/v1"\napi_key = "{UPSTREAM_KEY}"\n'
        for name, model, extra in entries)


@pytest.fixture(scope="module")
def anthropic_fake():
    server = ThreadedServer(anthropic_upstream.create_app()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, openai_fake, responses_fake, anthropic_fake):
    claude = ('[[model_list]]\nmodel_name = "claude-for-codex"\n[model_list.litellm_params]\n'
              f'model = "anthropic/claude-x"\napi_base = "{anthropic_fake.url}"\n'
              f'api_key = "{UPSTREAM_KEY}"\n')
    config = write_config(tmp_path_factory.mktemp("responses"), openai_fake.url,
                          auth=f'keys = ["{GATEWAY_KEY}"]',
                          extra=responses_models(responses_fake.url) + claude)
    with Daemon(config) as daemon:
        yield daemon


def client(daemon) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=daemon.url + "/v1", api_key=GATEWAY_KEY, max_retries=0,
                              timeout=30)


def records(server, marker: str) -> list[dict]:
    found = server.call(lambda: list(server.app[responses_upstream.RECORDS]))
    return [r for r in found if marker in json.dumps(r["json"]) + r["path"] + r["query"]]


def rich_request(marker: str) -> dict:
    """What Codex sends: instructions, tools, prior items of a tool round trip."""
    return {
        "model": "gpt-resp", "instructions": "You are Codex.",
        "input": [
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "find the config"}]},
            {"type": "function_call", "call_id": "call_0", "name": "lookup",
             "arguments": '{"query": "config"}'},
            {"type": "function_call_output", "call_id": "call_0", "output": "etc/x.toml"},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": f"thanks {marker}"}]}],
        "tools": [{"type": "function", "name": "lookup", "description": "Look things up.",
                   "parameters": {"type": "object",
                                  "properties": {"query": {"type": "string"}}}}],
        "tool_choice": "auto", "parallel_tool_calls": False, "store": False,
        "reasoning": {"effort": "low", "summary": "auto"}, "include": [
            "reasoning.encrypted_content"], "previous_response_id": "resp_earlier",
    }


async def test_request_reaches_upstream_unchanged_except_model_and_reply_is_relayed_exactly(
        gateway, responses_fake):
    marker = uuid.uuid4().hex
    body = rich_request(marker)
    raw = await client(gateway).responses.with_raw_response.create(
        **body, extra_body={"vendor_extension": {"keep": [1, {"deep": True}]}},
        extra_headers={"openai-beta": "responses=experimental"})
    [record] = records(responses_fake, marker)
    assert record["path"] == "/v1/responses"
    assert record["json"] == {**body, "model": "ok",
                              "vendor_extension": {"keep": [1, {"deep": True}]}}
    assert record["headers"]["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert record["headers"]["openai-beta"] == "responses=experimental"
    assert raw.http_response.content == record["sent"]
    response = raw.parse()
    assert response.output_text == f"echo: thanks {marker}"
    assert response.model_extra["fake_vendor_field"] == {"kept": True}
    assert raw.headers["x-memproxy-memory"] == "off"


async def test_streamed_events_are_relayed_byte_for_byte_unknown_types_included(
        gateway, responses_fake):
    marker = uuid.uuid4().hex
    async with client(gateway).responses.with_streaming_response.create(
            model="gpt-resp-tools", input=f"look it up {marker}", stream=True) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        received = b"".join([chunk async for chunk in raw.iter_bytes()])
    [record] = records(responses_fake, marker)
    assert received == record["sent"]
    events = [json.loads(line[6:]) for line in received.decode().split("\n")
              if line.startswith("data: ")]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "response.fake_extension" in [e["type"] for e in events]

    stream = await client(gateway).responses.create(
        model="gpt-resp-tools", input=f"again {marker}", stream=True)
    seen = [event async for event in stream]
    types = [event.type for event in seen]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.fake_extension" in types and "response.output_text.delta" in types
    final = seen[-1].response
    assert final.output_text == f"echo: again {marker}"
    assert [(i.type, getattr(i, "name", None)) for i in final.output] == [
        ("message", None), ("function_call", "lookup")]


@pytest.mark.parametrize("model", ["gpt-resp", "resp-litellm"])
async def test_each_users_session_keeps_its_own_cookie(gateway, responses_fake, model):
    async def call(user_id: str) -> str | None:
        marker = uuid.uuid4().hex
        api = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY,
                                 max_retries=0, default_headers={"x-memory-user-id": user_id})
        assert (await api.responses.create(model=model, input=marker)).output_text == \
            f"echo: {marker}"
        return records(responses_fake, marker)[0]["cookie"]

    ann, bob = f"ann-{model}", f"bob-{model}"
    assert await call(ann) is None and await call(bob) is None
    ann_cookie, bob_cookie = await call(ann), await call(bob)
    assert ann_cookie and bob_cookie and ann_cookie != bob_cookie
    assert await call(ann) == ann_cookie


async def test_stored_response_routes_pass_through_to_the_first_native_deployment(
        gateway, responses_fake):
    api = client(gateway)
    marker = uuid.uuid4().hex
    created = await api.responses.create(model="gpt-resp", input=f"keep this {marker}")
    fetched = await api.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == f"echo: keep this {marker}"
    items = [item async for item in api.responses.input_items.list(created.id, limit=5)]
    assert items[0].content[0].text == f"keep this {marker}"
    assert (await api.responses.cancel(created.id)).status == "cancelled"
    await api.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(created.id)
    calls = [(r["method"], r["path"], r["query"]) for r in records(responses_fake, created.id)]
    assert calls == [("GET", f"/v1/responses/{created.id}", ""),
                     ("GET", f"/v1/responses/{created.id}/input_items", "limit=5"),
                     ("POST", f"/v1/responses/{created.id}/cancel", ""),
                     ("DELETE", f"/v1/responses/{created.id}", ""),
                     ("GET", f"/v1/responses/{created.id}", "")]


async def test_a_stored_response_is_replayed_as_events_with_stream_true(gateway, responses_fake):
    created = await client(gateway).responses.create(model="gpt-resp", input="replay me")
    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as http:
        async with http.get(f"{gateway.url}/v1/responses/{created.id}",
                            params={"stream": "true", "starting_after": "2"}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            received = await resp.read()
    [record] = records(responses_fake, created.id)
    assert record["query"] == "stream=true&starting_after=2"
    assert received == record["sent"] and b"event: response.completed" in received


async def test_stored_response_routes_take_a_model_query_parameter(gateway, responses_fake):
    api = client(gateway)
    created = await api.responses.create(model="gpt-resp-tools", input="a stored one")
    fetched = await api.responses.retrieve(created.id, extra_query={"model": "gpt-resp-tools"})
    assert fetched.id == created.id
    [record] = records(responses_fake, created.id)
    assert record["query"] == ""                       # ``model`` is memproxyd's, not theirs
    with pytest.raises(openai.InternalServerError) as translated:
        await api.responses.retrieve(created.id, extra_query={"model": "resp-litellm"})
    assert translated.value.status_code == 501
    assert translated.value.body["type"] == "api_error"
    with pytest.raises(openai.NotFoundError) as unknown:
        await api.responses.retrieve(created.id, extra_query={"model": "no-such-model"})
    assert unknown.value.body["code"] == "model_not_found"


async def test_input_tokens_are_counted_by_the_upstream_without_memory(gateway, responses_fake):
    marker = uuid.uuid4().hex
    items = [{"role": "user", "content": f"count me {marker}"}]
    counted = await client(gateway).responses.input_tokens.count(model="gpt-resp", input=items)
    assert counted.input_tokens == len(json.dumps(items)) // 4
    [record] = records(responses_fake, marker)
    assert record["path"] == "/v1/responses/input_tokens"
    assert record["json"] == {"model": "ok", "input": items}


@pytest.mark.parametrize("body,code", [
    ({"model": "gpt-resp", "input": {"role": "user"}}, "invalid_input"),
    ({"model": "gpt-resp", "input": "hi", "instructions": ["not", "text"]},
     "invalid_instructions"),
    ({"input": "hi"}, "missing_model"),
])
async def test_bad_input_is_a_400_in_openais_shape_and_reaches_no_upstream(
        gateway, responses_fake, body, code):
    marker = uuid.uuid4().hex
    body = {**body, "metadata": {"marker": marker}}
    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as http:
        async with http.post(gateway.url + "/v1/responses", json=body) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code
    assert records(responses_fake, marker) == []


@pytest.mark.parametrize("response_id", ["..", "a.b", "bad%2Fid", "%2E%2E"])
async def test_a_response_id_that_could_reshape_the_upstream_url_is_a_400(
        gateway, responses_fake, response_id):
    before = responses_fake.call(lambda: len(responses_fake.app[responses_upstream.RECORDS]))
    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as http:
        # encoded=True: the path exactly as written, not normalised by the client
        raw = URL(f"{gateway.url}/v1/responses/{response_id}/input_items", encoded=True)
        async with http.get(raw) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "invalid_response_id"
    after = responses_fake.call(lambda: len(responses_fake.app[responses_upstream.RECORDS]))
    assert after == before


async def test_upstream_errors_pass_through_and_a_broken_stream_ends_with_an_error_event(
        gateway, responses_fake):
    with pytest.raises(openai.InternalServerError) as failed:
        await client(gateway).responses.create(model="gpt-resp-500", input="x")
    assert failed.value.status_code == 500 and failed.value.body["code"] == "fake"
    marker = uuid.uuid4().hex
    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as http:
        async with http.post(gateway.url + "/v1/responses", json={
                "model": "gpt-resp-midstream", "input": marker, "stream": True}) as resp:
            received = (await resp.read()).decode()
    relayed = records(responses_fake, marker)[0]["sent"].decode()
    assert received.startswith(relayed)
    last = received[len(relayed):]
    assert last.startswith("event: error\ndata: ")
    error = json.loads(last.split("data: ", 1)[1])
    assert error["type"] == "error" and error["message"].startswith("upstream stream failed")
    assert error["sequence_number"] == 5             # the fake sent events 0-4


@pytest.mark.parametrize("stream", [False, True])
async def test_other_providers_go_through_litellm_responses(gateway, responses_fake, stream):
    marker = uuid.uuid4().hex
    kwargs = {"model": "resp-litellm", "input": f"translate me {marker}",
              "instructions": "Be brief.",
              "tools": [{"type": "function", "name": "lookup",
                         "parameters": {"type": "object", "properties": {}}}]}
    if stream:
        events = [e async for e in await client(gateway).responses.create(**kwargs, stream=True)]
        assert events[-1].type == "response.completed"
        assert "response.output_text.delta" in [e.type for e in events]
        text = events[-1].response.output_text
    else:
        text = (await client(gateway).responses.create(**kwargs)).output_text
    assert text == f"echo: translate me {marker}"
    [record] = records(responses_fake, marker)
    assert record["json"]["instructions"] == "Be brief."
    assert record["json"]["tools"][0]["name"] == "lookup"


@pytest.mark.parametrize("stream", [False, True])
async def test_codex_on_a_claude_deployment_goes_through_litellm(gateway, anthropic_fake, stream):
    marker = uuid.uuid4().hex
    kwargs = {"model": "claude-for-codex", "input": f"hello claude {marker}",
              "instructions": "You are Codex.", "max_output_tokens": 256}
    if stream:
        events = [e async for e in await client(gateway).responses.create(**kwargs, stream=True)]
        text = events[-1].response.output_text
    else:
        text = (await client(gateway).responses.create(**kwargs)).output_text
    assert text == f"echo: hello claude {marker}"
    found = anthropic_fake.call(lambda: list(anthropic_fake.app[anthropic_upstream.RECORDS]))
    [record] = [r for r in found if marker in json.dumps(r["json"])]
    assert record["path"] == "/v1/messages" and record["json"]["model"] == "claude-x"
    assert "You are Codex." in json.dumps(record["json"]["system"])


@pytest.mark.parametrize("model", ["demo", "resp-litellm"])
async def test_translated_events_name_their_type_on_the_event_line(gateway, model):
    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as http:
        async with http.post(gateway.url + "/v1/responses", json={
                "model": model, "input": "hello", "stream": True}) as resp:
            received = (await resp.read()).decode()
    frames = [frame.split("\n") for frame in received.strip().split("\n\n")]
    assert len(frames) > 5
    for event_line, data_line in frames:
        assert event_line == "event: " + json.loads(data_line[len("data: "):])["type"]
    assert frames[-1][0] == "event: response.completed"


@pytest.mark.parametrize("stream", [False, True])
async def test_the_offline_demo_model_answers_responses(gateway, stream):
    if stream:
        events = [e async for e in await client(gateway).responses.create(
            model="demo", input="hello", stream=True)]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        text = events[-1].response.output_text
    else:
        text = (await client(gateway).responses.create(model="demo", input="hello")).output_text
    assert text == "offline hello"


async def test_completions_are_relayed_exactly_as_json_and_as_events(gateway, responses_fake):
    marker = uuid.uuid4().hex
    raw = await client(gateway).completions.with_raw_response.create(
        model="gpt-resp", prompt=f"def {marker}(", max_tokens=16, suffix="\n    return x",
        extra_body={"vendor_extension": True})
    [record] = records(responses_fake, marker)
    assert record["path"] == "/v1/completions"
    assert record["json"] == {"model": "ok", "prompt": f"def {marker}(", "max_tokens": 16,
                              "suffix": "\n    return x", "vendor_extension": True}
    assert raw.http_response.content == record["sent"]
    assert raw.parse().choices[0].text == f"echo: def {marker}("
    assert raw.headers["x-memproxy-memory"] == "off"

    other = uuid.uuid4().hex
    async with client(gateway).completions.with_streaming_response.create(
            model="gpt-resp", prompt=f"class {other}", stream=True) as streamed:
        received = b"".join([chunk async for chunk in streamed.iter_bytes()])
    assert received == records(responses_fake, other)[0]["sent"]
    assert received.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("model,expected", [("resp-litellm", "echo: import {m}"),
                                            ("demo", "offline hello")])
@pytest.mark.parametrize("stream", [False, True])
async def test_completions_for_other_providers_go_through_litellm(
        gateway, model, expected, stream):
    marker = uuid.uuid4().hex
    api = client(gateway)
    if stream:
        chunks = [c async for c in await api.completions.create(
            model=model, prompt=f"import {marker}", stream=True)]
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    else:
        text = (await api.completions.create(model=model, prompt=f"import {marker}")
                ).choices[0].text
    assert text.strip() == expected.format(m=marker)


async def test_completions_without_a_prompt_are_a_400(gateway):
    with pytest.raises(openai.BadRequestError) as bad:
        await client(gateway).completions.create(model="gpt-resp", prompt=None)
    assert bad.value.body["code"] == "missing_prompt"
