"""Codex's path with memory: the official openai SDK's ``responses.create`` on a project port
and on the gateway, the Responses fake, the embedded SQLite store; and legacy completions,
whose memory is off unless ``[memory] completions = true``."""
from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
import uuid

import aiohttp
import openai
import pytest

from tests.conftest import free_port, write_config
from tests.fakes import responses_upstream
from tests.fakes.threaded import ThreadedServer
from tests.api.test_responses_e2e import responses_models

MEMORY = ('backend = "sqlite"\nrecall_timeout_ms = 2000\nskip_small_max_tokens = 32\n'
          'skip_system_patterns = ["(?i)generate a concise title"]')


@pytest.fixture(scope="module")
def responses_fake():
    server = ThreadedServer(responses_upstream.create_app()).start()
    yield server
    server.stop()


def start(tmp_path, openai_fake, responses_fake, start_daemon, memory: str = MEMORY):
    extra = responses_models(responses_fake.url) + (
        '[[model_list]]\nmodel_name = "gpt-resp-echo"\n[model_list.litellm_params]\n'
        f'model = "openai/echo-instructions"\napi_base = "{responses_fake.url}/v1"\n')
    return start_daemon(write_config(tmp_path, openai_fake.url, extra=extra, memory=memory))


@pytest.fixture
def project(tmp_path, openai_fake, responses_fake, start_daemon):
    """A daemon with memory on and the project ``codex`` on its own port."""
    daemon = start(tmp_path, openai_fake, responses_fake, start_daemon)
    port = free_port()
    request = urllib.request.Request(
        daemon.url + "/admin/projects", method="POST",
        data=json.dumps({"name": "codex", "port": port}).encode(),
        headers={"content-type": "application/json"})
    assert urllib.request.urlopen(request).status == 201
    return daemon, port


def codex(port: int, **headers) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                              max_retries=0, timeout=30, default_headers=headers)


def upstream_request(server, marker: str) -> dict:
    found = server.call(lambda: list(server.app[responses_upstream.RECORDS]))
    [record] = [r for r in found if marker in json.dumps(r["json"])]
    return record["json"]


async def memories(daemon, user: str) -> list[dict]:
    url = f"{daemon.url}/v1/memories?user_id={user}"
    return json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(url).read()))["data"]


async def wait_memories(daemon, user: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while len(found := await memories(daemon, user)) < count:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)                  # and no second copy arrives later
    found = await memories(daemon, user)
    assert len(found) == count, found
    return found


async def create(api: openai.AsyncOpenAI, stream: bool, **kwargs):
    """``responses.create`` with the raw response (for headers), streamed or not."""
    if not stream:
        return await api.responses.with_raw_response.create(**kwargs)
    raw = await api.responses.with_raw_response.create(**kwargs, stream=True)
    async for _ in raw.parse():
        pass
    return raw


def blocks_in(sent: dict) -> list[str]:
    """The memory blocks memproxyd placed in a request's input: developer message items."""
    items = sent["input"] if isinstance(sent.get("input"), list) else []
    return [part["text"] for item in items if item.get("role") == "developer"
            for part in item["content"] if part["text"].startswith("<memproxy-memory>")]


@pytest.mark.parametrize("stream", [False, True])
async def test_codex_exchange_is_remembered_once_and_recalled_with_its_turn(
        project, responses_fake, stream):
    daemon, port = project
    api, fact = codex(port), f"quokka{uuid.uuid4().hex[:6]}"
    first = await create(api, stream, model="gpt-resp", instructions="You are Codex.",
                         input=f"The deploy script is called {fact}.")
    assert first.headers["x-memproxy-user-id"] == "codex"
    [stored] = await wait_memories(daemon, "codex", 1)
    assert stored["content"] == (f"User: The deploy script is called {fact}.\n"
                                 f"Assistant: echo: The deploy script is called {fact}.")

    marker = uuid.uuid4().hex
    items = [{"type": "message", "role": "user",
              "content": [{"type": "input_text", "text": f"What is the deploy script? {marker}"}]}]
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    second = await create(api, stream, model="gpt-resp", instructions="You are Codex.",
                          input=items, tools=tools)
    assert second.headers["x-memproxy-memory"] == "injected"
    sent = upstream_request(responses_fake, marker)
    assert sent["instructions"] == "You are Codex."    # the client's prefix, unchanged
    [block] = blocks_in(sent)                          # an input item just before the turn
    assert fact in block and sent["input"][1:] == items and sent["tools"] == tools
    await wait_memories(daemon, "codex", 2)


