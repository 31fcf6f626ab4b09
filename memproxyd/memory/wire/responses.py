"""OpenAI's Responses API as the memory service sees it (Codex CLI's protocol; the twin of
``openai_wire`` and ``anthropic_wire``): where the recall query comes from, where the memory
block goes, what gets remembered::

    q = responses_wire.query({"input": "Which branch?", "instructions": "Be brief."},
                             "last_user", 2000)                     # "Which branch?"
    outgoing = responses_wire.inject_at(body, {index: block})   # an item before input[index]

* The query and the remembered user text are the user-role ``input`` (a string, or message
  items whose text is in ``input_text`` parts); tool outputs, assistant items and images are
  walked past. A call continuing a stored conversation (``previous_response_id``) carries
  only its new input, so that is all it recalls from.
* The block is appended to ``instructions``, after the client's own: providers cache the
  longest unchanged prefix, and the client's instructions stay that prefix.
* The reply is the assistant's output text (``response.output_text.delta`` events, or the
  ``output`` items of a JSON reply); function calls as ``[tool call name: arguments]``;
  reasoning summaries only with ``store_thinking``.

Nothing here does I/O; every function takes the client's JSON and never mutates it.
"""
from __future__ import annotations

import json
import re
from typing import Any

from memproxyd.memory.block import strip_block
from memproxyd.memory.turn import Turn, anchor, is_newest, recall_query, step_line
from memproxyd.memory.wire.clients import human_words, is_side_call
from memproxyd.memory.wire.openai import PROBE_MAX_TOKENS, content_text
from memproxyd.memory.wire.sse import ReplyReader

# Stream events that mean the response did not complete (an upstream failure mid-stream).
_FAILED = ("response.failed", "error")
# Output item type → (field holding the tool's name, field holding its arguments); a name
# written in brackets is the name itself (Codex's ``local_shell_call`` carries none).
_TOOL_ITEMS = {"function_call": ("name", "arguments"), "custom_tool_call": ("name", "input"),
               "local_shell_call": ("[local_shell]", "action")}


def _items(body: dict) -> list:
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return value if isinstance(value, list) else []


def _is_user(item: Any) -> bool:
    return (isinstance(item, dict) and item.get("role") == "user"
            and item.get("type", "message") == "message")


def _parts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            and p.get("type") in ("input_text", "text")] if isinstance(content, list) else []


def human_messages(body: dict, extra: tuple = ()) -> list[tuple[int, str]]:
    """(index, the person's words) of every user-role message item that has any, oldest
    first: each ``input_text`` part without client scaffolding (Codex's AGENTS.md and
    ``<environment_context>`` parts, ``clients.py``) or a memory block."""
    out = []
    for i, item in enumerate(_items(body)):
        if _is_user(item):
            words = (human_words(strip_block(t), extra) for t in _parts(item.get("content")))
            text = "\n".join(w for w in words if w)
            if text:
                out.append((i, text))
    return out


def query(body: dict, strategy: str, max_chars: int, extra: tuple = ()) -> str:
    """The recall query (``turn.recall_query``) from the human's words of ``body``."""
    return recall_query([text for _, text in human_messages(body, extra)], strategy, max_chars)


def _last_user_raw(body: dict) -> str:
    users = [i for i in _items(body) if _is_user(i)]
    return "\n".join(_parts(users[-1].get("content"))) if users else ""


def turn(body: dict, extra: tuple = (), humans: list | None = None) -> Turn:
    """The human turn this call belongs to: a call whose newest input is a tool output
    continues the turn of the last user message (see ``memory/turn.py``). A call continuing a
    stored conversation (``previous_response_id``) carries only its new input: with only tool
    outputs in it, it has no human words here (the memory service finds its turn by that
    id, ``MemoryService.link``)."""
    items = _items(body)
    context = "\n".join([_str(body.get("instructions")), *(
        content_text(i.get("content")) for i in items if isinstance(i, dict)
        and i.get("role") in ("system", "developer")), _last_user_raw(body)])
    side = is_side_call(context, bool(body.get("tools")))
    humans = human_messages(body, extra) if humans is None else humans
    if not humans:
        return Turn("", new=False, side_call=side)
    index, text = humans[-1]
    steps = tuple(step_line(*_tool_call(item)) for item in items[index + 1:]
                  if isinstance(item, dict) and item.get("type") in _TOOL_ITEMS)
    session = body.get("prompt_cache_key")
    return Turn(text, is_newest(index, items), steps,
                anchor([t for _, t in humans], session if isinstance(session, str) else ""),
                side)


def _tool_call(item: dict) -> tuple[str, str]:
    """(name, arguments) of a tool-call item."""
    name_field, args_field = _TOOL_ITEMS[item["type"]]
    name = name_field[1:-1] if name_field.startswith("[") else _str(item.get(name_field))
    args = item.get(args_field)
    return name, args if isinstance(args, str) else json.dumps(args)


def is_housekeeping(body: dict, max_tokens_limit: int, system_patterns: list[re.Pattern]) -> bool:
    """True for calls the user's knobs mark as no conversation turn, as for Anthropic:
    ``max_output_tokens <= max_tokens_limit`` (1 always is a probe), or ``instructions`` (or
    a system/developer input item) matching one of ``system_patterns``. Codex's compaction
    and other known side calls are found by ``turn()`` (``clients.py``).
    The knobs' patterns never see the user's words: a pattern written for a system prompt
    must not silence a user who happens to say the same thing."""
    limit = body.get("max_output_tokens")
    if (isinstance(limit, int) and not isinstance(limit, bool)
            and limit <= max(max_tokens_limit, PROBE_MAX_TOKENS)):
        return True
    if not system_patterns:
        return False
    system = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    items = body.get("input") if isinstance(body.get("input"), list) else ()
    system += [content_text(i.get("content")) for i in items
               if isinstance(i, dict) and i.get("role") in ("system", "developer")]
    text = "\n".join(system)
    return bool(text) and any(p.search(text) for p in system_patterns)


