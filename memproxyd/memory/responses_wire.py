"""OpenAI's Responses API as the memory service sees it (Codex CLI's protocol; the twin of
``openai_wire`` and ``anthropic_wire``): where the recall query comes from, where the memory
block goes, what gets remembered::

    q = responses_wire.query({"input": "Which branch?", "instructions": "Be brief."},
                             "last_user", 2000)                     # "Which branch?"
    outgoing = responses_wire.inject(body, block)                   # instructions + block

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
from memproxyd.memory.openai_wire import content_text

# Housekeeping prompts clients send as the last user input, recognised whatever the config
# says: they are no human turn, and remembering them would store a summary of the history as
# if the user had said it. Codex's local compaction (every non-OpenAI provider, memproxyd
# included) appends its summarization prompt as a user message (openai/codex
# codex-rs/core/src/compact.rs, run_inline_auto_compact_task; the text is
# codex-rs/core/templates/compact/prompt.md).
HOUSEKEEPING_USER_PROMPTS = (re.compile(r"^You are performing a CONTEXT CHECKPOINT COMPACTION"),)
# Stream events that mean the response did not complete (an upstream failure mid-stream).
_FAILED = ("response.failed", "error")
# Output item type → (field holding the tool's name, field holding its arguments); a name
# written in brackets is the name itself (Codex's ``local_shell_call`` carries none).
_TOOL_ITEMS = {"function_call": ("name", "arguments"), "custom_tool_call": ("name", "input"),
               "local_shell_call": ("[local_shell]", "action")}


def _user_texts(body: dict) -> list[str]:
    """The text of every user-role input item, oldest first; items without text left out."""
    value = body.get("input")
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    texts = []
    for item in value if isinstance(value, list) else ():
        if (isinstance(item, dict) and item.get("role") == "user"
                and item.get("type", "message") == "message"):
            text = strip_block(content_text(item.get("content")))
            if text:
                texts.append(text)
    return texts


def query(body: dict, strategy: str, max_chars: int) -> str:
    """The recall query: the last user text (``last_user``), the last two
    (``last_user_plus_previous``) or all of them (``all_user``), keeping the newest
    ``max_chars``; "" when the input has no user text (a tool output alone)."""
    texts = _user_texts(body)
    picked = {"all_user": texts, "last_user_plus_previous": texts[-2:]}.get(strategy, texts[-1:])
    text = "\n".join(picked)
    return text[-max_chars:] if max_chars > 0 else text


def is_housekeeping(body: dict, max_tokens_limit: int, system_patterns: list[re.Pattern]) -> bool:
    """True for calls that are no conversation turn: Codex's compaction (its prompt as the
    last user input, see ``HOUSEKEEPING_USER_PROMPTS``), and by the same knobs as for
    Anthropic, ``max_output_tokens <= max_tokens_limit`` (when the limit is > 0), or
    ``instructions`` (or a system/developer input item) matching one of ``system_patterns``.
    The knobs' patterns never see the user's words: a pattern written for a system prompt
    must not silence a user who happens to say the same thing."""
    last = user_text(body)
    if any(p.search(last) for p in HOUSEKEEPING_USER_PROMPTS):
        return True
    limit = body.get("max_output_tokens")
    if (max_tokens_limit > 0 and isinstance(limit, int) and not isinstance(limit, bool)
            and limit <= max_tokens_limit):
        return True
    if not system_patterns:
        return False
    system = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    items = body.get("input") if isinstance(body.get("input"), list) else ()
    system += [content_text(i.get("content")) for i in items
               if isinstance(i, dict) and i.get("role") in ("system", "developer")]
    text = "\n".join(system)
    return bool(text) and any(p.search(text) for p in system_patterns)


def inject(body: dict, block: str) -> dict:
    """A new body whose ``instructions`` end with ``block`` (a blank line apart); the
    client's ``input`` items are shared, never modified."""
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        return {**body, "instructions": f"{instructions}\n\n{block}"}
    return {**body, "instructions": block}


def user_text(body: dict) -> str:
    """The last user text of the input, without an injected memory block ("" when none)."""
    texts = _user_texts(body)
    return texts[-1] if texts else ""


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
        name_field, args_field = _TOOL_ITEMS[kind]
        name = name_field[1:-1] if name_field.startswith("[") else _str(item.get(name_field))
        args = item.get(args_field)
        return f"[tool call {name}: {args if isinstance(args, str) else json.dumps(args)}]"
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
        self._buf = bytearray()
        self._parts: dict[int, list[str]] = {}    # output_index → text pieces
        self._failed = False

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
                self._event(line[5:].strip())

    def _event(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        index = event.get("output_index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else 0
        kind = event.get("type")
        if kind in _FAILED:
            self._failed = True
        elif kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
            self._parts.setdefault(index, []).append(event["delta"])
        elif kind == "response.output_item.done":
            item = event.get("item")
            message = isinstance(item, dict) and item.get("type") == "message"
            text = item_text(item, self.store_thinking)
            if text and not (message and index in self._parts):   # its deltas came first
                self._parts[index] = [text]

    def text(self) -> str:
        if not self.stream:
            self._from_body()
        if self._failed:
            return ""
        texts = ("".join(self._parts[i]).strip() for i in sorted(self._parts))
        return "\n".join(t for t in texts if t)

    def _from_body(self) -> None:
        try:
            body = json.loads(bytes(self._buf))
        except ValueError:
            return
        output = body.get("output") if isinstance(body, dict) else None
        self._failed = isinstance(body, dict) and body.get("status") == "failed"
        self._parts = {i: [item_text(item, self.store_thinking)]
                       for i, item in enumerate(output if isinstance(output, list) else ())}
