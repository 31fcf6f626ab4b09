"""The Responses API and legacy completions adapters of the memory service."""
from __future__ import annotations

import copy
import json
import random
import re

import pytest

from memproxyd.memory.wire import completions as completions_wire, responses as responses_wire

BLOCK = "<memproxy-memory>\nfacts\n</memproxy-memory>"
CODEX = {"model": "m", "instructions": "You are Codex.", "input": [
    {"type": "message", "role": "developer",
     "content": [{"type": "input_text", "text": "Sandbox: read-only."}]},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first"}]},
    {"type": "message", "role": "assistant",
     "content": [{"type": "output_text", "text": "an answer"}]},
    {"role": "user", "content": [{"type": "input_text", "text": "second"},
                                 {"type": "input_image", "image_url": "data:x"},
                                 {"type": "input_text", "text": "question"}]},
    {"type": "function_call", "call_id": "c", "name": "ls", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c", "output": "a.txt"},
]}


def test_query_reads_user_input_items_and_walks_past_tool_outputs():
    assert responses_wire.query(CODEX, "last_user", 100) == "second\nquestion"
    assert responses_wire.query(CODEX, "last_user_plus_previous", 100) == \
        "first\nsecond\nquestion"
    assert responses_wire.query(CODEX, "all_user", 8) == "question"
    assert responses_wire.query({"input": "plain string"}, "last_user", 100) == "plain string"
    assert responses_wire.turn(CODEX).human == "second\nquestion"


@pytest.mark.parametrize("body", [
    {"previous_response_id": "r", "input": [{"type": "function_call_output", "call_id": "c",
                                             "output": "tool text is no question"}]},
    {"input": None}, {}, {"input": [None, 3, {"role": "user", "content": 7}]},
    {"input": [{"role": "user", "type": "item_reference", "content": "not a message"}]},
])
def test_input_without_user_words_gives_no_query_and_nothing_to_remember(body):
    assert responses_wire.query(body, "last_user", 100) == ""
    assert responses_wire.turn(body).human == ""


def test_inject_at_puts_the_block_before_its_turn_and_never_in_instructions():
    original = copy.deepcopy(CODEX)
    index = responses_wire.human_messages(CODEX)[-1][0]
    out = responses_wire.inject_at(CODEX, {index: BLOCK})
    assert CODEX == original
    assert out["instructions"] == "You are Codex."
    assert out["input"][index] == {"type": "message", "role": "developer",
                                   "content": [{"type": "input_text", "text": BLOCK}]}
    assert out["input"][:index] + out["input"][index + 1:] == CODEX["input"]
    assert "instructions" not in responses_wire.inject_at({"input": "x"}, {0: BLOCK})


def test_user_text_strips_an_injected_block():
    body = {"input": [{"role": "user", "content": f"{BLOCK}\nreal question"}]}
    assert responses_wire.turn(body).human == "real question"


def test_housekeeping_by_max_output_tokens_or_instructions():
    patterns = [re.compile(r"(?i)concise title")]
    assert responses_wire.is_housekeeping({"max_output_tokens": 20}, 32, [])
    assert not responses_wire.is_housekeeping({"max_output_tokens": 4096}, 32, [])
    assert not responses_wire.is_housekeeping({"max_output_tokens": 20}, 0, [])
    assert responses_wire.is_housekeeping(
        {"instructions": "Write a concise title for this session."}, 0, patterns)
    assert responses_wire.is_housekeeping({"input": [
        {"role": "developer", "content": "Generate a concise title."}]}, 0, patterns)
    assert not responses_wire.is_housekeeping(CODEX, 32, patterns)
    asked = {"input": [{"role": "user", "content": "Give the page a concise title."}]}
    assert not responses_wire.is_housekeeping(asked, 0, patterns)   # the user's own words


def test_codex_compaction_is_housekeeping_whatever_the_config():
    prompt = ("You are performing a CONTEXT CHECKPOINT COMPACTION. Create a handoff summary "
              "for another LLM that will resume the task.")
    body = {**CODEX, "input": [*CODEX["input"], {"type": "message", "role": "user",
                                                 "content": [{"type": "input_text",
                                                              "text": prompt}]}]}
    assert responses_wire.turn(body).side_call
    quoted = {"input": f"Why does Codex send '{prompt}'?"}
    assert not responses_wire.turn(quoted).side_call


def sse(events: list[dict]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\r\n\r\n".encode()
                    for e in events)


MESSAGE = {"type": "message", "role": "assistant",
           "content": [{"type": "output_text", "text": "Hello there"}]}
CALL = {"type": "function_call", "name": "lookup", "arguments": '{"q": 1}'}
REASONING = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thinking"}]}
STREAM = [
    {"type": "response.created", "response": {"output": []}},
    {"type": "response.output_item.added", "output_index": 0, "item": REASONING},
    {"type": "response.output_item.done", "output_index": 0, "item": REASONING},
    {"type": "response.output_text.delta", "output_index": 1, "delta": "Hello"},
    {"type": "response.output_text.delta", "output_index": 1, "delta": " there"},
    {"type": "response.output_text.done", "output_index": 1, "text": "Hello there"},
    {"type": "response.output_item.done", "output_index": 1, "item": MESSAGE},
    {"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "{"},
    {"type": "response.output_item.done", "output_index": 2, "item": CALL},
    {"type": "response.vendor_thing", "output_index": "x", "delta": 5},
    {"type": "response.completed", "response": {"output": [REASONING, MESSAGE, CALL]}},
]


@pytest.mark.parametrize("store_thinking,expected", [
    (False, 'Hello there\n[tool call lookup: {"q": 1}]'),
    (True, 'thinking\nHello there\n[tool call lookup: {"q": 1}]'),
])
def test_reply_collector_reads_events_split_anywhere_and_json_bodies(store_thinking, expected):
    raw = sse(STREAM)
    rng = random.Random(3)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(raw)), rng.randint(1, 15)))
        collector = responses_wire.ReplyCollector(True, store_thinking)
        for start, end in zip([0, *cuts], [*cuts, len(raw)]):
            collector.feed(raw[start:end])
        assert collector.text() == expected
    whole = responses_wire.ReplyCollector(False, store_thinking)
    whole.feed(json.dumps({"object": "response", "output": [REASONING, MESSAGE, CALL]}).encode())
    assert whole.text() == expected


