"""The Anthropic Messages protocol, seen by the memory service: what to recall from, where the
memory block goes, what to remember. ``memory/wire/openai.py`` has the same functions for
OpenAI chat; the service picks one by ``call.protocol``::

    turn = anthropic_wire.turn(body)       # the human's words, scaffolding removed
    if turn.human and not (turn.side_call or anthropic_wire.is_housekeeping(body, 0, [])):
        outgoing = anthropic_wire.inject_at(body, {index: block})   # index: its human message
    collector = anthropic_wire.ReplyCollector(stream=True)
    for chunk in upstream_chunks: collector.feed(chunk)
    if not collector.tool_calls():          # the turn's final answer
        remember(turn.human, turn.steps, collector.answer())

Nothing here does I/O; every function takes the client's JSON and never mutates it.
"""
from __future__ import annotations

import json
import re
from typing import Any

from memproxyd.memory.block import strip_block
from memproxyd.memory.turn import Turn, anchor, is_newest, recall_query, step_line
from memproxyd.memory.wire.clients import human_words, is_side_call
from memproxyd.memory.wire.sse import ReplyReader

_TOOL_USE = ("tool_use", "server_tool_use")
# A call asking for at most this many tokens is a probe (quota, key or model check), never a
# turn: Claude Code sends ``max_tokens: 1`` with "quota", "test", "Hi" or ".".
PROBE_MAX_TOKENS = 1



def _blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _text_of(content: Any) -> str:
    """The text blocks of a message (or ``system``), joined; tool results are not text."""
    if isinstance(content, str):
        return content
    return "\n".join(b["text"] for b in _blocks(content)
                     if b.get("type") == "text" and isinstance(b.get("text"), str))


def human_messages(body: dict, extra: tuple = ()) -> list[tuple[int, str]]:
    """(index, the person's words) of every user message that has any, oldest first: text
    blocks without client scaffolding (``clients.py``) or a memory block; tool results and
    turns made only of reminders are left out."""
    out = []
    for i, message in enumerate(body.get("messages") or ()):
        if isinstance(message, dict) and message.get("role") == "user":
            parts = (human_words(strip_block(b["text"]), extra)
                     for b in _blocks(message.get("content"))
                     if b.get("type") == "text" and isinstance(b.get("text"), str))
            text = "\n".join(p for p in parts if p)
            if text:
                out.append((i, text))
    return out


def query(body: dict, strategy: str, max_chars: int, extra: tuple = ()) -> str:
    """The recall query (``turn.recall_query``) from the human's words of ``body``."""
    return recall_query([text for _, text in human_messages(body, extra)], strategy, max_chars)


def turn(body: dict, extra: tuple = (), humans: list | None = None) -> Turn:
    """The human turn this call belongs to (see ``memory/turn.py``)."""
    messages = body.get("messages") or []
    system = _text_of(body.get("system"))
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    side = is_side_call(f"{system}\n{_text_of(last.get('content'))}", bool(body.get("tools")))
    humans = human_messages(body, extra) if humans is None else humans
    if not humans:
        return Turn("", new=False, side_call=side)
    index, text = humans[-1]
    steps = tuple(step_line(_str(b.get("name")), json.dumps(b.get("input") or {}))
                  for m in messages[index + 1:] if isinstance(m, dict)
                  and m.get("role") == "assistant"
                  for b in _blocks(m.get("content")) if b.get("type") in _TOOL_USE)
    metadata = body.get("metadata")
    session = metadata.get("user_id") if isinstance(metadata, dict) else None
    return Turn(text, is_newest(index, messages), steps,
                anchor([t for _, t in humans], session if isinstance(session, str) else ""),
                side)


def is_housekeeping(body: dict, max_tokens_limit: int,
                    system_patterns: list[re.Pattern]) -> bool:
    """True for calls the user's config marks as no conversation: ``max_tokens <=
    max_tokens_limit`` or a system prompt matching one of ``system_patterns``; and always for
    probes (``max_tokens <= 1``). The side calls of known clients (titles, summaries) are
    recognised by ``turn()`` from ``clients.py``, without any config."""
    max_tokens = body.get("max_tokens")
    if (isinstance(max_tokens, int) and not isinstance(max_tokens, bool)
            and max_tokens <= max(max_tokens_limit, PROBE_MAX_TOKENS)):
        return True
    if not system_patterns:
        return False
    system = _text_of(body.get("system"))
    return bool(system) and any(p.search(system) for p in system_patterns)


def inject_at(body: dict, blocks: dict[int, str]) -> dict:
    """A new body with each ``blocks[i]`` as a text part at the start of ``messages[i]`` (a
    turn's human message), before the human's words: the block travels with its turn, inside
    the conversation, and the client's ``cache_control`` on the message's last part still
    covers it. ``system`` and ``tools`` stay as the client sent them. A string content
    becomes [block, the string]; the client's objects are shared, never modified."""
    if not blocks:
        return body
    messages = list(body["messages"])
    for index, block in blocks.items():
        message = messages[index]
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        messages[index] = {**message, "content": [{"type": "text", "text": block}, *parts]}
    return {**body, "messages": messages}


