"""OpenAI's legacy completions (``/v1/completions``) as the memory service sees it; used only
with ``[memory] completions = true`` (off by default: autocomplete is latency-critical and
its prompts are code fragments, not conversation).

A string ``prompt`` is both the recall query (its newest ``max_chars``) and the remembered
user text; the memory block goes before it, a blank line apart (a completion model reads
its whole prompt as context; there is no system slot). Batched prompts (a list) and token
arrays are left alone: nothing recalled, nothing remembered. The reply is ``choices[0].text``.
"""
from __future__ import annotations

import re

from memproxyd.memory.block import strip_block
from memproxyd.memory.turn import Turn, anchor
from memproxyd.memory.wire.sse import ReplyReader


def _prompt(body: dict) -> str:
    prompt = body.get("prompt")
    return strip_block(prompt) if isinstance(prompt, str) else ""


def query(body: dict, strategy: str, max_chars: int, extra: tuple = ()) -> str:
    """The prompt's newest ``max_chars`` (a prompt is one turn: every strategy is the same)."""
    prompt = _prompt(body)
    return prompt[-max_chars:] if max_chars > 0 else prompt


def is_housekeeping(body: dict, max_tokens_limit: int, system_patterns: list[re.Pattern]) -> bool:
    """``max_tokens <= max_tokens_limit`` (when > 0); completions have no system prompt."""
    limit = body.get("max_tokens")
    return (max_tokens_limit > 0 and isinstance(limit, int) and not isinstance(limit, bool)
            and limit <= max_tokens_limit)


def inject(body: dict, block: str) -> dict:
    return {**body, "prompt": f"{block}\n\n{body['prompt']}"}


def human_messages(body: dict, extra: tuple = ()) -> list[tuple[int, str]]:
    """A prompt is one turn of its own (index 0)."""
    prompt = _prompt(body)
    return [(0, prompt)] if prompt else []


def inject_at(body: dict, blocks: dict[int, str]) -> dict:
    return inject(body, blocks[0]) if blocks.get(0) else body


def conversation_of(body: dict) -> tuple[str, str]:
    """(the client's conversation id, its system text): a completion names none, has none."""
    return "", ""


def turn(body: dict, extra: tuple = (), humans: list | None = None) -> Turn:
    """A completion is a turn of its own: the prompt (no scaffolding is known here)."""
    prompt = _prompt(body)
    return Turn(prompt, True, (), anchor([prompt])) if prompt else Turn("", new=False)


def _choice_text(payload: object) -> str:
    choices = payload.get("choices") if isinstance(payload, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            text = choice.get("text")
            return text if isinstance(text, str) else ""
    return ""


class ReplyCollector:
    """The completion text of the first choice, from JSON or SSE bytes split anywhere."""

    def __init__(self, stream: bool, store_thinking: bool = False):
        self.stream = stream
        self._reader = ReplyReader(stream)
        self._text: list[str] = []

    def feed(self, chunk: bytes) -> None:
        for event in self._reader.events(chunk):
            self._text.append(_choice_text(event))

    def text(self) -> str:
        if not self.stream:
            return _choice_text(self._reader.whole()).strip()
        return "".join(self._text).strip()

    answer = text

    def tool_calls(self) -> list[str]:
        return []       # completions call no tools

