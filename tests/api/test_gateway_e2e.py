"""The real daemon, the official openai SDK, a fake OpenAI upstream on loopback."""
from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import openai
import pytest

from tests.conftest import GATEWAY_KEY, UPSTREAM_KEY, Daemon, upstream_records, write_config


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, openai_fake):
    """One daemon for the module (each test has markers and user ids of its own): a start
    and the litellm import it preloads (~4 s of CPU) once, not once per test."""
    config = write_config(tmp_path_factory.mktemp("gateway"), openai_fake.url,
                          auth=f'keys = ["{GATEWAY_KEY}"]')
    with Daemon(config) as running:
        yield running


def client(daemon, **headers) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=daemon.url + "/v1", api_key=GATEWAY_KEY,
                              default_headers=headers or None, max_retries=0)


def records_with(server, marker: str) -> list[dict]:
    return [r for r in upstream_records(server) if marker in json.dumps(r["json"])]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


async def test_chat_reaches_upstream_unchanged_except_model(daemon, openai_fake):
    marker = uuid.uuid4().hex
    raw = await client(daemon).chat.completions.with_raw_response.create(
        model="gpt-ok", messages=user(f"hello {marker}"), temperature=0.2,
        extra_body={"vendor_extension": {"keep": [1, 2, {"deep": True}]}})
    reply = raw.parse()
    assert reply.choices[0].message.content == f"echo: hello {marker}"
    assert raw.headers["x-memproxy-user-id"] == "default"
    assert float(raw.headers["x-memproxy-overhead-ms"]) >= 0
    [record] = records_with(openai_fake, marker)
    assert record["json"] == {"model": "ok", "messages": user(f"hello {marker}"),
                              "temperature": 0.2,
                              "vendor_extension": {"keep": [1, 2, {"deep": True}]}}


async def test_streaming_chat_relays_every_chunk(daemon, openai_fake):
    marker = uuid.uuid4().hex
    stream = await client(daemon).chat.completions.create(
        model="gpt-ok", messages=user(f"stream {marker} please"), stream=True)
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts).strip() == f"echo: stream {marker} please"
    assert len(parts) >= 4
    [record] = records_with(openai_fake, marker)
    assert record["json"]["stream"] is True


