"""One proxied call as it passes through the gateway: who, which deployment, what body,
and the timings and memory outcome reported back in ``x-memproxy-*`` headers."""
from __future__ import annotations

import time
from typing import Any

import attrs
from aiohttp import web

from memproxyd import appkeys
from memproxyd.config import resolve_secret
from memproxyd.deployments import Deployment

SUPERMEMORY_KEY_HEADER = "x-supermemory-api-key"


@attrs.define
class Call:
    request: web.Request
    protocol: str                       # errors.OPENAI | ANTHROPIC | RESPONSES | COMPLETIONS | GEMINI
    user_id: str
    deployment: Deployment
    body: dict[str, Any]                # the client's JSON; never mutated
    started: float = attrs.field(factory=time.perf_counter)
    memory_status: str = "off"          # injected | none | skipped | off | error
    memories: int = 0
    upstream_s: float = 0.0             # time spent waiting on the upstream
    recalled_ids: tuple[str, ...] = ()
    conversation: str = ""              # the memory journal's key for the conversation
    # a stream's response once every chunk of the upstream's whole stream was written: a
    # client that hangs up after that (the openai SDK does at [DONE], before the stream's
    # end) had the whole reply
    relayed: web.StreamResponse | None = None
    # a protocol that says "stream" outside the body (the Gemini API, by its URL); None:
    # the body's ``stream`` field
    streaming: bool | None = None

    @property
    def stream(self) -> bool:
        if self.streaming is not None:
            return self.streaming
        return bool(self.body.get("stream"))

    def router_headers(self) -> dict[str, str]:
        """Supermemory Memory Router deployments only: who the memory belongs to, and the
        Supermemory key; on the native and the litellm path alike."""
        if not self.deployment.entry.supermemory_router:
            return {}
        headers = {"x-sm-user-id": self.user_id}
        key = resolve_secret(self.request.app[appkeys.STATE].config.supermemory.api_key)
        if key:
            headers[SUPERMEMORY_KEY_HEADER] = key
        return headers

    def overhead_ms(self) -> float:
        return (time.perf_counter() - self.started - self.upstream_s) * 1000.0

    def headers(self) -> dict[str, str]:
        """The ``x-memproxy-*`` headers; call just before the response headers go out."""
        return {
            "x-memproxy-user-id": self.user_id,
            "x-memproxy-deployment": self.deployment.name,
            "x-memproxy-memory": self.memory_status,
            "x-memproxy-memories": str(self.memories),
            "x-memproxy-overhead-ms": f"{self.overhead_ms():.3f}",
        }