def test_a_message_without_deltas_is_taken_from_its_done_item():
    collector = responses_wire.ReplyCollector(True)
    collector.feed(sse([{"type": "response.output_item.done", "output_index": 0,
                         "item": MESSAGE}]))
    assert collector.text() == "Hello there"


@pytest.mark.parametrize("event", [
    {"type": "response.output_text.delta", "delta": None},
    {"type": "response.output_text.delta", "output_index": True, "delta": ["x"]},
    {"type": "response.output_item.done", "item": "nope"},
    {"type": "response.output_item.done", "item": {"type": "message", "content": [None, 3]}},
    {"type": "response.output_item.done", "item": {"type": "function_call", "arguments": None}},
    [1, 2], None, "text",
])
def test_reply_collector_skips_malformed_events_and_keeps_the_rest(event):
    good = {"type": "response.output_text.delta", "output_index": 5, "delta": "kept"}
    raw = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in (event, good))
    collector = responses_wire.ReplyCollector(True)
    collector.feed(raw)
    assert collector.text().endswith("kept")
    body = responses_wire.ReplyCollector(False)
    body.feed(json.dumps({"output": [event]}).encode())
    body.text()                                      # does not raise


def test_completions_adapter_prefixes_a_string_prompt_and_reads_choice_text():
    body = {"model": "m", "prompt": "def add(a, b):", "max_tokens": 64}
    assert completions_wire.query(body, "all_user", 5) == ", b):"
    assert completions_wire.inject(body, BLOCK)["prompt"] == f"{BLOCK}\n\ndef add(a, b):"
    assert body["prompt"] == "def add(a, b):"
    assert completions_wire.query({"prompt": ["a", "b"]}, "last_user", 10) == ""
    assert completions_wire.turn({"prompt": [1, 2, 3]}).human == ""
    assert completions_wire.is_housekeeping(body, 64, []) and not \
        completions_wire.is_housekeeping(body, 0, [])
    chunks = [{"choices": [{"index": 0, "text": t}]} for t in ("  return", " a + b", "")]
    raw = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
    streaming = completions_wire.ReplyCollector(True)
    for i in range(0, len(raw), 5):
        streaming.feed(raw[i:i + 5])
    assert streaming.text() == "return a + b"
    whole = completions_wire.ReplyCollector(False)
    whole.feed(json.dumps({"choices": [{"index": 0, "text": " a + b"}]}).encode())
    assert whole.text() == "a + b"


@pytest.mark.parametrize("last", [
    {"type": "response.failed", "response": {"status": "failed", "error": {"code": "x"}}},
    {"type": "error", "code": "server_error", "message": "boom", "sequence_number": 9},
])
def test_a_failed_reply_is_not_remembered(last):
    collector = responses_wire.ReplyCollector(True)
    collector.feed(sse(STREAM[:7] + [last]))
    assert collector.text() == ""
    body = responses_wire.ReplyCollector(False)
    body.feed(json.dumps({"status": "failed", "output": [MESSAGE]}).encode())
    assert body.text() == ""
    incomplete = responses_wire.ReplyCollector(False)
    incomplete.feed(json.dumps({"status": "incomplete", "output": [MESSAGE]}).encode())
    assert incomplete.text() == "Hello there"           # cut short is still a reply