async def test_client_credentials_never_reach_the_upstream(daemon, openai_fake):
    marker = uuid.uuid4().hex
    await client(daemon, **{"x-api-key": "sk-client-evil", "openai-organization": "org-evil"}
                 ).chat.completions.create(
        model="gpt-ok", messages=user(marker),
        extra_body={"api_key": "sk-body-evil", "api_base": "http://evil.example",
                    "extra_headers": {"authorization": "Bearer evil"}})
    [record] = records_with(openai_fake, marker)
    assert record["headers"]["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "sk-client-evil" not in json.dumps(record["headers"])
    assert GATEWAY_KEY not in json.dumps(record["headers"])
    assert "openai-organization" not in {h.lower() for h in record["headers"]}
    assert not {"api_key", "api_base", "extra_headers"} & set(record["json"])


async def test_identity_from_header_then_pattern_then_default(daemon):
    api = client(daemon, **{"x-memory-user-id": "alice"})
    raw = await api.chat.completions.with_raw_response.create(model="gpt-ok", messages=user("a"))
    assert raw.headers["x-memproxy-user-id"] == "alice"
    api = client(daemon, **{"user-agent": "OpenAIClientImpl/Java unknown"})
    raw = await api.chat.completions.with_raw_response.create(model="gpt-ok", messages=user("b"))
    assert raw.headers["x-memproxy-user-id"] == "pycharm"
    with pytest.raises(openai.BadRequestError, match="invalid user id"):
        await client(daemon, **{"x-memory-user-id": "../etc/passwd"}).chat.completions.create(
            model="gpt-ok", messages=user("c"))


async def test_each_user_gets_back_only_their_own_cookie(daemon, openai_fake):
    async def call(user_id: str, marker: str):
        await client(daemon, **{"x-memory-user-id": user_id}).chat.completions.create(
            model="gpt-ok", messages=user(marker))

    first = {u: uuid.uuid4().hex for u in ("ann", "bob")}
    await asyncio.gather(*(call(u, m) for u, m in first.items()))
    assert all(records_with(openai_fake, m)[0]["cookie"] is None for m in first.values())
    second = {u: uuid.uuid4().hex for u in ("ann", "bob")}
    await asyncio.gather(*(call(u, m) for u, m in second.items()))
    cookies = {u: records_with(openai_fake, m)[0]["cookie"] for u, m in second.items()}
    assert cookies["ann"] and cookies["bob"] and cookies["ann"] != cookies["bob"]
    third = uuid.uuid4().hex
    await call("ann", third)
    assert records_with(openai_fake, third)[0]["cookie"] == cookies["ann"]


@pytest.mark.parametrize("model", ["via-litellm", "via-mistral"])
async def test_litellm_path_uses_the_users_session(daemon, openai_fake, model):
    async def call(user_id: str) -> str:
        marker = uuid.uuid4().hex
        reply = await client(daemon, **{"x-memory-user-id": user_id}).chat.completions.create(
            model=model, messages=user(marker))
        assert reply.choices[0].message.content == f"echo: {marker}"
        return records_with(openai_fake, marker)[0]["cookie"]

    cara_user, dan_user = f"cara-{model}", f"dan-{model}"
    assert await call(cara_user) is None
    assert await call(dan_user) is None
    cara, dan = await call(cara_user), await call(dan_user)
    assert cara and dan and cara != dan


async def test_litellm_streaming_and_offline_demo_model(daemon):
    api = client(daemon)
    reply = await api.chat.completions.create(model="demo", messages=user("hi"))
    assert reply.choices[0].message.content == "offline hello"
    stream = await api.chat.completions.create(model="demo", messages=user("hi"), stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "offline hello"


async def test_models_lists_configured_and_marks_unavailable(daemon):
    listing = {m.id: m for m in (await client(daemon).models.list()).data}
    assert {"gpt-ok", "demo", "needs-key"} <= set(listing)
    assert listing["gpt-ok"].model_extra["available"] is True
    assert listing["needs-key"].model_extra["available"] is False
    with pytest.raises(openai.APIStatusError) as info:
        await client(daemon).chat.completions.create(model="needs-key", messages=user("x"))
    assert info.value.status_code == 400
    assert "MEMPROXY_TEST_UNSET_KEY" in info.value.message


async def test_embeddings_pass_through(daemon, openai_fake):
    marker = uuid.uuid4().hex
    result = await client(daemon).embeddings.create(model="embed-ok", input=[marker, "x"])
    assert len(result.data) == 2
    assert records_with(openai_fake, marker)[0]["json"]["model"] == "embed"


@pytest.mark.parametrize("model,error,status", [
    ("nope", openai.NotFoundError, 404),
    ("gpt-500", openai.InternalServerError, 500),
    ("gpt-429", openai.RateLimitError, 429),
    ("gpt-unreachable", openai.APIStatusError, 502),
    ("gpt-slow", openai.APIStatusError, 504),
])
async def test_failures_have_the_right_status_and_openai_shape(daemon, model, error, status):
    with pytest.raises(error) as info:
        await client(daemon).chat.completions.create(model=model, messages=user("x"))
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict) and info.value.body.get("message")
    if status in (500, 429):  # the upstream's own body is passed through
        assert info.value.body["message"] == f"fake failure {status}"


async def test_bad_requests_get_400_401_413(daemon):
    url = daemon.url + "/v1/chat/completions"
    auth = {"authorization": f"Bearer {GATEWAY_KEY}"}
    cases = [
        (b"{not json", auth, 400, "invalid_json"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', auth, 400, "missing_model"),
        (b'{"model": "gpt-ok"}', auth, 400, "missing_messages"),
        (b'{"model": "gpt-ok", "messages": []}', {"authorization": "Bearer wrong"}, 401,
         "invalid_api_key"),
        (b'{"model": "gpt-ok", "messages": []}', {}, 401, "invalid_api_key"),
    ]
    async with aiohttp.ClientSession() as http:
        for body, headers, status, code in cases:
            async with http.post(url, data=body, headers=headers) as resp:
                payload = await resp.json()
                assert (resp.status, payload["error"]["code"]) == (status, code), body
                assert set(payload["error"]) >= {"message", "type", "code"}
        async with http.get(daemon.url + "/health") as resp:
            assert resp.status == 200   # no auth


async def test_body_over_the_limit_gets_413(tmp_path, openai_fake, start_daemon):
    daemon = start_daemon(write_config(tmp_path, openai_fake.url,
                                       server_extra="max_body_bytes = 2048"))
    body = {"model": "gpt-ok", "messages": user("x" * 4096)}
    async with aiohttp.ClientSession() as http:
        async with http.post(daemon.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("model", ["gpt-midstream", "gpt-stall"])
async def test_stream_failing_midway_ends_with_an_error_event(daemon, model):
    body = {"model": model, "stream": True, "messages": user("one two three")}
    async with aiohttp.ClientSession() as http:
        async with http.post(daemon.url + "/v1/chat/completions", json=body,
                             headers={"authorization": f"Bearer {GATEWAY_KEY}"},
                             timeout=aiohttp.ClientTimeout(total=10)) as resp:
            assert resp.status == 200
            text = (await resp.read()).decode()
    events = [e for e in text.split("\n\n") if e.strip()]
    assert len(events) >= 2
    last = json.loads(events[-1].removeprefix("data: "))
    assert last["error"]["message"].startswith("upstream stream failed")


async def test_memory_router_headers_only_on_router_deployments(tmp_path, openai_fake,
                                                                start_daemon):
    extra = "".join(
        f'[[model_list]]\nmodel_name = "{name}"\nsupermemory_router = true\n{wire}'
        f'[model_list.litellm_params]\nmodel = "openai/ok"\napi_base = "{openai_fake.url}/v1"\n'
        f'api_key = "{UPSTREAM_KEY}"\n'
        for name, wire in (("routed", ""), ("routed-litellm", 'wire = "litellm"\n')))
    daemon = start_daemon(write_config(tmp_path, openai_fake.url, extra=extra),
                          env={"SUPERMEMORY_API_KEY": "sm-test-key"})
    api = openai.AsyncOpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0,
                             default_headers={"x-memory-user-id": "erin"})
    routed, direct = uuid.uuid4().hex, uuid.uuid4().hex
    await api.chat.completions.create(model="routed", messages=user(routed))
    await api.chat.completions.create(model="gpt-ok", messages=user(direct))
    routed_headers = {k.lower(): v for k, v in records_with(openai_fake, routed)[0]["headers"].items()}
    direct_headers = {k.lower(): v for k, v in records_with(openai_fake, direct)[0]["headers"].items()}
    assert routed_headers["x-sm-user-id"] == "erin"
    assert routed_headers["x-supermemory-api-key"] == "sm-test-key"
    assert routed_headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "x-sm-user-id" not in direct_headers
    assert "x-supermemory-api-key" not in direct_headers
    translated = uuid.uuid4().hex
    await api.chat.completions.create(model="routed-litellm", messages=user(translated))
    translated_headers = {k.lower(): v for k, v in
                          records_with(openai_fake, translated)[0]["headers"].items()}
    assert translated_headers["x-sm-user-id"] == "erin"
    assert translated_headers["x-supermemory-api-key"] == "sm-test-key"
