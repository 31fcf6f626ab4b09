"""The embedded memory backend: one SQLite file, WAL, FTS5/BM25, optional vectors.

    store = SqliteStore(state_dir / "memory.db")
    await store.open()
    await store.add_many("alice", [NewMemory("Alice: I adopted a cat named Miso")])
    hits = await store.search("alice", "what is the name of alice's pet cat?", limit=5)

Isolation: every statement that touches memories goes through ``_UserScope``, which refuses
SQL that does not bind ``:user_id`` and always binds it to the scope's user (full-text hits are
joined to ``memories`` on ``user_id = :user_id``).

Ranking (lexical, no model) -- what it does and why:
1. Normalised terms (``text.py``): lowercase, contraction tails dropped, irregular forms
   mapped to their base ("went" → "go"), stop words removed, then FTS5's porter stemmer on
   both sides. Questions are phrased differently from what was said ("When did she paint a
   sunrise?" vs "I painted that lake sunrise last year"); stemming and irregular forms let the
   content words meet, stop words would only add noise and long posting lists.
2. Neighbour context: each memory is indexed with the content of the memories added just
   before and after it in the same ``add_many`` batch (a conversation session, an import) as a
   second, lower-weighted column. In dialogue the topic of a turn is often named only by the
   turn before ("Did you paint this?" / "Yes, last year!"), so a memory must be findable by
   what surrounds it -- but less than by what it says itself.
3. BM25 with column weights (``bm25(fts, BODY, NEAR, FAR)``): the memory's own words count
   fully, its direct neighbours at ``NEAR_WEIGHT``, the next ones out at ``FAR_WEIGHT``.
4. Bounded work: scoring costs time per matching row, and a 100k-memory store has words in
   tens of thousands of rows. Query terms are taken rarest first while the rows they match
   stay within ``POSTINGS_BUDGET`` (counts capped and cached); the most common words, whose
   IDF is lowest anyway, are dropped only when a store is that large; when even the rarest
   term is that common, only its newest rows are scored. Small stores rank with every term,
   exactly.
5. With an embedder, vector similarity over a candidate set is fused with the BM25 ranking by
   reciprocal rank fusion (rank-based, so the two scores' scales never have to agree).
"""
from __future__ import annotations

import base64
import json
import logging
import secrets
import sqlite3
import time
from array import array
from pathlib import Path
from typing import Any, Awaitable, Callable

from . import text
from .base import InvalidCursor, Memory, MemoryStore, NewMemory
from .sqlite_db import Migration, SqliteThread, transaction

log = logging.getLogger(__name__)

Embedder = Callable[[list, Any], Awaitable[list]]

BODY_WEIGHT = 1.0
NEAR_WEIGHT = 0.4         # the memories just before and after
FAR_WEIGHT = 0.3          # the ones after those
FAR = 2                   # how far out the far context reaches
POSTINGS_BUDGET = 2500    # index rows one search may score (see 4. above)
RRF_K = 60                # reciprocal rank fusion constant (Cormack et al., 2009)
VECTOR_CANDIDATES = 200   # lexical hits + most recent memories compared by vector

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
)

_COLUMNS = "m.seq, m.id, m.user_id, m.content, m.metadata, m.created_at"


class _UserScope:
    """The only way to run SQL on memory tables: ``:user_id`` is always bound to one user."""

    def __init__(self, conn: sqlite3.Connection, user_id: str):
        self.conn = conn
        self.user_id = user_id

    def execute(self, sql: str, **params) -> sqlite3.Cursor:
        if ":user_id" not in sql:
            raise AssertionError(f"memory SQL without :user_id: {sql}")
        return self.conn.execute(sql, {**params, "user_id": self.user_id})

    def rows(self, sql: str, **params) -> list[tuple]:
        return self.execute(sql, **params).fetchall()


def _memory(row: tuple, score: float = 0.0) -> Memory:
    _, mid, user_id, content, metadata, created_at = row[:6]
    return Memory(mid, user_id, content, json.loads(metadata), created_at, score)


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, seq = raw.split(":")
        if tag != "v1":
            raise ValueError(tag)
        return int(seq)
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor(f"invalid cursor {cursor!r}") from None


def _context(items: list[NewMemory], i: int) -> tuple[str, str]:
    """(near, far) neighbour text of item ``i`` in its batch."""
    near = items[max(0, i - 1):i] + items[i + 1:i + 2]
    far = items[max(0, i - FAR):max(0, i - 1)] + items[i + 2:i + 1 + FAR]
    return (" ".join(text.index_text(item.content) for item in near),
            " ".join(text.index_text(item.content) for item in far))


