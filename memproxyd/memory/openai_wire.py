"""The OpenAI chat protocol as the memory service sees it (``anthropic_wire`` is its twin):
where the recall query comes from, where the memory block goes, what gets remembered.

The block is a system message placed just before the last user message. Providers cache the
longest unchanged prefix of a conversation, and the block changes with every question: put
anywhere earlier, it would invalidate the cached history on every call.
"""
from __future__ import annotations

import json
import re
from typing import Any

BLOCK_START = "<memproxy-memory>"
BLOCK_END = "</memproxy-memory>"
BLOCK_RE = re.compile(re.escape(BLOCK_START) + r".*?" + re.escape(BLOCK_END) + r"\s*", re.S)


def strip_block(text: str) -> str:
    return BLOCK_RE.sub("", text).strip()


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of parts of which text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content
                         if isinstance(part, dict) and part.get("type") in ("text", "input_text"))
    return ""


def _user_texts(body: dict) -> list[str]:
    texts = []
    for message in body.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "user":
            text = strip_block(content_text(message.get("content")))
            if text:
                texts.append(text)
    return texts


def query(body: dict, strategy: str, max_chars: int) -> str:
    texts = _user_texts(body)
    if not texts:
        return ""
    if strategy == "last_user_plus_previous":
        picked = texts[-2:]
    elif strategy == "all_user":
        picked = texts
    else:
        picked = texts[-1:]
    return "\n".join(picked)[-max_chars:]


def is_housekeeping(body: dict, max_tokens_limit: int, system_patterns: list) -> bool:
    """OpenAI clients send no recognisable housekeeping calls; the same knobs apply anyway."""
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    if max_tokens_limit > 0 and isinstance(limit, int) and limit <= max_tokens_limit:
        return True
    if system_patterns:
        system = "\n".join(content_text(m.get("content")) for m in body.get("messages") or ()
                           if isinstance(m, dict) and m.get("role") in ("system", "developer"))
        return any(p.search(system) for p in system_patterns)
    return False


def inject(body: dict, block: str) -> dict:
    """A new body with the block as a system message before the last user message; the
    client's message objects are shared, never modified."""
    messages = list(body["messages"])
    position = len(messages)
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], dict) and messages[i].get("role") == "user":
            position = i
            break
    messages.insert(position, {"role": "system", "content": block})
    return {**body, "messages": messages}


def user_text(body: dict) -> str:
    texts = _user_texts(body)
    return texts[-1] if texts else ""


class ReplyCollector:
    """Accumulates the assistant's reply from a JSON body or SSE bytes split anywhere."""

    def __init__(self, stream: bool, store_thinking: bool = False):
        self.stream = stream
        self._buffer = bytearray()
        self._text: list[str] = []
        self._tools: dict[int, dict[str, str]] = {}

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        if not self.stream:
            return
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                return
            event, self._buffer = bytes(self._buffer[:end]), self._buffer[end + 2:]
            for line in event.split(b"\n"):
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                    self._delta(line[5:])

    def _delta(self, data: bytes) -> None:
        try:
            choices = json.loads(data).get("choices") or ()
        except (ValueError, AttributeError):
            return
        for choice in choices:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self._text.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                slot = self._tools.setdefault(call.get("index", 0), {"name": "", "args": ""})
                function = call.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["args"] += function.get("arguments") or ""

    def text(self) -> str:
        if not self.stream:
            self._from_body()
        parts = ["".join(self._text).strip()]
        parts += [f"[tool call {t['name']}: {t['args']}]" for t in self._tools.values()]
        return "\n".join(p for p in parts if p)

    def _from_body(self) -> None:
        try:
            choices = json.loads(self._buffer).get("choices") or ()
        except (ValueError, AttributeError):
            return
        self._text, self._tools = [], {}
        for choice in choices[:1]:
            message = choice.get("message") or {}
            self._text.append(content_text(message.get("content")))
            for i, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") or {}
                self._tools[i] = {"name": function.get("name", ""),
                                  "args": function.get("arguments", "")}
