"""What a block shows beside the user's best hits: pinned memories and the personal scope.

* **Pinned** memories (``Memory.pinned``) are in every block of their owner, first, marked
  (``block.compose``). The SQLite store keeps them in memory (``pinned_now``); from a
  store that does not (PostgreSQL), they are read once per ``PIN_TTL`` seconds per user and
  at once after a change made through this daemon (``changed``): a pin made by another
  gateway on the shared database reaches this one's blocks within ``PIN_TTL``.
* **Personal scope**: ``[memory] personal = "me"`` names a user id whose memories every
  other user's recall searches too (its best hits ranked with the user's own by score; its
  pins after the user's), each marked ``personal`` in the block. Nothing is ever written
  there automatically (``MemoryService.remember`` skips that id; the config refuses it as
  an identity of traffic): a memory gets there by an explicit act only, ``promote`` or a
  write that names ``scope: personal``. A project's own memories never reach another
  project: only the personal id's memories are shared, and the personal scope is off while
  a project of that name is listening (its memories would otherwise reach every other one).

    scopes = Scopes(state, store)
    pinned, found = scopes.recall_now("alpha", query, 10)      # (None, None): not at once
    pinned, found = await scopes.recall("alpha", query, 10, session)
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from memproxyd.memory.base import Memory, MemoryError_, MemoryStore

PIN_TTL = 5.0          # seconds a user's pins are served from memory
PIN_USERS = 1024       # users whose pins are kept in memory (least recently used go first)


class NoPersonalScope(MemoryError_):
    """``scope: personal`` or a promotion without a usable personal scope."""


class Scopes:
    def __init__(self, state, store: MemoryStore, clock=time.monotonic):
        self.state, self.store, self.clock = state, store, clock
        self._pins: OrderedDict[str, tuple[float, list[Memory]]] = OrderedDict()

    def personal(self) -> str | None:
        """The personal scope's user id; None when unset or a listening project's name."""
        personal = self.state.config.memory.personal
        if not personal or personal in self.state.project_ports.values():
            return None
        return personal

    def _owners(self, user_id: str) -> tuple[str, ...]:
        """Whose memories ``user_id``'s recall reads: its own, then the personal scope's."""
        personal = self.personal()
        return (user_id,) if personal in (None, user_id) else (user_id, personal)

    def journal_owner(self, user_id: str) -> str | None:
        """Whose journaled turns may show a memory of ``user_id``: its own, or (a personal
        memory, shown in every project's blocks) everyone's: None."""
        return None if user_id == self.personal() else user_id

    def changed(self, user_id: str) -> None:
        """The user's memories changed through this daemon: their pins are read again."""
        self._pins.pop(user_id, None)

    def _cached_pins(self, user_id: str) -> list[Memory] | None:
        kept = self.store.pinned_now(user_id)      # a store that keeps them in memory
        if kept is not None:
            return kept
        hit = self._pins.get(user_id)
        if hit is None or self.clock() - hit[0] > PIN_TTL:
            return None
        self._pins.move_to_end(user_id)
        return hit[1]

    async def pins(self, user_id: str, session=None) -> list[Memory]:
        """The user's pinned memories, newest first."""
        pins = self._cached_pins(user_id)
        if pins is None:
            pins = await self.store.pinned(user_id, session)
            self._pins[user_id] = (self.clock(), pins)
            self._pins.move_to_end(user_id)
            while len(self._pins) > PIN_USERS:
                self._pins.popitem(last=False)
        return pins

    def recall_now(self, user_id: str, query: str,
                   limit: int) -> tuple[list[Memory] | None, list[Memory] | None]:
        """``recall``'s result when every part of it can be had at once (``search_now``
        of each owner, pins in memory); (None, None) when not."""
        pinned, found = [], []
        for owner in self._owners(user_id):
            pins = self._cached_pins(owner)
            hits = self.store.search_now(owner, query, limit, distinct=True)
            if pins is None or hits is None:
                return None, None
            pinned += pins
            found += hits
        return pinned, _best(found, limit)

    async def recall(self, user_id: str, query: str, limit: int,
                     session=None) -> tuple[list[Memory], list[Memory]]:
        """(the pins of the user, then of the personal scope; the best ``limit`` hits of
        both, by score)."""
        owners = self._owners(user_id)
        kept = [self._cached_pins(owner) for owner in owners]
        if len(owners) == 1 and kept[0] is not None:    # the common case: no task to make
            return kept[0], await self.store.recall(user_id, query, limit, session,
                                                    metadata=True)
        # side by side: the pins' read and the second search never add to the first's time
        done = await asyncio.gather(
            *(self.pins(owner, session) for owner in owners),
            *(self.store.recall(owner, query, limit, session, metadata=True)
              for owner in owners))
        pinned = [m for pins in done[:len(owners)] for m in pins]
        found = [m for hits in done[len(owners):] for m in hits]
        return pinned, _best(found, limit)

    async def promote(self, user_id: str, memory_id: str, session=None) -> Memory | None:
        """Move one memory of ``user_id`` to the personal scope (same id, text, time and
        pin); None when ``user_id`` has no such memory."""
        personal = self.personal()
        if personal is None:
            raise NoPersonalScope("no personal scope: set [memory] personal to a user id "
                                  "that is not a project's name")
        if personal == user_id:
            raise NoPersonalScope(f"the memory is already in the personal scope {personal!r}")
        memory = await self.store.move(user_id, memory_id, personal, session)
        self.changed(user_id)
        self.changed(personal)
        return memory


def _best(found: list[Memory], limit: int) -> list[Memory]:
    """The ``limit`` best of several owners' hits (one owner's: as they are)."""
    return sorted(found, key=lambda m: -m.score)[:limit] if found else found