async def test_a_continued_conversation_recalls_from_its_new_input_only(
        project, responses_fake):
    daemon, port = project
    api, fact = codex(port), f"wombat{uuid.uuid4().hex[:6]}"
    await create(api, False, model="gpt-resp", input=f"The cache server is {fact}.")
    await wait_memories(daemon, "codex", 1)

    tool_only = uuid.uuid4().hex
    raw = await create(api, False, model="gpt-resp", previous_response_id="resp_prev1",
                       input=[{"type": "function_call_output", "call_id": "c1",
                               "output": f"cache server {tool_only}"}])
    assert raw.headers["x-memproxy-memory"] == "skipped"   # no new user words to search with
    sent = upstream_request(responses_fake, tool_only)
    assert sent["previous_response_id"] == "resp_prev1" and "instructions" not in sent

    marker = uuid.uuid4().hex
    raw = await create(api, False, model="gpt-resp", previous_response_id="resp_prev2",
                       input=f"Which cache server do we use? {marker}")
    assert raw.headers["x-memproxy-memory"] == "injected"
    sent = upstream_request(responses_fake, marker)
    assert sent["previous_response_id"] == "resp_prev2" and "instructions" not in sent
    assert fact in blocks_in(sent)[0]
    found = await wait_memories(daemon, "codex", 2)
    assert not any(tool_only in m["content"] for m in found)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_loop_is_remembered_once_with_its_calls_as_lines(project, stream):
    """The reply with a function call is a step of the turn; the call that sends the tool's
    output back gets the answer, and the turn is remembered then, once."""
    daemon, port = project
    marker = uuid.uuid4().hex
    api = codex(port)
    first = await create(api, stream, model="gpt-resp-tools", input=f"find it {marker}")
    await asyncio.sleep(0.3)
    assert await memories(daemon, "codex") == []          # no answer yet: nothing stored
    loop = await create(api, stream, model="gpt-resp", input=[
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": f"find it {marker}"}]},
        {"type": "function_call", "call_id": "call_1", "name": "lookup",
         "arguments": '{"query": "config"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "config.toml"}])
    assert first.headers["x-memproxy-memory"] == loop.headers["x-memproxy-memory"]
    [stored] = await wait_memories(daemon, "codex", 1)
    assert stored["content"] == (f"User: find it {marker}\nAssistant: "
                                 '[lookup: {"query": "config"}]\n'
                                 f"echo: find it {marker}")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_loop_continued_by_previous_response_id_keeps_its_turn(
        project, responses_fake, stream):
    """An SDK agent that continues by ``previous_response_id`` sends only the tool's output:
    the call still belongs to the turn (the same block) and its answer is remembered with the
    human's words and the tool call."""
    daemon, port = project
    marker = uuid.uuid4().hex
    api = codex(port)
    await create(api, False, model="gpt-resp", input=f"Our config lives in config.toml {marker}")
    await wait_memories(daemon, "codex", 1)
    first = await create(api, stream, model="gpt-resp-tools", input=f"find config {marker}")
    sent = upstream_request(responses_fake, f"find config {marker}")
    response_id = [r for r in responses_fake.call(lambda: list(
        responses_fake.app[responses_upstream.RECORDS])) if r["json"] == sent][0]["sent"]
    response_id = re.search(rb'"id": ?"(resp_[^"]+)"', response_id).group(1).decode()
    loop = await create(api, stream, model="gpt-resp", previous_response_id=response_id,
                        input=[{"type": "function_call_output", "call_id": "call_1",
                                "output": "config.toml"}])
    assert first.headers["x-memproxy-memory"] == loop.headers["x-memproxy-memory"] == "injected"
    continued = upstream_request(responses_fake, response_id)
    # the block is an input item of the first call, which the provider keeps with the
    # response: the continuing call carries none of its own
    assert marker in blocks_in(sent)[0] and blocks_in(continued) == []
    found = await wait_memories(daemon, "codex", 2)
    assert found[0]["content"].startswith(f"User: find config {marker}\nAssistant: "
                                          '[lookup: {"query": "config"}]\n')


async def test_the_memory_block_echoed_back_is_never_stored(project):
    daemon, port = project
    api = codex(port)
    await create(api, False, model="gpt-resp", input="The linter is named ruffian.")
    await wait_memories(daemon, "codex", 1)
    raw = await create(api, True, model="gpt-resp-echo", instructions="Be brief.",
                       input="Which linter is named ruffian?")
    assert raw.headers["x-memproxy-memory"] == "injected"
    found = await wait_memories(daemon, "codex", 2)
    assert all("memproxy-memory" not in m["content"] for m in found)
    assert any("Be brief." in m["content"] for m in found)     # the echo itself was kept


async def test_housekeeping_calls_are_neither_recalled_for_nor_remembered(project):
    daemon, port = project
    api = codex(port)
    small = await create(api, False, model="gpt-resp", input="ping", max_output_tokens=16)
    title = await create(api, True, model="gpt-resp", input="fix the build",
                         instructions="Generate a concise title for this session.")
    compaction = await create(api, True, model="gpt-resp", instructions="You are Codex.", input=[
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "fix the build"}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "You are performing a CONTEXT CHECKPOINT "
                                           "COMPACTION. Create a handoff summary."}]}])
    assert small.headers["x-memproxy-memory"] == "skipped"
    assert title.headers["x-memproxy-memory"] == "skipped"
    assert compaction.headers["x-memproxy-memory"] == "skipped"
    await asyncio.sleep(0.3)
    assert await memories(daemon, "codex") == []


