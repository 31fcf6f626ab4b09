"""A small LRU cache with a TTL, per user: the memory service keeps, by response id, the
turn of a Responses API reply that ended in a tool call, so the call that continues it by
``previous_response_id`` (only the tools' outputs, no human words) belongs to that turn.
(Each turn's memory block is the injection journal's, ``memory/journal.py``.) Forgetting a
user drops that user's entries.

    cache = TurnCache(size=1024)
    cache.put("alice", response_id, (status, turn))
    cache.get("alice", response_id)                # None once evicted or expired
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any


class TurnCache:
    """``(user id, key) → value`` with LRU eviction and a TTL."""

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

    def put(self, user_id: str, key: str, value: Any) -> None:
        self._entries[(user_id, key)] = (self.clock(), value)
        self._entries.move_to_end((user_id, key))
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, user_id: str) -> int:
        """Drop the user's entries."""
        doomed = [key for key in self._entries if key[0] == user_id]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def __len__(self) -> int:
        return len(self._entries)
