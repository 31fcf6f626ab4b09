"""One proxied call as it passes through the gateway: who, which deployment, what body,
and the timings and memory outcome reported back in ``x-memproxy-*`` headers."""
from __future__ import annotations

import time
from typing import Any

import attrs
from aiohttp import web

from memproxyd.deployments import Deployment


@attrs.define
class Call:
    request: web.Request
    protocol: str                       # errors.OPENAI | errors.ANTHROPIC
    user_id: str
    deployment: Deployment
    body: dict[str, Any]                # the client's JSON; never mutated
    started: float = attrs.field(factory=time.perf_counter)
    memory_status: str = "off"          # injected | none | skipped | off | error
    memories: int = 0
    upstream_s: float = 0.0             # time spent waiting on the upstream
    recalled_ids: tuple[str, ...] = ()

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    def overhead_ms(self) -> float:
        return (time.perf_counter() - self.started - self.upstream_s) * 1000.0

    def headers(self) -> dict[str, str]:
        """The ``x-memproxy-*`` headers; call just before the response headers go out."""
        return {
            "x-memproxy-user-id": self.user_id,
            "x-memproxy-memory": self.memory_status,
            "x-memproxy-memories": str(self.memories),
            "x-memproxy-overhead-ms": f"{self.overhead_ms():.3f}",
        }