def inject_at(body: dict, blocks: dict[int, str]) -> dict:
    """A new body with each ``blocks[i]`` as a developer message item just before input item
    ``i`` (a turn's human input): the block travels with its turn; ``instructions`` and
    ``tools`` stay as the client sent them. A string ``input`` becomes [block, the user's
    message]; the client's items are shared, never modified."""
    if not blocks:
        return body
    items = list(_items(body))
    for index in sorted(blocks, reverse=True):
        items.insert(index, {"type": "message", "role": "developer",
                             "content": [{"type": "input_text", "text": blocks[index]}]})
    return {**body, "input": items}


def conversation_of(body: dict) -> tuple[str, str]:
    """(the client's conversation id, Codex's ``prompt_cache_key``; its instructions)."""
    key = body.get("prompt_cache_key")
    return (key if isinstance(key, str) else ""), _str(body.get("instructions"))


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def item_text(item: Any, store_thinking: bool) -> str:
    """What one output item contributes to the remembered reply ("" for nothing)."""
    if not isinstance(item, dict):
        return ""
    kind = item.get("type")
    if kind == "message":
        parts = item.get("content") if isinstance(item.get("content"), list) else ()
        return "".join(_str(p.get("text")) for p in parts
                       if isinstance(p, dict) and p.get("type") == "output_text")
    if kind in _TOOL_ITEMS:
        return "[tool call {}: {}]".format(*_tool_call(item))
    if kind == "reasoning" and store_thinking:
        parts = [p for key in ("summary", "content") if isinstance(item.get(key), list)
                 for p in item[key]]
        return "\n".join(_str(p.get("text")) for p in parts if isinstance(p, dict)).strip()
    return ""


class ReplyCollector:
    """The assistant's reply from the raw upstream bytes, fed as they are relayed.

    Streaming: SSE bytes split anywhere (``\\n`` or ``\\r\\n`` framing); only ``data:`` lines
    are parsed, each event carries its own ``type``. Text comes from
    ``response.output_text.delta`` events, every other item (function calls, reasoning) from
    its ``response.output_item.done``. Not streaming: the bytes are kept and the ``output``
    items read once in ``text()``. A reply that failed (``response.failed``, an ``error``
    event, ``"status": "failed"``) is no reply: ``text()`` is "". Values of the wrong type are
    skipped, never raised on.
    """

    def __init__(self, stream: bool, store_thinking: bool = False):
        self.stream = stream
        self.store_thinking = store_thinking
        self._reader = ReplyReader(stream)
        self._parts: dict[int, list[str]] = {}    # output_index → text pieces
        self._tools: dict[int, tuple[str, str]] = {}   # output_index → (name, arguments)
        self._failed = False
        self._parsed = False                      # a whole body, parsed once
        self.response_id = ""                     # the reply's id, for previous_response_id

    def feed(self, chunk: bytes) -> None:
        for event in self._reader.events(chunk):
            self._event(event)

    def _event(self, event: dict) -> None:
        index = event.get("output_index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else 0
        kind = event.get("type")
        if kind in ("response.created", "response.completed"):
            self._id_of(event.get("response"))
        if kind in _FAILED:
            self._failed = True
        elif kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
            self._parts.setdefault(index, []).append(event["delta"])
        elif kind == "response.output_item.done":
            self._item(index, event.get("item"))

    def _item(self, index: int, item: Any) -> None:
        if isinstance(item, dict) and item.get("type") in _TOOL_ITEMS:
            self._tools[index] = _tool_call(item)
            return
        message = isinstance(item, dict) and item.get("type") == "message"
        text = item_text(item, self.store_thinking)
        if text and not (message and index in self._parts):   # its deltas came first
            self._parts[index] = [text]

    def _id_of(self, response: Any) -> None:
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            self.response_id = response["id"]

    def text(self) -> str:
        """The whole reply: output text, tool calls as ``[tool call name: arguments]``."""
        if not self.stream and not self._parsed:
            self._from_body()
        if self._failed:
            return ""
        pieces = {i: "".join(p).strip() for i, p in self._parts.items()}
        pieces.update({i: "[tool call {}: {}]".format(*t) for i, t in self._tools.items()})
        return "\n".join(pieces[i] for i in sorted(pieces) if pieces[i])

    def answer(self) -> str:
        """The reply's text (and reasoning with ``store_thinking``), without tool calls."""
        self.text()
        if self._failed:
            return ""
        texts = ("".join(self._parts[i]).strip() for i in sorted(self._parts))
        return "\n".join(t for t in texts if t)

    def tool_calls(self) -> list[str]:
        """The reply's tool calls, one line each; none means the reply ends the turn."""
        self.text()
        return [step_line(*self._tools[i]) for i in sorted(self._tools)]

    def _from_body(self) -> None:
        self._parsed = True
        body = self._reader.whole()
        if body is None:
            return
        self._id_of(body)
        output = body.get("output") if isinstance(body, dict) else None
        self._failed = isinstance(body, dict) and body.get("status") == "failed"
        for i, item in enumerate(output if isinstance(output, list) else ()):
            self._item(i, item)