def conversation_of(body: dict) -> tuple[str, str]:
    """(the client's conversation id, its system text). Claude Code's session id is in
    ``metadata.user_id``, a JSON string with ``session_id``; another string there is taken
    whole."""
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    session = ""
    if isinstance(user, str) and user:
        try:
            parsed = json.loads(user)
        except ValueError:
            parsed = None
        found = parsed.get("session_id") if isinstance(parsed, dict) else None
        session = found if isinstance(found, str) and found else user
    return session, _text_of(body.get("system"))


def tool_use_text(name: str, input_json: str) -> str:
    return f"[tool_use {name}: {input_json}]"


class ReplyCollector:
    """The assistant's reply text from the raw upstream bytes, fed as they are relayed.

    Streaming: SSE bytes split anywhere; complete lines are handled as they arrive and only
    ``data:`` lines are parsed (the JSON carries its own ``type``). Not streaming: the bytes
    are kept and parsed once in ``text()``. Text blocks are kept, ``tool_use`` blocks become
    ``[tool_use name: {input}]``, thinking only with ``store_thinking``.
    """

    def __init__(self, stream: bool, store_thinking: bool = False):
        self.stream = stream
        self.store_thinking = store_thinking
        self._reader = ReplyReader(stream)
        self._blocks: dict[int, list] = {}   # index → [kind, name, parts]
        self._parsed: list | None = None     # a whole message, parsed once

    def feed(self, chunk: bytes) -> None:
        for event in self._reader.events(chunk):
            self._event(event)

    def _event(self, event: dict) -> None:
        kind, index = event.get("type"), _index(event.get("index", 0))
        if kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            self._start(index, event["content_block"])
        elif kind == "content_block_delta" and isinstance(event.get("delta"), dict):
            block = self._blocks.get(index)
            delta = event["delta"]
            field = _DELTA_FIELDS.get(delta.get("type")) if isinstance(delta.get("type"),
                                                                       str) else None
            piece = delta.get(field) if field else None
            if block is not None and isinstance(piece, str):
                block[2].append(piece)

    def _start(self, index: int, block: dict) -> None:
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = ["text", "", [_str(block.get("text"))]]
        elif kind == "thinking" and self.store_thinking:
            self._blocks[index] = ["thinking", "", [_str(block.get("thinking"))]]
        elif kind in _TOOL_USE:
            start = block.get("input")
            # the input arrives as input_json_delta pieces; a non-empty start input is whole
            parts = [json.dumps(start)] if start else []
            self._blocks[index] = ["tool_use", _str(block.get("name")), parts]

    def parts(self) -> list[tuple[str, str, str]]:
        """(kind, tool name, text) of each block of the reply, in order."""
        if not self.stream:
            return self._from_message()
        return [(kind, name, "".join(pieces) or ("{}" if kind == "tool_use" else ""))
                for kind, name, pieces in (self._blocks[i] for i in sorted(self._blocks))]

    def text(self) -> str:
        """The whole reply as text, tool calls as ``[tool_use name: {input}]``."""
        return "\n".join(tool_use_text(name, text) if kind == "tool_use" else text
                         for kind, name, text in self.parts() if text).strip()

    def answer(self) -> str:
        """The reply's text and (with ``store_thinking``) thinking, without tool calls."""
        return "\n".join(t for kind, _, t in self.parts() if kind != "tool_use" and t).strip()

    def tool_calls(self) -> list[str]:
        """The reply's tool calls, one line each; none means the reply ends the turn."""
        return [step_line(name, text) for kind, name, text in self.parts() if kind == "tool_use"]

    def _from_message(self) -> list[tuple[str, str, str]]:
        if self._parsed is None:
            self._parsed = self._parse_message()
        return self._parsed

    def _parse_message(self) -> list[tuple[str, str, str]]:
        message = self._reader.whole()
        parts = []
        for block in _blocks(message.get("content") if isinstance(message, dict) else None):
            kind = block.get("type")
            if kind == "text":
                parts.append(("text", "", _str(block.get("text"))))
            elif kind == "thinking" and self.store_thinking:
                parts.append(("thinking", "", _str(block.get("thinking"))))
            elif kind in _TOOL_USE:
                parts.append(("tool_use", _str(block.get("name")),
                              json.dumps(block.get("input") or {})))
        return parts


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _index(value: Any) -> int:
    return value if isinstance(value, int) else 0


# delta type → the field holding its piece; signature_delta and others carry no text
_DELTA_FIELDS = {"text_delta": "text", "input_json_delta": "partial_json",
                 "thinking_delta": "thinking"}
