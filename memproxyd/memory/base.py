"""The one interface every memory backend implements.

Every call names the user id whose memory it touches; a backend keeps users apart by
construction (the sqlite store binds ``user_id`` in one query builder, the supermemory store
maps it to its own namespace), never by a filter applied afterwards.

``session`` is the caller's ``sessions.UserSession`` (cookie jar + connection pool) or None;
backends that talk HTTP use it so cookies stay per user.
"""
from __future__ import annotations

import abc
import asyncio
import base64
import json
import time
from typing import Any

import attrs
import orjson


def loads(data: bytes):
    """JSON as the reply collectors and the index read it: orjson (~4x faster on every
    remembered reply), the standard parser for what orjson refuses and JSON allows (NaN, lone
    surrogates)."""
    try:
        return orjson.loads(data)
    except ValueError:
        return json.loads(data)


class MemoryError_(Exception):
    """A backend failed (unreachable, rejected, corrupt). Callers skip memory, never fail."""


class NotSupported(MemoryError_):
    """The backend cannot do this operation (e.g. list on a search-only service)."""


class InvalidCursor(MemoryError_):
    """A ``list`` cursor this backend did not hand out (the caller's error, not the backend's)."""


def encode_cursor(seq: int) -> str:
    """The opaque ``list`` cursor of the stores that page by a sequence number."""
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The sequence number of a cursor ``encode_cursor`` made; ``InvalidCursor`` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, seq = raw.split(":")
        if tag != "v1" or not (seq.isascii() and seq.isdigit()) or int(seq) >= 2 ** 63:
            raise ValueError(tag)       # (beyond SQLite's integers: an OverflowError there)
        return int(seq)
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor(f"invalid cursor {cursor!r}") from None


class RetryLater(MemoryError_):
    """A transient failure (429, 503, outage); ``retry_after`` seconds when the backend said."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@attrs.frozen
class NewMemory:
    content: str
    metadata: dict[str, Any] = attrs.field(factory=dict)
    # Stable id for idempotent delivery (outbox); None = the backend makes one.
    key: str | None = None
    # When it happened (unix seconds), e.g. an imported turn's own time; None = now.
    created_at: float | None = None
    pinned: bool = False       # in every block of its owner (``memory/block.py``)


@attrs.frozen
class Memory:
    id: str
    user_id: str
    content: str
    metadata: dict[str, Any] = attrs.field(factory=dict)
    created_at: float = attrs.field(factory=time.time)   # unix seconds
    score: float = 0.0
    pinned: bool = False

    def to_json(self, with_score: bool = False) -> dict[str, Any]:
        out = {
            "id": self.id,
            "user_id": self.user_id,
            "content": self.content,
            "metadata": self.metadata,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at)),
            "pinned": self.pinned,
        }
        if with_score:
            out["score"] = round(self.score, 6)
        return out


class MemoryStore(abc.ABC):
    """Per-user long-term memory. All methods are coroutines and safe to call concurrently."""

    name: str = "abstract"

    async def open(self) -> None:
        """Acquire resources (files, schema migrations). Called once before use."""

    async def close(self) -> None:
        """Release resources. Called once at shutdown."""

    @abc.abstractmethod
    async def add_many(self, user_id: str, items: list[NewMemory], session=None) -> list[Memory]:
        """Store memories; an item whose ``key`` was stored before is not stored twice."""

    async def add(self, user_id: str, content: str, metadata: dict | None = None,
                  session=None) -> Memory:
        return (await self.add_many(user_id, [NewMemory(content, metadata or {})], session))[0]

    @abc.abstractmethod
    async def search(self, user_id: str, query: str, limit: int, session=None) -> list[Memory]:
        """Best first; ``score`` set, higher is better."""

    async def recall(self, user_id: str, query: str, limit: int, session=None, *,
                     metadata: bool = False) -> list[Memory]:
        """``search`` for the recall block: a store may give a text stored many times once,
        and (without ``metadata``) leave out the memories' metadata."""
        return await self.search(user_id, query, limit, session)

    def warming(self, user_id: str) -> "asyncio.Future | None":
        """What a search of the user waits for just after a start (the index being built,
        a search process starting); None when nothing is pending. The recall waits for it
        briefly before its own timeout starts (``service.WARM_WAIT_S``)."""
        return None

    @property
    def ready(self) -> bool:
        """Every index built after the start: ``/health/readiness`` says "starting" until then."""
        return True

    def search_now(self, user_id: str, query: str, limit: int, *,
                   metadata: bool = True, distinct: bool = False) -> list[Memory] | None:
        """``search``'s result when it can be had at once, waiting for nothing (an index in
        memory, already built); None when it cannot (then ``search``). Saves the recall
        its timeout machinery on the hot path; ``metadata=False``: the memories may come
        without their metadata (the recall block does not show it); ``distinct``: a text
        stored many times may come once (the block shows it once)."""
        return None

    @abc.abstractmethod
    async def list(self, user_id: str, limit: int, cursor: str | None = None,
                   session=None) -> tuple[list[Memory], str | None]:
        """Newest first, paged: returns (page, next cursor or None)."""

    @abc.abstractmethod
    async def get(self, user_id: str, memory_id: str, session=None) -> Memory | None:
        """The memory, or None when it does not exist for this user."""

    @abc.abstractmethod
    async def delete(self, user_id: str, memory_id: str, session=None) -> bool:
        """True when a memory of this user was deleted."""

    @abc.abstractmethod
    async def forget_all(self, user_id: str, session=None) -> int:
        """Delete every memory of the user; returns how many."""

    async def update(self, user_id: str, memory_id: str, *, content: str | None = None,
                     metadata: dict | None = None, pinned: bool | None = None,
                     session=None) -> Memory | None:
        """Change what is given of one memory of the user (its id, owner and time stay) and
        re-index it at once; None when it does not exist for this user."""
        raise NotSupported(f"the {self.name} backend cannot edit a memory")

    async def move(self, user_id: str, memory_id: str, to_user: str,
                   session=None) -> Memory | None:
        """Give one memory of ``user_id`` to ``to_user`` (same id, content, time, pin): the
        promotion to the personal scope. None when it does not exist for ``user_id``."""
        raise NotSupported(f"the {self.name} backend cannot move a memory")

    async def pinned(self, user_id: str, session=None) -> list[Memory]:
        """The user's pinned memories, newest first (none where a backend has no pins)."""
        return []

    def pinned_now(self, user_id: str) -> list[Memory] | None:
        """``pinned``'s result when it can be had at once (kept in memory); None when not."""
        return None

    async def count(self, user_id: str, session=None) -> int | None:
        """How many memories the user has; None when the backend cannot tell."""
        return None

    def status(self) -> dict[str, Any]:
        """A small JSON-able description for /admin/status."""
        return {"backend": self.name}
