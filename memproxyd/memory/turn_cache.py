"""The memory block of each open turn, so every call of one agent loop gets the same block.

Recall runs on the turn's first call; the loop's later calls (tool results, retries) reuse
what it found, byte for byte, so the prompt prefix a provider caches stays the same and the
store is searched once per human turn. Entries expire after ``ttl`` seconds and the cache
holds at most ``size`` turns (least recently used go first). Forgetting a user's memories
drops that user's entries, so a forgotten memory is never injected from here.

    cache = TurnCache()
    hit = cache.get("alice", turn.anchor)          # None on the turn's first call
    cache.put("alice", turn.anchor, Recalled(block, ids))
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import attrs


@attrs.frozen
class Recalled:
    block: str                      # "" when recall found nothing relevant
    ids: tuple[str, ...] = ()


class TurnCache:
    """``(user id, key) → value`` with LRU eviction and a TTL: the turn's ``Recalled`` block
    by anchor, or (``MemoryService.links``) a ``Turn`` by the id of a response that ended in
    a tool call, for the next call that continues it by ``previous_response_id``."""

    def __init__(self, size: int = 4096, ttl: float = 900.0, clock=time.monotonic):
        self.size, self.ttl, self.clock = size, ttl, clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, Any]] = OrderedDict()

    def get(self, user_id: str, anchor: str) -> Any:
        key = (user_id, anchor)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.clock() - entry[0] > self.ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, user_id: str, anchor: str, recalled: Any) -> None:
        self._entries[(user_id, anchor)] = (self.clock(), recalled)
        self._entries.move_to_end((user_id, anchor))
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, user_id: str, memory_id: str | None = None) -> int:
        """Drop the user's turns (those that injected ``memory_id``, when given)."""
        doomed = [key for key, (_, recalled) in self._entries.items() if key[0] == user_id
                  and (memory_id is None or memory_id in getattr(recalled, "ids", ()))]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def __len__(self) -> int:
        return len(self._entries)
