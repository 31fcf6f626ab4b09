"""The caching fake through the official SDKs: usage in each provider's shape, streamed or not,
and a second call of a session reading what the first wrote."""
from __future__ import annotations

import anthropic
import openai
import pytest

from tests.fakes import caching_upstream
from tests.fakes.threaded import ThreadedServer

LONG = "The project's conventions, at length. " * 200       # well over 1,024 tokens


@pytest.fixture()
def fake():
    server = ThreadedServer(caching_upstream.create_app()).start()
    yield server
    server.stop()


def claude_turns(turns: list[str]) -> dict:
    messages = [{"role": "user" if i % 2 == 0 else "assistant",
                 "content": [{"type": "text", "text": t}]} for i, t in enumerate(turns)]
    messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": messages,
            "system": [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]}


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_usage_reports_the_write_then_the_read(fake, stream):
    client = anthropic.Anthropic(base_url=fake.url, api_key="x", max_retries=0)

    def call(turns):
        if not stream:
            return client.messages.create(**claude_turns(turns))
        with client.messages.stream(**claude_turns(turns)) as events:
            return events.get_final_message()

    first = call(["hello"])
    assert first.content[0].text == "Noted: hello"
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation_input_tokens > 1024 and first.usage.output_tokens > 0
    second = call(["hello", first.content[0].text, "and now?"])
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert 0 < second.usage.cache_creation_input_tokens < 100
    assert fake.app[caching_upstream.RECORDS][1]["usage"] == second.usage.model_dump(
        include={"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                 "output_tokens"})


@pytest.mark.parametrize("stream", [False, True])
def test_chat_completions_report_cached_tokens(fake, stream):
    client = openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0)
    messages = [{"role": "system", "content": LONG}, {"role": "user", "content": "hi"}]
    usages = []
    for _ in range(2):
        if stream:
            chunks = list(client.chat.completions.create(
                model="gpt-4.1", messages=messages, stream=True,
                stream_options={"include_usage": True}))
            usages.append(chunks[-1].usage)
        else:
            usages.append(client.chat.completions.create(model="gpt-4.1",
                                                         messages=messages).usage)
    assert usages[0].prompt_tokens_details.cached_tokens == 0
    cached = usages[1].prompt_tokens_details.cached_tokens
    assert cached >= 1024 and cached % 128 == 0 and cached <= usages[1].prompt_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_responses_report_cached_tokens_per_prompt_cache_key(fake, stream):
    client = openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0)

    def call(key):
        args = dict(model="gpt-5-codex", instructions=LONG, input="hi", store=False,
                    prompt_cache_key=key)
        if not stream:
            return client.responses.create(**args)
        with client.responses.stream(**args) as events:
            return events.get_final_response()

    assert call("a").usage.input_tokens_details.cached_tokens == 0
    assert call("b").usage.input_tokens_details.cached_tokens == 0
    again = call("a")
    assert again.usage.input_tokens_details.cached_tokens >= 1024
    assert again.output_text == "Noted: hi"


def test_more_than_four_breakpoints_is_anthropics_400(fake):
    client = anthropic.Anthropic(base_url=fake.url, api_key="x", max_retries=0)
    body = claude_turns(["q"])
    body["system"] = [{"type": "text", "text": str(i), "cache_control": {"type": "ephemeral"}}
                      for i in range(5)]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(**body)
