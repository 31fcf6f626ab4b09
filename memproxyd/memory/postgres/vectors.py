"""Vector similarity for the PostgreSQL store, fused with its lexical ranking.

Embeddings are stored as unit-length ``real[]``, so the store works with or without pgvector:

* with the ``vector`` extension in the database (installed by the store when it may), the
  server ranks the user's memories by cosine distance (``embedding::vector <=> query``): the
  nearest ``CANDIDATES`` of all of them, however old. The search is exact (no ANN index: the
  dimension depends on the embedding model);
* without it, the lexical hits and the newest ``CANDIDATES`` memories are compared in process,
  as the SQLite store does.

The two rankings are fused by reciprocal rank fusion (Cormack et al., 2009): ranks, never the
scores' scales, are compared.
"""
from __future__ import annotations

import logging

import asyncpg

from memproxyd.memory.base import MemoryError_

log = logging.getLogger(__name__)

RRF_K = 60
CANDIDATES = 200


def unit(vector) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [float(x) / norm for x in vector]


def array_literal(vector) -> str:
    """A unit vector as a ``real[]`` literal (cosine similarity is then a dot product)."""
    return "{" + ",".join(repr(x) for x in unit(vector)) + "}"


async def enable(db) -> bool | None:
    """True when the database has pgvector (installing it if available and allowed), False
    when it cannot, None while the database is unreachable (ask again later)."""
    try:
        async with db.connection() as conn:
            try:
                if not await conn.fetchval(
                        "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"):
                    return False
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                return True
            except asyncpg.PostgresError as exc:   # no privilege, or another daemon's race
                installed = await conn.fetchval(
                    "SELECT 1 FROM pg_extension WHERE extname = 'vector'")
                if not installed:
                    log.info("pgvector not usable (%s): vectors compared in process",
                             type(exc).__name__)
                return bool(installed)
    except MemoryError_:
        return None


async def nearest(scope, columns: str, qvec, lexical: list[int], pgvector: bool) -> list:
    """The candidates' rows (with ``embedding``), most similar to ``qvec`` first."""
    q = unit(qvec)
    if pgvector:
        return await scope.rows(
            f"SELECT {columns} FROM memories m WHERE m.user_id = $1"
            " AND m.embedding IS NOT NULL AND cardinality(m.embedding) = $3"
            " ORDER BY m.embedding::vector <=> $2::text::vector LIMIT $4",
            "[" + ",".join(repr(x) for x in q) + "]", len(q), CANDIDATES)
    rows = await scope.rows(
        f"SELECT {columns}, m.embedding FROM memories m WHERE m.user_id = $1"
        " AND m.embedding IS NOT NULL AND (m.seq = ANY($2::bigint[]) OR m.seq >="
        " (SELECT coalesce(min(s.seq), 0) FROM (SELECT seq FROM memories WHERE user_id = $1"
        " AND embedding IS NOT NULL ORDER BY seq DESC LIMIT $3) s))", lexical, CANDIDATES)
    scored = [(sum(a * b for a, b in zip(q, r["embedding"])), r["seq"], r) for r in rows
              if len(r["embedding"]) == len(q)]
    return [r for _, _, r in sorted(scored, key=lambda s: (s[0], s[1]), reverse=True)]


def fuse(rankings: list[list[int]], limit: int) -> list[tuple[int, float]]:
    """(seq, fused score), best first."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, seq in enumerate(ranking):
            fused[seq] = fused.get(seq, 0.0) + 1.0 / (RRF_K + rank + 1)
    best = sorted(fused, key=fused.__getitem__, reverse=True)[:limit]
    return [(seq, fused[seq]) for seq in best]
