"""Codex CLI's rollouts: ``~/.codex/sessions/YYYY/MM/DD/rollout-<time>-<session id>.jsonl``.

One JSON object per line (recorded from Codex 0.171.0, ``tests/fixtures/history/``):
``{"timestamp", "type", "payload"}``. What is read here: ``session_meta`` (the session's
``id`` and ``cwd``), ``turn_context`` (the turn's ``cwd``), ``event_msg`` of type
``task_started`` / ``task_complete`` / ``turn_aborted`` (where one human turn starts and
whether it ended with an answer), and ``response_item`` (a Responses API item the CLI sent or
received: the developer and user messages, function calls and their outputs, reasoning,
the assistant's messages). The rest (token counts, ``world_state``, ``compacted``, the UI's
``item_completed`` copies) is passed over.

A turn is a task: its items go, as the ``input`` of one Responses call, through
``responses_wire.turn`` (Codex's AGENTS.md and ``<environment_context>`` parts are
scaffolding there, as live), and its last model reply (the assistant items after the last
tool output) through the ``ReplyCollector``. A task that never completed (interrupted,
aborted, the CLI killed) has no final answer and is skipped.
"""
from __future__ import annotations

from pathlib import Path

import orjson

from memproxyd.memory.block import without_block
from memproxyd.memory.history.transcript import (BEFORE_SINCE, NO_ANSWER, NO_HUMAN, SIDE_CALL,
                                                 HistoryTurn, Rules, Session, finish,
                                                 parse_time, records)
from memproxyd.memory.wire import responses as responses_wire

PATTERN = "rollout-*.jsonl"
# Codex's turns always offer tools: the rebuilt call says so (its compaction never does).
_TOOLS = [{"type": "function", "name": "transcript"}]
_REPLY = ("message", "reasoning")


class _Task:
    def __init__(self, turn_id: str, started: float):
        self.turn_id = turn_id
        self.started = started
        self.created_at = 0.0             # the human message's time, when there is one
        self.items: list[dict] = []
        self.complete = False

    def add(self, item: dict, at: float) -> None:
        self.items.append(item)
        if not self.created_at and item.get("role") == "user":
            if responses_wire.human_messages({"input": [item]}):
                self.created_at = at


def read(path: Path, rules: Rules) -> Session:
    session_id, cwd = path.stem, ""
    turns: list[HistoryTurn] = []
    task: _Task | None = None
    tasks_seen = False
    for number, record in enumerate(records(path)):
        kind, payload = record.get("type"), record.get("payload")
        if not isinstance(payload, dict):
            continue
        at = parse_time(record.get("timestamp")) or 0.0
        if kind == "session_meta":
            session_id = _str(payload.get("id")) or session_id
            cwd = cwd or _str(payload.get("cwd"))
        elif kind == "turn_context":
            cwd = cwd or _str(payload.get("cwd"))
        elif kind == "event_msg" and payload.get("type") == "task_started":
            tasks_seen = True
            if task is not None:
                turns.append(_close(task, rules, tasks_seen))
            task = _Task(_str(payload.get("turn_id")) or f"line-{number}", at)
        elif kind == "event_msg" and payload.get("type") == "task_complete" and task:
            task.complete = True
        elif kind == "response_item":
            if task is None:
                task = _Task(f"line-{number}", at)
            task.add(payload, at)
    if task is not None:
        turns.append(_close(task, rules, tasks_seen))
    return Session("codex", str(path), session_id, cwd, tuple(t for t in turns if t))


def _close(task: _Task, rules: Rules, tasks_seen: bool) -> HistoryTurn | None:
    """The task's turn; None for a task with no human message at all (nothing to count)."""
    created = task.created_at or task.started

    def skipped(reason: str) -> HistoryTurn:
        return HistoryTurn(task.turn_id, created, skipped=reason)

    if not any(i.get("role") == "user" for i in task.items):
        return None
    if created < rules.since:
        return skipped(BEFORE_SINCE)
    body = {"input": task.items, "tools": _TOOLS}
    found = responses_wire.turn(body, rules.extra)
    if found.side_call:
        return skipped(SIDE_CALL)
    if not found.human:
        return skipped(NO_HUMAN)
    reply = _last_reply(task.items)
    if not reply or (tasks_seen and not task.complete):
        return skipped(NO_ANSWER)
    collector = responses_wire.ReplyCollector(stream=False)
    collector.feed(orjson.dumps({"output": reply}))
    answer = without_block(collector.answer())
    if not answer:
        return skipped(NO_ANSWER)
    return HistoryTurn(task.turn_id, created, finish(found.human, found.steps, answer, rules))


def _last_reply(items: list[dict]) -> list[dict]:
    """The assistant's items after the last user message or tool output: the reply that
    ended the turn."""
    reply: list[dict] = []
    for item in reversed(items):
        if item.get("type") not in _REPLY or item.get("role") not in (None, "assistant"):
            break
        reply.insert(0, item)
    return reply


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""
