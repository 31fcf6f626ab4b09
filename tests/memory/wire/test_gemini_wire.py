"""The Gemini API adapter of the memory service, on Gemini CLI's recorded requests
(``tests/fixtures/agents/gemini-cli.jsonl``) and on hand-made bodies: the human's words
without the CLI's ``<session_context>``, turns across a tool loop, where the block goes, and
the reply collector on JSON, SSE and the JSON array Google streams without ``alt=sse``."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from memproxyd.memory.wire import gemini as wire
from memproxyd.memory.wire.clients import CLIENTS

FIXTURE = Path(__file__).parents[2] / "fixtures" / "agents" / "gemini-cli.jsonl"
BLOCK = "<memproxy-memory>\n- [2026-01-01] the codename is BLUEFIN\n</memproxy-memory>"


@pytest.fixture(scope="module")
def recorded() -> list[dict]:
    return [json.loads(line)["json"] for line in FIXTURE.open()]


def test_the_rules_name_the_recording_they_were_written_from():
    rules = next(c for c in CLIENTS if c.name == "gemini-cli")
    assert Path(__file__).parents[3].joinpath(rules.recorded) == FIXTURE


def test_human_words_leave_out_gemini_clis_session_context(recorded):
    first, continued, tool_loop, second = recorded
    assert wire.human_messages(first) == [
        (0, "Remember this: our deploy target codename is BLUEFIN.")]
    assert [i for i, _ in wire.human_messages(tool_loop)] == [0, 2]
    assert wire.query(second, "last_user", 2000) == "What is our deploy target codename?"
    for body in recorded:
        assert "session_context" not in wire.query(body, "all_user", 100_000)


def test_a_tool_loop_continues_the_turn_of_the_last_human_message(recorded):
    _, continued, tool_loop, _ = recorded
    asked, looped = wire.turn(continued), wire.turn(tool_loop)
    assert asked.new and not looped.new
    assert asked.human == looped.human == \
        "Please read the notes in GEMINI.md and tell me the indentation rule."
    assert asked.anchor == looped.anchor
    assert len(looped.steps) == 1 and looped.steps[0].startswith("[read_file: ")
    assert not any(wire.turn(b).side_call for b in recorded)


def test_inject_puts_the_block_first_in_the_humans_content_and_nothing_else(recorded):
    body = recorded[2]
    before = copy.deepcopy(body)
    out = wire.inject_at(body, {2: BLOCK})
    assert body == before                                     # the client's objects untouched
    assert out["contents"][2]["parts"] == [{"text": BLOCK}, *body["contents"][2]["parts"]]
    assert out["systemInstruction"] is body["systemInstruction"]
    assert out["tools"] is body["tools"]
    assert all(out["contents"][i] is body["contents"][i] for i in (0, 1, 3, 4))
    assert wire.query(out, "last_user", 2000) == wire.query(body, "last_user", 2000)


def test_inject_at_places_each_turns_block_at_its_own_content(recorded):
    body = recorded[2]
    out = wire.inject_at(body, {0: "first block", 2: "second block", 99: "nowhere"})
    assert out["contents"][0]["parts"][0] == {"text": "first block"}
    assert out["contents"][2]["parts"][0] == {"text": "second block"}
    assert len(out["contents"]) == len(body["contents"])
    assert wire.inject_at(body, {}) is body
    assert wire.inject_at({"contents": [{"role": "model", "parts": [{"text": "hi"}]}]},
                          {5: BLOCK})["contents"][0]["parts"] == [{"text": "hi"}]


@pytest.mark.parametrize("context, last, side", [
    ("", "Analyze *only* the content and structure of your immediately preceding response "
         "(your last turn in the conversation history).", True),
    ("You are a diagnostic agent that determines whether a conversational AI assistant is "
     "stuck in an unproductive loop.", "Recent history ...", True),
    ("\nYou are a specialized system component responsible for distilling chat history into "
     "a structured XML <state_snapshot>.", "First, reason ...", True),
    ("", "Summarize the user's primary intent or goal in this conversation in ONE sentence "
         "(max 80 characters).", True),
    ("You are Gemini CLI.", "Analyze the build failure", False),
])
def test_gemini_clis_side_calls_are_recognised(context, last, side):
    body = {"systemInstruction": {"parts": [{"text": context}]},
            "contents": [{"role": "user", "parts": [{"text": "earlier words"}]},
                         {"role": "model", "parts": [{"text": "an answer"}]},
                         {"role": "user", "parts": [{"text": last}]}]}
    assert wire.turn(body).side_call is side


def test_housekeeping_by_max_output_tokens_and_system_patterns():
    body = {"contents": [{"parts": [{"text": "hi"}]}],
            "generationConfig": {"maxOutputTokens": 1}}
    assert wire.is_housekeeping(body, 0, [])
    body["generationConfig"]["maxOutputTokens"] = 400
    assert not wire.is_housekeeping(body, 0, [])
    assert wire.is_housekeeping(body, 500, [])
    body["systemInstruction"] = {"parts": [{"text": "Generate a title"}]}
    assert wire.is_housekeeping(body, 0, [re.compile("title")])


def reply(*parts: dict, usage: bool = True) -> dict:
    out = {"candidates": [{"content": {"role": "model", "parts": list(parts)}, "index": 0}]}
    if usage:
        out["usageMetadata"] = {"promptTokenCount": 3}
    return out


def test_collector_reads_sse_split_anywhere_with_thinking_kept_only_when_asked():
    events = [reply({"text": "planning", "thought": True}), reply({"text": "The code"}),
              reply({"text": "name is BLUEFIN."})]
    data = b"".join(f"data: {json.dumps(e)}\r\n\r\n".encode() for e in events)
    for store_thinking, answer in ((False, "The codename is BLUEFIN."),
                                   (True, "planning\nThe codename is BLUEFIN.")):
        collector = wire.ReplyCollector(stream=True, store_thinking=store_thinking)
        for i in range(0, len(data), 7):
            collector.feed(data[i:i + 7])
        assert collector.answer() == answer
        assert collector.tool_calls() == []


def test_collector_reads_function_calls_whole_json_and_json_arrays():
    collector = wire.ReplyCollector(stream=False)
    collector.feed(json.dumps(reply({"text": "Let me look."}, {"functionCall": {
        "name": "read_file", "args": {"file_path": "/p/GEMINI.md"}}})).encode())
    assert collector.answer() == "Let me look."
    assert collector.tool_calls() == ['[read_file: {"file_path": "/p/GEMINI.md"}]']
    assert "[functionCall read_file:" in collector.text()
    array = wire.ReplyCollector(stream=False)
    array.feed(json.dumps([reply({"text": "one "}), reply({"text": "two"})]).encode())
    assert array.answer() == "one two"
