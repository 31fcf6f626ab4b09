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
  call goes on without memory (``x-memproxy-memory: error``). Just after a start, a recall
  first waits up to ``WARM_WAIT_S`` for the user's index (the search process starting and
  indexing what the file holds: ~0.3-1 s), so the first call after a restart recalls too. ``skipped`` means policy
  chose not to use memory for this call (model opted out, Memory Router deployment,
  housekeeping call, write-only mode, nothing to search with); ``none`` that nothing relevant
  was found.
* **Turns** (``memory/turn.py``): what is searched with and stored is the human's words of the
  latest turn, the client's scaffolding removed (``memory/wire/clients.py``, ``strip_patterns``).
  Known clients' side calls (titles, summaries, probes) are ``skipped``, as is a call with no
  human words at all.
* **Cache-safe blocks** (``memory/journal.py``): recall runs once per human turn; the block is
  placed *with that turn* (in or just before its human message, never in ``system``,
  ``instructions`` or ``tools``), and every later call of the conversation carries each earlier
  turn's block again, byte for byte, at the same place, so a turn's outgoing prompt extends
  the previous one and the provider's prompt cache keeps working.
* **No self-recall**: a turn's recall never shows a memory remembered from the same
  conversation (its ``conversation`` metadata), nor one whose exchange the request already
  holds.
* **Remember**: once per turn, from the call whose reply is the answer (no tool calls): the
  human's words, a line per tool call of the loop and the answer, within ``max_memory_chars``,
  secrets redacted, written to the durable outbox *before the response ends* under a key made
  from the turn (a retried call is stored once); the outbox worker delivers it to the store
  with retries. The injected block is never part of what is stored, not even when the model
  echoes it back in its reply, nor what the answer quotes from a block its prompt carried
  (the turn's or an earlier turn's: ``Journal.blocks_of``, ``echo.py``:
  an answer that is only the memory again is not remembered at all).
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
from memproxyd import tracing
from memproxyd.config import Config
from memproxyd.errors import ANTHROPIC, COMPLETIONS, GEMINI, RESPONSES, ApiError
from memproxyd.memory.base import MemoryStore, NewMemory
from memproxyd.memory.block import compose, without_block
from memproxyd.memory.echo import without_echo
from memproxyd.memory.redact import redact
from memproxyd.memory.scopes import Scopes
from memproxyd.memory.tap import RememberTap
from memproxyd.memory.turn import Turn, memory_text, recall_query
from memproxyd.memory.journal import Injection, Journal, conversation_key, turn_key
from memproxyd.memory.turn_cache import TurnCache
from memproxyd.memory.wire import (anthropic as anthropic_wire, completions as completions_wire,
                                   gemini as gemini_wire, openai as openai_wire,
                                   responses as responses_wire)
from memproxyd.state import RuntimeState

log = logging.getLogger(__name__)

MODES = ("on", "off", "read", "write")
WARM_WAIT_S = 2.0       # the longest a recall waits for its index just after a start
MODE_HEADER = "x-memory-mode"
CONVERSATION_HEADER = "x-memproxy-conversation-id"
CLAUDE_SESSION_HEADER = "x-claude-code-session-id"
ADAPTERS = {ANTHROPIC: anthropic_wire, RESPONSES: responses_wire,
            COMPLETIONS: completions_wire, GEMINI: gemini_wire}


def adapter_for(protocol: str):
    return ADAPTERS.get(protocol, openai_wire)


@functools.lru_cache(maxsize=16)
def compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    return tuple(re.compile(p) for p in patterns)


