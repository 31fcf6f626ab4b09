"""A pure model of the providers' prompt caching (no I/O), for fakes and benches.

    cache = AnthropicCache(clock=time.monotonic)
    usage = cache.bill(body)   # {"input_tokens", "cache_creation_input_tokens",
                               #  "cache_read_input_tokens"} for a /v1/messages body
    cache = OpenAICache()
    cached, total = cache.bill(chat_prompt(body), model, body.get("prompt_cache_key"))

Anthropic (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching): the prompt
is read in the order tools → system → messages; every block carrying ``cache_control`` (at
most 4, or a top-level ``cache_control``: the last block) is a breakpoint, and the prefix up
to it is written to the cache when it is at least the model's minimum cacheable length
(1,024 tokens for Sonnet/Opus-class models, 2,048 for Haiku). A later request reads the
longest cached prefix it finds at one of its breakpoints or up to 20 blocks before one (the
lookback); a hit refreshes the entry's TTL (5 minutes, or ``"ttl": "1h"``). Usage reports the
tokens read, the tokens written (from the read prefix to the last breakpoint) and the rest
(``input_tokens``: after the last breakpoint).

OpenAI (https://platform.openai.com/docs/guides/prompt-caching): automatic on prompts of
1,024 tokens or more; a hit is the longest prefix shared with a recent prompt, counted in
128-token increments; requests are routed (and so cached) by the prefix and the
``prompt_cache_key`` when one is given; entries live ~5-10 minutes of inactivity (5 here).
Chat completions are read as tools, then messages; the Responses API as instructions, tools,
then input (the order the brief for this model gives; the providers do not publish theirs).

Token counts are *estimates*: a block's tokens are its canonical JSON (sorted keys, no
spaces, ``cache_control`` removed) divided by 4, rounded up; the providers' tokenizers are
not reproduced. What matters for a comparison is that every path is counted the same way.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from typing import Callable, Iterable

CHARS_PER_TOKEN = 4
ANTHROPIC_TTL = {"5m": 300.0, "1h": 3600.0}
ANTHROPIC_LOOKBACK = 20
ANTHROPIC_MAX_BREAKPOINTS = 4
OPENAI_MINIMUM = 1024
OPENAI_INCREMENT = 128
OPENAI_TTL = 300.0
OPENAI_KEEP = 64      # recent prompts kept per (model, key): enough for a bench's sessions


class CacheRequestError(ValueError):
    """A request the provider refuses (more than 4 breakpoints): a 400."""


def canonical(value: object) -> str:
    """The JSON a block is counted and compared by, without ``cache_control`` markers."""
    return json.dumps(strip_markers(value), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


def strip_markers(value: object) -> object:
    if isinstance(value, dict):
        return {k: strip_markers(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [strip_markers(v) for v in value]
    return value


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def anthropic_minimum(model: str) -> int:
    return 2048 if "haiku" in model else 1024


# -- Anthropic ----------------------------------------------------------------------------

def anthropic_blocks(body: dict) -> list[tuple[str, dict | None]]:
    """(canonical text, cache_control or None) per block, tools → system → messages. A
    message's blocks carry its role, and its first block says a message starts there."""
    out: list[tuple[str, dict | None]] = []
    for tool in body.get("tools") or []:
        out.append((canonical(["tool", tool]), tool.get("cache_control")))
    system = body.get("system")
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    for block in system or []:
        out.append((canonical(["system", block]), block.get("cache_control")))
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        for i, block in enumerate(content or []):
            marker = block.get("cache_control") if isinstance(block, dict) else None
            out.append((canonical([message.get("role"), i == 0, block]), marker))
    if body.get("cache_control") and out:        # automatic caching: the last block
        out[-1] = (out[-1][0], body["cache_control"])
    return out


