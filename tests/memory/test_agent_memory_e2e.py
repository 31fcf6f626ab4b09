"""Recorded Claude Code traffic replayed through the real daemon (memory on, SQLite store) to
the fake model: what is stored, what is injected, and the prompt prefix within a turn and
from one turn to the next."""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.conftest import write_config
from tests.fakes import agent_upstream
from tests.fakes.threaded import ThreadedServer
from tests.memory.test_agent_traffic import FACT, READ, recorded
from tests.prompts import extends

HEADERS = {"content-type": "application/json", "x-memory-user-id": "alpha"}


@pytest.fixture(scope="module")
def agent_fake():
    server = ThreadedServer(agent_upstream.create_app()).start()
    yield server
    server.stop()


@pytest.fixture
def daemon(tmp_path, openai_fake, agent_fake, start_daemon):
    extra = ('[[model_list]]\nmodel_name = "claude-*"\n[model_list.litellm_params]\n'
             f'model = "anthropic/*"\napi_base = "{agent_fake.url}"\napi_key = "sk-up"\n')
    return start_daemon(write_config(tmp_path, openai_fake.url, extra=extra,
                                     memory='backend = "sqlite"\nrecall_timeout_ms = 2000'))


def post(url: str, body: dict, headers: dict = HEADERS) -> tuple[dict, bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=20) as response:
        return {k.lower(): v for k, v in response.headers.items()}, response.read()


def stored(daemon, count: int) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        url = f"{daemon.url}/v1/memories?user_id=alpha&limit=100"
        found = [m["content"] for m in json.loads(urllib.request.urlopen(url).read())["data"]]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def upstream(server, index: int) -> dict:
    return server.call(lambda: list(server.app[agent_upstream.RECORDS]))[index]["json"]


def blocks_in(body: dict) -> list[str]:
    """The memory blocks in an Anthropic request's messages (each a text part of its turn)."""
    return [part["text"] for m in body["messages"] if isinstance(m["content"], list)
            for part in m["content"] if part.get("type") == "text"
            and part["text"].startswith("<memproxy-memory>")]


def test_replayed_claude_code_sessions_store_one_short_memory_per_turn(daemon, agent_fake):
    calls = recorded("claude-code")
    url = f"{daemon.url}/v1/messages?beta=true"
    title, _ = post(url, calls[0])
    assert title["x-memproxy-memory"] == "skipped"             # a side call: no recall
    post(url, calls[1])
    assert stored(daemon, 1) == [f"User: {FACT}\nAssistant: Understood: {FACT}"]
    post(url, calls[2])                                        # a turn that uses a tool...
    post(url, calls[3])                                        # ...and its answer
    memories = stored(daemon, 2)
    assert len(memories) == 2 and all(len(m) < 2000 for m in memories)
    assert not any("system-reminder" in m or "Environment" in m for m in memories)
    assert memories[0] == (f"User: {READ.format('CLAUDE.md')}\nAssistant: "
                           '[Read: {"file_path": "/home/dev/project/CLAUDE.md"}]\n'
                           "The notes say to use tabs. Done.")
    post(url, calls[4])
    headers, body = post(url, calls[5])                        # session 2 asks
    assert headers["x-memproxy-memory"] == "injected"
    sent = upstream(agent_fake, -1)
    [block] = blocks_in(sent)
    assert sent["system"] == calls[5]["system"]        # the client's system, untouched
    assert "BLUEFIN" in block and "system-reminder" not in block and len(block) < 1000
    assert b"From memory: " in body
    # the answer only quoted its block: the memory again, not remembered again (the
    # exchange is committed before the reply ends: no outbox between it and the store)
    memories = stored(daemon, 2)
    assert len(memories) == 2 and not any("From memory" in m for m in memories)
    assert not any("<session>" in m or "title" in m for m in memories)   # no side call


