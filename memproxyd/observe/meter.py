"""What one proxied call used: the meter on its reply and the ledger row it becomes.

The meter wraps the memory tap (``upstream.Tap``) of a call, so it sees exactly the bytes
relayed to the client, on the native and the litellm path alike. On the request path it only
notes the time of the first byte and keeps the few SSE lines that carry ``"usage"`` (or the
whole body of a JSON reply); parsing them and pricing the tokens happen later, on the
ledger's writer thread (``ledger.py``).

OpenAI-wire streams only report usage when asked (``stream_options.include_usage``).
``ask_for_usage`` asks on the client's behalf when it did not, and the meter then removes
that extra usage-only event from what the client receives, so the client's stream is the one
it asked for.
"""
from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

import attrs
from aiohttp import web

from memproxyd import appkeys
from memproxyd.call import Call

CALL = web.RequestKey("usage_call", Call)      # set by gateway.new_call
METER = web.RequestKey("usage_meter", object)  # Meter, set by gateway.proxy
# the model a call asked for, set before it is looked up: a refused call (unknown model,
# [access], missing key) gets its ledger row too
REQUESTED = web.RequestKey("usage_requested", str)
USAGE_MARK = b'"usage"'
GEMINI_USAGE_MARK = b'"usageMetadata"'   # the Gemini API's


class Meter:
    """A ``Tap`` in front of the memory tap (or none): first-byte time and usage lines."""

    def __init__(self, call: Call, inner=None):
        self.inner = inner
        self.stream = call.stream
        self.strip = False            # the client did not ask for the usage event: drop it
        self.first_at: float | None = None
        self.kept: list[bytes] = []   # JSON documents that carry usage
        self.tail = b""
        self.skip_blank = False       # the blank line ending a dropped event is dropped too
        self.ok = True

    def feed(self, chunk: bytes) -> bytes | None:
        """Note ``chunk``; returns the bytes to relay instead, or None for ``chunk`` itself."""
        if self.first_at is None and chunk:
            self.first_at = time.perf_counter()
        out = None
        if not self.stream:
            self.kept.append(chunk)
        elif self.strip:
            out = self._strip(chunk)
        else:
            self._scan(chunk)
        if self.inner is not None:
            self.inner.feed(chunk)   # memory reads usage-only events as clients send them
        return out

    async def finish(self, call: Call, ok: bool) -> None:
        self.ok = ok
        if self.inner is not None:
            await self.inner.finish(call, ok)

    def _scan(self, chunk: bytes) -> None:
        data = self.tail + chunk if self.tail else chunk
        end = data.rfind(b"\n")
        if end < 0:
            self.tail = data
            return
        self.tail = data[end + 1:]
        for mark in (USAGE_MARK, GEMINI_USAGE_MARK):
            if mark in data:
                self.kept.extend(line[5:] for line in data[:end].split(b"\n")
                                 if line.startswith(b"data:") and mark in line)

    def _strip(self, chunk: bytes) -> bytes:
        """Whole lines only (an unfinished one waits for its end); the usage-only event that
        ``ask_for_usage`` added is kept for the ledger and not relayed, nor the blank line
        that ends it. ``\n`` and ``\r\n`` framing alike."""
        data = self.tail + chunk if self.tail else chunk
        end = data.rfind(b"\n")
        if end < 0:
            self.tail = data
            return b""
        self.tail = data[end + 1:]
        lines = data[:end + 1]
        if USAGE_MARK not in lines and not self.skip_blank:
            return lines
        out = []
        for line in lines.splitlines(keepends=True):
            if self.skip_blank:
                self.skip_blank = False
                if not line.strip():
                    continue
            payload = line[5:].strip() if line.startswith(b"data:") else b""
            if USAGE_MARK in payload:
                self.kept.append(payload)
                if _usage_only(payload):
                    self.skip_blank = True
                    continue
            out.append(line)
        return b"".join(out)


def _usage_only(payload: bytes) -> bool:
    try:
        event = json.loads(payload)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("choices") == []


def meter(call: Call, tap=None) -> Meter:
    """The call's meter, wrapping ``tap``; kept on the request for the ledger row."""
    found = Meter(call, tap)
    call.request[METER] = found
    return found


