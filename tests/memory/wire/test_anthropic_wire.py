"""The Anthropic protocol adapter of the memory service: query, housekeeping, inject,
turn and the reply collector (on the fake upstream's own JSON and SSE bytes)."""
from __future__ import annotations

import copy
import json
import re

import pytest

from memproxyd.memory.wire import anthropic as wire
from tests.fakes import anthropic_upstream

BLOCK = "<memproxy-memory>\n- Alice has a cat named Miso\n</memproxy-memory>"
CACHED_SYSTEM = [{"type": "text", "text": "You are Claude Code.",
                  "cache_control": {"type": "ephemeral"}},
                 {"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral",
                                                                      "ttl": "1h"}}]


def tool_result(text: str = "output") -> dict:
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                         "content": [{"type": "text", "text": text}]}]}


def conversation() -> dict:
    return {"model": "m", "max_tokens": 4096, "system": copy.deepcopy(CACHED_SYSTEM),
            "messages": [
                {"role": "user", "content": "what is my cat called?"},
                {"role": "assistant", "content": "Let me check."},
                {"role": "user", "content": [{"type": "text", "text": "and my dog?",
                                              "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1",
                                                   "name": "search", "input": {}}]},
                tool_result("dog: Rex")]}


def test_query_walks_back_past_tool_result_only_turns():
    assert wire.query(conversation(), "last_user", 2000) == "and my dog?"
    assert wire.query(conversation(), "last_user_plus_previous", 2000) == \
        "what is my cat called?\nand my dog?"
    assert wire.query(conversation(), "all_user", 2000) == "what is my cat called?\nand my dog?"
    assert wire.query(conversation(), "all_user", 10) == "nd my dog?"   # the newest words


def test_query_is_empty_without_user_text_and_ignores_injected_blocks():
    assert wire.query({"messages": [tool_result()]}, "last_user", 100) == ""
    assert wire.query({"messages": []}, "last_user", 100) == ""
    body = {"messages": [{"role": "user", "content": f"{BLOCK}\n\nhello"}]}
    assert wire.query(body, "last_user", 100) == "hello"


def test_inject_at_leaves_the_cached_system_untouched_and_puts_the_block_in_the_turn():
    body = conversation()
    before = copy.deepcopy(body)
    out = wire.inject_at(body, {0: BLOCK})
    assert body == before                            # the client's objects are not mutated
    assert out["system"] is body["system"] and out["system"] == CACHED_SYSTEM
    assert out["messages"][0]["content"][0] == {"type": "text", "text": BLOCK}
    assert all(a is b for a, b in zip(out["messages"][1:], body["messages"][1:]))
    assert out["max_tokens"] == 4096


@pytest.mark.parametrize("system", [None, "", "You are terse."])
def test_inject_at_never_touches_an_absent_or_string_system(system):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if system is not None:
        body["system"] = system
    before = copy.deepcopy(body)
    out = wire.inject_at(body, {0: BLOCK})
    assert out.get("system") == system and body == before
    assert out["messages"][0]["content"] == [{"type": "text", "text": BLOCK},
                                             {"type": "text", "text": "hi"}]


def test_turn_text_strips_the_memory_block():
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": f"{BLOCK}\n\nmy cat is Miso"},
        {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]}]}
    assert wire.turn(body).human == "my cat is Miso"
    assert wire.strip_block(f"before\n{BLOCK}\nafter") == "before\nafter"


def test_turn_after_a_tool_loop_is_the_last_turn_with_text_and_not_new():
    """Claude Code's final answer follows a tool_result-only turn: it is paired with what
    the user asked, as the recall query is, and the call continues that turn."""
    turn = wire.turn(conversation())
    assert turn.human == "and my dog?" and not turn.new
    assert wire.turn({"messages": [tool_result(), tool_result()]}).human == ""


