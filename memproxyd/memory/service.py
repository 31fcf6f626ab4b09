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
  store with retries. The injected block is never part of what is stored, not even when the
  model echoes it back in its reply.
* **Never fails the call**: an unexpected error while preparing (a malformed body the
  adapters did not foresee) sends the client's body unchanged with ``error``; one while
  reading the reply stops remembering that exchange and leaves the relayed bytes alone.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from memproxyd.config import Config
from memproxyd.errors import ANTHROPIC, ApiError
from memproxyd.memory import anthropic_wire, openai_wire
from memproxyd.memory.block import BLOCK_END, BLOCK_START, strip_block
from memproxyd.memory.base import Memory, MemoryStore, NewMemory
from memproxyd.memory.redact import redact
from memproxyd.pipeline import Call
from memproxyd.state import RuntimeState

log = logging.getLogger(__name__)

MODES = ("on", "off", "read", "write")
MODE_HEADER = "x-memory-mode"
CONVERSATION_HEADER = "x-memproxy-conversation-id"
ADAPTERS = {ANTHROPIC: anthropic_wire}


def adapter_for(protocol: str):
    return ADAPTERS.get(protocol, openai_wire)


def format_block(memories: list[Memory], max_chars: int) -> str:
    """The delimited block injected into a call, within ``max_chars``."""
    head = (f"{BLOCK_START}\nRelevant memories from earlier conversations with "
            "this user (use them only where they help):\n")
    tail = f"\n{BLOCK_END}"
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


def without_block(text: str) -> str:
    """``text`` without any memory block, including one cut off before its end (a reply that
    echoed the block and ran out of tokens)."""
    text = strip_block(text)
    start = text.find(BLOCK_START)
    return text[:start].strip() if start >= 0 else text


class RememberTap:
    """Sees the reply bytes as they are relayed; ``finish`` enqueues the exchange.

    Whatever the collector makes of a chunk, ``feed`` never raises: the first failure turns
    the tap off for this call (logged once, without content) and the exchange is not
    remembered; the client's stream is not touched either way.
    """

    def __init__(self, service: "MemoryService", call: Call, adapter):
        self.service = service
        self.adapter = adapter
        self.user_id = call.user_id
        self.collector = adapter.ReplyCollector(call.stream,
                                                service.config.memory.store_thinking)
        self.broken = False

    def feed(self, chunk: bytes) -> None:
        if self.broken:
            return
        try:
            self.collector.feed(chunk)
        except Exception as exc:  # a reply we cannot read is relayed all the same
            self.broken = True
            log.warning("reply not readable, exchange not remembered user_id=%s error=%s",
                        self.user_id, type(exc).__name__)

    async def finish(self, call: Call, ok: bool) -> None:
        if not ok or self.broken:
            return
        try:
            await self.service.remember(call, self.adapter.user_text(call.body),
                                        self.collector.text())
        except Exception:  # memory never fails the call; the reason is in the log
            log.exception("remember failed user_id=%s", call.user_id)
            call.memory_status = "error"


class MemoryService:
    def __init__(self, state: RuntimeState, store: MemoryStore, outbox, sessions):
        self.state = state
        self.store = store
        self.outbox = outbox
        self.sessions = sessions

    @property
    def config(self) -> Config:
        """The current config: ``[memory]`` settings follow a reload."""
        return self.state.config

    def status(self) -> dict[str, Any]:
        return self.store.status()

    async def health(self) -> dict[str, Any]:
        """``status`` and the outbox depth read now (within a second: a database that does
        not answer must not hold up readiness; its depth is then null)."""
        outbox = dict(getattr(self.outbox, "status", dict)())
        try:
            outbox["depth"] = await asyncio.wait_for(self.outbox.count(), 1.0)
        except Exception as exc:  # noqa: BLE001 - reported, never raised
            outbox["depth"], outbox["error"] = None, type(exc).__name__
        return {**self.status(), "outbox": outbox}

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
        patterns = [re.compile(p) for p in memory.skip_system_patterns]  # re caches these
        return adapter.is_housekeeping(call.body, memory.skip_small_max_tokens, patterns)

    async def prepare(self, call: Call, session) -> tuple[dict[str, Any], RememberTap | None]:
        mode = self._mode(call)          # a bad header is the client's error: a 400
        if mode == "off":
            call.memory_status = "off"
            return call.body, None
        try:
            return await self._prepare(call, session, mode)
        except Exception as exc:  # memory never fails the call
            call.memory_status, call.memories, call.recalled_ids = "error", 0, ()
            log.warning("memory prepare failed user_id=%s error=%s", call.user_id,
                        type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG))
            return call.body, None

    async def _prepare(self, call: Call, session,
                       mode: str) -> tuple[dict[str, Any], RememberTap | None]:
        adapter = adapter_for(call.protocol)
        call.memory_status = "skipped"
        if self._skipped_by_policy(call, adapter):
            return call.body, None
        body = call.body
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
        body = adapter.inject(call.body, block)
        call.memory_status, call.memories = "injected", block.count("\n- [")
        call.recalled_ids = tuple(m.id for m in found)
        return body

    async def remember(self, call: Call, user_text: str, reply: str) -> None:
        """Queue the exchange. Its key is a fresh uuid4, made once here and stored with the
        outbox entry, so every retry of this delivery carries the same key (idempotent) while
        the same words said again in another call are a memory of their own. Exact duplicates
        (a client resending a request) are not merged: that is out of scope here."""
        reply = without_block(reply)
        if not user_text or not reply:
            return
        content = f"User: {user_text}\nAssistant: {reply}"
        if self.config.memory.redact_secrets:
            content = redact(content)
        content = content[:self.config.memory.max_content_chars]
        metadata = {"source": "exchange", "model": call.deployment.name,
                    "protocol": call.protocol, "time": time.time()}
        conversation = call.request.headers.get(CONVERSATION_HEADER)
        if conversation:
            metadata["conversation_id"] = conversation[:200]
        await self.outbox.enqueue(call.user_id, [NewMemory(content, metadata, uuid.uuid4().hex)])

    async def forget_all(self, user_id: str, session) -> int:
        """Forget everything of the user, including exchanges still waiting in the outbox:
        those are purged first, so none is delivered after the store was emptied."""
        purged = await self.outbox.purge(user_id)
        if purged:
            log.info("outbox purged user_id=%s entries=%d", user_id, purged)
        return await self.store.forget_all(user_id, session)


class NoMemory:
    """``[memory] backend = "off"``: every call goes upstream unchanged."""

    async def prepare(self, call: Call, session) -> tuple[dict[str, Any], None]:
        call.memory_status = "off"
        return call.body, None

    def status(self) -> dict[str, Any]:
        return {"backend": "off"}

    async def health(self) -> dict[str, Any]:
        return self.status()
