"""The transcript readers (``memory/history/``) on the transcripts recorded from the real
Claude Code, Codex and Gemini CLIs (``tests/fixtures/history/``), and on those transcripts changed the
way real sessions differ from the recorded ones (a sub-agent, an interrupted turn, a
``/clear``, a CLI killed mid-write)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from memproxyd.memory import history
from memproxyd.memory.history import (BEFORE_SINCE, NO_ANSWER, NO_HUMAN, SIDE_CALL, Rules,
                                      find_sessions, parse_time, read_session)
from memproxyd.memory.journal import conversation_key

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "history"
SECRET = "sk-ant-api03-HISTORYfixture0123456789abcdef"
FACT = ("User: Remember this: the staging deploy key is [REDACTED], never commit it.\n"
        "Assistant: Understood: Remember this: the staging deploy key is [REDACTED], never "
        "commit it.")


def alpha(client: str, folder: str | None = None) -> Path:
    return next(p for p in find_sessions(client, FIXTURES / (folder or client))
                if "alpha-repo" in read_session(client, p, Rules()).cwd)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(tmp_path: Path, records: list, name: str = "s.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records))
    return path


def kept(session) -> list[str]:
    return [t.content for t in session.turns if not t.skipped]


def reasons(session) -> list[str]:
    return [t.skipped for t in session.turns]


# -- as recorded ----------------------------------------------------------------------------

# 2.1.197's transcripts, and 2.1.332's (which add api-request, api-request-blob with a
# user-role message, cost-state and a dozen attachment kinds: none of them a turn)
@pytest.mark.parametrize("folder", ["claude-code", "claude-code-2.1.332"])
def test_claude_code_sessions_become_the_memories_live_traffic_makes(folder):
    sessions = [read_session("claude-code", p, Rules())
                for p in find_sessions("claude-code", FIXTURES / folder)]
    assert [s.cwd for s in sessions] == ["/home/dev/alpha-repo", "/home/dev/beta-repo"]
    assert kept(sessions[0]) == [
        FACT, "User: Please read the notes in CLAUDE.md and tell me the indentation rule.\n"
              'Assistant: [Read: {"file_path": "/home/dev/alpha-repo/CLAUDE.md"}]\n'
              "The notes say to use tabs. Done."]
    assert kept(sessions[1]) == [
        "User: Remember this: our deploy target codename is BLUEFIN.\n"
        "Assistant: Understood: Remember this: our deploy target codename is BLUEFIN."]
    first = lines(alpha("claude-code", folder))
    said = next(r for r in first if r.get("type") == "user")
    assert sessions[0].turns[0].created_at == parse_time(said["timestamp"])
    assert sessions[0].session_id == said["sessionId"]


def test_codex_rollouts_become_the_memories_live_traffic_makes():
    sessions = [read_session("codex", p, Rules())
                for p in find_sessions("codex", FIXTURES / "codex")]
    assert [s.cwd for s in sessions] == ["/home/dev/alpha-repo", "/home/dev/beta-repo"]
    [fact, loop] = kept(sessions[0])
    assert fact == FACT
    # AGENTS.md and <environment_context> are scaffolding; the tool's output is not kept
    assert loop == ("User: Please read the notes in AGENTS.md and tell me the indentation "
                    'rule.\nAssistant: [exec_command: {"cmd": "cat AGENTS.md"}]\n'
                    "The notes say to use tabs. Done.")
    meta = lines(alpha("codex"))[0]["payload"]
    assert sessions[0].session_id == meta["id"]
    assert sessions[0].conversation == conversation_key(meta["id"], "", "")


def test_gemini_cli_chats_become_the_memories_live_traffic_makes():
    sessions = [read_session("gemini-cli", p, Rules())
                for p in find_sessions("gemini-cli", FIXTURES / "gemini-cli")]
    assert [s.cwd for s in sessions] == ["/home/dev/alpha-repo", "/home/dev/beta-repo"]
    # <session_context> (date, tree, GEMINI.md) opens each session: no turn of its own
    assert kept(sessions[0]) == [
        FACT, "User: Please read the notes in GEMINI.md and tell me the indentation rule.\n"
              'Assistant: [read_file: {"file_path": "/home/dev/alpha-repo/GEMINI.md"}]\n'
              "The notes say to use tabs. Done."]
    assert reasons(sessions[0]) == ["", ""] and "BLUEFIN" in kept(sessions[1])[0]


def test_a_gemini_resume_rewrites_the_history_but_each_turn_keeps_its_first_time():
    path = alpha("gemini-cli")
    written = [r for r in lines(path) if r.get("type") == "user"
               and "deploy key" in json.dumps(r.get("content"))]
    rewritten = [m for r in lines(path) for m in (r.get("$set") or {}).get("messages", [])
                 if m.get("type") == "user" and "deploy key" in json.dumps(m.get("content"))]
    assert rewritten and rewritten[-1]["timestamp"] > written[0]["timestamp"]
    session = read_session("gemini-cli", path, Rules())
    assert session.turns[0].created_at == parse_time(written[0]["timestamp"])


CLIENTS = ["claude-code", "codex", "gemini-cli"]


@pytest.mark.parametrize("client", CLIENTS)
def test_each_turn_keeps_one_key_however_often_it_is_read(client):
    first = read_session(client, alpha(client), Rules())
    again = read_session(client, alpha(client), Rules(max_chars=300))
    keys = [first.key(t) for t in first.turns]
    assert keys == [again.key(t) for t in again.turns] and len(set(keys)) == 2


@pytest.mark.parametrize("client", CLIENTS)
def test_the_daemons_memory_settings_shape_what_is_kept(client):
    plain = read_session(client, alpha(client), Rules(redact_secrets=False))
    assert SECRET in kept(plain)[0]
    stripped = read_session(client, alpha(client), Rules(extra=(re.compile(r" never commit"),)))
    assert kept(stripped)[0].startswith("User: Remember this: the staging deploy key is "
                                        "[REDACTED], it.")
    short = read_session(client, alpha(client), Rules(max_chars=200))
    assert all(len(text) <= 200 for text in kept(short))


@pytest.mark.parametrize("client", CLIENTS)
def test_turns_before_since_are_skipped(client):
    session = read_session(client, alpha(client), Rules())
    later = read_session(client, alpha(client), Rules(since=session.turns[1].created_at))
    assert reasons(later) == [BEFORE_SINCE, ""]


# -- Claude Code, as real sessions differ ---------------------------------------------------

def test_a_sub_agents_conversation_is_a_side_call(tmp_path):
    records = [{**r, "isSidechain": True} for r in lines(alpha("claude-code"))]
    session = read_session("claude-code", write(tmp_path, records), Rules())
    assert reasons(session) == [SIDE_CALL, SIDE_CALL]


@pytest.mark.parametrize("cut_at", ['"text": "Let me look."', '"type": "tool_use"'],
                         ids=["before-its-tool-use-was-written", "after-its-tool-use"])
def test_a_turn_cut_by_the_user_has_no_answer_and_the_marker_is_no_turn(tmp_path, cut_at):
    records = lines(alpha("claude-code"))
    cut = next(i for i, r in enumerate(records) if cut_at in json.dumps(r.get("message")))
    marker = {**records[cut], "type": "user", "uuid": "interrupt",
              "message": {"role": "user", "content": [
                  {"type": "text", "text": "[Request interrupted by user for tool use]"}]}}
    session = read_session("claude-code", write(tmp_path, [*records[:cut + 1], marker]),
                           Rules())
    assert reasons(session) == ["", NO_ANSWER]


def test_cli_text_in_the_users_name_is_not_the_person(tmp_path):
    records = lines(alpha("claude-code"))
    first = next(r for r in records if r.get("type") == "user")
    meta = {**first, "uuid": "meta", "isMeta": True,
            "message": {"role": "user", "content": "Base directory for this skill: /x"}}
    clear = {**first, "uuid": "clear", "message": {"role": "user", "content": (
        "<command-name>/clear</command-name>\n<command-message>clear</command-message>")}}
    summary = {**first, "uuid": "summary", "isCompactSummary": True, "message": {
        "role": "user", "content": "This session is being continued from a previous one."}}
    reminder = {**first, "message": {"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\nCLAUDE.md says: tabs\n</system-reminder>"},
        {"type": "text", "text": first["message"]["content"]}]}}
    changed = [reminder if r is first else r for r in records]
    session = read_session("claude-code", write(tmp_path, [meta, clear, summary, *changed]),
                           Rules())
    assert reasons(session) == [NO_HUMAN, SIDE_CALL, "", ""]
    assert kept(session)[0] == FACT


def test_a_line_cut_short_by_a_killed_cli_is_passed_over(tmp_path):
    text = alpha("claude-code").read_text()
    path = write(tmp_path, [*text.splitlines(), '{"type": "user", "message": {"role": "us'])
    assert kept(read_session("claude-code", path, Rules())) == kept(
        read_session("claude-code", alpha("claude-code"), Rules()))


# -- Codex, as real sessions differ ---------------------------------------------------------

def test_a_task_that_never_completed_has_no_answer(tmp_path):
    records = lines(alpha("codex"))
    last = max(i for i, r in enumerate(records)
               if (r.get("payload") or {}).get("type") == "task_complete")
    session = read_session("codex", write(tmp_path, records[:last]), Rules())
    assert reasons(session) == ["", NO_ANSWER]


def test_a_task_made_only_of_scaffolding_has_no_human_words(tmp_path):
    records = lines(alpha("codex"))
    for record in records:
        payload = record.get("payload") or {}
        if payload.get("role") == "user" and "Remember this" in json.dumps(payload):
            payload["content"] = [{"type": "input_text",
                                   "text": "<environment_context>\n  <cwd>/x</cwd>\n"
                                           "</environment_context>"}]
    session = read_session("codex", write(tmp_path, records), Rules())
    assert reasons(session) == [NO_HUMAN, ""]


def test_find_sessions_finds_each_clients_own_files(tmp_path):
    assert len(find_sessions("codex", FIXTURES)) == 2          # rollouts only
    assert len(find_sessions("gemini-cli", FIXTURES)) == 2     # chats only
    assert len(find_sessions("claude-code", FIXTURES / "claude-code")) == 2
    assert history.FORMATS == ("claude-code", "codex", "gemini-cli")
