"""Claude Code's path with memory: project ports as ANTHROPIC_BASE_URL, the official anthropic
SDK, the fake Anthropic upstream, the embedded SQLite store."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid

import anthropic
import pytest

from tests.conftest import free_port, write_config
from tests.fakes import anthropic_upstream
from tests.fakes.threaded import ThreadedServer


@pytest.fixture(scope="module")
def anthropic_fake():
    server = ThreadedServer(anthropic_upstream.create_app()).start()
    yield server
    server.stop()


@pytest.fixture
def projects(tmp_path, openai_fake, anthropic_fake, start_daemon):
    """A daemon with memory on and two projects, alpha and beta, on their own ports."""
    extra = ('[[model_list]]\nmodel_name = "claude-*"\n[model_list.litellm_params]\n'
             f'model = "anthropic/*"\napi_base = "{anthropic_fake.url}"\napi_key = "sk-up"\n')
    memory = ('backend = "sqlite"\nrecall_timeout_ms = 2000\nskip_small_max_tokens = 32\n'
              'skip_system_patterns = ["(?i)new conversation topic"]')
    daemon = start_daemon(write_config(tmp_path, openai_fake.url, extra=extra, memory=memory))
    ports = {}
    for name in ("alpha", "beta"):
        ports[name] = free_port()
        request = urllib.request.Request(
            daemon.url + "/admin/projects", method="POST",
            data=json.dumps({"name": name, "port": ports[name]}).encode(),
            headers={"content-type": "application/json"})
        assert urllib.request.urlopen(request).status == 201
    return daemon, ports


def claude(port: int) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{port}", api_key="unused",
                                    max_retries=0, timeout=20)


def upstream_request(server, marker: str) -> dict:
    found = server.call(lambda: list(server.app[anthropic_upstream.RECORDS]))
    [record] = [r for r in found if marker in json.dumps(r["json"])]
    return record["json"]


async def memories(daemon, project: str) -> list[dict]:
    url = f"{daemon.url}/v1/memories?user_id={project}"
    return json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(url).read()))["data"]


async def wait_memories(daemon, project: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while len(found := await memories(daemon, project)) < count:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    return found


@pytest.mark.parametrize("stream", [False, True])
async def test_claude_code_exchange_is_remembered_and_recalled_in_its_project_only(
        projects, anthropic_fake, stream):
    daemon, ports = projects
    fact = f"orchid{uuid.uuid4().hex[:6]}"

    async def send(port: int, text: str, system):
        kwargs = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": system,
                  "messages": [{"role": "user", "content": text}]}
        if not stream:
            return await claude(port).messages.with_raw_response.create(**kwargs)
        raw = await claude(port).messages.with_raw_response.create(**kwargs, stream=True)
        async for _ in await raw.parse():
            pass
        return raw

    first = await send(ports["alpha"], f"The release branch is named {fact}.", "Be brief.")
    assert first.headers["x-memproxy-user-id"] == "alpha"
    [stored] = await wait_memories(daemon, "alpha", 1)
    assert fact in stored["content"] and "echo:" in stored["content"]

    cached = [{"type": "text", "text": "You are Claude Code.",
               "cache_control": {"type": "ephemeral"}}]
    marker = uuid.uuid4().hex
    second = await send(ports["alpha"], f"What is the release branch named? {marker}", cached)
    assert second.headers["x-memproxy-memory"] == "injected"
    sent = upstream_request(anthropic_fake, marker)
    assert sent["system"] == cached                   # the client's cached block, untouched
    # the block travels with its turn: the first text part of the human message
    [block, words] = sent["messages"][0]["content"]
    assert block["type"] == "text" and fact in block["text"] and "cache_control" not in block
    assert words == {"type": "text", "text": f"What is the release branch named? {marker}"}

    other = uuid.uuid4().hex
    third = await send(ports["beta"], f"What is the release branch named? {other}", "Be brief.")
    assert third.headers["x-memproxy-memory"] == "none"
    assert fact not in json.dumps(upstream_request(anthropic_fake, other))
    assert all(fact not in m["content"]       # delivered in the background: wait for it
               for m in await wait_memories(daemon, "beta", 1))


async def test_housekeeping_calls_are_neither_recalled_for_nor_remembered(projects):
    daemon, ports = projects
    api = claude(ports["alpha"])
    quota = await api.messages.with_raw_response.create(
        model="claude-haiku", max_tokens=1, messages=[{"role": "user", "content": "quota"}])
    topic = await api.messages.with_raw_response.create(
        model="claude-haiku", max_tokens=512,
        system="Analyze if this message indicates a new conversation topic.",
        messages=[{"role": "user", "content": "fix the build"}])
    assert quota.headers["x-memproxy-memory"] == "skipped"
    assert topic.headers["x-memproxy-memory"] == "skipped"
    await asyncio.sleep(0.3)
    assert await memories(daemon, "alpha") == []


async def test_a_fork_of_the_conversation_carries_its_blocks_and_adds_nothing(
        projects, anthropic_fake):
    """Claude Code's away recap (a side call) forks the conversation: the earlier turn's
    block goes back at its place, byte for byte, so the fork shares the conversation's cached
    prefix; nothing is recalled for the fork's own prompt or remembered from it."""
    daemon, ports = projects
    fact = f"orchid{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(urllib.request.urlopen, urllib.request.Request(
        f"{daemon.url}/v1/memories", method="POST", headers={"content-type": "application/json"},
        data=json.dumps({"user_id": "alpha",
                         "content": f"The release branch is named {fact}."}).encode()))
    session = json.dumps({"device_id": "d", "session_id": str(uuid.uuid4())})
    asked, recap = uuid.uuid4().hex, uuid.uuid4().hex
    question = {"role": "user", "content": f"What is the release branch named? {asked}"}
    kwargs = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "You are Claude Code.",
              "metadata": {"user_id": session}}
    first = await claude(ports["alpha"]).messages.with_raw_response.create(
        messages=[question], **kwargs)
    assert first.headers["x-memproxy-memory"] == "injected"
    stored = await wait_memories(daemon, "alpha", 2)          # the fact, then this exchange
    away = {"role": "user", "content": "The user stepped away and is coming back. Recap in "
                                       f"under 40 words, 1-2 plain sentences. {recap}"}
    fork = await claude(ports["alpha"]).messages.with_raw_response.create(
        messages=[question, {"role": "assistant", "content": "It is named so."}, away],
        **kwargs)
    assert fork.headers["x-memproxy-memory"] == "skipped"
    fork_sent = upstream_request(anthropic_fake, recap)
    [main_sent] = [r["json"] for r in anthropic_fake.call(lambda: list(
        anthropic_fake.app[anthropic_upstream.RECORDS])) if asked in json.dumps(r["json"])
        and recap not in json.dumps(r["json"])]
    assert fact in json.dumps(main_sent["messages"][0])
    assert fork_sent["messages"][0] == main_sent["messages"][0]     # the block, byte for byte
    assert fork_sent["messages"][2] == away                         # no block for the recap
    await asyncio.sleep(0.3)
    assert len(await memories(daemon, "alpha")) == len(stored)
