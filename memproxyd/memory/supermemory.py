"""The ``supermemory`` backend: hosted (or self-hosted) Supermemory through its official SDK.

Every call builds an ``AsyncSupermemory`` (cheap, no I/O) on the caller's
``UserSession.httpx`` client, so the cookies Supermemory's Cloudflare front sets for a user
(``cf_clearance``) go back on that user's later calls only. SDK retries are off
(``max_retries=0``): the outbox retries, with backoff, honouring ``RetryLater.retry_after``.

**User id → namespace.** A namespace is a URL path segment (the SDK does not percent-encode
it), so it is limited to ``[A-Za-z0-9_-]``, at most 100 characters:

    "<prefix>-<user id>"                   when the user id is already safe, fits, and
                                           does not end in "-<12 hex digits>"
    "<prefix>-<sanitised>-<sha256[:12]>"   otherwise: unsafe characters become "_", the
                                           result is truncated to fit, and the hash is of
                                           the whole original user id

"alice" → "memproxyd-alice"; "bob@example.com" → "memproxyd-bob_example_com-5ff860bf1190".
Distinct user ids never share a namespace: plain names never end in "-<12 hex>", hashed ones
always do, and two hashed ones differ in their hash (up to a 48-bit sha256 prefix collision).

**Documents.** One ``NewMemory`` is one Supermemory document whose caller-defined id is the
item's ``key`` (keys outside ``[A-Za-z0-9_-]{1,100}`` are replaced by ``k-<sha256[:32]>``), so
a redelivered item hits the same document: Supermemory answers an unchanged duplicate with
``status: done`` and stores nothing new. Search returns Supermemory's memories/chunks scored
by ``similarity``; list/get/delete work on documents; forget-all deletes the namespace.

SDK calls used (endpoints of supermemory 5.0.1): ``add`` (POST /ns/{ns}/document),
``documents.batch_add`` (POST /ns/{ns}/document/batch), ``search`` (POST /ns/{ns}/search),
``list`` (POST /ns/{ns}/list/documents), ``documents.get`` (GET /ns/{ns}/document/{id}),
``documents.delete`` (DELETE /ns/{ns}/document), ``memories.forget`` (DELETE
/ns/{ns}/memories), ``namespaces.delete`` (DELETE /ns/{ns}).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import re
import time
from typing import Any, AsyncIterator
from urllib.parse import quote

import httpx
import supermemory

from memproxyd.config import SupermemoryConfig, resolve_secret
from memproxyd.memory.base import (InvalidCursor, Memory, MemoryError_, MemoryStore, NewMemory,
                                   RetryLater)

log = logging.getLogger(__name__)

MAX_NAMESPACE = 100
HASH_CHARS = 12
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_LOOKS_HASHED = re.compile(rf"-[0-9a-f]{{{HASH_CHARS}}}$")
_TRANSIENT = {408, 409, 425, 429}            # plus every 5xx
BATCH_MAX = 600                              # the API's batch_add limit


def _sha(value: str, n: int) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:n]


def namespace_for(user_id: str, prefix: str = "memproxyd") -> str:
    """The Supermemory namespace of ``user_id`` (see the module docstring)."""
    head = f"{_UNSAFE.sub('_', prefix)}-" if prefix else ""
    plain = head + user_id
    if (user_id and not _UNSAFE.search(user_id) and len(plain) <= MAX_NAMESPACE
            and not _LOOKS_HASHED.search(plain)):
        return plain
    room = MAX_NAMESPACE - len(head) - HASH_CHARS - 1
    return f"{head}{_UNSAFE.sub('_', user_id)[:max(room, 0)]}-{_sha(user_id, HASH_CHARS)}"


def document_id(key: str) -> str:
    """The caller-defined document id for an idempotency key."""
    return key if _SAFE_ID.match(key) else f"k-{_sha(key, 32)}"


def _metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Supermemory metadata is flat: str, number, bool or a list of str; the rest as JSON."""
    out: dict[str, Any] = {}
    for k, v in metadata.items():
        if v is None:
            continue
        if isinstance(v, (str, bool, int, float)) or (
                isinstance(v, list) and all(isinstance(x, str) for x in v)):
            out[str(k)] = v
        else:
            out[str(k)] = json.dumps(v, sort_keys=True, default=str)
    return out


