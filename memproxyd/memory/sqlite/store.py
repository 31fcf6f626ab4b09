"""The embedded memory backend: one SQLite file (WAL) holds every memory durably; an
in-memory BM25 index per user (``lexical.py``) ranks them; optional vectors, held beside
it (``vectors.py``).

    store = SqliteStore(state_dir / "memory.db")
    await store.open()
    await store.add_many("alice", [NewMemory("Alice: I adopted a cat named Miso")])
    hits = await store.search("alice", "what is the name of alice's pet cat?", limit=5)

Isolation: every statement that touches memories goes through ``UserScope``, which refuses
SQL that does not bind ``:user_id`` and always binds it to the scope's user; each user has an
index of their own.

Threads: writes run on one writer connection; reads (get, list) on a
small pool of reader connections, so they never queue behind the outbox's deliveries. The
index lives on the event loop: built from the user's rows on first use (on the writer
thread, in order with the writes), then updated after each committed write -- or, with
``search_process`` (the daemon's choice), in a process of its own (``search_worker.py``),
sent each committed write and asked each search, so searches run beside the loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any, Awaitable, Callable

from memproxyd.memory import terms as text, vectors, when
from memproxyd.memory.base import Memory, MemoryStore, NewMemory, decode_cursor, encode_cursor
from memproxyd.memory.sqlite import lexical, writes
from memproxyd.memory.sqlite.db import GroupCommit, Migration, SqliteReaders, SqliteThread
from memproxyd.memory.sqlite.rows import (COLUMNS, UserScope, every_pin, memory as as_memory,
                                          pinned as pinned_rows,
                                          rows as scoped_rows)
from memproxyd.memory.sqlite.search_process import SearchProcess
from memproxyd.memory.sqlite.search_worker import load

_UserScope = UserScope   # the name the isolation test knows

log = logging.getLogger(__name__)

Embedder = Callable[[list, Any], Awaitable[list]]
READERS = 2               # read connections (each its own thread)
CHECKPOINT_ROWS = 500     # rows written between WAL checkpoints (on the writer thread)


def _group_existing(conn: sqlite3.Connection) -> None:
    """v2: the batch of memories stored before groups existed, recovered from insertion
    order: consecutive rows of one user written within a second of each other."""
    conn.execute(
        "UPDATE memories SET grp = runs.start FROM (SELECT seq, max(CASE WHEN prev IS NULL"
        " OR prev <> seq - 1 OR created_at - prev_at > 1.0 THEN seq END) OVER (PARTITION BY"
        " user_id ORDER BY seq ROWS UNBOUNDED PRECEDING) AS start FROM (SELECT seq, user_id,"
        " created_at, lag(seq) OVER w AS prev, lag(created_at) OVER w AS prev_at FROM memories"
        " WINDOW w AS (PARTITION BY user_id ORDER BY seq))) AS runs"
        " WHERE memories.seq = runs.seq")


MIGRATIONS: tuple[Migration, ...] = (
    (
        "CREATE TABLE memories (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
        " user_id TEXT NOT NULL, key TEXT, content TEXT NOT NULL, metadata TEXT NOT NULL,"
        " created_at REAL NOT NULL)",
        "CREATE UNIQUE INDEX memories_user_key ON memories(user_id, key) WHERE key IS NOT NULL",
        "CREATE INDEX memories_user_seq ON memories(user_id, seq)",
        "CREATE VIRTUAL TABLE memories_fts USING fts5(body, near, far,"
        " tokenize = 'porter unicode61 remove_diacritics 2')",
        "CREATE TABLE memory_vectors (seq INTEGER PRIMARY KEY, user_id TEXT NOT NULL,"
        " vector BLOB NOT NULL)",
        "CREATE INDEX memory_vectors_user ON memory_vectors(user_id, seq)",
    ),
    (   # the in-memory index replaces FTS5; a memory's batch (its context) is kept
        "ALTER TABLE memories ADD COLUMN grp INTEGER",
        _group_existing,
        "DROP TABLE memories_fts",
    ),
    (   # pinned memories: in every block of their owner
        "ALTER TABLE memories ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX memories_user_pinned ON memories(user_id, seq) WHERE pinned",
    ),
)

class SqliteStore(MemoryStore):
    name = "sqlite"

    def __init__(self, db_path: Path, *, embedder: Embedder | None = None,
                 readers: int = READERS, search_process: bool = False,
                 vector_weight: float = vectors.WEIGHT):
        self.db_path = Path(db_path)
        self.embedder = embedder
        self.vector_weight = vector_weight      # the vectors' share of a fused score
        self._db = SqliteThread(self.db_path, "memory-store", checkpoint_rows=CHECKPOINT_ROWS)
        self._readers = SqliteReaders(self.db_path, "memory-read", size=readers)
        self.schema_version = 0
        self._indexes: dict[str, lexical.UserIndex] = {}
        self._builds: dict[str, asyncio.Task] = {}
        self._warm_up: asyncio.Task | None = None
        self._warming: dict[str, asyncio.Future] = {}   # user → their first search after open
        self._answering: asyncio.Future | None = None   # the search process's first answer
        self._remembered = GroupCommit(self._commit_remembered, "memory-remember")
        self._searcher = SearchProcess(self.db_path) if search_process else None
        # every user's pins, newest first: read at open, again after each write that may
        # change them (on the writer, in order with the writes); a recall never waits for them
        self._pins: dict[str, list[Memory]] = {}
        self._stem = self._searcher is None      # stems made with the writes for a local index

    async def open(self) -> None:
        self.schema_version = await self._db.open("memories", MIGRATIONS)
        self._pins = await self._db.run(every_pin)
        await self._readers.open()
        if self._searcher is not None:
            await self._searcher.start()
        self._warm_up = asyncio.create_task(self._build_all(), name="memory-index")

    async def close(self) -> None:
        await self._remembered.close()
        for task in [self._warm_up, *self._builds.values()]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._searcher is not None:
            await self._searcher.close()
        await self._readers.close()
        await self._db.close()

    def status(self) -> dict[str, Any]:
        return {"backend": self.name, "path": str(self.db_path),
                "schema_version": self.schema_version, "vectors": self.embedder is not None,
                "indexed_users": None if self._searcher else len(self._indexes),
                "search_process": self._searcher.pid if self._searcher else None}

    # -- the index ------------------------------------------------------------------------

    async def _build_all(self) -> None:
        """Index every user in the background after open, so first recalls find it ready."""
        try:
            # Statistics only (which users exist): no memory is read.
            users = await self._readers.run(lambda conn: [r[0] for r in conn.execute(
                "SELECT DISTINCT user_id FROM memories").fetchall()])
            if self._searcher is not None:
                # The worker handles a user's messages in order, so a search sent after a
                # build is answered once that index is in place; a search of a user with no
                # rows is answered as soon as the process is up (other users' builds run on
                # threads of their own).
                self._answering = _quiet(self._searcher.search("", "", 1))
                for user_id in users:
                    self._searcher.send(("build", user_id))
                    self._warming[user_id] = _quiet(self._searcher.search(user_id, "", 1))
                await asyncio.wait([self._answering, *self._warming.values()])
            else:
                for user_id in users:
                    self._warming[user_id] = self._building(user_id)
                if self._warming:
                    await asyncio.wait(list(self._warming.values()))
        except Exception:   # a search builds what is missing; the reason is in the log
            log.exception("memory index warm-up failed")
        finally:
            self._warming.clear()
            self._answering = None

    def warming(self, user_id: str) -> asyncio.Future | None:
        pending = self._warming.get(user_id) or self._answering
        return pending if pending is not None and not pending.done() else None

    @property
    def ready(self) -> bool:
        return self._warm_up is not None and self._warm_up.done()

    async def _index(self, user_id: str) -> lexical.UserIndex:
        index = self._indexes.get(user_id)
        if index is not None and not index.stale:
            return index
        return await asyncio.shield(self._building(user_id))

    def _building(self, user_id: str) -> asyncio.Task:
        """The build of the user's index under way, started if none is."""
        task = self._builds.get(user_id)
        if task is None:
            task = self._builds[user_id] = asyncio.create_task(self._build(user_id))
            task.add_done_callback(_log_failed_build)
        return task

    async def _build(self, user_id: str) -> lexical.UserIndex:
        """Read and index the user's rows on the writer thread, then install the index in
        the same step. Why this is exact: the writer runs jobs in order and the loop resumes
        their callers in that order, so a write queued before the build is in it (its caller
        resumes first, finds no index and leaves it), and one queued after resumes after the
        install and applies itself (``add_batch`` skips rows it already has)."""
        try:
            index = await self._db.run(load, user_id)
            self._indexes[user_id] = index
            return index
        finally:
            self._builds.pop(user_id, None)

    # -- writes ---------------------------------------------------------------------------

    async def add_many(self, user_id: str, items: list[NewMemory], session=None) -> list[Memory]:
        return await self.add_batches(user_id, [items], session)

    async def add_batches(self, user_id: str, batches: list[list[NewMemory]],
                          session=None) -> list[Memory]:
        """Several ``add_many`` batches in one transaction (the outbox's deliveries); a
        memory's neighbour context comes from its own batch. Returns the memories of all
        batches in order."""
        texts = [item.content for batch in batches for item in batch]
        embedded = await self._embed(texts, session) if texts else None
        out, added = await self._db.run(writes.add_batches, user_id, batches, embedded,
                                        self._stem)
        self._db.wrote(len(out))
        self._indexed(user_id, added)
        if any(item.pinned for batch in batches for item in batch):
            await self._repin(user_id)
        return out

    async def remember(self, user_id: str, items: list[NewMemory]) -> None:
        """Store exchanges durably, each its own batch, in a transaction shared with the
        concurrent calls (group commit); returns once committed. What the outbox guarantees,
        without its second write and delivery round trip: ``DirectOutbox`` (outbox.py) uses it
        when nothing remote stands between an exchange and this store (no embedder)."""
        if self.embedder is not None:
            raise RuntimeError("remember() writes without embedding: use the outbox")
        await self._remembered.submit((user_id, [[item] for item in items]))

    async def _commit_remembered(self, parts: list[tuple[str, list[list[NewMemory]]]]) -> None:
        """On the loop when the writer is idle (a few short inserts: cheaper than the hop),
        else on the writer thread, after what is queued there."""
        added = None
        if self._db.idle:
            try:
                added = self._db.run_here(writes.add_parts_now, parts)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
        if added is None:      # queued behind the thread's jobs, or another connection writes
            added = await self._db.run(writes.add_parts, parts, self._stem)
        self._db.wrote(sum(len(batch) for _, batches in parts for batch in batches))
        for (user_id, _), rows in zip(parts, added):
            self._indexed(user_id, rows)

    def _indexed(self, user_id: str, added: list[list[tuple]]) -> None:
        """Apply committed rows to the user's index (on the loop, in commit order)."""
        if self._searcher is not None:
            self._searcher.send(("add", user_id, added))
            return
        index = self._indexes.get(user_id)
        if index is not None:
            for rows in added:
                index.add_stemmed(rows)
        else:   # a first write: index the user now, so their first search finds it built
            self._building(user_id)

    async def delete(self, user_id: str, memory_id: str, session=None) -> bool:
        seqs = await self._db.run(writes.delete, user_id, "AND id = :id", {"id": memory_id})
        if seqs:
            await self._db.scrub()
        self._removed(user_id, seqs)
        if any(m.id == memory_id for m in self._pins.get(user_id, ())):
            await self._repin(user_id)
        return bool(seqs)

    async def forget_all(self, user_id: str, session=None) -> int:
        seqs = await self._db.run(writes.delete, user_id, "", {})
        self._pins.pop(user_id, None)
        await self._db.scrub()
        if self._searcher is not None:
            self._searcher.send(("reset", user_id))
        elif user_id in self._indexes:
            self._indexes[user_id] = lexical.UserIndex()
        return len(seqs)

    async def update(self, user_id: str, memory_id: str, *, content: str | None = None,
                     metadata: dict | None = None, pinned: bool | None = None,
                     session=None) -> Memory | None:
        """Edit in place; a new text is re-indexed at once (its old postings removed, the new
        text indexed as a batch of its own: its neighbours' context comes back with the next
        build of the index) and re-embedded."""
        changes: dict[str, Any] = {}
        if content is not None:
            changes["content"] = content
        if metadata is not None:
            changes["metadata"] = json.dumps(metadata)
        if pinned is not None:
            changes["pinned"] = int(pinned)
        vector = None
        if content is not None and self.embedder is not None:
            vector = (await self._embed([content], session) or [None])[0]
        done = await self._db.run(writes.update, user_id, memory_id, changes, vector)
        if done is None:
            return None
        memory, seq, packed = done
        if content is not None or metadata is not None:
            await self._db.scrub()     # the old text is gone from the files, as after a delete
            self._reindexed(user_id, memory, seq, packed)
        await self._repin(user_id)
        return memory

    async def move(self, user_id: str, memory_id: str, to_user: str,
                   session=None) -> Memory | None:
        done = await self._db.run(writes.move, user_id, memory_id, to_user)
        if done is None:
            return None
        memory, seq, packed = done
        self._removed(user_id, [seq])
        self._indexed(to_user, [[_index_row(memory, seq, self._stem, packed)]])
        if memory.pinned:
            await self._repin(user_id)
            await self._repin(to_user)
        return memory

    async def _repin(self, user_id: str) -> None:
        pins = await self._db.run(pinned_rows, user_id)
        if pins:
            self._pins[user_id] = pins
        else:
            self._pins.pop(user_id, None)

    def _reindexed(self, user_id: str, memory: Memory, seq: int, packed: bytes | None) -> None:
        self._removed(user_id, [seq])
        self._indexed(user_id, [[_index_row(memory, seq, self._stem, packed)]])

    def _removed(self, user_id: str, seqs: list[int]) -> None:
        if self._searcher is not None:
            self._searcher.send(("remove", user_id, seqs))
        elif user_id in self._indexes:
            self._indexes[user_id].remove(seqs)

    async def pinned(self, user_id: str, session=None) -> list[Memory]:
        return self._pins.get(user_id, [])

    def pinned_now(self, user_id: str) -> list[Memory] | None:
        return self._pins.get(user_id, [])

    async def count(self, user_id: str, session=None) -> int | None:
        rows = await self._readers.run(scoped_rows, user_id, "SELECT count(*) FROM memories"
                                       " WHERE user_id = :user_id", {})
        return rows[0][0]

    # -- reads ----------------------------------------------------------------------------

    async def get(self, user_id: str, memory_id: str, session=None) -> Memory | None:
        rows = await self._readers.run(scoped_rows, user_id, f"SELECT {COLUMNS} FROM memories m"
                                       " WHERE m.user_id = :user_id AND m.id = :id",
                                       {"id": memory_id})
        return as_memory(rows[0]) if rows else None

    async def list(self, user_id: str, limit: int, cursor: str | None = None,
                   session=None) -> tuple[list[Memory], str | None]:
        before = decode_cursor(cursor) if cursor else 2 ** 63 - 1
        rows = await self._readers.run(
            scoped_rows, user_id, f"SELECT {COLUMNS} FROM memories m WHERE m.user_id = :user_id"
            " AND m.seq < :before ORDER BY m.seq DESC LIMIT :limit",
            {"before": before, "limit": limit + 1})
        page = rows[:limit]
        more = len(rows) > limit
        return [as_memory(r) for r in page], encode_cursor(page[-1][0]) if more else None

    def search_now(self, user_id: str, query: str, limit: int, *,
                   metadata: bool = True, distinct: bool = False) -> list[Memory] | None:
        """Lexical search on the user's built index, at once; None without one (or with an
        embedder: vectors need a call). ``distinct``: one memory (the newest) per text."""
        index = self._indexes.get(user_id)
        if self.embedder is not None or index is None or index.stale or self._searcher:
            return None
        terms = text.stems(text.query_terms(query))
        # The hits' fields are in the index: no statement on the loop (reading them by
        # primary key cost ~40 µs of the loop's time at concurrency 32, measured).
        return lexical.as_memories(user_id, index.hits(terms, limit, distinct,
                                                       when.Question.of(query)), metadata)

    async def search(self, user_id: str, query: str, limit: int, session=None) -> list[Memory]:
        return await self._search(user_id, query, limit, session)

    async def recall(self, user_id: str, query: str, limit: int, session=None, *,
                     metadata: bool = False) -> list[Memory]:
        return await self._search(user_id, query, limit, session, distinct=True,
                                  metadata=metadata)

    async def _search(self, user_id: str, query: str, limit: int, session, *,
                      distinct: bool = False, metadata: bool = True) -> list[Memory]:
        found = self.search_now(user_id, query, limit, distinct=distinct, metadata=metadata)
        if found is not None:
            return found
        qvec = None
        if self.embedder is not None and query.strip():
            qvec = (await self._embed([query], session) or [None])[0]
        weight = self.vector_weight if qvec is not None else 0.0
        if self._searcher is not None:     # the query's terms are made there too
            hits = await self._searcher.search(user_id, query, limit, distinct, qvec, weight)
        else:
            terms = text.stems(text.query_terms(query))
            if not terms and qvec is None:
                return []
            index = await self._index(user_id)
            hits = index.hits(terms, limit, distinct, when.Question.of(query), qvec, weight)
        return lexical.as_memories(user_id, hits, metadata)

    async def _embed(self, texts: list[str], session) -> list | None:
        return await vectors.embed(self.embedder, texts, session)


def _index_row(memory: Memory, seq: int, stem: bool, packed: bytes | None) -> tuple:
    """A stored memory as the index takes a committed row: (seq, stems or None, fields,
    packed vector or None)."""
    return (seq, lexical.index_stems(memory.content) if stem else None,
            (memory.id, memory.content, json.dumps(memory.metadata), memory.created_at),
            packed)


def _quiet(searching) -> asyncio.Future:
    """A warm-up search as a task whose failure is only waited on (the searches that follow
    report their own)."""
    task = asyncio.ensure_future(searching)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return task


def _log_failed_build(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("memory index build failed error=%s", type(task.exception()).__name__)
