"""Past sessions of the agent CLIs, read from the transcripts they keep on disk, as the
memories live traffic would have made of them (``memproxyctl memory import-history``).

    for path in find_sessions("claude-code", Path("~/.claude/projects").expanduser()):
        session = read_session("claude-code", path, Rules(max_chars=1500))
        for turn in session.turns:
            print(turn.created_at, turn.skipped or turn.content)

Each reader (``claude_code.py``, ``codex.py``, ``gemini_cli.py``) rebuilds, turn by turn,
what the CLI sent and received (Anthropic messages for Claude Code, Responses items for Codex,
Gemini API contents for Gemini CLI; the transcripts hold exactly those) and hands it to the *live* extractor (``memory/wire/*``: the client scaffolding
table, side-call rules, tool calls as one line each, the final reply's text), then
``turn.memory_text`` and ``redact``. So a turn imported from a transcript is the memory the
daemon would have stored had the session gone through it; what differs is written in the
reader. Nothing here touches the network or a store; reading a file is the only I/O.

A turn is kept once: its ``key`` is made from the client, the session id and the turn's own
id in the transcript (Claude Code's human message ``uuid``, Codex's ``turn_id``), which never
change when a session is continued later, so the store's idempotency key makes a second
import of the same history store nothing new.
"""
from __future__ import annotations

from pathlib import Path

from memproxyd.memory.history import claude_code, codex, gemini_cli
from memproxyd.memory.history.transcript import (BEFORE_SINCE, NO_ANSWER, NO_HUMAN, SIDE_CALL,
                                                 HistoryTurn, Rules, Session, parse_time)

__all__ = ["BEFORE_SINCE", "FORMATS", "NO_ANSWER", "NO_HUMAN", "SIDE_CALL", "HistoryTurn",
           "Rules", "Session", "find_sessions", "parse_time", "read_session"]

READERS = {"claude-code": claude_code, "codex": codex, "gemini-cli": gemini_cli}
FORMATS = tuple(READERS)


def find_sessions(client: str, directory: Path) -> list[Path]:
    """The transcripts of ``client`` under ``directory``, oldest first (by modification
    time): Claude Code's ``<cwd-slug>/<session>.jsonl`` (``~/.claude/projects``), Codex's
    ``YYYY/MM/DD/rollout-*.jsonl`` (``~/.codex/sessions``), Gemini CLI's
    ``<project>/chats/session-*.jsonl`` (``~/.gemini/tmp``)."""
    pattern = READERS[client].PATTERN
    found = [p for p in directory.rglob(pattern) if p.is_file()]
    return sorted(found, key=lambda p: (p.stat().st_mtime, str(p)))


def read_session(client: str, path: Path, rules: Rules) -> Session:
    """One transcript as a session of turns, each kept or skipped with its reason."""
    return READERS[client].read(path, rules)
