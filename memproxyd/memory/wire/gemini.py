"""The Gemini API (``generateContent``, ``streamGenerateContent``), seen by the memory service:
what to recall from, where the memory block goes, what to remember. Same functions as
``memory/wire/anthropic.py``::

    turn = gemini_wire.turn(body)            # the human's words, Gemini CLI's context removed
    outgoing = gemini_wire.inject_at(body, {index: block})   # first part of contents[index]
    collector = gemini_wire.ReplyCollector(stream=True)
    for chunk in upstream_chunks: collector.feed(chunk)
    if not collector.tool_calls():            # the turn's final answer
        remember(turn.human, turn.steps, collector.answer())

A request is ``{"contents": [{"role": "user" | "model", "parts": [...]}], "systemInstruction",
"tools", "generationConfig"}``; a part is ``{"text"}`` (``"thought": true`` for thinking),
``{"functionCall": {"name", "args"}}``, ``{"functionResponse"}``, ``{"inlineData"}``, ...
A content without ``role`` is the user's (Google's default). The memory block goes in the
human's own message, never in ``systemInstruction`` or ``tools``: Gemini CLI's system
instruction and tools are the same on every call, a cacheable prefix.

Nothing here does I/O; every function takes the client's JSON and never mutates it.
"""
from __future__ import annotations

import json
import re
from typing import Any

from memproxyd.memory.block import strip_block
from memproxyd.memory.turn import Turn, anchor, recall_query, step_line
from memproxyd.memory.wire.clients import human_words, is_side_call
from memproxyd.memory.wire.sse import ReplyReader

# A call asking for at most this many tokens is a probe, never a turn.
PROBE_MAX_TOKENS = 1


def _contents(body: dict) -> list:
    contents = body.get("contents")
    return contents if isinstance(contents, list) else []


def _parts(content: Any) -> list[dict]:
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _is_user(content: Any) -> bool:
    return isinstance(content, dict) and content.get("role", "user") in ("user", None)


def _text_of(content: Any) -> str:
    """The text parts of a content (or ``systemInstruction``), thinking left out."""
    return "\n".join(p["text"] for p in _parts(content)
                     if isinstance(p.get("text"), str) and not p.get("thought"))


def human_messages(body: dict, extra: tuple = ()) -> list[tuple[int, str]]:
    """(index into ``contents``, the person's words) of every user content that has any,
    oldest first: text parts without client scaffolding (``clients.py``: Gemini CLI's
    ``<session_context>`` content) or a memory block; function responses are no words."""
    out = []
    for i, content in enumerate(_contents(body)):
        if not _is_user(content):
            continue
        words = (human_words(strip_block(p["text"]), extra) for p in _parts(content)
                 if isinstance(p.get("text"), str) and not p.get("thought"))
        text = "\n".join(w for w in words if w)
        if text:
            out.append((i, text))
    return out


def query(body: dict, strategy: str, max_chars: int, extra: tuple = ()) -> str:
    """The recall query (``turn.recall_query``) from the human's words of ``body``."""
    return recall_query([text for _, text in human_messages(body, extra)], strategy, max_chars)


def _calls(content: Any) -> list[str]:
    return [step_line(_str(call.get("name")), json.dumps(call.get("args") or {}))
            for call in (p.get("functionCall") for p in _parts(content))
            if isinstance(call, dict)]


def turn(body: dict, extra: tuple = (), humans: list | None = None) -> Turn:
    """The human turn this call belongs to (see ``memory/turn.py``): the newest user content
    with words; the model's function calls after it are the turn's steps."""
    contents = _contents(body)
    last = contents[-1] if contents else {}
    system = _text_of(body.get("systemInstruction"))
    side = is_side_call(f"{system}\n{_text_of(last)}", bool(body.get("tools")))
    humans = human_messages(body, extra) if humans is None else humans
    if not humans:
        return Turn("", new=False, side_call=side)
    index, text = humans[-1]
    steps = tuple(line for c in contents[index + 1:]
                  if isinstance(c, dict) and c.get("role") == "model" for line in _calls(c))
    return Turn(text, index == len(contents) - 1, steps, anchor([t for _, t in humans]), side)


