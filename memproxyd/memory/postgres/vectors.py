"""Vector similarity for the PostgreSQL store, fused with its lexical ranking.

Embeddings are stored as unit-length ``real[]``, so the store works with or without pgvector:

* with the ``vector`` extension in the database (installed by the store when it may), the
  server ranks the user's memories by cosine distance (``embedding::vector <=> query``): the
  nearest ``CANDIDATES`` of all of them, however old. The search is exact (no ANN index: the
  dimension depends on the embedding model);
* without it, the lexical hits and the newest ``CANDIDATES`` memories are compared in process,
  as the SQLite store does.

The two are fused by score, weighted toward the lexical one (``fuse``), as in the SQLite store.
"""
from __future__ import annotations

import logging
from typing import Any

import asyncpg

from memproxyd.memory.base import MemoryError_

log = logging.getLogger(__name__)

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


async def nearest(scope, columns: str, qvec, lexical: list[int],
                  pgvector: bool) -> list[tuple[Any, float]]:
    """(row, cosine) of the lexical hits and the candidates by vector: with pgvector the
    ``CANDIDATES`` nearest of all the user's memories, else the newest ``CANDIDATES``
    (compared here, with numpy)."""
    q = unit(qvec)
    if pgvector:
        literal = "[" + ",".join(repr(x) for x in q) + "]"
        rows = await scope.rows(
            f"SELECT {columns}, 1 - (m.embedding::vector <=> $2::text::vector) AS sim"
            " FROM memories m WHERE m.user_id = $1 AND m.embedding IS NOT NULL"
            " AND cardinality(m.embedding) = $3 AND (m.seq = ANY($5::bigint[]) OR m.seq IN"
            " (SELECT seq FROM memories WHERE user_id = $1 AND embedding IS NOT NULL"
            " AND cardinality(embedding) = $3"
            " ORDER BY embedding::vector <=> $2::text::vector LIMIT $4))",
            literal, len(q), CANDIDATES, lexical)
        return [(r, float(r["sim"])) for r in rows]
    rows = await scope.rows(
        f"SELECT {columns}, m.embedding FROM memories m WHERE m.user_id = $1"
        " AND m.embedding IS NOT NULL AND (m.seq = ANY($2::bigint[]) OR m.seq >="
        " (SELECT coalesce(min(s.seq), 0) FROM (SELECT seq FROM memories WHERE user_id = $1"
        " AND embedding IS NOT NULL ORDER BY seq DESC LIMIT $3) s))", lexical, CANDIDATES)
    rows = [r for r in rows if len(r["embedding"]) == len(q)]
    if not rows:
        return []
    import numpy
    sims = numpy.array([r["embedding"] for r in rows], dtype=numpy.float32) @ numpy.array(
        q, dtype=numpy.float32)
    return list(zip(rows, sims.tolist()))


def fuse(lexical: dict[int, float], similar: dict[int, float], weight: float,
         limit: int) -> list[tuple[int, float]]:
    """(seq, fused score) best first: ``(1 - weight) * lexical + weight * cosine`` (a
    negative cosine counts 0; both 0-1), as the SQLite store (``memory/vectors.py``)."""
    fused = {seq: (1 - weight) * score for seq, score in lexical.items()}
    for seq, sim in similar.items():
        fused[seq] = fused.get(seq, 0.0) + weight * max(0.0, sim)
    best = sorted(fused, key=lambda seq: (-fused[seq], -seq))[:limit]
    return [(seq, fused[seq]) for seq in best if fused[seq] > 0]
