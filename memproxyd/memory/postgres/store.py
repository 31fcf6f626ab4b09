"""The shared memory backend: PostgreSQL full-text search, for several gateways on one database.

    db = PgDatabase(config.postgres)
    await db.open()
    store = PostgresStore(db)
    await store.open()                       # migrates the ``memories`` component
    await store.add_many("alice", [NewMemory("Alice: I adopted a cat named Miso")])
    hits = await store.search("alice", "what is the name of alice's pet cat?", limit=5)

Isolation: every statement on ``memories`` goes through ``_UserScope``, which refuses SQL that
does not compare ``user_id = $1`` and always passes the scope's user as ``$1``.

Ranking carries over the SQLite store's ideas (see ``sqlite_store``):
1. The same normalised terms (``memory/terms.py``: stop words, irregular forms), then PostgreSQL's
   ``english`` configuration (Snowball stemming) on both sides.
2. Neighbour context: one ``tsvector`` per memory, its own words weighted ``A``, the batch
   neighbours just before and after ``B``, the next ones out ``C``; ``ts_rank`` weighs them
   ``1.0``, ``NEAR_WEIGHT``, ``FAR_WEIGHT``.
3. IDF: ``ts_rank`` knows nothing of how common a word is, so each query term is ranked on its
   own, saturated (``SATURATE``) and weighted by its BM25 inverse document frequency
   (``pg_stats``): a sum over terms shaped like BM25's.
4. Bounded work: the rarest terms whose rows stay within ``POSTINGS_BUDGET``, the newest rows
   only when even the rarest term is that common (``pg_stats.choose_terms``).
5. Scores are shares (0-1) of the best possible match: a memory holding each chosen term once
   in its own words (``_ideal``); request words (``terms.WEAK_WORDS``) are left out of the
   query, so they are never the reason for a hit.
6. With an embedder, vectors (smoothed with their batch neighbours') are fused with the
   lexical score, weighted toward it (``vector_weight``), through pgvector where the database
   has it, else in process (``pg_vectors``).
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import time
from typing import Any, Awaitable, Callable

import asyncpg

from memproxyd.memory import terms as text
from memproxyd.memory import vectors
from memproxyd.memory.base import Memory, MemoryStore, NewMemory, decode_cursor, encode_cursor
from memproxyd.memory.postgres import term_stats, vectors as pg_vectors
from memproxyd.memory.postgres.db import PgDatabase

log = logging.getLogger(__name__)

Embedder = Callable[[list, Any], Awaitable[list]]

NEAR_WEIGHT = 0.4         # the memories just before and after
FAR_WEIGHT = 0.3          # the ones after those
FAR = 2                   # how far out the far context reaches
VECTOR_CANDIDATES = pg_vectors.CANDIDATES   # lexical hits fused with the vector ranking
# ts_rank's weights are listed {D, C, B, A}.
# Normalisation 32 (rank / (rank + 1)): a term's weight saturates with repetition, like BM25's
# k1; on the LoCoMo dev split it ranks as well as the SQLite store (recall@10 0.825 vs 0.828,
# against 0.804 without it; length normalisations 1, 2 and 8 did worse).
SATURATE = 32
RANK_WEIGHTS = [0.0, FAR_WEIGHT, NEAR_WEIGHT, 1.0]
TSV = ("setweight(to_tsvector('english', b.body), 'A') || "
       "setweight(to_tsvector('english', b.near), 'B') || "
       "setweight(to_tsvector('english', b.far), 'C')")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE memories (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
        " user_id TEXT NOT NULL, key TEXT, content TEXT NOT NULL, metadata JSONB NOT NULL,"
        " created_at DOUBLE PRECISION NOT NULL, tsv TSVECTOR NOT NULL, embedding REAL[])",
        "CREATE UNIQUE INDEX memories_user_key ON memories(user_id, key) WHERE key IS NOT NULL",
        "CREATE INDEX memories_user_seq ON memories(user_id, seq)",
        # No pending list: every search would scan it linearly; writes are one per exchange.
        "CREATE INDEX memories_tsv ON memories USING gin(tsv) WITH (fastupdate = off)",
    ),
    (   # pinned memories: in every block of their owner
        "ALTER TABLE memories ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT false",
        "CREATE INDEX memories_user_pinned ON memories(user_id, seq) WHERE pinned",
    ),
)

# ``user_id = $1`` in a condition, ``$1 AS user_id`` in an INSERT ... SELECT (never ``$10``).
_BINDS_USER = re.compile(r"user_id = \$1\b|\$1 AS user_id\b")
_COLUMNS = "m.seq, m.id, m.user_id, m.content, m.metadata, m.created_at, m.pinned"
# One statement per batch, rows in batch order (``seq`` is the list order).
_INSERT = (
    "INSERT INTO memories(id, user_id, key, content, metadata, created_at, tsv, embedding,"
    " pinned) SELECT b.id, $1 AS user_id, b.key, b.content, b.metadata::jsonb, b.created_at,"
    f" {TSV}, b.embedding::real[], b.pinned FROM unnest($2::text[], $3::text[], $4::text[],"
    " $5::text[], $6::float8[], $7::text[], $8::text[], $9::text[], $10::text[],"
    " $11::bool[]) WITH ORDINALITY AS b(id, key, content, metadata, created_at, body, near,"
    " far, embedding, pinned, ord) ORDER BY b.ord"
    " ON CONFLICT (user_id, key) WHERE key IS NOT NULL DO NOTHING RETURNING id")


class _UserScope:
    """The only way to run SQL on ``memories``: ``$1`` is always this scope's user id."""

    def __init__(self, conn: asyncpg.Connection, user_id: str):
        self.conn = conn
        self.user_id = user_id

    @staticmethod
    def _check(sql: str) -> None:
        if not _BINDS_USER.search(sql):
            raise AssertionError(f"memory SQL without user_id = $1: {sql}")

    async def rows(self, sql: str, *args) -> list[asyncpg.Record]:
        self._check(sql)
        return await self.conn.fetch(sql, self.user_id, *args)

    async def execute(self, sql: str, *args) -> str:
        self._check(sql)
        return await self.conn.execute(sql, self.user_id, *args)


