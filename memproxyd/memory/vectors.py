"""Vector similarity for the sqlite store (optional: only with an ``embedding_model``).

Cosine similarity over the lexical hits and the most recent memories is fused with the lexical
ranking by reciprocal rank fusion (rank-based, so the two scores' scales never have to agree).
Runs on a database thread.
"""
from __future__ import annotations

import logging
from array import array

RRF_K = 60                # reciprocal rank fusion constant (Cormack et al., 2009)
CANDIDATES = 200          # lexical hits + most recent memories compared by vector

log = logging.getLogger(__name__)


async def embed(embedder, texts: list[str], session) -> list | None:
    """``embedder(texts, session)``, or None without one or when it fails: an embedding
    outage degrades recall to lexical, never fails it."""
    if embedder is None:
        return None
    try:
        return await embedder(texts, session)
    except Exception as exc:
        log.warning("memory embedding failed error=%s", type(exc).__name__)
        return None


def fuse(scope, lexical: list[tuple[int, float]], qvec, limit: int) -> list[tuple[int, float]]:
    """(seq, fused score) best first: reciprocal rank fusion of ``lexical`` and cosine."""
    seqs = [seq for seq, _ in lexical]
    recent = scope.rows("SELECT seq FROM memory_vectors WHERE user_id = :user_id"
                        " ORDER BY seq DESC LIMIT :n", n=CANDIDATES)
    candidates = list(dict.fromkeys(seqs + [r[0] for r in recent]))
    marks = ",".join(str(int(s)) for s in candidates) or "NULL"
    stored = scope.rows(f"SELECT seq, vector FROM memory_vectors WHERE user_id = :user_id"
                        f" AND seq IN ({marks})")
    q = normalise(qvec)
    sims = sorted(((_dot(q, unpack(blob)), seq) for seq, blob in stored), reverse=True)
    fused: dict[int, float] = {}
    for ranking in (seqs, [seq for _, seq in sims]):
        for rank, seq in enumerate(ranking):
            fused[seq] = fused.get(seq, 0.0) + 1.0 / (RRF_K + rank + 1)
    best = sorted(fused, key=fused.__getitem__, reverse=True)[:limit]
    top = 2.0 / (RRF_K + 1)        # first in both rankings: the best possible, 1.0
    return [(seq, fused[seq] / top) for seq in best]


def normalise(vector) -> array:
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return array("f", (x / norm for x in vector))


def pack(vector) -> bytes:
    return normalise(vector).tobytes()


def unpack(blob: bytes) -> array:
    out = array("f")
    out.frombytes(blob)
    return out


def _dot(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) if len(a) == len(b) else 0.0