def _timestamp(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return time.time()


def _retry_after(headers: dict[str, str] | None) -> float | None:
    value = {k.lower(): v for k, v in (headers or {}).items()}.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        from email.utils import parsedate_to_datetime
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


def _is_html(exc: supermemory.APIStatusError) -> bool:
    ctype = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("content-type", "")
    body = exc.body if isinstance(exc.body, str) else ""
    return "text/html" in ctype or body.lstrip()[:1] == "<"


def _translate(exc: Exception, what: str) -> MemoryError_:
    """An SDK exception as ``RetryLater`` (transient) or ``MemoryError_`` (rejected).

    The message names the status code only, never the response body: Supermemory's errors
    can quote the content they refused, and these messages reach logs and the outbox."""
    if isinstance(exc, supermemory.APIConnectionError):        # includes APITimeoutError
        return RetryLater(f"supermemory {what}: {exc.message}")
    if isinstance(exc, supermemory.APIStatusError):
        status = exc.status_code
        if status >= 500 or status in _TRANSIENT or _is_html(exc):
            # An HTML page is Cloudflare speaking (challenge, 5xx page), not the API.
            return RetryLater(f"supermemory {what}: HTTP {status}", _retry_after(exc.headers))
        return MemoryError_(f"supermemory {what}: HTTP {status}")
    return MemoryError_(f"supermemory {what}: {type(exc).__name__}")


class SupermemoryStore(MemoryStore):
    """``MemoryStore`` on Supermemory; one namespace per user id."""

    name = "supermemory"

    def __init__(self, config: SupermemoryConfig):
        self.config = config
        self._fallback: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._fallback is not None:
            await self._fallback.aclose()
            self._fallback = None

    def namespace(self, user_id: str) -> str:
        return namespace_for(user_id, self.config.namespace_prefix)

    def status(self) -> dict[str, Any]:
        return {"backend": self.name, "base_url": self.config.base_url,
                "api_key_set": resolve_secret(self.config.api_key) is not None}

    def _http(self, session) -> httpx.AsyncClient:
        if session is not None:
            return session.httpx
        # No user session (e.g. a maintenance call): a store-owned client, no user's cookies.
        if self._fallback is None:
            self._fallback = httpx.AsyncClient()
        return self._fallback

    @contextlib.asynccontextmanager
    async def _client(self, session, what: str) -> AsyncIterator[supermemory.AsyncSupermemory]:
        api_key = resolve_secret(self.config.api_key)
        if not api_key:
            raise MemoryError_(f"supermemory {what}: no api_key configured")
        client = supermemory.AsyncSupermemory(
            api_key=api_key, base_url=self.config.base_url, http_client=self._http(session),
            max_retries=0, timeout=self.config.timeout)
        try:
            yield client
        except supermemory.SupermemoryError as exc:
            err = _translate(exc, what)
            log.warning("supermemory call failed op=%s error=%s", what, err)
            raise err from exc

    # -- writes -----------------------------------------------------------------------------

    async def add_many(self, user_id: str, items: list[NewMemory], session=None) -> list[Memory]:
        out: list[Memory] = []
        for start in range(0, len(items), BATCH_MAX):
            out += await self._add_batch(user_id, items[start:start + BATCH_MAX], session)
        return out

    async def _add_batch(self, user_id: str, items: list[NewMemory], session) -> list[Memory]:
        ns = self.namespace(user_id)
        docs = [self._document(item) for item in items]
        async with self._client(session, "add") as client:
            if len(docs) == 1:
                refs = [await client.add(ns, **docs[0])]
            else:
                result = await client.documents.batch_add(ns, documents=docs)
                refs = self._accepted(result, len(docs))
        now = time.time()
        return [Memory(id=ref.id, user_id=user_id, content=item.content,
                       metadata=dict(item.metadata), created_at=now)
                for ref, item in zip(refs, items)]

    @staticmethod
    def _document(item: NewMemory) -> dict[str, Any]:
        doc: dict[str, Any] = {"content": item.content}
        if item.key is not None:
            doc["id"] = document_id(item.key)
        if item.metadata:
            doc["metadata"] = _metadata(item.metadata)
        return doc

    @staticmethod
    def _accepted(result, expected: int) -> list:
        if result.failed or len(result.results) != expected:
            # Item ids and statuses only: an item's error text can quote its content.
            reasons = "; ".join(f"{r.id}: {r.status}" for r in result.results
                                if r.error or r.status == "error")
            # Accepted items are stored under their stable ids; a redelivery repeats no work.
            raise MemoryError_(f"supermemory add: {result.failed} of {expected} failed: {reasons}")
        return list(result.results)

    # -- reads ------------------------------------------------------------------------------

    async def search(self, user_id: str, query: str, limit: int, session=None) -> list[Memory]:
        kwargs: dict[str, Any] = {"query": query, "limit": limit,
                                  "search_mode": self.config.search_mode}
        if self.config.threshold:
            kwargs["threshold"] = self.config.threshold
        async with self._client(session, "search") as client:
            response = await client.search(self.namespace(user_id), **kwargs)
        hits = [Memory(id=r.id, user_id=user_id, content=r.memory or r.chunk or "",
                       metadata=dict(r.metadata or {}), score=float(r.similarity),
                       created_at=_timestamp(r.system.created_at or r.system.updated_at))
                for r in response.results if r.memory or r.chunk]
        hits.sort(key=lambda m: m.score, reverse=True)
        return hits[:limit]

    async def list(self, user_id: str, limit: int, cursor: str | None = None,
                   session=None) -> tuple[list[Memory], str | None]:
        page = self._page(cursor)
        async with self._client(session, "list") as client:
            response = await client.list(self.namespace(user_id), "documents", page=page,
                                         limit=limit, sort="createdAt", order="desc",
                                         include={"content": True})
        memories = [self._memory(user_id, d) for d in response.documents]
        more = page < int(response.pagination.total_pages) and bool(memories)
        return memories, (str(page + 1) if more else None)

    @staticmethod
    def _page(cursor: str | None) -> int:
        if cursor is None:
            return 1
        if not cursor.isdigit() or int(cursor) < 1:
            raise InvalidCursor(f"supermemory list: bad cursor {cursor!r}")
        return int(cursor)

    @staticmethod
    def _memory(user_id: str, doc) -> Memory:
        return Memory(id=doc.id, user_id=user_id, content=doc.content or doc.summary or "",
                      metadata=dict(doc.metadata or {}),
                      created_at=_timestamp(doc.system.created_at))

    async def get(self, user_id: str, memory_id: str, session=None) -> Memory | None:
        async with self._client(session, "get") as client:
            try:
                # The SDK puts ids into the URL path unencoded: encode them here.
                doc = await client.documents.get(self.namespace(user_id),
                                                 quote(memory_id, safe=""))
            except supermemory.NotFoundError:
                return None
        return self._memory(user_id, doc)

    # -- deletes ----------------------------------------------------------------------------

    async def delete(self, user_id: str, memory_id: str, session=None) -> bool:
        """A document id (from add/list) is deleted; a memory id (from search) is forgotten."""
        ns = self.namespace(user_id)
        async with self._client(session, "delete") as client:
            try:
                if (await client.documents.delete(ns, ids=[memory_id])).count:
                    return True
                return (await client.memories.forget(ns, ids=[memory_id])).count > 0
            except supermemory.NotFoundError:
                return False

    async def forget_all(self, user_id: str, session=None) -> int:
        """Deletes the user's namespace with everything in it; returns the document count."""
        async with self._client(session, "forget_all") as client:
            try:
                result = await client.namespaces.delete(self.namespace(user_id))
            except supermemory.NotFoundError:
                return 0            # never written to: nothing to forget
        return int(getattr(result, "deleted_documents_count", 0) or 0)
