"""The prompt-cache model the caching fake bills with: each rule the providers document."""
from __future__ import annotations

import pytest

from tests.fakes.prompt_cache import (AnthropicCache, CacheRequestError, OpenAICache,
                                      chat_prompt, estimate_tokens, responses_prompt)

MARK = {"type": "ephemeral"}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def text(chars: int, fill: str = "a") -> str:
    return fill * chars


def body(system: list[str], turns: list[str], model: str = "claude-sonnet-4-5") -> dict:
    """System blocks, the first one marked; user turns, the last one's block marked."""
    blocks = [{"type": "text", "text": s} for s in system]
    blocks[0] = {**blocks[0], "cache_control": MARK}
    messages = [{"role": "user" if i % 2 == 0 else "assistant",
                 "content": [{"type": "text", "text": t}]} for i, t in enumerate(turns)]
    messages[-1]["content"][-1]["cache_control"] = MARK
    return {"model": model, "system": blocks, "messages": messages}


def total(usage: dict) -> int:
    return sum(usage.values())


def test_a_repeated_prefix_is_read_and_only_the_new_part_written():
    cache = AnthropicCache(Clock())
    first = cache.bill(body([text(8000)], ["hello " * 200]))
    assert first["cache_read_input_tokens"] == 0
    assert first["cache_creation_input_tokens"] == total(first) and first["input_tokens"] == 0
    second = cache.bill(body([text(8000)], ["hello " * 200, "ok", "next question"]))
    assert second["cache_read_input_tokens"] == total(first)
    assert second["cache_creation_input_tokens"] == total(second) - total(first)


def test_a_changed_system_block_invalidates_everything_after_it():
    cache = AnthropicCache(Clock())
    cache.bill(body([text(8000), "memory one"], ["hello " * 200]))
    again = cache.bill(body([text(8000), "memory two"], ["hello " * 200]))
    # only the marked first system block (the tools-and-system prefix before the change) hits
    assert again["cache_read_input_tokens"] == estimate_tokens('["system",{"text":"'
                                                               + text(8000) + '","type":"text"}]')
    assert again["cache_creation_input_tokens"] > 0


def test_a_prefix_below_the_minimum_is_not_cached():
    cache = AnthropicCache(Clock())
    small = body(["short system"], ["short question"])
    assert cache.bill(small)["cache_creation_input_tokens"] == 0
    again = cache.bill(small)
    assert again["cache_read_input_tokens"] == 0 and again["input_tokens"] == total(again)


def test_haiku_needs_twice_the_tokens():
    system = [text(6000)]                       # ~1,500 tokens: enough for Sonnet only
    assert AnthropicCache().bill(body(system, ["q"]))["cache_creation_input_tokens"] > 0
    haiku = body(system, ["q"], model="claude-3-5-haiku")
    assert AnthropicCache().bill(haiku)["cache_creation_input_tokens"] == 0


def test_an_entry_expires_after_five_minutes_unless_read():
    clock = Clock()
    cache = AnthropicCache(clock)
    request = body([text(8000)], ["q"])
    cache.bill(request)
    clock.now += 290
    assert cache.bill(request)["cache_read_input_tokens"] > 0      # a hit refreshes the TTL
    clock.now += 290
    assert cache.bill(request)["cache_read_input_tokens"] > 0
    clock.now += 301
    assert cache.bill(request)["cache_read_input_tokens"] == 0


def test_the_lookback_finds_a_hit_at_most_20_blocks_before_a_breakpoint():
    base = [text(8000)]
    near = ["q"] + [f"turn {i}" for i in range(18)]
    far = ["q"] + [f"turn {i}" for i in range(24)]
    for turns, hit in ((near, True), (far, False)):
        cache = AnthropicCache(Clock())
        first = body(base, turns[:1])
        first["system"][0].pop("cache_control")   # only the message breakpoint
        cache.bill(first)
        later = body(base, turns)
        later["system"][0].pop("cache_control")
        assert (cache.bill(later)["cache_read_input_tokens"] > 0) is hit


def test_more_than_four_breakpoints_is_refused():
    request = body([text(10)] * 5, ["q"])
    for block in request["system"]:
        block["cache_control"] = MARK
    with pytest.raises(CacheRequestError):
        AnthropicCache().bill(request)


def chat(messages: list[str]) -> str:
    return chat_prompt({"messages": [{"role": "user", "content": m} for m in messages]})


def test_openai_caches_prompts_of_1024_tokens_in_128_token_increments():
    cache = OpenAICache(Clock())
    assert cache.bill(chat([text(3000)]), "gpt-4o") == (0, estimate_tokens(chat([text(3000)])))
    assert cache.bill(chat([text(3000)]), "gpt-4o")[0] == 0          # under 1,024: never
    long = chat([text(6000, "b")])
    cache.bill(long, "gpt-4o")
    cached, prompt = cache.bill(chat([text(6000, "b"), "more"]), "gpt-4o")
    assert cached % 128 == 0 and prompt - 128 < cached + 128 and cached >= 1024
    assert cached <= estimate_tokens(long)


def test_openai_prompt_cache_key_and_model_separate_caches():
    cache = OpenAICache(Clock())
    prompt = responses_prompt({"instructions": text(6000), "input": "hi"})
    cache.bill(prompt, "gpt-5", "session-a")
    assert cache.bill(prompt, "gpt-5", "session-b")[0] == 0
    assert cache.bill(prompt, "gpt-4o", "session-a")[0] == 0
    assert cache.bill(prompt, "gpt-5", "session-a")[0] >= 1024


def test_openai_entries_expire():
    clock = Clock()
    cache = OpenAICache(clock)
    prompt = chat([text(6000)])
    cache.bill(prompt, "gpt-4o")
    clock.now += 301
    assert cache.bill(prompt, "gpt-4o")[0] == 0


def test_reading_a_longer_prefix_keeps_the_shorter_cached_prefixes_alive():
    clock = Clock()
    cache = AnthropicCache(clock)
    cache.bill(body([text(8000)], ["q " * 600]))
    clock.now += 290
    assert cache.bill(body([text(8000)], ["q " * 600, "a", "next"]))["cache_read_input_tokens"]
    clock.now += 290           # 580 s after the system prefix was written, 290 after its use
    other = cache.bill(body([text(8000)], ["another conversation"]))
    assert other["cache_read_input_tokens"] == estimate_tokens(
        '["system",{"text":"' + text(8000) + '","type":"text"}]')