def test_every_call_of_a_turn_gets_the_same_block_even_as_memory_grows(daemon, agent_fake):
    calls = recorded("claude-code")
    url = f"{daemon.url}/v1/messages"
    before = len(agent_fake.call(lambda: list(agent_fake.app[agent_upstream.RECORDS])))
    post(f"{daemon.url}/v1/memories", {"user_id": "alpha",
                                      "content": "The indentation rule: tabs, width 8."})
    first, _ = post(url, calls[2])
    # a memory that would match better arrives mid-turn: the turn's block stays as it was
    post(f"{daemon.url}/v1/memories", {"user_id": "alpha",
                                      "content": "Notes in CLAUDE.md: read the notes rule."})
    second, _ = post(url, calls[3])
    assert first["x-memproxy-memory"] == second["x-memproxy-memory"] == "injected"
    assert first["x-memproxy-memories"] == second["x-memproxy-memories"] == "1"
    sent_1, sent_2 = upstream(agent_fake, before), upstream(agent_fake, -1)
    assert extends(sent_1, sent_2) is None             # the loop's prompt extends the turn's
    assert blocks_in(sent_1) == blocks_in(sent_2) and "width 8" in blocks_in(sent_1)[-1]


def test_each_turn_extends_the_last_with_earlier_turns_blocks_byte_for_byte(daemon,
                                                                          agent_fake):
    """Session 1 of the recording: its second turn carries the first turn's block again, at
    the first turn, identical; the prompt grows and never changes behind the newest turn."""
    calls = recorded("claude-code")
    url = f"{daemon.url}/v1/messages"
    post(f"{daemon.url}/v1/memories", {"user_id": "alpha", "content":
                                       "Deploy targets are named after fish."})
    post(f"{daemon.url}/v1/memories", {"user_id": "alpha", "content":
                                       "The notes in CLAUDE.md hold the indentation rule."})
    before = len(agent_fake.call(lambda: list(agent_fake.app[agent_upstream.RECORDS])))
    for call in calls[1:4]:
        post(url, call)
    sent = [upstream(agent_fake, before + i) for i in range(3)]
    assert extends(sent[0], sent[1]) is None and extends(sent[1], sent[2]) is None
    first, second = blocks_in(sent[1])
    assert blocks_in(sent[0]) == [first] and "fish" in first and "indentation" in second
    assert "BLUEFIN" not in second               # the conversation is not recalled into itself
    assert sent[1]["system"] == calls[2]["system"] and sent[1]["tools"] == calls[2]["tools"]


def test_a_secret_in_a_tool_calls_arguments_is_redacted_before_storage(daemon, agent_fake):
    secret = "sk-proj-Q3vLx9TmZ0aB7cD2eF4gH6iJ8kL"
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [
        {"role": "user", "content": "Set the deploy key up for the release pipeline"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Setting it."},
            {"type": "tool_use", "id": "toolu_01", "name": "Bash",
             "input": {"command": f"export OPENAI_API_KEY={secret} && ./release.sh"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "released"}]}]}
    post(daemon.url + "/v1/messages", body,
         {**HEADERS, "x-api-key": "client", "anthropic-version": "2023-06-01"})
    [memory] = stored(daemon, 1)
    assert "[Bash:" in memory and "release.sh" in memory, memory
    assert secret not in memory and "OPENAI_API_KEY=[REDACTED]" in memory


def test_an_answer_quoting_an_earlier_turns_block_is_not_remembered_with_the_quote(
        daemon, agent_fake):
    """The model may quote any block its prompt carries, not only its own turn's: turn 2
    recalls nothing, the fake answers with turn 1's block line, and nothing of that quote is
    remembered again (a memory of a memory)."""
    fact = "Deploy targets are named after freshwater fish by the platform team."
    post(f"{daemon.url}/v1/memories", {"user_id": "alpha", "content": fact})
    headers = {**HEADERS, "x-api-key": "client", "anthropic-version": "2023-06-01"}
    first = [{"role": "user", "content": "How are the deploy targets named?"}]
    reply, body = post(daemon.url + "/v1/messages",
                       {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": first},
                       headers)
    assert reply["x-memproxy-memory"] == "injected"
    answer = json.loads(body)["content"][0]["text"]
    assert answer == f"From memory: {fact}"            # quoted its own turn's block
    second = first + [{"role": "assistant", "content": answer},
                      {"role": "user", "content": "Thanks, that settles it."}]
    reply, body = post(daemon.url + "/v1/messages",
                       {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": second},
                       headers)
    assert reply["x-memproxy-memory"] == "none"         # turn 2 recalled nothing of its own
    assert json.loads(body)["content"][0]["text"] == f"From memory: {fact}"
    time.sleep(0.5)                                     # both exchanges delivered
    memories = stored(daemon, 2)
    assert memories.count(fact) == 1, memories          # the memory itself, once
    assert not any("From memory" in m for m in memories if m != fact), memories