def test_housekeeping_by_small_max_tokens_or_system_pattern():
    patterns = [re.compile(r"(?i)new conversation topic")]
    title = {"max_tokens": 512, "system": [{"type": "text", "text":
             "Analyze if this message indicates a new conversation topic. If it does, "
             "extract a 2-3 word title."}], "messages": []}
    probe = {"max_tokens": 1, "messages": [{"role": "user", "content": "quota"}]}
    real = conversation()
    assert wire.is_housekeeping(title, 0, patterns)
    assert wire.is_housekeeping(probe, 32, [])
    assert wire.is_housekeeping(probe, 0, [])        # max_tokens 1 is a probe, always
    assert not wire.is_housekeeping({**probe, "max_tokens": 16}, 0, [])
    assert not wire.is_housekeeping(real, 32, patterns)
    assert not wire.is_housekeeping({"max_tokens": 512, "system": "Write a title for the "
                                     "conversation", "messages": []}, 32, [])


def fake_reply(model: str, text: str, stream: bool) -> bytes:
    reply = anthropic_upstream.message(model, {"messages": [{"role": "user", "content": text}]})
    if not stream:
        return json.dumps(reply).encode()
    return b"".join(anthropic_upstream.sse(e) for e in anthropic_upstream.stream_events(reply))


def feed_split(collector: wire.ReplyCollector, data: bytes, size: int) -> str:
    for i in range(0, len(data), size):
        collector.feed(data[i:i + size])
    return collector.text()


TOOL = '[tool_use lookup: {"query": "echo: hi", "limit": 3, "deep": {"ok": true}}]'


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_collector_on_sse_split_anywhere_including_tool_input(size):
    data = fake_reply("think", "hi", stream=True)
    assert feed_split(wire.ReplyCollector(stream=True), data, size) == f"echo: hi\n{TOOL}"
    with_thinking = feed_split(wire.ReplyCollector(stream=True, store_thinking=True), data, size)
    assert with_thinking == f"Let me think. The user wants an echo.\necho: hi\n{TOOL}"


def test_collector_on_crlf_sse_and_json_bodies():
    data = fake_reply("plain", "hello there", stream=True).replace(b"\n", b"\r\n")
    assert feed_split(wire.ReplyCollector(stream=True), data, 5) == "echo: hello there"
    body = fake_reply("think", "hi", stream=False)
    assert feed_split(wire.ReplyCollector(stream=False), body, 9) == f"echo: hi\n{TOOL}"
    assert wire.ReplyCollector(stream=False).text() == ""


def test_collector_ignores_pings_errors_and_garbage():
    collector = wire.ReplyCollector(stream=True)
    collector.feed(b'event: ping\ndata: {"type": "ping"}\n\ndata: not json\n\n')
    collector.feed(b'event: content_block_start\ndata: {"type": "content_block_start", '
                   b'"index": 0, "content_block": {"type": "text", "text": ""}}\n\n')
    collector.feed(b'event: content_block_delta\ndata: {"type": "content_block_delta", '
                   b'"index": 0, "delta": {"type": "text_delta", "text": "partial"}}\n\n')
    collector.feed(b'event: error\ndata: {"type": "error", "error": {"type": "api_error"}}\n\n')
    assert collector.text() == "partial"


@pytest.mark.parametrize("event", [
    None, [1, 2], "text", 7,
    {"type": "content_block_start", "index": 1, "content_block": None},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": 5}},
    {"type": "content_block_start", "index": [1], "content_block": "text"},
    {"type": "content_block_delta", "index": 0, "delta": "text"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": ["text_delta"]}},
    {"type": "content_block_delta", "index": {}, "delta": {"type": "text_delta", "text": 3}},
    {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use",
                                                                  "name": None, "input": 3}},
])
def test_collector_skips_malformed_events_and_keeps_the_rest(event):
    collector = wire.ReplyCollector(stream=True)
    collector.feed(b'data: {"type": "content_block_start", "index": 0, '
                   b'"content_block": {"type": "text", "text": ""}}\n\n')
    collector.feed(f"data: {json.dumps(event)}\n\n".encode())
    collector.feed(b'data: {"type": "content_block_delta", "index": 0, '
                   b'"delta": {"type": "text_delta", "text": "kept"}}\n\n')
    assert collector.text().startswith("kept")
    body = wire.ReplyCollector(stream=False)
    body.feed(json.dumps({"content": [event, {"type": "text", "text": "kept"}]}).encode())
    assert body.text().endswith("kept")
