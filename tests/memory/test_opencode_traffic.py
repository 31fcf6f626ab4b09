"""opencode's requests (``tests/fixtures/agents/opencode.jsonl``, recorded by
``scripts/record_agents.py`` from opencode 1.18.33 through ``@ai-sdk/openai-compatible``):
the human's words, turns and its title side call."""
from __future__ import annotations

import json

from memproxyd.memory.wire import clients, openai as openai_wire
from tests.memory.test_agent_traffic import FACT, QUESTION, READ, recorded

OPENCODE = recorded("opencode")


def test_the_recording_is_opencodes_story():
    assert [r.get("tools") is None for r in OPENCODE] == [True, False, False, False, True, False]
    assert OPENCODE[0]["messages"][0]["content"].startswith("You are a title generator")
    assert OPENCODE[1]["messages"][0]["content"].startswith("You are opencode")


def test_opencode_title_calls_are_side_calls():
    assert openai_wire.turn(OPENCODE[0]).side_call
    assert openai_wire.turn(OPENCODE[4]).side_call
    assert not any(openai_wire.turn(OPENCODE[i]).side_call for i in (1, 2, 3, 5))


def test_a_title_call_carries_the_human_message_so_only_its_rule_keeps_it_out():
    # the title call looks like a turn (the human's message, last): the opencode entry,
    # written from this recording, is what makes it a side call
    rules = [c for c in clients.CLIENTS if c.name == "opencode"]
    assert rules and rules[0].recorded == "tests/fixtures/agents/opencode.jsonl"
    turn = openai_wire.turn(OPENCODE[0])
    assert turn.human == FACT and turn.new and turn.side_call


def test_opencode_turns_are_the_human_words_alone():
    turns = [openai_wire.turn(body) for body in OPENCODE]
    assert [t.human for t in turns[1:4]] == [FACT, READ.format("AGENTS.md"),
                                             READ.format("AGENTS.md")]
    assert turns[5].human == QUESTION and turns[5].new
    assert len(json.dumps(OPENCODE[1])) > 20_000          # what the client really sent


def test_opencode_tool_loop_call_continues_the_turn():
    start, loop = openai_wire.turn(OPENCODE[2]), openai_wire.turn(OPENCODE[3])
    assert start.new and not loop.new
    assert start.anchor == loop.anchor
    assert loop.steps == ('[read: {"filePath":"/home/dev/project/AGENTS.md"}]',)


def test_opencode_recall_query_is_the_question():
    assert openai_wire.query(OPENCODE[5], "last_user", 2000) == QUESTION
