"""The OpenAI adapter of the memory service, and the memory block."""
from __future__ import annotations

import copy
import json
import random

import pytest

from memproxyd.memory.base import Memory
from memproxyd.memory.block import format_block
from memproxyd.memory.wire import openai as openai_wire

BODY = {"model": "m", "messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": [{"type": "text", "text": "second"},
                                 {"type": "image_url", "image_url": {"url": "data:x"}},
                                 {"type": "text", "text": "question"}]},
]}


def test_query_strategies_pick_user_turns_and_cap_length():
    assert openai_wire.query(BODY, "last_user", 100) == "second\nquestion"
    assert openai_wire.query(BODY, "last_user_plus_previous", 100) == \
        "first question\nsecond\nquestion"
    assert openai_wire.query(BODY, "all_user", 8) == "question"
    assert openai_wire.query({"messages": [{"role": "system", "content": "x"}]},
                             "last_user", 100) == ""


def test_inject_at_adds_a_system_message_before_the_last_user_turn_without_mutating():
    original = copy.deepcopy(BODY)
    out = openai_wire.inject_at(BODY, {3: "<memproxy-memory>\nfacts\n</memproxy-memory>"})
    assert BODY == original
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "system", "user"]
    assert out["messages"][0] == {"role": "system", "content": "Be brief."}
    assert out["messages"][3]["content"].startswith("<memproxy-memory>")
    assert out["messages"][4] is BODY["messages"][3]


def test_turn_text_strips_an_injected_block():
    body = {"messages": [{"role": "user", "content":
                          "<memproxy-memory>\nold\n</memproxy-memory>\nreal question"}]}
    assert openai_wire.turn(body).human == "real question"


def test_a_turn_is_new_while_only_instructions_follow_the_human_message():
    """A system or developer message after the human's words (as Claude Code 2.1.332 sends
    on the Anthropic wire) leaves the call the turn's first; a tool loop does not."""
    asked = [{"role": "user", "content": "why is the build red?"}]
    assert openai_wire.turn({"messages": asked + [{"role": "system", "content": "env"},
                                                  {"role": "developer", "content": "x"}]}).new
    loop = asked + [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                     "function": {"name": "sh", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c", "content": "ok"}]
    assert not openai_wire.turn({"messages": loop}).new
    assert not openai_wire.turn({"messages": loop + [{"role": "system", "content": "e"}]}).new


def test_reply_collector_reads_split_sse_with_tool_calls():
    events = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"name": "get_weather", "arguments": '{"ci'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]}}]},
    ]
    raw = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"
    collector = openai_wire.ReplyCollector(stream=True)
    for i in range(0, len(raw), 7):
        collector.feed(raw[i:i + 7])
    assert collector.text() == 'Hello\n[tool call get_weather: {"city": "Oslo"}]'


def test_reply_collector_reads_a_json_body():
    collector = openai_wire.ReplyCollector(stream=False)
    collector.feed(json.dumps({"choices": [{"message": {"content": "plain answer"}}]}).encode())
    assert collector.text() == "plain answer"


def test_block_respects_the_character_budget():
    memories = [Memory(id=str(i), user_id="u", content=f"fact number {i} " * 20, created_at=0)
                for i in range(20)]
    block = format_block(memories, 1000)
    assert len(block) <= 1000
    assert block.startswith("<memproxy-memory>") and block.endswith("</memproxy-memory>")
    assert block.count("\n- [1970-01-01]") >= 2
    assert format_block([], 1000) == ""


def test_reply_collector_reads_crlf_framed_sse_split_anywhere():
    """sse-starlette (llama-cpp-python's server) frames events with CRLF."""
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
              {"choices": [{"index": 0, "delta": {"content": "Hello"}}]},
              {"choices": [{"index": 0, "delta": {"content": " from llama"}}]}]
    raw = b"".join(f"data: {json.dumps(e)}\r\n\r\n".encode() for e in events)
    raw += b": ping - 2024-01-01\r\n\r\ndata: [DONE]\r\n\r\n"
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(raw)), rng.randint(1, 12)))
        collector = openai_wire.ReplyCollector(stream=True)
        for start, end in zip([0, *cuts], [*cuts, len(raw)]):
            collector.feed(raw[start:end])
        assert collector.text() == "Hello from llama"


def test_reply_collector_keeps_only_the_unparsed_tail_while_streaming():
    collector = openai_wire.ReplyCollector(stream=True)
    event = {"choices": [{"index": 0, "delta": {"content": "x" * 100}}]}
    for _ in range(1000):
        collector.feed(f"data: {json.dumps(event)}\r\n\r\n".encode())
    collector.feed(b'data: {"choi')
    assert len(collector._reader.body) == len(b'data: {"choi')
    assert collector.text() == "x" * 100_000


@pytest.mark.parametrize("event", [
    {"choices": [None]},
    {"choices": None},
    {"choices": "nope"},
    {"choices": [{"delta": "text"}]},
    {"choices": [{"delta": {"content": 42}}]},
    {"choices": [{"delta": {"content": ["a"]}}]},
    {"choices": [{"delta": {"tool_calls": [None, {"index": [1], "function": "f"}]}}]},
    {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": 1,
                                                                      "arguments": {}}}]}}]},
    [1, 2, 3],
    "a string",
    None,
])
def test_reply_collector_skips_malformed_chunks_and_keeps_the_rest(event):
    good = {"choices": [{"index": 0, "delta": {"content": "kept"}}]}
    raw = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in (event, good))
    streaming = openai_wire.ReplyCollector(stream=True)
    streaming.feed(raw)
    assert streaming.text() == "kept"
    body = openai_wire.ReplyCollector(stream=False)
    body.feed(json.dumps({"choices": [event] if isinstance(event, dict) else event}).encode())
    body.text()                                      # does not raise


@pytest.mark.parametrize("content", [
    [{"type": "text", "text": None}, {"type": "text", "text": "real"}],
    [None, "plain string part", 3, {"type": "text", "text": "real"}],
    [{"type": "text", "text": {"nested": "x"}}, {"type": "text", "text": "real"}],
])
def test_malformed_content_parts_are_left_out_of_query_and_turn(content):
    body = {"messages": [{"role": "user", "content": content}]}
    assert openai_wire.content_text(content) == "real"
    assert openai_wire.query(body, "last_user", 100) == "real"
    assert openai_wire.turn(body).human == "real"
    assert openai_wire.content_text(42) == openai_wire.content_text(None) == ""
