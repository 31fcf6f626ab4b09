"""Gemini CLI's chats: ``~/.gemini/tmp/<project>/chats/session-<time>-<id>.jsonl``.

Recorded from Gemini CLI 0.61.0 (``tests/fixtures/history/``): the file is a log of changes
to one conversation, one JSON object per line:

* a header ``{"sessionId", "projectHash", "startTime", "lastUpdated", "kind"}`` (again on
  every resume);
* a message ``{"id", "timestamp", "type": "user" | "gemini" | "info" | "error" | ...,
  "content", "toolCalls"?, ...}``: a user message's ``content`` is Gemini API parts (text,
  or the ``functionResponse`` of a tool), a model message's a string, its function calls in
  ``toolCalls`` (``name``, ``args``, the result); the same ``id`` again replaces the message;
* ``{"$set": {...}}``: fields of the conversation replaced, ``messages`` the whole list (how
  a resume writes the history back).

The working directory is in ``.project_root`` beside ``chats/``. Older versions wrote one
JSON object with ``messages`` (``session-*.json``): read the same way.

A turn starts at a user message with text; the turn's messages, as Gemini API ``contents``,
go through ``gemini_wire.turn`` (its ``<session_context>`` opening content is scaffolding
there, as live) and the last model message through its ``ReplyCollector``.
"""
from __future__ import annotations

import json
from pathlib import Path

import orjson

from memproxyd.memory.block import without_block
from memproxyd.memory.history.transcript import (BEFORE_SINCE, NO_ANSWER, NO_HUMAN, SIDE_CALL,
                                                 HistoryTurn, Rules, Session, finish,
                                                 parse_time, records)
from memproxyd.memory.wire import gemini as gemini_wire

PATTERN = "session-*.json*"
# Gemini CLI's turns always offer tools: the rebuilt call says so.
_TOOLS = [{"functionDeclarations": [{"name": "transcript"}]}]


def read(path: Path, rules: Rules) -> Session:
    session_id, messages = path.stem, {}
    first_seen: dict[str, float] = {}    # id → the earliest time written for the message
    for record in _records(path):
        changes = record.get("$set") if isinstance(record.get("$set"), dict) else record
        if isinstance(changes.get("sessionId"), str):
            session_id = changes["sessionId"]
        if isinstance(changes.get("messages"), list):
            messages = {m["id"]: m for m in changes["messages"] if _message(m)}
        if _message(record):
            messages[record["id"]] = record
        for message in messages.values():
            at = parse_time(message.get("timestamp"))
            if at is not None and at < first_seen.get(message["id"], float("inf")):
                first_seen[message["id"]] = at
    turns, current = [], []
    for message in messages.values():
        # a resume writes the history back with the time of the resume: the first one counts
        message = {**message, "at": first_seen.get(message["id"], 0.0)}
        if message["type"] == "user" and _human(message, rules):
            if current:
                turns.append(_close(current, rules))
            current = [message]
        elif current and message["type"] in ("user", "gemini"):
            current.append(message)
    if current:
        turns.append(_close(current, rules))
    return Session("gemini-cli", str(path), session_id, _cwd(path), tuple(turns))


def _human(message: dict, rules: Rules) -> bool:
    """A user message with words of the person's (the CLI's ``<session_context>`` opening
    content starts no turn)."""
    return bool(gemini_wire.human_messages({"contents": [_content(message)]}, rules.extra))


def _records(path: Path):
    if path.suffix == ".json":
        try:
            whole = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return []
        return [whole] if isinstance(whole, dict) else []
    return records(path)


def _message(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("id"), str) \
        and isinstance(value.get("type"), str)


def _cwd(path: Path) -> str:
    try:
        return (path.parent.parent / ".project_root").read_text("utf-8").strip()
    except OSError:
        return ""


def _parts(message: dict) -> list[dict]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"text": content}] if content else []
    return [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []


def _content(message: dict) -> dict:
    """A transcript message as the Gemini API content the CLI sent or received."""
    if message["type"] == "user":
        return {"role": "user", "parts": _parts(message)}
    calls = [{"functionCall": {"name": c.get("name"), "args": c.get("args") or {}}}
             for c in message.get("toolCalls") or () if isinstance(c, dict)]
    return {"role": "model", "parts": [*_parts(message), *calls]}


def _close(messages: list[dict], rules: Rules) -> HistoryTurn:
    first = messages[0]
    created = first["at"]

    def skipped(reason: str) -> HistoryTurn:
        return HistoryTurn(first["id"], created, skipped=reason)

    if created < rules.since:
        return skipped(BEFORE_SINCE)
    contents = [_content(m) for m in messages]
    found = gemini_wire.turn({"contents": contents, "tools": _TOOLS}, rules.extra)
    if found.side_call:
        return skipped(SIDE_CALL)
    if not found.human:
        return skipped(NO_HUMAN)
    final = contents[-1]
    if final["role"] != "model":
        return skipped(NO_ANSWER)
    collector = gemini_wire.ReplyCollector(stream=False)
    collector.feed(orjson.dumps({"candidates": [{"content": final}]}))
    answer = without_block(collector.answer())
    if collector.tool_calls() or not answer:
        return skipped(NO_ANSWER)
    return HistoryTurn(first["id"], created, finish(found.human, found.steps, answer, rules))
