"""The Anthropic Messages protocol, seen by the memory service: what to recall from, where the
memory block goes, what to remember. ``memory/openai_wire.py`` has the same functions for
OpenAI chat; the service picks one by ``call.protocol``::

    q = anthropic_wire.query(body, "last_user", 2000)
    if q and not anthropic_wire.is_housekeeping(body, 32, patterns):
        outgoing = anthropic_wire.inject(body, block)
    collector = anthropic_wire.ReplyCollector(stream=True)
    for chunk in upstream_chunks: collector.feed(chunk)
    remember(anthropic_wire.user_text(body), collector.text())

Nothing here does I/O; every function takes the client's JSON and never mutates it.
"""
from __future__ import annotations

import json
import re
from typing import Any

from memproxyd.memory.block import strip_block


# Recommended housekeeping filters for Claude Code (``[memory]`` keys). Claude Code makes side
# calls that are not part of the conversation: a quota probe (``max_tokens = 1``), topic and
# title detection, conversation summaries. Recalling for them costs a search; remembering them
# pollutes memory with "isNewTopic" JSON.
RECOMMENDED_SKIP_SMALL_MAX_TOKENS = 32
RECOMMENDED_SKIP_SYSTEM_PATTERNS = (
    r"(?i)new conversation topic",
    r"(?i)\btitle\b.{0,80}\b(conversation|topic|session)\b",
    r"(?i)summari[sz]e (this|the) (coding )?conversation",
)


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


def _user_texts(body: dict) -> list[str]:
    """Every user turn's text, oldest first; turns without text (tool results) left out."""
    out = []
    for message in body.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "user":
            text = strip_block(_text_of(message.get("content")))
            if text:
                out.append(text)
    return out


def query(body: dict, strategy: str, max_chars: int) -> str:
    """The recall query: ``last_user`` (the last user turn that has text; a tool_result-only
    turn is walked past), ``last_user_plus_previous`` or ``all_user``. Capped at
    ``max_chars`` keeping the end, where the newest words are. "" when there is no text."""
    texts = _user_texts(body)
    if not texts:
        return ""
    if strategy == "all_user":
        text = "\n".join(texts)
    elif strategy == "last_user_plus_previous":
        text = "\n".join(texts[-2:])
    else:
        text = texts[-1]
    return text[-max_chars:] if max_chars > 0 else text


def is_housekeeping(body: dict, max_tokens_limit: int,
                    system_patterns: list[re.Pattern]) -> bool:
    """True for calls that are no conversation: ``max_tokens <= max_tokens_limit`` (when the
    limit is > 0) or a system prompt matching one of ``system_patterns``.

    Recommended for Claude Code (see the ``RECOMMENDED_*`` constants)::

        [memory]
        skip_small_max_tokens = 32
        skip_system_patterns = ['(?i)new conversation topic',
                                '(?i)\\btitle\\b.{0,80}\\b(conversation|topic|session)\\b',
                                '(?i)summari[sz]e (this|the) (coding )?conversation']

    Real turns ask for thousands of tokens; the quota probe asks for 1 and title calls for a
    few dozen, so 32 separates them without touching real work.
    """
    max_tokens = body.get("max_tokens")
    if (max_tokens_limit > 0 and isinstance(max_tokens, int)
            and not isinstance(max_tokens, bool) and max_tokens <= max_tokens_limit):
        return True
    if not system_patterns:
        return False
    system = _text_of(body.get("system"))
    return bool(system) and any(p.search(system) for p in system_patterns)


def inject(body: dict, block: str) -> dict:
    """A new body whose ``system`` ends with the memory ``block``.

    The block is APPENDED, never prepended: Anthropic's prompt cache covers the prefix up to
    each ``cache_control`` breakpoint (order: tools, system, messages). Claude Code marks its
    own system blocks; a block that changes every call placed before them would miss that cache
    on every call. Appended, the client's system blocks and their ``cache_control`` are the
    same prefix as without memory. (Breakpoints in ``messages`` come after ``system`` and so
    see the block either way; that is the price of any system-level memory.)

    absent → the block as the string; string → string, blank line, block; list → the same
    blocks (the same objects, untouched) plus one text block without ``cache_control``.
    """
    system = body.get("system")
    if isinstance(system, list):
        new_system: Any = [*system, {"type": "text", "text": block}]
    elif isinstance(system, str) and system:
        new_system = f"{system}\n\n{block}"
    else:
        new_system = block
    return {**body, "system": new_system}


def user_text(body: dict) -> str:
    """The text of the last user turn that has any, without an injected memory block; "" when
    no turn has text. Like ``query``, a tool_result-only turn (an agent loop step) is walked
    past, so the loop's final answer is paired with what the user asked."""
    texts = _user_texts(body)
    return texts[-1] if texts else ""


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
        self._buf = bytearray()
        self._blocks: dict[int, list] = {}   # index → [kind, name, parts]

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        if not self.stream:
            return
        end = self._buf.rfind(b"\n")
        if end < 0:
            return
        lines = bytes(self._buf[:end]).split(b"\n")
        del self._buf[:end + 1]
        for line in lines:
            if line.startswith(b"data:"):
                self._event(line[5:])

    def _event(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
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
        elif kind in ("tool_use", "server_tool_use"):
            start = block.get("input")
            # the input arrives as input_json_delta pieces; a non-empty start input is whole
            parts = [json.dumps(start)] if start else []
            self._blocks[index] = ["tool_use", _str(block.get("name")), parts]

    def text(self) -> str:
        if not self.stream:
            return self._from_message()
        parts = []
        for index in sorted(self._blocks):
            kind, name, pieces = self._blocks[index]
            joined = "".join(pieces)
            parts.append(tool_use_text(name, joined or "{}") if kind == "tool_use" else joined)
        return "\n".join(p for p in parts if p).strip()

    def _from_message(self) -> str:
        try:
            message = json.loads(bytes(self._buf))
        except ValueError:
            return ""
        parts = []
        for block in _blocks(message.get("content") if isinstance(message, dict) else None):
            kind = block.get("type")
            if kind == "text":
                parts.append(_str(block.get("text")))
            elif kind == "thinking" and self.store_thinking:
                parts.append(_str(block.get("thinking")))
            elif kind in ("tool_use", "server_tool_use"):
                parts.append(tool_use_text(_str(block.get("name")),
                                           json.dumps(block.get("input") or {})))
        return "\n".join(p for p in parts if p).strip()


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _index(value: Any) -> int:
    return value if isinstance(value, int) else 0


# delta type → the field holding its piece; signature_delta and others carry no text
_DELTA_FIELDS = {"text_delta": "text", "input_json_delta": "partial_json",
                 "thinking_delta": "thinking"}
