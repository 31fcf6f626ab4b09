"""The memory pipeline as the gateway sees it: ``prepare`` a call (recall, inject) and return
a tap that remembers the exchange once the reply is complete.

* **Mode** (``x-memory-mode``): ``on`` recall and remember, ``read`` recall only, ``write``
  remember only, ``off`` neither. Legacy completions are ``off`` unless ``[memory]
  completions = true``.
* **Adapters**: one per wire protocol (``ADAPTERS``: OpenAI chat, Anthropic Messages, the
  Responses API, legacy completions), each with the same pure functions: ``query``,
  ``turn``, ``is_housekeeping``, ``inject`` and a ``ReplyCollector`` (``answer``,
  ``tool_calls``).
* **Recall** runs the user's search within ``recall_timeout_ms``; on timeout or any error the
  call goes on without memory (``x-memproxy-memory: error``). ``skipped`` means policy
  chose not to use memory for this call (model opted out, Memory Router deployment,
  housekeeping call, write-only mode, nothing to search with); ``none`` that nothing relevant
  was found.
* **Turns** (``memory/turn.py``): what is searched with and stored is the human's words of the
  latest turn, the client's scaffolding removed (``memory/wire/clients.py``, ``strip_patterns``).
  Recall runs once per turn; every call of an agent loop reuses the turn's block
  (``memory/turn_cache.py``). Known clients' side calls (titles, summaries, probes) are
  ``skipped``, as is a call with no human words at all.
* **Remember**: once per turn, from the call whose reply is the answer (no tool calls): the
  human's words, a line per tool call of the loop and the answer, within ``max_memory_chars``,
  secrets redacted, written to the durable outbox *before the response ends* under a key made
  from the turn (a retried call is stored once); the outbox worker delivers it to the store
  with retries. The injected block is never part of what is stored, not even when the model
  echoes it back in its reply.
* **Never fails the call**: an unexpected error while preparing (a malformed body the
  adapters did not foresee) sends the client's body unchanged with ``error``; one while
  reading the reply stops remembering that exchange and leaves the relayed bytes alone.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import time
from typing import Any

import attrs

from memproxyd.call import Call
from memproxyd.config import Config
from memproxyd.errors import ANTHROPIC, COMPLETIONS, GEMINI, RESPONSES, ApiError
from memproxyd.memory.base import MemoryStore, NewMemory
from memproxyd.memory.block import format_block, without_block
from memproxyd.memory.redact import redact
from memproxyd.memory.tap import RememberTap
from memproxyd.memory.turn import Turn, memory_text
from memproxyd.memory.turn_cache import Recalled, TurnCache
from memproxyd.memory.wire import (anthropic as anthropic_wire, completions as completions_wire,
                                   gemini as gemini_wire, openai as openai_wire,
                                   responses as responses_wire)
from memproxyd.state import RuntimeState

log = logging.getLogger(__name__)

MODES = ("on", "off", "read", "write")
MODE_HEADER = "x-memory-mode"
CONVERSATION_HEADER = "x-memproxy-conversation-id"
ADAPTERS = {ANTHROPIC: anthropic_wire, RESPONSES: responses_wire,
            COMPLETIONS: completions_wire, GEMINI: gemini_wire}


def adapter_for(protocol: str):
    return ADAPTERS.get(protocol, openai_wire)


@functools.lru_cache(maxsize=16)
def compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    return tuple(re.compile(p) for p in patterns)


class MemoryService:
    def __init__(self, state: RuntimeState, store: MemoryStore, outbox, sessions):
        self.state = state
        self.store = store
        self.outbox = outbox
        self.sessions = sessions
        self.turns = TurnCache()                 # anchor → the turn's block
        self.links = TurnCache(size=1024)        # response id → its turn (Responses API)

    @property
    def config(self) -> Config:
        """The current config: ``[memory]`` settings follow a reload."""
        return self.state.config

    def status(self) -> dict[str, Any]:
        return self.store.status()

    async def health(self) -> dict[str, Any]:
        """``status`` and the outbox: entries waiting, dead letters (failed for good), read
        now (within a second: a database that does not answer must not hold up readiness;
        the counts are then null)."""
        outbox = dict(getattr(self.outbox, "status", dict)())
        try:
            outbox["depth"] = outbox["pending"] = await asyncio.wait_for(self.outbox.count(), 1.0)
            outbox["dead"] = await asyncio.wait_for(self.outbox.dead(), 1.0)
            outbox["pending"] -= outbox["dead"]
        except Exception as exc:  # noqa: BLE001 - reported, never raised
            outbox.setdefault("depth", None)
            outbox["dead"], outbox["error"] = None, type(exc).__name__
        return {**self.status(), "outbox": outbox}

    async def retry_dead(self) -> int:
        """Put the outbox's dead letters back in the queue; returns how many."""
        retried = await self.outbox.retry_dead()
        if retried:
            log.info("outbox dead letters requeued entries=%d", retried)
        return retried

    def _mode(self, call: Call) -> str:
        mode = call.request.headers.get(MODE_HEADER, "on").strip().lower()
        if mode not in MODES:
            raise ApiError(400, f"invalid {MODE_HEADER}: expected one of {', '.join(MODES)}",
                           "invalid_memory_mode")
        return mode

    def _enabled_for(self, call: Call) -> bool:
        """Memory serves every endpoint but legacy completions, which need ``[memory]
        completions = true`` (autocomplete: latency-critical, code fragments for prompts)."""
        return call.protocol != COMPLETIONS or self.config.memory.completions

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
        if mode == "off" or not self._enabled_for(call):
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
        own = turn = adapter.turn(call.body, compiled(self.config.memory.strip_patterns))
        if not turn.human and not turn.side_call:
            turn = self._continued(call, turn)
        if turn.side_call or not turn.human or self._skipped_by_policy(call, adapter):
            return call.body, None
        anchor = self._anchor(call, turn)
        body = call.body
        if mode in ("on", "read"):
            # ``last_user`` searches with the turn's human words, which ``turn`` just found in
            # this body (not for a turn continued by id: its query is this call's new input)
            known = turn.human if turn is own and self.config.memory.query_strategy == \
                "last_user" else None
            body = await self._recall(call, session, adapter, anchor, known)
        if mode not in ("on", "write"):
            return body, None
        return body, RememberTap(call, adapter, turn, remember=self.remember, link=self.link,
                                 store_thinking=self.config.memory.store_thinking,
                                 cancel_safe=getattr(self.outbox, "cancel_safe", False))

    def link(self, call: Call, turn: Turn, calls: list[str], collector) -> None:
        """A reply that ended in tool calls and has an id (Responses API): the call that
        continues it by ``previous_response_id`` sends only the tools' outputs, so the turn
        (and the steps so far) is kept under that id."""
        response_id = getattr(collector, "response_id", "")
        if response_id:
            self.links.put(call.user_id, response_id,
                           attrs.evolve(turn, new=False, steps=(*turn.steps, *calls)))

    def _continued(self, call: Call, turn: Turn) -> Turn:
        previous = call.body.get("previous_response_id")
        linked = self.links.get(call.user_id, previous) if isinstance(previous, str) else None
        return linked or turn

    @staticmethod
    def _anchor(call: Call, turn: Turn) -> str:
        """The turn's anchor, within the client's ``x-memproxy-conversation-id`` if sent."""
        conversation = call.request.headers.get(CONVERSATION_HEADER)
        if not conversation:
            return turn.anchor
        return hashlib.sha256(f"{conversation}\x00{turn.anchor}".encode()).hexdigest()[:32]

    async def _recall(self, call: Call, session, adapter, anchor: str,
                      known: str | None) -> dict[str, Any]:
        """The turn's block: recalled on its first call, the same one on every later call."""
        recalled = self.turns.get(call.user_id, anchor)
        if recalled is None:
            recalled = await self._search(call, session, adapter, known)
            if recalled is None:
                return call.body       # recall failed: the next call of the turn tries again
            self.turns.put(call.user_id, anchor, recalled)
        if not recalled.block:
            call.memory_status = "none"
            return call.body
        call.memory_status, call.memories = "injected", len(recalled.ids)
        call.recalled_ids = recalled.ids
        return adapter.inject(call.body, recalled.block)

    async def _search(self, call: Call, session, adapter, known: str | None) -> Recalled | None:
        """``known``: the query when the caller has it already (what ``adapter.query`` makes
        of the body for ``last_user``, before the ``max_query_chars`` cut)."""
        memory = self.config.memory
        if known is None:
            query = adapter.query(call.body, memory.query_strategy, memory.max_query_chars,
                                  compiled(memory.strip_patterns))
        else:
            query = known[-memory.max_query_chars:] if memory.max_query_chars > 0 else known
        try:
            found = self.store.search_now(call.user_id, query, memory.top_k, metadata=False,
                                          distinct=True)
            if found is None:
                found = await _within(self.store.recall(call.user_id, query, memory.top_k,
                                                        session),
                                      memory.recall_timeout_ms / 1000)
        except Exception as exc:  # timeout or backend failure: proceed without memory
            call.memory_status = "error"
            log.warning("recall failed user_id=%s error=%s", call.user_id,
                        type(exc).__name__)
            return None
        seen: set[str] = set()    # a text remembered many times is shown once
        found = [m for m in found if m.score >= memory.min_score
                 and not (m.content in seen or seen.add(m.content))]
        block = format_block(found, memory.max_block_chars)
        shown = block.count("\n- [")
        return Recalled(block, tuple(m.id for m in found[:shown]))

    async def remember(self, call: Call, turn: Turn, answer: str) -> None:
        """Queue the turn's memory. Its key is made from the turn's anchor and the answer, so
        the same exchange (a resent request answered alike) is stored once, while the same
        words asked again in a conversation the client does not name, and answered
        differently, are a memory of their own. Every retry of the delivery carries the same
        key (idempotent)."""
        answer = without_block(answer)
        if not turn.human or not (answer or turn.steps):
            return
        memory = self.config.memory
        human = redact(turn.human) if memory.redact_secrets else turn.human
        answer = redact(answer) if memory.redact_secrets else answer
        content = memory_text(human, turn.steps, answer, memory.max_memory_chars)
        metadata = {"source": "exchange", "model": call.deployment.name,
                    "protocol": call.protocol, "time": time.time()}
        conversation = call.request.headers.get(CONVERSATION_HEADER)
        if conversation:
            metadata["conversation_id"] = conversation[:200]
        answered = hashlib.sha256(content.encode()).hexdigest()[:16]
        key = f"turn-{self._anchor(call, turn)}-{answered}"
        await self.outbox.enqueue(call.user_id, [NewMemory(content, metadata, key)])

    async def forget_all(self, user_id: str, session) -> int:
        """Forget everything of the user, including exchanges still waiting in the outbox:
        those are purged first, so none is delivered after the store was emptied."""
        self.turns.forget(user_id)
        self.links.forget(user_id)
        purged = await self.outbox.purge(user_id)
        if purged:
            log.info("outbox purged user_id=%s entries=%d", user_id, purged)
        return await self.store.forget_all(user_id, session)


async def _within(awaitable, seconds: float):
    """``asyncio.wait_for`` without its task where asyncio has ``timeout`` (3.11+): a search
    of a built index never suspends, and a task per recall cost ~15 µs of the loop's time."""
    if _timeout is None:
        return await asyncio.wait_for(awaitable, seconds)
    async with _timeout(seconds):
        return await awaitable

_timeout = getattr(asyncio, "timeout", None)


class NoMemory:
    """``[memory] backend = "off"``: every call goes upstream unchanged."""

    async def prepare(self, call: Call, session) -> tuple[dict[str, Any], None]:
        call.memory_status = "off"
        return call.body, None

    def status(self) -> dict[str, Any]:
        return {"backend": "off"}

    async def health(self) -> dict[str, Any]:
        return self.status()

    async def retry_dead(self) -> int:
        raise ApiError(404, "memory is off ([memory] backend = \"off\")", "memory_off")
