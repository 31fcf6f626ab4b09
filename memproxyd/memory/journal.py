"""The injection journal: which memory block each human turn of a conversation got, so every
later call of the conversation carries each earlier turn's block again, byte for byte, at the
same place, and a turn's outgoing prompt is always a prefix of the next turn's (the provider's
prompt cache keeps working).

A conversation is named by the client's own id where it sends one (Claude Code's session id,
Codex's ``prompt_cache_key``, the ``x-memproxy-conversation-id`` header), else by a digest of
its system prompt and first human message (``conversation_key``). A turn is its position among
the conversation's human messages and a digest of its human words (``turn_key``): "yes" said
twice is two turns. A client that edits or compacts its history sends turns the journal does
not know at those positions: they get no block, and the prompt starts a new prefix there.

    journal = Journal(SqliteJournal(path))
    known = await journal.turns("alpha", conversation, [(0, fp0), (1, fp1)])
    await journal.record("alpha", conversation, Injection(1, fp1, block, ids, scores, trace))

Warm conversations are answered from memory (an LRU of conversations): no store round trip per
call. The store (SQLite beside the memories, or PostgreSQL for several gateways) is read when
a turn of the request is not in memory (after a restart; on a shared store, every new turn,
since another gateway may have served it) and written once per new turn. Conversations idle
for ``ttl`` seconds (24 h, like the providers' longest cache) are forgotten, as are the turns
whose block showed a memory that has been deleted: a forgotten memory is never injected again,
even at the price of that prefix.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from typing import Protocol

import attrs

log = logging.getLogger(__name__)

TTL = 24 * 3600.0          # seconds a conversation without a new turn is kept
CONVERSATIONS = 4096       # conversations kept in memory (least recently used go first)


@attrs.frozen
class Injection:
    ordinal: int                         # the turn's position among the human messages
    fingerprint: str                     # digest of the turn's human words
    block: str                           # the block it got ("" = none)
    ids: tuple[str, ...] = ()            # the memories shown in the block, in order
    scores: tuple[float, ...] = ()
    trace_id: str = ""                   # the call that recalled it
    created: float = attrs.field(factory=time.time)

    def to_json(self) -> dict:
        return {"turn": self.ordinal, "fingerprint": self.fingerprint, "block": self.block,
                "memories": [{"id": i, "score": round(s, 6)}
                             for i, s in zip(self.ids, self.scores)],
                "trace_id": self.trace_id,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created))}


class JournalStore(Protocol):
    shared: bool        # other gateways write it too: a turn missing here is looked up there

    async def load(self, user_id: str, conversation: str) -> list[Injection]: ...
    async def add(self, user_id: str, conversation: str, injection: Injection) -> None: ...
    async def forget(self, user_id: str | None, memory_id: str | None) -> None: ...
    async def expire(self, before: float) -> int: ...
    async def find(self, user_id: str, *, conversation: str | None = None,
                   trace_id: str | None = None) -> list[tuple[str, Injection]]: ...


def digest(*parts: str) -> str:
    hashed = hashlib.sha256()
    for part in parts:
        hashed.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    return hashed.hexdigest()[:32]


def conversation_key(client_id: str, system: str, first_human: str) -> str:
    """The conversation's key: the client's own id, else its system prompt and first words."""
    return digest("id", client_id) if client_id else digest("prompt", system, first_human)


def turn_key(human: str) -> str:
    return digest(human)[:16]


class Journal:
    """Conversations' injections in memory, in front of a ``JournalStore`` (or none)."""

    def __init__(self, store: JournalStore | None = None, *, size: int = CONVERSATIONS,
                 ttl: float = TTL, clock=time.time):
        self.store, self.size, self.ttl, self.clock = store, size, ttl, clock
        # (user id, conversation) -> (last new turn, {(ordinal, fingerprint): Injection})
        self._cache: OrderedDict[tuple[str, str], tuple[float, dict]] = OrderedDict()
        self._last_expiry = clock()
        self._expiring: asyncio.Task | None = None

    async def turns(self, user_id: str, conversation: str,
                    wanted: list[tuple[int, str]]) -> dict[tuple[int, str], Injection]:
        """The known injections of ``wanted`` turns (the request's human turns, oldest first):
        from memory, and from the store when it may know more (``_read_store``)."""
        key = (user_id, conversation)
        entry = self._cache.get(key)
        if entry is not None and self.clock() - entry[0] > self.ttl:
            del self._cache[key]
            entry = None
        if entry is not None:
            self._cache.move_to_end(key)
        if not self._read_store(entry, wanted):
            return entry[1] if entry is not None else {}
        loaded = await self.store.load(user_id, conversation)
        turns = {(i.ordinal, i.fingerprint): i for i in loaded
                 if self.clock() - i.created <= self.ttl}
        if entry is not None:
            turns.update(entry[1])
        if turns:
            self._put(key, max(i.created for i in turns.values()), turns)
        return turns

    def _read_store(self, entry: tuple[float, dict] | None,
                    wanted: list[tuple[int, str]]) -> bool:
        """Whether the store may know turns memory does not. A shared store (several
        gateways): whenever a wanted turn is missing. A store of this process's own: only for
        a conversation not in memory that has earlier turns (after a restart); a first turn
        seen for the first time has nothing to find there."""
        if self.store is None:
            return False
        if entry is None:
            return self.store.shared or len(wanted) > 1
        return self.store.shared and not all(w in entry[1] for w in wanted)

    def blocks_of(self, user_id: str, conversation: str | None, fingerprint: str) -> str:
        """Every block the prompt of the newest turn of these human words (``turn_key``)
        carried in the conversation: its own and each earlier turn's, joined by lines, when in
        memory ("" otherwise). What its answer must not be remembered with (``echo.py``):
        an answer may quote any block of its prompt, not only its own turn's."""
        entry = self._cache.get((user_id, conversation)) if conversation else None
        if entry is None:
            return ""
        turns = [i.ordinal for i in entry[1].values() if i.fingerprint == fingerprint]
        if not turns:
            return ""
        newest = max(turns)
        return "\n".join(i.block for i in sorted(entry[1].values(), key=lambda i: i.ordinal)
                         if i.ordinal <= newest and i.block)

    async def record(self, user_id: str, conversation: str, injection: Injection) -> None:
        """A new turn's injection: in memory at once, in the store before this returns."""
        key = (user_id, conversation)
        entry = self._cache.get(key)
        turns = dict(entry[1]) if entry is not None else {}
        turns[(injection.ordinal, injection.fingerprint)] = injection
        self._put(key, injection.created, turns)
        if self.store is not None:
            await self.store.add(user_id, conversation, injection)
            self._expire()

    def _put(self, key: tuple[str, str], newest: float, turns: dict) -> None:
        self._cache[key] = (newest, turns)
        self._cache.move_to_end(key)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)

    def _expire(self) -> None:
        """At most once an hour, in the background (never on a call's path: a store that is
        busy must not hold up a reply): the store forgets conversations idle for ``ttl``."""
        now = self.clock()
        if now - self._last_expiry < 3600 or self._expiring is not None:
            return
        self._last_expiry = now
        self._expiring = asyncio.create_task(self._expire_before(now - self.ttl),
                                             name="journal-expiry")

    async def _expire_before(self, before: float) -> None:
        try:
            removed = await self.store.expire(before)
            if removed:
                log.info("injection journal expired turns=%d", removed)
        except Exception as exc:   # tried again in an hour
            log.warning("injection journal expiry failed error=%s", type(exc).__name__)
        finally:
            self._expiring = None

    async def forget(self, user_id: str | None, memory_id: str | None = None) -> None:
        """Drop the user's turns (those whose block showed ``memory_id``, when given); with
        no user (a personal memory, shown in every user's blocks), every user's turns that
        showed ``memory_id``."""
        if user_id is None and memory_id is None:
            raise ValueError("forget every user's turns: name the memory")
        for key, (newest, turns) in list(self._cache.items()):
            if user_id is not None and key[0] != user_id:
                continue
            kept = {k: i for k, i in turns.items() if memory_id is not None
                    and memory_id not in i.ids}
            self._cache[key] = (newest, kept)
        if self.store is not None:
            await self.store.forget(user_id, memory_id)

    async def find(self, user_id: str, *, conversation: str | None = None,
                   trace_id: str | None = None) -> list[tuple[str, Injection]]:
        """(conversation, injection) of the user's turns in one conversation or one call."""
        if self.store is not None:
            return await self.store.find(user_id, conversation=conversation, trace_id=trace_id)
        return sorted(((c, i) for (u, c), (_, turns) in self._cache.items() if u == user_id
                       and conversation in (None, c) for i in turns.values()
                       if trace_id in (None, i.trace_id)), key=lambda p: p[1].created)