class MemoryService:
    def __init__(self, state: RuntimeState, store: MemoryStore, outbox, sessions,
                 journal: Journal | None = None):
        self.state = state
        self.store = store
        self.outbox = outbox
        self.sessions = sessions
        self.journal = journal or Journal()      # conversation → each turn's block
        self.links = TurnCache(size=1024)        # response id → its turn (Responses API)
        self.scopes = Scopes(state, store)               # pins and the personal scope

    @property
    def config(self) -> Config:
        """The current config: ``[memory]`` settings follow a reload."""
        return self.state.config

    def status(self) -> dict[str, Any]:
        return self.store.status()

    @property
    def ready(self) -> bool:
        return self.store.ready

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
        for name in (CONVERSATION_HEADER, CLAUDE_SESSION_HEADER):
            _text_header(call, name)
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
        extra = compiled(self.config.memory.strip_patterns)
        humans = adapter.human_messages(call.body, extra)   # (index, words) of each turn
        turn = adapter.turn(call.body, extra, humans)
        if not turn.human and not turn.side_call:
            turn = self._continued(call, turn)
        if turn.side_call:           # never recalled for nor remembered; a fork keeps its blocks
            if humans and mode in ("on", "read") and not self._skipped_by_policy(call, adapter):
                return await self._forked(call, adapter, humans), None
            return call.body, None
        if not turn.human or self._skipped_by_policy(call, adapter):
            return call.body, None
        if humans:
            call.conversation = self.conversation(call, adapter, humans)
        body = call.body
        if mode in ("on", "read"):
            body = await self._inject(call, session, adapter, humans)
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
            self.links.put(call.user_id, response_id, (call.memory_status, attrs.evolve(
                turn, new=False, steps=(*turn.steps, *calls))))

    def _continued(self, call: Call, turn: Turn) -> Turn:
        """The turn a call continues by ``previous_response_id``; the provider keeps that
        turn's input, block included, so the call reports the turn's memory status."""
        previous = call.body.get("previous_response_id")
        linked = self.links.get(call.user_id, previous) if isinstance(previous, str) else None
        if linked is None:
            return turn
        call.memory_status, turn = linked
        return turn

    @staticmethod
    def _anchor(call: Call, turn: Turn) -> str:
        """The turn's anchor, within the client's ``x-memproxy-conversation-id`` if sent."""
        conversation = call.request.headers.get(CONVERSATION_HEADER)
        if not conversation:
            return turn.anchor
        return hashlib.sha256(f"{conversation}\x00{turn.anchor}".encode()).hexdigest()[:32]

    def conversation(self, call: Call, adapter, humans: list[tuple[int, str]]) -> str:
        """The conversation's journal key: the client's header or its own id (Claude Code's
        session, Codex's ``prompt_cache_key``), else its system prompt and first words."""
        headers = call.request.headers
        client_id, system = adapter.conversation_of(call.body)
        named = headers.get(CONVERSATION_HEADER) or headers.get(CLAUDE_SESSION_HEADER)
        return conversation_key(named or client_id, system, humans[0][1] if humans else "")

    async def _inject(self, call: Call, session, adapter,
                      humans: list[tuple[int, str]]) -> dict[str, Any]:
        """The body with each human turn's block at its turn: earlier turns' from the journal,
        byte for byte; the newest turn's recalled on its first call and journaled."""
        if not humans:        # a turn continued by response id: its input has no human words
            return call.body
        conversation = call.conversation
        wanted, known = await self._journaled(call, humans)
        current = known.get(wanted[-1])
        if current is None:
            current = await self._recall(call, session, humans)
            if current is None:
                return self._placed(call, adapter, humans, wanted, known)
            await self.journal.record(call.user_id, conversation, current)
            known = {**known, wanted[-1]: current}
        call.memory_status = "injected" if current.block else "none"
        call.memories, call.recalled_ids = len(current.ids), current.ids
        return self._placed(call, adapter, humans, wanted, known)

    async def _forked(self, call: Call, adapter, humans: list[tuple[int, str]]) -> dict[str, Any]:
        """A side call that forks a conversation (Claude Code's /compact, away recap and
        memory extraction) carries its earlier turns: their journaled
        blocks go back byte for byte, so its prompt shares the conversation's cached prefix.
        Nothing is recalled for it, journaled or remembered; other side calls (titles,
        sub-agents) match no journaled turn and go as they came."""
        call.conversation = self.conversation(call, adapter, humans)
        wanted, known = await self._journaled(call, humans)
        return self._placed(call, adapter, humans, wanted, known)

    async def _journaled(self, call: Call, humans: list[tuple[int, str]]) -> tuple[list, dict]:
        """The (ordinal, turn key) of each human turn, and what the conversation's journal
        knows of them."""
        wanted = [(ordinal, turn_key(text)) for ordinal, (_, text) in enumerate(humans)]
        return wanted, await self.journal.turns(call.user_id, call.conversation, wanted)

    @staticmethod
    def _placed(call: Call, adapter, humans, wanted, known) -> dict[str, Any]:
        blocks = {index: known[w].block for (index, _), w in zip(humans, wanted)
                  if w in known and known[w].block}
        return adapter.inject_at(call.body, blocks)

    async def _recall(self, call: Call, session,
                      humans: list[tuple[int, str]]) -> Injection | None:
        """The newest turn's injection (block "" when nothing relevant); None when recall
        failed (the next call of the turn tries again). The block shows the user's pinned
        memories first, then the best hits of the user's and the personal scope's memories
        (``scopes.py``)."""
        memory = self.config.memory
        query = recall_query([text for _, text in humans], memory.query_strategy,
                             memory.max_query_chars)
        wanted = memory.top_k + min(len(humans), memory.top_k)   # room for what is filtered
        try:
            pinned, found = self.scopes.recall_now(call.user_id, query, wanted)
            if found is None:
                warming = self.store.warming(call.user_id)
                if warming is not None:     # just started: wait for this user's index briefly
                    await asyncio.wait([warming], timeout=WARM_WAIT_S)
                pinned, found = await _within(self.scopes.recall(call.user_id, query, wanted,
                                                                 session),
                                              memory.recall_timeout_ms / 1000)
        except Exception as exc:  # timeout or backend failure: proceed without memory
            call.memory_status = "error"
            log.warning("recall failed user_id=%s error=%s", call.user_id,
                        type(exc).__name__)
            return None
        pinned = self._not_in_conversation(pinned, call, humans, ranked=False)
        pins = {m.id for m in pinned}
        found = [m for m in self._not_in_conversation(found, call, humans)
                 if m.id not in pins][:memory.top_k]
        block, shown = compose(pinned, found, memory.max_block_chars, self.scopes.personal())
        ordinal = len(humans) - 1
        return Injection(ordinal, turn_key(humans[-1][1]), block, tuple(m.id for m in shown),
                         tuple(m.score for m in shown), trace_id=_trace_id())

    def _not_in_conversation(self, found: list, call: Call, humans, ranked: bool = True) -> list:
        """Relevant hits (``min_score``, when ``ranked``), each text once, none of this
        conversation: not remembered from it, and not an exchange (or text) the request
        already holds. Pinned and personal memories obey it too."""
        seen: set[str] = set()
        said = {text for _, text in humans}
        request: str | None = None          # every text of the request, made when needed
        out = []
        for m in found:
            if (ranked and m.score < self.config.memory.min_score) or m.content in seen:
                continue
            seen.add(m.content)
            if m.metadata.get("conversation") == call.conversation:
                continue
            human = m.content[6:].split("\nAssistant: ", 1)[0] if m.content.startswith(
                "User: ") else None
            if human in said:
                continue
            request = "\x00".join(_strings(call.body)) if request is None else request
            if m.content in request:
                continue
            out.append(m)
        return out

    async def remember(self, call: Call, turn: Turn, answer: str) -> None:
        """Queue the turn's memory. Its key is made from the turn's anchor and the answer, so
        the same exchange (a resent request answered alike) is stored once, while the same
        words asked again in a conversation the client does not name, and answered
        differently, are a memory of their own. Every retry of the delivery carries the same
        key (idempotent)."""
        answer = without_echo(without_block(answer), self.journal.blocks_of(
            call.user_id, call.conversation, turn_key(turn.human)))
        if not turn.human or not (answer or turn.steps):
            return
        if call.user_id == self.scopes.personal():   # written on purpose only
            return
        memory = self.config.memory
        human, steps = turn.human, turn.steps
        if memory.redact_secrets:   # each part before the text is cut to length (a cut key
            human, answer = redact(human), redact(answer)           # would no longer match)
            steps = tuple(redact(step) for step in steps)   # tool calls: [Bash: export K=...]
        content = memory_text(human, steps, answer, memory.max_memory_chars)
        metadata = {"source": "exchange", "model": call.deployment.name,
                    "protocol": call.protocol, "time": time.time()}
        conversation = call.request.headers.get(CONVERSATION_HEADER)
        if conversation:
            metadata["conversation_id"] = conversation[:200]
        if call.conversation:       # the journal's key: never recalled into this conversation
            metadata["conversation"] = call.conversation
        answered = hashlib.sha256(content.encode()).hexdigest()[:16]
        key = f"turn-{self._anchor(call, turn)}-{answered}"
        await self.outbox.enqueue(call.user_id, [NewMemory(content, metadata, key)])

    async def delete(self, user_id: str, memory_id: str, session=None) -> bool:
        """Delete one memory; the journal forgets the turns whose block showed it, so it is
        never injected again (those turns' prompts start a new prefix)."""
        deleted = await self.store.delete(user_id, memory_id, session)
        if deleted:
            await self.journal.forget(self.scopes.journal_owner(user_id), memory_id)
            self.scopes.changed(user_id)
        return deleted

    async def update(self, user_id: str, memory_id: str, session=None, **changes):
        """Edit one memory (``store.update``); a new text is never injected again as the old
        one was: the journal forgets the turns whose block showed it, as for a delete (a
        pin or unpin changes the blocks of new turns only, never a journaled one)."""
        memory = await self.store.update(user_id, memory_id, session=session, **changes)
        if memory is not None:
            self.scopes.changed(user_id)
            if changes.get("content") is not None:
                await self.journal.forget(self.scopes.journal_owner(user_id), memory_id)
        return memory

    async def promote(self, user_id: str, memory_id: str, session=None):
        """Move one memory of ``user_id`` to the personal scope (``scopes.Scopes.promote``)."""
        return await self.scopes.promote(user_id, memory_id, session)

    async def injections(self, user_id: str, *, conversation: str | None = None,
                         trace_id: str | None = None, session=None) -> list[dict[str, Any]]:
        """Why a block was injected: the turns of one conversation (or of the conversation of
        the call ``trace_id`` that recalled a turn), oldest first, each with its block and
        the memories it showed (content when they still exist, and their scores)."""
        if trace_id is not None and conversation is None:
            hit = await self.journal.find(user_id, trace_id=trace_id)
            if not hit:
                return []
            conversation = hit[0][0]
        turns = await self.journal.find(user_id, conversation=conversation)
        out = []
        for key, injection in turns[-200:]:
            entry = {"conversation": key, **injection.to_json()}
            for shown in entry["memories"]:
                memory = await self.store.get(user_id, shown["id"], session)
                personal = self.scopes.personal()
                if memory is None and personal is not None:    # shown from the personal scope
                    memory = await self.store.get(personal, shown["id"], session)
                shown["content"] = memory.content if memory is not None else None
            entry["this_call"] = trace_id is not None and injection.trace_id == trace_id
            out.append(entry)
        return out

    async def forget_all(self, user_id: str, session) -> int:
        """Forget everything of the user, including exchanges still waiting in the outbox:
        those are purged first, so none is delivered after the store was emptied."""
        await self.journal.forget(user_id)
        self.links.forget(user_id)
        self.scopes.changed(user_id)
        purged = await self.outbox.purge(user_id)
        if purged:
            log.info("outbox purged user_id=%s entries=%d", user_id, purged)
        return await self.store.forget_all(user_id, session)


def _text_header(call: Call, name: str) -> None:
    """A header memory reads must be text: bytes that are not UTF-8 (aiohttp keeps them as
    lone surrogates) are the client's error, a 400, not a memory failure nobody sees."""
    value = call.request.headers.get(name)
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, f"invalid {name}: not UTF-8 text", "invalid_header") from None


def _strings(value: Any):
    """Every string in a request's JSON, in order."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _trace_id() -> str:
    trace = tracing.current.get()
    return trace.trace_id if trace is not None else ""


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

    ready = True

    async def health(self) -> dict[str, Any]:
        return self.status()

    async def retry_dead(self) -> int:
        raise ApiError(404, "memory is off ([memory] backend = \"off\")", "memory_off")
