"""The offline ``demo`` model answers as a real server of each protocol would: its own name as
``model``, complete usage objects, whole event sequences; checked with the official SDKs
against the real daemon."""
from __future__ import annotations

import json

import aiohttp
import anthropic
import openai
import pytest

from tests.conftest import GATEWAY_KEY, Daemon, write_config


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, openai_fake):
    """One daemon for the module: the demo model answers through litellm, whose import (~4 s
    of CPU) each daemon pays once; these tests only read."""
    config = write_config(tmp_path_factory.mktemp("demo"), openai_fake.url,
                          auth=f'keys = ["{GATEWAY_KEY}"]')
    with Daemon(config) as running:
        yield running


def oai(daemon) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=daemon.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)


def claude(daemon) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=daemon.url, api_key=GATEWAY_KEY, max_retries=0)


def check_responses_usage(usage) -> None:
    # what Codex's ResponseCompleted requires (it rejected the stream without these)
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


async def test_demo_responses_name_demo_and_carry_complete_usage(daemon):
    reply = await oai(daemon).responses.create(model="demo", input="hello " * 40)
    assert reply.model == "demo" and reply.output_text == "offline hello"
    assert reply.id.startswith("resp_") and reply.created_at > 1_700_000_000
    check_responses_usage(reply.usage)
    assert reply.usage.input_tokens >= 40      # counted from the request, not canned


async def test_demo_responses_stream_the_whole_event_sequence(daemon):
    events = [e async for e in await oai(daemon).responses.create(
        model="demo", input="hello", stream=True)]
    types = [e.type for e in events]
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", "response.output_text.delta",
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    done = events[-1].response
    assert done.model == "demo" and done.output_text == "offline hello"
    check_responses_usage(done.usage)
    assert events[2].item.id == done.output[0].id


@pytest.mark.parametrize("stream", [False, True])
async def test_demo_messages_name_demo_and_carry_complete_usage(daemon, stream):
    args = {"model": "demo", "max_tokens": 64,
            "messages": [{"role": "user", "content": "hello"}]}
    if stream:
        async with claude(daemon).messages.stream(**args) as events:
            reply = await events.get_final_message()
    else:
        reply = await claude(daemon).messages.create(**args)
    assert reply.model == "demo" and reply.content[0].text == "offline hello"
    assert reply.usage.cache_creation_input_tokens == 0
    assert reply.usage.cache_read_input_tokens == 0
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    second = await claude(daemon).messages.create(**args)
    assert second.id != reply.id


async def test_demo_chat_names_demo_and_carries_complete_usage(daemon):
    reply = await oai(daemon).chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hello"}])
    assert reply.model == "demo" and reply.choices[0].message.content == "offline hello"
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
    chunks = [c async for c in await oai(daemon).chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hello"}], stream=True,
        stream_options={"include_usage": True})]
    assert {c.model for c in chunks} == {"demo"}
    assert chunks[-1].usage.total_tokens > 0


async def test_no_demo_reply_claims_a_real_model_name(daemon):
    bodies = [("/v1/responses", {"model": "demo", "input": "hi", "stream": True}),
              ("/v1/responses", {"model": "demo", "input": "hi"}),
              ("/v1/messages", {"model": "demo", "max_tokens": 9, "stream": True,
                                "messages": [{"role": "user", "content": "hi"}]}),
              ("/v1/chat/completions", {"model": "demo", "stream": True,
                                        "messages": [{"role": "user", "content": "hi"}]})]
    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as http:
        for path, body in bodies:
            async with http.post(daemon.url + path, json=body) as resp:
                text = (await resp.read()).decode()
            assert resp.status == 200 and '"demo"' in text
            for real in ("gpt-4.1", "claude-sonnet-4-2025", "gpt-3.5"):
                assert real not in text, (path, json.dumps(body))