class AnthropicCache:
    """The prefix cache of one organisation: prefix hash → expiry time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.entries: dict[str, float] = {}

    def bill(self, body: dict) -> dict[str, int]:
        model = str(body.get("model", ""))
        blocks = anthropic_blocks(body)
        hashes, ends = _prefixes(model, (text for text, _ in blocks))
        points = [i for i, (_, marker) in enumerate(blocks) if marker]
        if len(points) > ANTHROPIC_MAX_BREAKPOINTS:
            raise CacheRequestError("A maximum of 4 blocks with cache_control may be provided.")
        now = self.clock()
        read_at = self._longest_hit(hashes, points, now)
        read = ends[read_at] if read_at is not None else 0
        minimum = anthropic_minimum(model)
        written_to = read
        for i in points:
            if ends[i] <= read:          # cached already: a read refreshes it too
                if self.entries.get(hashes[i], 0.0) > now:
                    self.entries[hashes[i]] = max(self.entries[hashes[i]], now + 300.0)
                continue
            if ends[i] < minimum:
                continue
            ttl = ANTHROPIC_TTL.get(str((blocks[i][1] or {}).get("ttl", "5m")), 300.0)
            self.entries[hashes[i]] = now + ttl
            written_to = max(written_to, ends[i])
        total = ends[-1] if ends else 0
        return {"input_tokens": total - written_to,
                "cache_creation_input_tokens": written_to - read,
                "cache_read_input_tokens": read}

    def _longest_hit(self, hashes: list[str], points: list[int], now: float) -> int | None:
        """The furthest block index whose prefix is cached, looking at each breakpoint and
        up to 20 blocks before it; the hit's TTL is refreshed."""
        best = None
        for point in points:
            for i in range(point, max(-1, point - ANTHROPIC_LOOKBACK), -1):
                expiry = self.entries.get(hashes[i])
                if expiry is not None and expiry > now:
                    best = i if best is None else max(best, i)
                    break
        if best is not None:
            self.entries[hashes[best]] = max(self.entries[hashes[best]], now + 300.0)
        return best


def _prefixes(model: str, texts: Iterable[str]) -> tuple[list[str], list[int]]:
    """Per block: the hash of the prefix ending with it, and the tokens up to its end."""
    digest = hashlib.sha256(model.encode())
    hashes, ends, total = [], [], 0
    for text in texts:
        digest.update(text.encode() + b"\x00")
        hashes.append(digest.copy().hexdigest())
        total += estimate_tokens(text)
        ends.append(total)
    return hashes, ends


# -- OpenAI -------------------------------------------------------------------------------

def chat_prompt(body: dict) -> str:
    """A chat completions body as the text that is cached: tools, then messages."""
    parts = [canonical(["tool", t]) for t in body.get("tools") or []]
    parts += [canonical(["message", m]) for m in body.get("messages") or []]
    return "".join(parts)


def responses_prompt(body: dict) -> str:
    """A Responses body as the text that is cached: instructions, tools, then input."""
    parts = []
    if body.get("instructions"):
        parts.append(canonical(["instructions", body["instructions"]]))
    parts += [canonical(["tool", t]) for t in body.get("tools") or []]
    items = body.get("input")
    items = [{"role": "user", "content": items}] if isinstance(items, str) else items or []
    parts += [canonical(["item", item]) for item in items]
    return "".join(parts)


class OpenAICache:
    """Recent prompts per (model, prompt_cache_key) with their expiry."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.prompts: dict[tuple[str, str | None], dict[str, float]] = {}

    def bill(self, prompt: str, model: str, key: str | None = None) -> tuple[int, int]:
        """(cached tokens, prompt tokens) for ``prompt``; the prompt is then cached."""
        total = estimate_tokens(prompt)
        if total < OPENAI_MINIMUM:
            return 0, total
        now = self.clock()
        recent = self.prompts.setdefault((model, key), {})
        shared, hit = 0, None
        for text, expiry in recent.items():
            if expiry > now:
                common = len(os.path.commonprefix([text, prompt])) // CHARS_PER_TOKEN
                if common > shared:
                    shared, hit = common, text
        cached = shared // OPENAI_INCREMENT * OPENAI_INCREMENT
        if cached < OPENAI_MINIMUM:
            cached, hit = 0, None
        if hit is not None:
            recent[hit] = now + OPENAI_TTL
        recent[prompt] = now + OPENAI_TTL
        for stale in [t for t, e in recent.items() if e <= now]:
            del recent[stale]
        while len(recent) > OPENAI_KEEP:
            del recent[next(iter(recent))]
        return min(cached, total), total