class SqliteStore(MemoryStore):
    name = "sqlite"

    def __init__(self, db_path: Path, *, embedder: Embedder | None = None):
        self.db_path = Path(db_path)
        self.embedder = embedder
        self._db = SqliteThread(self.db_path, "memory-store")
        self.schema_version = 0
        self._postings: dict[str, int] = {}     # term → index rows (capped), db thread only
        self._writes_since_counted = 0

    async def open(self) -> None:
        self.schema_version = await self._db.open("memories", MIGRATIONS)

    async def close(self) -> None:
        await self._db.close()

    def status(self) -> dict[str, Any]:
        return {"backend": self.name, "path": str(self.db_path),
                "schema_version": self.schema_version, "vectors": self.embedder is not None}

    # -- writes ---------------------------------------------------------------------------

    async def add_many(self, user_id: str, items: list[NewMemory], session=None) -> list[Memory]:
        vectors = await self._embed([item.content for item in items], session) if items else None
        return await self._db.run(self._add_many, user_id, items, vectors)

    def _add_many(self, conn, user_id: str, items: list[NewMemory], vectors) -> list[Memory]:
        scope = _UserScope(conn, user_id)
        out = []
        self._writes_since_counted += len(items)
        with transaction(conn):
            for i, item in enumerate(items):
                existing = item.key is not None and scope.rows(
                    f"SELECT {_COLUMNS} FROM memories m WHERE m.user_id = :user_id"
                    " AND m.key = :key", key=item.key)
                if existing:
                    out.append(_memory(existing[0]))
                    continue
                near, far = _context(items, i)
                memory = Memory(secrets.token_hex(8), user_id, item.content,
                                dict(item.metadata), time.time())
                seq = scope.execute(
                    "INSERT INTO memories(id, user_id, key, content, metadata, created_at)"
                    " VALUES (:id, :user_id, :key, :content, :metadata, :created_at)",
                    id=memory.id, key=item.key, content=memory.content,
                    metadata=json.dumps(memory.metadata), created_at=memory.created_at,
                ).lastrowid
                scope.execute(
                    "INSERT INTO memories_fts(rowid, body, near, far) SELECT seq,"
                    " :body, :near, :far FROM memories WHERE seq = :seq AND user_id = :user_id",
                    seq=seq, body=text.index_text(item.content), near=near, far=far)
                if vectors is not None:
                    scope.execute("INSERT INTO memory_vectors(seq, user_id, vector)"
                                  " VALUES (:seq, :user_id, :vector)",
                                  seq=seq, vector=_pack(vectors[i]))
                out.append(memory)
        return out

    async def delete(self, user_id: str, memory_id: str, session=None) -> bool:
        return await self._db.run(self._delete, user_id, "AND id = :id", {"id": memory_id}) > 0

    async def forget_all(self, user_id: str, session=None) -> int:
        return await self._db.run(self._delete, user_id, "", {})

    def _delete(self, conn, user_id: str, where: str, params: dict) -> int:
        scope = _UserScope(conn, user_id)
        mine = f"SELECT seq FROM memories WHERE user_id = :user_id {where}"
        with transaction(conn):
            scope.execute(f"DELETE FROM memories_fts WHERE rowid IN ({mine})", **params)
            scope.execute(f"DELETE FROM memory_vectors WHERE user_id = :user_id"
                          f" AND seq IN ({mine})", **params)
            return scope.execute(f"DELETE FROM memories WHERE user_id = :user_id {where}",
                                 **params).rowcount

    # -- reads ----------------------------------------------------------------------------

    async def get(self, user_id: str, memory_id: str, session=None) -> Memory | None:
        rows = await self._db.run(self._rows, user_id,
                                  f"SELECT {_COLUMNS} FROM memories m"
                                  " WHERE m.user_id = :user_id AND m.id = :id", {"id": memory_id})
        return _memory(rows[0]) if rows else None

    async def list(self, user_id: str, limit: int, cursor: str | None = None,
                   session=None) -> tuple[list[Memory], str | None]:
        before = _decode_cursor(cursor) if cursor else 2 ** 63 - 1
        rows = await self._db.run(
            self._rows, user_id, f"SELECT {_COLUMNS} FROM memories m WHERE m.user_id = :user_id"
            " AND m.seq < :before ORDER BY m.seq DESC LIMIT :limit",
            {"before": before, "limit": limit + 1})
        page = rows[:limit]
        more = len(rows) > limit
        return [_memory(r) for r in page], _encode_cursor(page[-1][0]) if more else None

    @staticmethod
    def _rows(conn, user_id: str, sql: str, params: dict) -> list[tuple]:
        return _UserScope(conn, user_id).rows(sql, **params)

    async def search(self, user_id: str, query: str, limit: int, session=None) -> list[Memory]:
        terms = text.query_terms(query)
        qvec = None
        if self.embedder is not None and query.strip():
            qvec = (await self._embed([query], session) or [None])[0]
        if not terms and qvec is None:
            return []
        return await self._db.run(self._search, user_id, terms, qvec, limit)

    def _search(self, conn, user_id: str, terms: list[str], qvec, limit: int) -> list[Memory]:
        scope = _UserScope(conn, user_id)
        lexical = self._lexical(scope, terms, VECTOR_CANDIDATES if qvec else limit)
        if qvec is None:
            return [_memory(row, -row[6]) for row in lexical]
        return self._fuse(scope, lexical, qvec, limit)

    def _lexical(self, scope: _UserScope, terms: list[str], limit: int) -> list[tuple]:
        terms, share = self._within_budget(scope.conn, terms)
        if not terms:
            return []
        floor = 0
        if share < 1.0:     # even the rarest term is too common: score its newest rows only
            # Two subqueries: SQLite optimises min() and max() only one per SELECT.
            low, high = scope.rows(
                "SELECT (SELECT min(seq) FROM memories WHERE user_id = :user_id),"
                " (SELECT max(seq) FROM memories WHERE user_id = :user_id)")[0]
            floor = int(high - (high - low) * share) if high is not None else 0
        return scope.rows(
            f"SELECT {_COLUMNS}, bm25(memories_fts, {BODY_WEIGHT}, {NEAR_WEIGHT}, {FAR_WEIGHT})"
            " AS r FROM memories_fts CROSS JOIN memories m ON m.seq = memories_fts.rowid"
            " WHERE memories_fts MATCH :match AND memories_fts.rowid >= :floor"
            " AND m.user_id = :user_id ORDER BY r LIMIT :limit",
            match=text.match_expression(terms, ("body", "near", "far")), floor=floor,
            limit=limit)

    def _within_budget(self, conn: sqlite3.Connection, terms: list[str]) -> tuple[list, float]:
        """The rarest terms whose index rows together stay within ``POSTINGS_BUDGET``, and
        the share of their rows that may be scored (below 1 when one term alone exceeds it)."""
        if self._writes_since_counted > POSTINGS_BUDGET or len(self._postings) > 50_000:
            self._postings.clear()
            self._writes_since_counted = 0
        for term in terms:
            if term not in self._postings:
                # Statistics only (how many index rows of any user hold the term, capped):
                # no memory is read, so this is the one statement outside ``_UserScope``.
                self._postings[term] = conn.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM memories_fts WHERE memories_fts"
                    " MATCH ? LIMIT ?)", (f'"{term}"', 4 * POSTINGS_BUDGET)).fetchone()[0]
        keep, total = [], 0
        for term in sorted(terms, key=self._postings.__getitem__):
            if keep and total + self._postings[term] > POSTINGS_BUDGET:
                break
            keep.append(term)
            total += self._postings[term]
        return keep, min(1.0, POSTINGS_BUDGET / max(total, 1))

    @staticmethod
    def _fuse(scope: _UserScope, lexical: list[tuple], qvec, limit: int) -> list[Memory]:
        """Reciprocal rank fusion of the BM25 ranking and cosine similarity."""
        seqs = [row[0] for row in lexical]
        recent = scope.rows("SELECT seq FROM memory_vectors WHERE user_id = :user_id"
                            " ORDER BY seq DESC LIMIT :n", n=VECTOR_CANDIDATES)
        candidates = list(dict.fromkeys(seqs + [r[0] for r in recent]))
        marks = ",".join(str(int(s)) for s in candidates) or "NULL"
        stored = scope.rows(f"SELECT seq, vector FROM memory_vectors WHERE user_id = :user_id"
                            f" AND seq IN ({marks})")
        q = _normalise(qvec)
        sims = sorted(((_dot(q, _unpack(blob)), seq) for seq, blob in stored), reverse=True)
        fused: dict[int, float] = {}
        for ranking in (seqs, [seq for _, seq in sims]):
            for rank, seq in enumerate(ranking):
                fused[seq] = fused.get(seq, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(fused, key=fused.__getitem__, reverse=True)[:limit]
        marks = ",".join(str(int(s)) for s in best) or "NULL"
        rows = {r[0]: r for r in scope.rows(
            f"SELECT {_COLUMNS} FROM memories m WHERE m.user_id = :user_id AND m.seq IN ({marks})")}
        return [_memory(rows[s], fused[s]) for s in best if s in rows]

    async def _embed(self, texts: list[str], session) -> list | None:
        if self.embedder is None:
            return None
        try:
            return await self.embedder(texts, session)
        except Exception as exc:   # an embedding outage degrades to lexical, never fails
            log.warning("memory embedding failed error=%s", type(exc).__name__)
            return None


def _normalise(vector) -> array:
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return array("f", (x / norm for x in vector))


def _pack(vector) -> bytes:
    return _normalise(vector).tobytes()


def _unpack(blob: bytes) -> array:
    out = array("f")
    out.frombytes(blob)
    return out


def _dot(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) if len(a) == len(b) else 0.0
