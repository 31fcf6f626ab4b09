"""Claude Code's transcripts: ``~/.claude/projects/<cwd-slug>/<session id>.jsonl``.

One JSON object per line (recorded from Claude Code 2.1.197, ``tests/fixtures/history/``):
``{"type": "user" | "assistant", "message": {...}, "uuid", "timestamp", "cwd", "sessionId",
"isSidechain", "isMeta"?, ...}`` beside records that are no conversation (``queue-operation``,
``attachment``, ``last-prompt``, ``mode``, ``summary``: passed over). ``message`` is the
Anthropic Messages message the CLI sent or received, except that an assistant message is
written one content block per record (the same ``message.id``): they are joined again here.

A turn starts at a user message with text (not only ``tool_result`` blocks); its memory comes
from ``anthropic_wire.turn`` over the turn's messages and the ``ReplyCollector`` over its
last assistant message, as live. What the transcript says that the wire does not:
``isSidechain`` (a sub-agent's conversation: a side call), ``isMeta`` (text the CLI wrote
as the user: skill bodies, caveats; not the person's) and ``isCompactSummary`` (the summary a
``/compact`` put in place of the history: a side call). The CLI's own
``[Request interrupted by user…]`` marker starts no turn; the turn it cut has no answer.
"""
from __future__ import annotations

import re
from pathlib import Path

import orjson

from memproxyd.memory.block import without_block
from memproxyd.memory.history.transcript import (BEFORE_SINCE, NO_ANSWER, NO_HUMAN, SIDE_CALL,
                                                 HistoryTurn, Rules, Session, finish,
                                                 parse_time, records)
from memproxyd.memory.wire import anthropic as anthropic_wire

PATTERN = "*.jsonl"
# Claude Code's turns always offer tools (its side calls never do): the rebuilt call says so.
_TOOLS = [{"name": "transcript"}]
_INTERRUPTED = re.compile(r"^\[Request interrupted by user[^\]]*\]$")


class _Turn:
    def __init__(self, record: dict, message: dict):
        self.turn_id = _str(record.get("uuid"))
        self.created_at = parse_time(record.get("timestamp")) or 0.0
        self.side = bool(record.get("isSidechain") or record.get("isCompactSummary"))
        self.messages = [message]

    def add(self, message: dict) -> None:
        last = self.messages[-1]
        if (message.get("role") == "assistant" and last.get("role") == "assistant"
                and message.get("id") and message.get("id") == last.get("id")):
            self.messages[-1] = {**last, "content": _blocks(last) + _blocks(message)}
        else:
            self.messages.append(message)


def read(path: Path, rules: Rules) -> Session:
    session_id, cwd = path.stem, ""
    turns: list[HistoryTurn] = []
    current: _Turn | None = None
    for record in records(path):
        message = record.get("message")
        if record.get("type") not in ("user", "assistant") or not isinstance(message, dict):
            continue
        session_id = _str(record.get("sessionId")) or session_id
        cwd = cwd or _str(record.get("cwd"))
        if record.get("isMeta"):
            continue
        if record["type"] == "user" and _starts_turn(message):
            if current is not None:
                turns.append(_close(current, rules))
            current = _Turn(record, message)
        elif current is not None:
            current.add(message)
    if current is not None:
        turns.append(_close(current, rules))
    return Session("claude-code", str(path), session_id, cwd, tuple(turns))


def _starts_turn(message: dict) -> bool:
    """A user message with text of its own (tool results continue the turn)."""
    texts = [b.get("text") for b in _blocks(message) if b.get("type") == "text"]
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    return bool(texts) and not all(_INTERRUPTED.match(t.strip()) for t in texts)


def _close(turn: _Turn, rules: Rules) -> HistoryTurn:
    def skipped(reason: str) -> HistoryTurn:
        return HistoryTurn(turn.turn_id, turn.created_at, skipped=reason)

    if turn.created_at < rules.since:
        return skipped(BEFORE_SINCE)
    if turn.side:
        return skipped(SIDE_CALL)
    body = {"messages": turn.messages, "tools": _TOOLS}
    found = anthropic_wire.turn(body, rules.extra)
    if found.side_call:
        return skipped(SIDE_CALL)
    if not found.human:
        return skipped(NO_HUMAN)
    final = next((m for m in reversed(turn.messages) if m.get("role") == "assistant"), None)
    if final is None:
        return skipped(NO_ANSWER)
    collector = anthropic_wire.ReplyCollector(stream=False)
    collector.feed(orjson.dumps(final))
    answer = without_block(collector.answer())
    # (a reply that asked for a tool, even when the records of its tool_use were never
    # written, is a step of the loop, not the answer)
    if collector.tool_calls() or final.get("stop_reason") == "tool_use" \
            or not (answer or found.steps):
        return skipped(NO_ANSWER)
    return HistoryTurn(turn.turn_id, turn.created_at,
                       finish(found.human, found.steps, answer, rules))


def _blocks(message: dict) -> list[dict]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""