async def test_codex_compaction_is_passed_through_without_memory(project, responses_fake):
    daemon, port = project
    await create(codex(port), False, model="gpt-resp", input="The queue is named tortoise.")
    await wait_memories(daemon, "codex", 1)
    marker = uuid.uuid4().hex
    history = [{"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": f"Which queue? tortoise {marker}"}]}]
    body = {"model": "gpt-resp", "input": history, "instructions": "Summarize the history."}
    url = f"http://127.0.0.1:{port}/v1/responses/compact"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body) as resp:
            assert resp.status == 200 and resp.headers["x-memproxy-memory"] == "skipped"
            assert await resp.json() == {"output": [{"type": "compaction",
                                                     "encrypted_content": "compacted 1 items"}]}
        async with http.post(url, json={**body, "model": "resp-litellm"}) as resp:
            assert resp.status == 501
            assert (await resp.json())["error"]["code"] == "not_implemented"
    assert upstream_request(responses_fake, marker) == {**body, "model": "ok"}
    await wait_memories(daemon, "codex", 1)                  # nothing remembered


async def test_the_litellm_path_remembers_too(project):
    daemon, port = project
    marker = uuid.uuid4().hex
    await create(codex(port), True, model="resp-litellm", input=f"translated {marker}")
    [stored] = await wait_memories(daemon, "codex", 1)
    assert stored["content"] == f"User: translated {marker}\nAssistant: echo: translated {marker}"


async def test_completions_have_no_memory_unless_configured(
        tmp_path, openai_fake, responses_fake, start_daemon):
    daemon = start(tmp_path, openai_fake, responses_fake, start_daemon)
    api = openai.AsyncOpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0,
                             default_headers={"x-memory-user-id": "ide"})
    raw = await api.completions.with_raw_response.create(
        model="gpt-resp", prompt="# the build tool is called zymurgy\n")
    assert raw.headers["x-memproxy-memory"] == "off"
    await asyncio.sleep(0.3)
    assert await memories(daemon, "ide") == []

    (tmp_path / "on").mkdir()
    daemon = start(tmp_path / "on", openai_fake, responses_fake, start_daemon,
                   memory='backend = "sqlite"\nrecall_timeout_ms = 2000\ncompletions = true')
    api = openai.AsyncOpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0,
                             default_headers={"x-memory-user-id": "ide"})
    await api.completions.create(model="gpt-resp", prompt="The build tool is called zymurgy.")
    [stored] = await wait_memories(daemon, "ide", 1)
    assert "zymurgy" in stored["content"]
    marker = uuid.uuid4().hex
    raw = await api.completions.with_raw_response.create(
        model="gpt-resp", prompt=f"Which build tool is called zymurgy? {marker}")
    assert raw.headers["x-memproxy-memory"] == "injected"
    prompt = upstream_request(responses_fake, marker)["prompt"]
    assert prompt.startswith("<memproxy-memory>")
    assert prompt.endswith(f"\n\nWhich build tool is called zymurgy? {marker}")