def _memory(row, score: float = 0.0) -> Memory:
    return Memory(row["id"], row["user_id"], row["content"], json.loads(row["metadata"]),
                  row["created_at"], score, row["pinned"])


def _context(items: list[NewMemory], i: int) -> tuple[str, str]:
    """(near, far) neighbour text of item ``i`` in its batch."""
    near = items[max(0, i - 1):i] + items[i + 1:i + 2]
    far = items[max(0, i - FAR):max(0, i - 1)] + items[i + 2:i + 1 + FAR]
    return (" ".join(text.index_text(item.content) for item in near),
            " ".join(text.index_text(item.content) for item in far))


class PostgresStore(MemoryStore):
    name = "postgres"

    def __init__(self, db: PgDatabase, *, embedder: Embedder | None = None,
                 vector_weight: float = vectors.WEIGHT):
        self.db = db
        self.embedder = embedder
        self.vector_weight = vector_weight      # the vectors' share of a fused score
        self._unit_rank: float | None = None    # ``_ideal``'s ts_rank, asked once
        self.stats = term_stats.TermStats()
        self.pgvector: bool | None = None      # None: not known yet (database unreachable)

    async def open(self) -> None:
        await self.db.migrate("memories", MIGRATIONS)
        if self.embedder is not None:
            self.pgvector = await pg_vectors.enable(self.db)

    def status(self) -> dict[str, Any]:
        return {"backend": self.name, **self.db.status(), "vectors": self.embedder is not None,
                "pgvector": self.pgvector}

    # -- writes ---------------------------------------------------------------------------

    async def add_many(self, user_id: str, items: list[NewMemory], session=None) -> list[Memory]:
        if not items:
            return []
        embedded = await self._embed([item.content for item in items], session)
        # each vector with its batch neighbours' (the batch is the memory's context)
        embedded = vectors.smooth(embedded) if embedded else embedded
        firsts: dict[str, int] = {}     # key → index of its first item in this batch
        fresh = [i for i, item in enumerate(items)
                 if item.key is None or firsts.setdefault(item.key, i) == i]
        now = time.time()
        new = {i: Memory(secrets.token_hex(8), user_id, items[i].content,
                         dict(items[i].metadata),
                         now if items[i].created_at is None else items[i].created_at,
                         pinned=items[i].pinned)
               for i in fresh}
        async with self.db.connection() as conn, conn.transaction():
            scope = _UserScope(conn, user_id)
            inserted = await self._insert(scope, items, fresh, new, embedded)
            keys = [items[i].key for i in fresh if i not in inserted]
            existing = {r["key"]: _memory(r) for r in await scope.rows(
                f"SELECT {_COLUMNS}, m.key FROM memories m WHERE m.user_id = $1"
                " AND m.key = ANY($2::text[])", keys)} if keys else {}
        self.stats.wrote(len(inserted))
        out = []
        for i, item in enumerate(items):
            first = i if item.key is None else firsts[item.key]
            out.append(new[first] if first in inserted else existing[item.key])
        return out

    @staticmethod
    async def _insert(scope: _UserScope, items, fresh: list[int], new: dict[int, Memory],
                      vectors) -> set[int]:
        """Insert the batch in one statement; returns the indexes actually inserted (an item
        whose key is already stored, by this or another daemon, is skipped)."""
        near_far = [_context(items, i) for i in fresh]
        rows = await scope.rows(
            _INSERT, [new[i].id for i in fresh], [items[i].key for i in fresh],
            [items[i].content for i in fresh], [json.dumps(new[i].metadata) for i in fresh],
            [new[i].created_at for i in fresh],
            [text.index_text(items[i].content) for i in fresh],
            [nf[0] for nf in near_far], [nf[1] for nf in near_far],
            [pg_vectors.array_literal(vectors[i]) if vectors else None for i in fresh],
            [items[i].pinned for i in fresh])
        ids = {r["id"] for r in rows}
        return {i for i in fresh if new[i].id in ids}

    async def delete(self, user_id: str, memory_id: str, session=None) -> bool:
        async with self.db.connection() as conn:
            status = await _UserScope(conn, user_id).execute(
                "DELETE FROM memories WHERE user_id = $1 AND id = $2", memory_id)
        return status != "DELETE 0"

    async def forget_all(self, user_id: str, session=None) -> int:
        async with self.db.connection() as conn:
            status = await _UserScope(conn, user_id).execute(
                "DELETE FROM memories WHERE user_id = $1")
        return int(status.split()[-1])

    async def update(self, user_id: str, memory_id: str, *, content: str | None = None,
                     metadata: dict | None = None, pinned: bool | None = None,
                     session=None) -> Memory | None:
        """Edit in place; a new text gets its ``tsvector`` (its own words; the neighbours'
        context it had is kept) and its embedding again in the same statement."""
        sets, args = [], []
        if content is not None:
            args.append(text.index_text(content))
            sets.append(f"tsv = setweight(to_tsvector('english', ${len(args) + 2}), 'A')"
                        " || ts_filter(m.tsv, '{b,c}')")
            args.append(content)
            sets.append(f"content = ${len(args) + 2}")
            vector = (await self._embed([content], session) or [None])[0]
            args.append(pg_vectors.array_literal(vector) if vector is not None else None)
            sets.append(f"embedding = ${len(args) + 2}::text::real[]")
        if metadata is not None:
            args.append(json.dumps(metadata))
            sets.append(f"metadata = ${len(args) + 2}::jsonb")
        if pinned is not None:
            args.append(pinned)
            sets.append(f"pinned = ${len(args) + 2}")
        async with self.db.connection() as conn:
            rows = await _UserScope(conn, user_id).rows(
                f"UPDATE memories m SET {', '.join(sets)} WHERE m.user_id = $1 AND m.id = $2"
                f" RETURNING {_COLUMNS}", memory_id, *args)
        return _memory(rows[0]) if rows else None

    async def move(self, user_id: str, memory_id: str, to_user: str,
                   session=None) -> Memory | None:
        """Same row for the new owner (id, time, vector kept; the idempotency key, which named
        a delivery to the old owner, dropped)."""
        async with self.db.connection() as conn:
            rows = await _UserScope(conn, user_id).rows(
                f"UPDATE memories m SET user_id = $3, key = NULL WHERE m.user_id = $1"
                f" AND m.id = $2 RETURNING {_COLUMNS}", memory_id, to_user)
        return _memory(rows[0]) if rows else None

    async def pinned(self, user_id: str, session=None) -> list[Memory]:
        async with self.db.connection() as conn:
            rows = await _UserScope(conn, user_id).rows(
                f"SELECT {_COLUMNS} FROM memories m WHERE m.user_id = $1 AND m.pinned"
                " ORDER BY m.seq DESC")
        return [_memory(r) for r in rows]

    async def count(self, user_id: str, session=None) -> int | None:
        async with self.db.connection() as conn:
            rows = await _UserScope(conn, user_id).rows(
                "SELECT count(*) AS n FROM memories WHERE user_id = $1")
        return rows[0]["n"]

    # -- reads ----------------------------------------------------------------------------

    async def get(self, user_id: str, memory_id: str, session=None) -> Memory | None:
        async with self.db.connection() as conn:
            rows = await _UserScope(conn, user_id).rows(
                f"SELECT {_COLUMNS} FROM memories m WHERE m.user_id = $1 AND m.id = $2",
                memory_id)
        return _memory(rows[0]) if rows else None

    async def list(self, user_id: str, limit: int, cursor: str | None = None,
                   session=None) -> tuple[list[Memory], str | None]:
        before = decode_cursor(cursor) if cursor else 2 ** 63 - 1
        async with self.db.connection() as conn:
            rows = await _UserScope(conn, user_id).rows(
                f"SELECT {_COLUMNS} FROM memories m WHERE m.user_id = $1 AND m.seq < $2"
                " ORDER BY m.seq DESC LIMIT $3", before, limit + 1)
        page = rows[:limit]
        more = len(rows) > limit
        return [_memory(r) for r in page], encode_cursor(page[-1]["seq"]) if more else None

    async def search(self, user_id: str, query: str, limit: int, session=None) -> list[Memory]:
        # request words ("please", "tell", ...) are never the reason for a hit: left out
        terms = [t for t in text.query_terms(query) if t not in text.WEAK_WORDS]
        qvec = None
        if self.embedder is not None and query.strip():
            qvec = (await self._embed([query], session) or [None])[0]
        if not terms and qvec is None:
            return []
        if qvec is not None and self.pgvector is None:
            self.pgvector = await pg_vectors.enable(self.db)
        async with self.db.connection() as conn:
            scope = _UserScope(conn, user_id)
            lexical = await self._lexical(scope, terms, VECTOR_CANDIDATES if qvec else limit)
            if qvec is None:
                return [_memory(row, score) for row, score in lexical]
            rows = {row["seq"]: row for row, _ in lexical}
            similar = await pg_vectors.nearest(scope, _COLUMNS, qvec, list(rows),
                                               bool(self.pgvector))
        for row, _ in similar:
            rows.setdefault(row["seq"], row)
        fused = pg_vectors.fuse({row["seq"]: score for row, score in lexical},
                                {row["seq"]: sim for row, sim in similar},
                                self.vector_weight, limit)
        return [_memory(rows[seq], score) for seq, score in fused]

    async def _lexical(self, scope: _UserScope, terms: list[str], limit: int) -> list:
        """(row, score 0-1) best first: each score a share of the best possible match, a
        memory holding each chosen term once in its own words (``_ideal``)."""
        weighted, share = await self.stats.choose_terms(scope.conn, terms)
        if not weighted:
            return []
        floor, by_seq = (await self._floor(scope, share)) if share < 1.0 else (0, False)
        # Each term's tsquery is a typed parameter: computed once, not once per row.
        ranks = " + ".join(f"ts_rank($2::float4[], m.tsv, ${i}::tsquery, {SATURATE})"
                           f" * ${i + 1}" for i in range(6, 6 + 2 * len(weighted), 2))
        args = [a for query, idf in weighted for a in (query, idf)]
        rows = await scope.rows(
            f"SELECT {_COLUMNS}, ({ranks})::float8 AS r FROM memories m WHERE m.user_id = $1"
            f" AND m.tsv @@ $3::tsquery AND {'m.seq' if by_seq else 'm.seq + 0'} >= $4"
            " ORDER BY r DESC, m.seq DESC LIMIT $5", RANK_WEIGHTS,
            " | ".join(f"({q})" for q, _ in weighted), floor, limit, *args)
        ideal = sum(idf for _, idf in weighted) * await self._ideal(scope.conn) or 1.0
        return [(row, min(1.0, row["r"] / ideal)) for row in rows]

    async def _ideal(self, conn) -> float:
        """The saturated ``ts_rank`` of one term said once in a memory's own words (weight
        ``A``): a term's share of the best possible match, before its IDF (asked once)."""
        if self._unit_rank is None:
            self._unit_rank = float(await conn.fetchval(
                "SELECT ts_rank($1::float4[], setweight(to_tsvector('english', 'memory'), 'A'),"
                f" to_tsquery('english', 'memory'), {SATURATE})", RANK_WEIGHTS))
        return self._unit_rank

    @staticmethod
    async def _floor(scope: _UserScope, share: float) -> tuple[int, bool]:
        """Even the rarest term is too common: the ``seq`` from which its newest ``share`` of
        rows starts, and whether to reach them through the ``seq`` range (rows in the range:
        ``range * share``) rather than through the word's rows, filtered (``budget / share``).
        Both ways read each row they pass; the range is cheaper when the word is very common
        (at 100k memories: 2 ms instead of 70 ms) and dearer otherwise (21 ms instead of 5)."""
        low, high = (await scope.rows(
            "SELECT min(seq) AS low, max(seq) AS high FROM memories WHERE user_id = $1"))[0]
        if high is None:
            return 0, False
        span = high - low
        return int(high - span * share), span * share * share < term_stats.POSTINGS_BUDGET

    async def _embed(self, texts: list[str], session) -> list | None:
        return await vectors.embed(self.embedder, texts, session)
