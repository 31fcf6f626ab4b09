"""The OpenAI chat protocol as the memory service sees it (``anthropic_wire`` is its twin):
where the recall query comes from, where the memory block goes, what gets remembered.

Each turn's block is a system message placed just before that turn's user message
(``inject_at``), and comes back there on every later call (``memory/journal.py``): providers
cache the longest unchanged prefix of a conversation.
"""
from __future__ import annotations

from typing import Any

from memproxyd.memory.block import strip_block
from memproxyd.memory.turn import Turn, anchor, is_newest, recall_query, step_line
from memproxyd.memory.wire.clients import human_words, is_side_call
from memproxyd.memory.wire.sse import ReplyReader

# A call asking for at most this many tokens is a probe (a key or model check), never a turn.
PROBE_MAX_TOKENS = 1


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of parts of which text ones count.
    Anything that is not a string where text belongs (``"text": null``, a number) is left out."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content
                         if isinstance(part, dict) and part.get("type") in ("text", "input_text")
                         and isinstance(part.get("text"), str))
    return ""


def human_messages(body: dict, extra: tuple = ()) -> list[tuple[int, str]]:
    """(index, the person's words) of every user message that has any, oldest first, without
    client scaffolding (``clients.py``) or a memory block."""
    out = []
    for i, message in enumerate(body.get("messages") or ()):
        if isinstance(message, dict) and message.get("role") == "user":
            text = "\n".join(w for w in (human_words(strip_block(t), extra)
                                         for t in _text_parts(message.get("content"))) if w)
            if text:
                out.append((i, text))
    return out


def _text_parts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            and p.get("type") in ("text", "input_text")] if isinstance(content, list) else []


def query(body: dict, strategy: str, max_chars: int, extra: tuple = ()) -> str:
    """The recall query (``turn.recall_query``) from the human's words of ``body``."""
    return recall_query([text for _, text in human_messages(body, extra)], strategy, max_chars)


def turn(body: dict, extra: tuple = (), humans: list | None = None) -> Turn:
    """The human turn this call belongs to: a call whose newest message is a tool result
    continues the turn of the last user message (see ``memory/turn.py``)."""
    messages = body.get("messages") or []
    system = "\n".join(content_text(m.get("content")) for m in messages
                       if isinstance(m, dict) and m.get("role") in ("system", "developer"))
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    side = is_side_call(f"{system}\n{content_text(last.get('content'))}",
                        bool(body.get("tools") or body.get("functions")))
    humans = human_messages(body, extra) if humans is None else humans
    if not humans:
        return Turn("", new=False, side_call=side)
    index, text = humans[-1]
    steps = tuple(step_line(_str(_dict(c.get("function")).get("name")),
                            _str(_dict(c.get("function")).get("arguments")))
                  for m in messages[index + 1:] if isinstance(m, dict)
                  and m.get("role") == "assistant"
                  for c in _list(m.get("tool_calls")) if isinstance(c, dict))
    return Turn(text, is_newest(index, messages), steps, anchor([t for _, t in humans]), side)


def is_housekeeping(body: dict, max_tokens_limit: int, system_patterns: list) -> bool:
    """The user's housekeeping knobs (``skip_small_max_tokens``, ``skip_system_patterns``),
    and probes (``max_tokens <= 1``); known clients' side calls are found by ``turn()``."""
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    if (isinstance(limit, int) and not isinstance(limit, bool)
            and limit <= max(max_tokens_limit, PROBE_MAX_TOKENS)):
        return True
    if system_patterns:
        system = "\n".join(content_text(m.get("content")) for m in body.get("messages") or ()
                           if isinstance(m, dict) and m.get("role") in ("system", "developer"))
        return any(p.search(system) for p in system_patterns)
    return False


def inject_at(body: dict, blocks: dict[int, str]) -> dict:
    """A new body with each ``blocks[i]`` as a system message just before ``messages[i]`` (a
    turn's human message): the block travels with its turn; the client's own messages are
    shared, never modified."""
    if not blocks:
        return body
    messages = list(body["messages"])
    for index in sorted(blocks, reverse=True):
        messages.insert(index, {"role": "system", "content": blocks[index]})
    return {**body, "messages": messages}


def conversation_of(body: dict) -> tuple[str, str]:
    """(the client's conversation id, ``prompt_cache_key`` when sent; its system text)."""
    key = body.get("prompt_cache_key")
    system = "\n".join(content_text(m.get("content")) for m in body.get("messages") or ()
                       if isinstance(m, dict) and m.get("role") in ("system", "developer"))
    return (key if isinstance(key, str) else ""), system


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


class ReplyCollector:
    """Accumulates the assistant's reply from a JSON body or SSE bytes split anywhere.

    Streaming: complete lines are handled as they arrive (``\n`` or ``\r\n`` framing, as
    sse-starlette and llama-cpp-python send) and only the unfinished last line is kept. Not
    streaming: the bytes are kept and parsed once in ``text()``. Values of the wrong type
    anywhere in a chunk are skipped, never raised on.
    """

    def __init__(self, stream: bool, store_thinking: bool = False):
        self.stream = stream
        self._reader = ReplyReader(stream)
        self._text: list[str] = []
        self._tools: dict[int, dict[str, str]] = {}
        self._parsed = False                 # a whole body, parsed once

    def feed(self, chunk: bytes) -> None:
        for event in self._reader.events(chunk):
            self._delta(event)

    def _delta(self, event: dict) -> None:
        for choice in _list(event.get("choices")):
            delta = _dict(_dict(choice).get("delta"))
            self._text.append(_str(delta.get("content")))
            for call in _list(delta.get("tool_calls")):
                if isinstance(call, dict):
                    self._tool_piece(call)

    def _tool_piece(self, call: dict) -> None:
        index = call.get("index", 0)
        slot = self._tools.setdefault(index if isinstance(index, int) else 0,
                                      {"name": "", "args": ""})
        function = _dict(call.get("function"))
        slot["name"] += _str(function.get("name"))
        slot["args"] += _str(function.get("arguments"))

    def text(self) -> str:
        """The whole reply as text, tool calls as ``[tool call name: arguments]``."""
        parts = [self.answer()]
        parts += [f"[tool call {t['name']}: {t['args']}]" for t in self._tools.values()
                  if t["name"] or t["args"]]
        return "\n".join(p for p in parts if p)

    def answer(self) -> str:
        """The reply's text without tool calls."""
        if not self.stream and not self._parsed:
            self._from_body()
        return "".join(self._text).strip()

    def tool_calls(self) -> list[str]:
        """The reply's tool calls, one line each; none means the reply ends the turn."""
        self.answer()
        return [step_line(t["name"], t["args"]) for t in self._tools.values()
                if t["name"] or t["args"]]

    def _from_body(self) -> None:
        self._parsed = True
        body = self._reader.whole()
        if body is None:
            return
        self._text, self._tools = [], {}
        for choice in _list(_dict(body).get("choices"))[:1]:
            message = _dict(_dict(choice).get("message"))
            self._text.append(content_text(message.get("content")))
            for i, call in enumerate(_list(message.get("tool_calls"))):
                function = _dict(_dict(call).get("function"))
                self._tools[i] = {"name": _str(function.get("name")),
                                  "args": _str(function.get("arguments"))}