def is_housekeeping(body: dict, max_tokens_limit: int,
                    system_patterns: list[re.Pattern]) -> bool:
    """True for calls the config marks as no conversation: ``generationConfig.
    maxOutputTokens <= max_tokens_limit``, or a ``systemInstruction`` matching one of
    ``system_patterns``; and always for probes (``maxOutputTokens <= 1``)."""
    config = body.get("generationConfig")
    limit = config.get("maxOutputTokens") if isinstance(config, dict) else None
    if (isinstance(limit, int) and not isinstance(limit, bool)
            and limit <= max(max_tokens_limit, PROBE_MAX_TOKENS)):
        return True
    system = _text_of(body.get("systemInstruction"))
    return bool(system) and any(p.search(system) for p in system_patterns)


def inject_at(body: dict, blocks: dict[int, str]) -> dict:
    """A new body where each ``blocks[index]`` is the FIRST text part of ``contents[index]``
    (the person's message it was recalled for); every other content, and every part, is the
    client's own object. Indexes that are no content are passed over."""
    contents = _contents(body)
    if not blocks or not contents:
        return body
    new = list(contents)
    for index, block in blocks.items():
        if 0 <= index < len(new) and isinstance(new[index], dict):
            content = new[index]
            new[index] = {**content, "parts": [{"text": block}, *_parts(content)]}
    return {**body, "contents": new}


def conversation_of(body: dict) -> tuple[str, str]:
    """(the client's conversation id: Gemini CLI sends none; its ``systemInstruction``)."""
    return "", _text_of(body.get("systemInstruction"))


class ReplyCollector:
    """The model's reply from the raw upstream bytes, fed as they are relayed: SSE
    (``alt=sse``: one ``GenerateContentResponse`` per ``data:`` line), else read whole once:
    a JSON object, or the JSON array Google streams without ``alt=sse``. The first candidate's parts are kept in
    order: text (thinking only with ``store_thinking``), function calls as tool lines."""

    def __init__(self, stream: bool, store_thinking: bool = False):
        self.stream = stream
        self.store_thinking = store_thinking
        self._reader = ReplyReader(stream)
        self._parts: list[tuple[str, str, str]] = []   # (kind, name, text)
        self._whole_read = False

    def feed(self, chunk: bytes) -> None:
        for event in self._reader.events(chunk):
            self._response(event)

    def _response(self, response: Any) -> None:
        candidates = response.get("candidates") if isinstance(response, dict) else None
        first = candidates[0] if isinstance(candidates, list) and candidates else None
        for part in _parts(first.get("content") if isinstance(first, dict) else None):
            self._part(part)

    def _part(self, part: dict) -> None:
        call = part.get("functionCall")
        if isinstance(call, dict):
            self._parts.append(("call", _str(call.get("name")),
                                json.dumps(call.get("args") or {})))
            return
        text = part.get("text")
        if not isinstance(text, str) or (part.get("thought") and not self.store_thinking):
            return
        kind = "thought" if part.get("thought") else "text"
        if self._parts and self._parts[-1][0] == kind:   # stream pieces of one text
            self._parts[-1] = (kind, "", self._parts[-1][2] + text)
        else:
            self._parts.append((kind, "", text))

    def parts(self) -> list[tuple[str, str, str]]:
        if not self.stream and not self._whole_read:
            self._whole_read = True
            whole = self._reader.whole()
            for response in whole if isinstance(whole, list) else [whole]:
                self._response(response)
        return self._parts

    def text(self) -> str:
        """The whole reply as text, function calls as ``[functionCall name: {args}]``."""
        return "\n".join(f"[functionCall {name}: {text}]" if kind == "call" else text
                         for kind, name, text in self.parts() if text).strip()

    def answer(self) -> str:
        """The reply's text (and, with ``store_thinking``, thinking), without calls."""
        return "\n".join(t for kind, _, t in self.parts() if kind != "call" and t).strip()

    def tool_calls(self) -> list[str]:
        """The reply's function calls, one line each; none means the reply ends the turn."""
        return [step_line(name, text) for kind, name, text in self.parts() if kind == "call"]


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
