"""The human's words, turns and side calls, on requests the real CLIs sent
(``tests/fixtures/agents/``, recorded by ``scripts/record_agents.py``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from memproxyd.memory.turn import memory_text
from memproxyd.memory.wire import (anthropic as anthropic_wire, openai as openai_wire,
                                   responses as responses_wire)
from memproxyd.memory.wire.clients import human_words

FIXTURES = Path(__file__).parents[1] / "fixtures" / "agents"
FACT = "Remember this: our deploy target codename is BLUEFIN."
READ = "Please read the notes in {} and tell me the indentation rule."
QUESTION = "What is our deploy target codename?"


def recorded(client: str) -> list[dict]:
    return [json.loads(line)["json"] for line in (FIXTURES / f"{client}.jsonl").open()]


# The story's calls in each recording: (fact, read, the read's tool loop, question), the
# title side calls. 2.1.197 (the pin until 2026-12-04) also asked for session titles; 2.1.332
# does not in ``-p`` mode, and puts its environment in <system-reminder> parts or, for its
# default model, in a system-role message after the human's first message.
STORIES = {"claude-code": ((1, 2, 3, 5), (0, 4)),
           "claude-code-default-model": ((1, 2, 3, 5), (0, 4)),
           "claude-code-2.1.332": ((0, 1, 2, 3), ()),
           "claude-code-2.1.332-default-model": ((0, 1, 2, 3), ())}


@pytest.fixture(scope="module", params=list(STORIES))
def claude(request) -> tuple[list[dict], tuple[int, ...], tuple[int, ...]]:
    """(the recorded bodies, the story's calls, the side calls): a pinned model and the CLI's
    default model, in Claude Code 2.1.197 and 2.1.332."""
    story, sides = STORIES[request.param]
    return recorded(request.param), story, sides


def test_claude_code_turns_are_the_human_words_alone(claude):
    bodies, (fact, read, loop, question), _ = claude
    turns = [anthropic_wire.turn(body) for body in bodies]
    assert [turns[i].human for i in (fact, read, loop, question)] == [
        FACT, READ.format("CLAUDE.md"), READ.format("CLAUDE.md"), QUESTION]
    assert [turns[i].new for i in (fact, read, loop, question)] == [True, True, False, True]
    assert len(json.dumps(bodies[fact])) > 30_000          # what the client really sent


def test_claude_code_title_calls_are_side_calls(claude):
    bodies, story, sides = claude
    assert all(anthropic_wire.turn(bodies[i]).side_call for i in sides)
    assert not any(anthropic_wire.turn(bodies[i]).side_call for i in story)
    assert len(bodies) == len(story) + len(sides)


def test_claude_code_sub_agent_calls_are_not_human_turns(claude):
    bodies, (fact, *_), _ = claude
    body = json.loads(json.dumps(bodies[fact]))
    body["system"][1]["text"] = ("You are an agent for Claude Code, Anthropic's official CLI "
                                 "for Claude. Given the user's message, you should use the tools")
    assert anthropic_wire.turn(body).side_call


# Claude Code 2.1.332's own prompts (from its binary): its built-in sub-agents' openings, and
# the prompts it appends to a fork of the whole conversation (with its tools)
SUB_AGENTS = ("You are an agent for Claude Code, Anthropic's official CLI for Claude.",
              "You are a file search specialist for Claude Code, Anthropic's official CLI",
              "You are a software architect and planning specialist for Claude Code.",
              "You are a web-reading specialist for Claude Code, Anthropic's official CLI",
              "You are a status line setup agent for Claude Code.",
              "You are an artifact comment-thread analyst for Claude Code.")
FORK_PROMPTS = ("The user stepped away and is coming back. Recap in under 40 words, 1-2 plain "
                "sentences, no markdown.",
                "You are now acting as the memory extraction subagent. Analyze the most recent "
                "~12 messages above and use them to update your persistent memory systems.",
                "[SUGGESTION MODE: Suggest what the user might naturally type next into Claude "
                "Code.]")


@pytest.mark.parametrize("opening", SUB_AGENTS)
def test_claude_codes_built_in_sub_agents_are_side_calls(opening):
    body = json.loads(json.dumps(recorded("claude-code-2.1.332")[0]))
    assert not anthropic_wire.turn(body).side_call
    body["system"][2]["text"] = f"{opening}\n\nGiven the user's message, ..."
    assert anthropic_wire.turn(body).side_call


@pytest.mark.parametrize("prompt", FORK_PROMPTS)
def test_claude_codes_forks_of_the_conversation_are_side_calls(prompt):
    """Away recaps, memory extraction and prompt suggestions: the conversation so far with
    its tools, then the CLI's prompt as a user message; never a human turn."""
    for at in (1, 2):                    # after a human message, after a tool loop
        body = json.loads(json.dumps(recorded("claude-code-2.1.332")[at]))
        body["messages"].append({"role": "assistant", "content": [{"type": "text",
                                                                     "text": "Done."}]})
        body["messages"].append({"role": "user", "content": [{"type": "text", "text": prompt}]})
        assert anthropic_wire.turn(body).side_call


def test_claude_code_tool_loop_call_continues_the_turn(claude):
    bodies, (fact, read, loop_at, _), _ = claude
    start, loop = anthropic_wire.turn(bodies[read]), anthropic_wire.turn(bodies[loop_at])
    assert start.new and not loop.new
    assert start.anchor == loop.anchor                 # one turn: one block, one memory
    assert anthropic_wire.turn(bodies[fact]).anchor != start.anchor
    assert loop.steps == ('[Read: {"file_path": "/home/dev/project/CLAUDE.md"}]',)


def test_claude_code_recall_query_has_no_scaffolding(claude):
    bodies, (fact, read, loop, question), _ = claude
    for i in (fact, read, loop, question):
        query = anthropic_wire.query(bodies[i], "last_user", 2000)
        assert "system-reminder" not in query and len(query) < 100
    assert anthropic_wire.query(bodies[loop], "all_user", 2000) == \
        f"{FACT}\n{READ.format('CLAUDE.md')}"


def test_memory_of_a_tool_loop_turn_is_short_and_readable(claude):
    bodies, (_, _, loop, _), _ = claude
    turn = anthropic_wire.turn(bodies[loop])
    text = memory_text(turn.human, turn.steps, "The notes say to use tabs. Done.", 1500)
    assert text == (f"User: {READ.format('CLAUDE.md')}\nAssistant: "
                    '[Read: {"file_path": "/home/dev/project/CLAUDE.md"}]\n'
                    "The notes say to use tabs. Done.")


@pytest.mark.parametrize("fixture, fact, starts", [
    ("claude-code-default-model", 1, "Available agent types for the Agent tool"),
    ("claude-code-2.1.332-default-model", 0, "# Environment\nYou have been invoked")])
def test_claude_code_default_model_sends_system_messages_that_are_not_human_words(
        fixture, fact, starts):
    body = recorded(fixture)[fact]
    [system] = [m for m in body["messages"] if m["role"] == "system"]
    text = system["content"] if isinstance(system["content"], str) else \
        system["content"][0]["text"]
    assert text.startswith(starts)
    turn = anthropic_wire.turn(body)
    assert turn.human == FACT
    assert turn.new           # 2.1.332: the system message comes after the human's words
    assert starts not in anthropic_wire.query(body, "all_user", 20_000)


def test_ide_attachments_become_mentions_and_tags_go():
    body = json.loads((FIXTURES / "ide-attachments.json").read_text())["json"]
    assert openai_wire.turn(body).human == (
        "[attached: src/billing/invoice.py]\nWhy does the invoice total ignore discounts? "
        "We agreed discounts apply before tax.")


def test_strip_patterns_cut_what_the_table_does_not_know():
    import re
    extra = (re.compile(r"(?s)<jira-ticket>.*?</jira-ticket>"),)
    assert human_words("<jira-ticket>ABC-1 ...</jira-ticket>\nShip it", extra) == "Ship it"
    assert human_words("a <b>bold</b> claim") == "a <b>bold</b> claim"   # unknown tags stay


def test_memory_text_keeps_start_and_end_within_the_bound():
    answer = "start " + "x" * 5000 + " the end"
    text = memory_text("question?", tuple(f"[Bash: step {i}]" for i in range(30)), answer, 1500)
    assert len(text) <= 1500
    assert text.startswith("User: question?\nAssistant: [Bash: step 0]")
    assert "more tool calls" in text and text.endswith(" the end")


@pytest.fixture(scope="module")
def codex() -> list[dict]:
    return recorded("codex")


def test_codex_turns_are_the_human_words_without_agents_md_or_environment(codex):
    from memproxyd.memory.wire import responses as responses_wire
    turns = [responses_wire.turn(body) for body in codex]
    assert [t.human for t in turns] == [FACT, READ.format("AGENTS.md"),
                                        READ.format("AGENTS.md"), QUESTION]
    assert "AGENTS.md instructions" in json.dumps(codex[0]["input"])    # what was sent
    assert [t.new for t in turns] == [True, True, False, True]
    assert turns[1].anchor == turns[2].anchor != turns[3].anchor
    assert turns[2].steps == ('[exec_command: {"cmd": "cat AGENTS.md"}]',)
    assert not any(t.side_call for t in turns)


def test_codex_summary_after_compaction_is_not_the_human(codex):
    from memproxyd.memory.wire import responses as responses_wire
    body = json.loads(json.dumps(codex[3]))
    body["input"].insert(-1, {"type": "message", "role": "user", "content": [{
        "type": "input_text", "text": "Another language model started to solve this problem "
                                      "and produced a summary of its thinking process. ..."}]})
    assert responses_wire.turn(body).human == QUESTION
    assert responses_wire.query(body, "all_user", 2000) == QUESTION


@pytest.mark.parametrize("client, adapter", [("claude-code", anthropic_wire),
                                             ("codex", responses_wire)])
def test_the_turns_human_words_are_the_last_user_query(client, adapter):
    """The memory service searches with ``turn.human`` for ``last_user`` instead of reading
    the body twice: it must be what ``query`` makes of the same body."""
    for body in recorded(client) + [{"messages": [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "yo"},
                                                  {"role": "user", "content": "recall X"}]}]:
        turn = adapter.turn(body)
        if turn.human:
            assert adapter.query(body, "last_user", 10_000) == turn.human
            assert adapter.query(body, "last_user", 12) == turn.human[-12:]