def ask_for_usage(call: Call, payload: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-wire streaming body that asks for the final usage event (unless
    ``[usage] stream_usage = false``, for upstreams that refuse ``stream_options``)."""
    found = call.request.get(METER)
    options = payload.get("stream_options")
    options = options if isinstance(options, dict) else {}
    if (not call.stream or found is None or options.get("include_usage") is True
            or not _config(call).usage.stream_usage):
        return payload
    found.strip = True
    return {**payload, "stream_options": {**options, "include_usage": True}}


def _config(call: Call):
    return call.request.app[appkeys.STATE].config


# -- reading usage (on the writer thread) -----------------------------------------------

class Tokens(NamedTuple):
    """One call's tokens, in OpenAI's sense: ``prompt`` includes the cached ones (read from
    the cache) and the cache writes (Anthropic's ``cache_creation_input_tokens``)."""

    prompt: int
    completion: int
    cached: int
    cache_write: int = 0


def usage_of(documents: list[bytes]) -> Tokens | None:
    """The tokens reported in the kept documents of a reply, any of the four protocols'
    shapes."""
    found: dict[str, int] = {}
    for doc in documents:
        try:
            event = json.loads(doc)
        except ValueError:
            continue
        # a list: the Gemini API's stream without ``alt=sse``, one JSON array
        for item in event if isinstance(event, list) else [event]:
            for usage in _usages(item):
                for key, value in _normalise(usage).items():
                    found[key] = max(found.get(key, 0), value)
    if not found:
        return None
    return Tokens(found.get("prompt", 0), found.get("completion", 0), found.get("cached", 0),
                  found.get("cache_write", 0))


def _usages(event: object) -> list[dict]:
    if not isinstance(event, dict):
        return []
    out = [event.get("usage"), event.get("usageMetadata")]   # usageMetadata: Gemini
    for holder in ("message", "response"):   # Anthropic message_start; Responses events
        if isinstance(event.get(holder), dict):
            out.append(event[holder].get("usage"))
    return [u for u in out if isinstance(u, dict)]


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _normalise(usage: dict) -> dict[str, int]:
    if "promptTokenCount" in usage or "candidatesTokenCount" in usage:  # Gemini
        # thinking is billed as output; promptTokenCount includes the cached part
        return {"prompt": _int(usage.get("promptTokenCount")),
                "completion": _int(usage.get("candidatesTokenCount"))
                + _int(usage.get("thoughtsTokenCount")),
                "cached": _int(usage.get("cachedContentTokenCount"))}
    if "prompt_tokens" in usage or "completion_tokens" in usage:        # OpenAI chat
        details = usage.get("prompt_tokens_details") or {}
        return {"prompt": _int(usage.get("prompt_tokens")),
                "completion": _int(usage.get("completion_tokens")),
                "cached": _int(details.get("cached_tokens"))}
    if "input_tokens_details" in usage or "total_tokens" in usage:      # Responses
        details = usage.get("input_tokens_details") or {}
        return {"prompt": _int(usage.get("input_tokens")),
                "completion": _int(usage.get("output_tokens")),
                "cached": _int(details.get("cached_tokens"))}
    cached = _int(usage.get("cache_read_input_tokens"))                 # Anthropic
    created = _int(usage.get("cache_creation_input_tokens"))
    out = {"completion": _int(usage.get("output_tokens"))}
    if "input_tokens" in usage:
        out["prompt"] = _int(usage.get("input_tokens")) + cached + created
        out["cached"] = cached
        out["cache_write"] = created
    return out


@attrs.define
class Row:
    """One ledger row before it is written; ``documents`` are parsed on the writer thread."""

    ts: float
    user_id: str
    project: str
    protocol: str
    endpoint: str
    model: str
    deployment: str
    status: int
    overhead_ms: float | None
    upstream_ms: float | None
    latency_ms: float
    ttft_ms: float | None
    memory: str
    memories: int
    trace_id: str
    documents: list[bytes] = attrs.field(factory=list)
    entry: Any = None             # config.ModelEntry: model_info prices
