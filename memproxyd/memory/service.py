"""The memory pipeline as the gateway sees it: ``prepare`` a call (recall, inject) and return
a tap that remembers the exchange once the reply is complete.

* **Mode** (``x-memory-mode``): ``on`` recall and remember, ``read`` recall only, ``write``
  remember only, ``off`` neither.
* **Recall** runs the user's search within ``recall_timeout_ms``; on timeout or any error the
  call goes on without memory (``x-memproxy-memory: error``). ``skipped`` means policy
  chose not to use memory for this call (model opted out, Memory Router deployment,
  housekeeping call, write-only mode, nothing to search with); ``none`` that nothing relevant
  was found.
* **Remember**: the last user message and the assistant's reply, secrets redacted, are written
  to the durable outbox *before the response ends*; the outbox worker delivers them to the
  store with retries. The injected block is never part of what is stored.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from typing import Any

from memproxyd.config import Config
from memproxyd.errors import ANTHROPIC, ApiError
from memproxyd.memory import anthropic_wire, openai_wire
from memproxyd.memory.base import Memory, MemoryStore, NewMemory
from memproxyd.memory.redact import redact
from memproxyd.pipeline import Call

log = logging.getLogger(__name__)

MODES = ("on", "off", "read", "write")
MODE_HEADER = "x-memory-mode"
CONVERSATION_HEADER = "x-memproxy-conversation-id"
ADAPTERS = {ANTHROPIC: anthropic_wire}


def adapter_for(protocol: str):
    return ADAPTERS.get(protocol, openai_wire)


def format_block(memories: list[Memory], max_chars: int) -> str:
    """The delimited block injected into a call, within ``max_chars``."""
    head = (f"{openai_wire.BLOCK_START}\nRelevant memories from earlier conversations with "
            "this user (use them only where they help):\n")
    tail = f"\n{openai_wire.BLOCK_END}"
    lines, used = [], len(head) + len(tail)
    for memory in memories:
        day = time.strftime("%Y-%m-%d", time.gmtime(memory.created_at))
        line = f"- [{day}] " + " ".join(memory.content.split())
        room = max_chars - used
        if room < 80:
            break
        lines.append(line if len(line) <= room else line[:room - 1] + "…")
        used += len(lines[-1]) + 1
    return head + "\n".join(lines) + tail if lines else ""


class RememberTap:
    """Sees the reply bytes as they are relayed; ``finish`` enqueues the exchange."""

    def __init__(self, service: "MemoryService", call: Call, adapter):
        self.service = service
        self.adapter = adapter
        self.collector = adapter.ReplyCollector(call.stream,
                                                service.config.memory.store_thinking)

    def feed(self, chunk: bytes) -> None:
        self.collector.feed(chunk)

    async def finish(self, call: Call, ok: bool) -> None:
        if not ok:
            return
        try:
            await self.service.remember(call, self.adapter.user_text(call.body),
                                        self.collector.text())
        except Exception:  # memory never fails the call; the reason is in the log
            log.exception("remember failed user_id=%s", call.user_id)
            call.memory_status = "error"


class MemoryService:
    def __init__(self, config: Config, store: MemoryStore, outbox, sessions):
        self.config = config
        self.store = store
        self.outbox = outbox
        self.sessions = sessions
        self.skip_patterns = [re.compile(p) for p in config.memory.skip_system_patterns]

    def status(self) -> dict[str, Any]:
        return self.store.status()

    def _mode(self, call: Call) -> str:
        mode = call.request.headers.get(MODE_HEADER, "on").strip().lower()
        if mode not in MODES:
            raise ApiError(400, f"invalid {MODE_HEADER}: expected one of {', '.join(MODES)}",
                           "invalid_memory_mode")
        return mode

    def _skipped_by_policy(self, call: Call, adapter) -> bool:
        memory, name = self.config.memory, call.deployment.name
        if call.deployment.entry.supermemory_router:
            return True
        if memory.include_models and name not in memory.include_models:
            return True
        if name in memory.exclude_models:
            return True
        return adapter.is_housekeeping(call.body, memory.skip_small_max_tokens,
                                       self.skip_patterns)

    async def prepare(self, call: Call, session) -> tuple[dict[str, Any], RememberTap | None]:
        mode = self._mode(call)
        adapter = adapter_for(call.protocol)
        if mode == "off":
            call.memory_status = "off"
            return call.body, None
        if self._skipped_by_policy(call, adapter):
            call.memory_status = "skipped"
            return call.body, None
        body = call.body
        call.memory_status = "skipped"
        if mode in ("on", "read"):
            body = await self._recall(call, session, adapter)
        tap = RememberTap(self, call, adapter) if mode in ("on", "write") else None
        return body, tap

    async def _recall(self, call: Call, session, adapter) -> dict[str, Any]:
        memory = self.config.memory
        query = adapter.query(call.body, memory.query_strategy, memory.max_query_chars)
        if not query:
            return call.body
        try:
            found = await asyncio.wait_for(
                self.store.search(call.user_id, query, memory.top_k, session),
                memory.recall_timeout_ms / 1000)
        except Exception as exc:  # timeout or backend failure: proceed without memory
            call.memory_status = "error"
            log.warning("recall failed user_id=%s error=%s", call.user_id,
                        type(exc).__name__)
            return call.body
        found = [m for m in found if m.score >= memory.min_score]
        block = format_block(found, memory.max_block_chars)
        if not block:
            call.memory_status = "none"
            return call.body
        call.memory_status, call.memories = "injected", block.count("\n- [")
        call.recalled_ids = tuple(m.id for m in found)
        return adapter.inject(call.body, block)

    async def remember(self, call: Call, user_text: str, reply: str) -> None:
        if not user_text or not reply:
            return
        content = f"User: {user_text}\nAssistant: {reply}"
        if self.config.memory.redact_secrets:
            content = redact(content)
        content = content[:self.config.memory.max_content_chars]
        key = hashlib.sha256(f"{call.user_id}\0{content}".encode()).hexdigest()[:32]
        metadata = {"source": "exchange", "model": call.deployment.name,
                    "protocol": call.protocol, "time": time.time()}
        conversation = call.request.headers.get(CONVERSATION_HEADER)
        if conversation:
            metadata["conversation_id"] = conversation[:200]
        await self.outbox.enqueue(call.user_id, [NewMemory(content, metadata, key)])


class NoMemory:
    """``[memory] backend = "off"``: every call goes upstream unchanged."""

    async def prepare(self, call: Call, session) -> tuple[dict[str, Any], None]:
        call.memory_status = "off"
        return call.body, None

    def status(self) -> dict[str, Any]:
        return {"backend": "off"}