def test_the_chat_turns_human_words_are_the_last_user_query():
    body = {"messages": [{"role": "system", "content": "be terse"},
                         {"role": "user", "content": [{"type": "text", "text": "first words"}]},
                         {"role": "assistant", "content": "ok"},
                         {"role": "user", "content": "<system-reminder>x</system-reminder>"
                                                     "the newest question here"}]}
    turn = openai_wire.turn(body)
    assert turn.human and openai_wire.query(body, "last_user", 10_000) == turn.human
    assert openai_wire.query(body, "last_user", 7) == turn.human[-7:]


def test_continue_cli_turns_are_the_human_words_and_its_tool_loop_continues_the_turn():
    """Continue's ``cn -p`` (recorded): its system prompt and ``<env>`` context sit in the
    system message, the user message is the person's words; no side calls."""
    calls = recorded("continue-cli")
    turns = [openai_wire.turn(body) for body in calls]
    assert [t.human for t in turns] == [FACT, READ.format("AGENTS.md"),
                                        READ.format("AGENTS.md"), QUESTION]
    assert not any(t.side_call for t in turns)
    assert turns[1].anchor == turns[2].anchor and turns[2].steps   # the loop's call
    assert calls[0]["messages"][0]["content"].startswith("You are an agent in the Continue CLI")
