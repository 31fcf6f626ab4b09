"""Vector similarity (optional: only with an ``embedding_model``), fused with the lexical
ranking so that it never does worse than the lexical ranking alone.

    vecs = UserVectors()                       # beside a user's lexical index, slot by slot
    vecs.put(slot, pack(vector))
    fuse(vecs, [(slot, 0.8), ...], qvec, weight=0.4, limit=10, newest=n, deleted=set())

* **Score fusion weighted toward the lexical ranking**, not reciprocal rank fusion: a
  memory's score is ``(1 - weight) * lexical + weight * cosine`` (both 0-1: the lexical score
  is a share of the question's best possible match, a negative cosine counts 0), so a strong
  lexical hit stays above a memory that is only "about the same thing". With equal-weight
  rank fusion a dense ranking weaker than BM25 pushed good lexical hits out of the top ten.
  ``weight`` is ``[memory] vector_weight``.
* **Neighbour-smoothed vectors**: a memory's stored vector is its own plus its batch
  neighbours' (``smooth``: +-1 at 0.4, +-2 at 0.3, the lexical index's context weights), so
  "Yes, last year!" is near the question its previous turn asked.
* **In memory, compared with numpy**: each user's vectors live beside their lexical index (in
  the search process), one float32 matrix row per slot; a search compares the query with
  the newest ``SCAN`` memories and the lexical hits (matrix products: see the README for
  the time it takes, where the pure-Python loop over vectors read from SQLite took 13-19 ms
  for 400 candidates).
A vector of another dimension than the user's first one (the model was changed) counts as
no vector: such memories rank by their words alone until re-embedded.
"""
from __future__ import annotations

import logging
from array import array

log = logging.getLogger(__name__)

CANDIDATES = 200          # lexical hits a vector search fuses with
SCAN = 200                # newest memories compared by vector, however they match by words
NEAR_WEIGHT, FAR_WEIGHT = 0.4, 0.3     # neighbours' share of a memory's vector (``smooth``)
WEIGHT = 0.4              # the vectors' share of a fused score: ``[memory] vector_weight``'s
                          # default (chosen on LoCoMo dev, README "Recall on LoCoMo dev")


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


def smooth(batch: list) -> list:
    """Each vector of a batch (in order) plus its neighbours' at ``NEAR_WEIGHT`` (+-1) and
    ``FAR_WEIGHT`` (+-2), unit length; a missing vector (None) stays missing."""
    out = []
    for i, vector in enumerate(batch):
        if vector is None:
            out.append(None)
            continue
        total = list(normalise(vector))
        for j, weight in ((i - 2, FAR_WEIGHT), (i - 1, NEAR_WEIGHT), (i + 1, NEAR_WEIGHT),
                          (i + 2, FAR_WEIGHT)):
            if 0 <= j < len(batch) and batch[j] is not None and len(batch[j]) == len(vector):
                total = [t + weight * x for t, x in zip(total, normalise(batch[j]))]
        out.append(total)
    return out


class UserVectors:
    """One user's unit vectors, a float32 matrix row per index slot (zeros: no vector)."""

    def __init__(self) -> None:
        self.matrix = None
        self.count = 0            # rows in use: slots seen so far

    def put(self, slot: int, blob: bytes | None) -> None:
        np = _numpy()
        vector = np.frombuffer(blob, dtype=np.float32) if blob else None
        if self.matrix is None:
            if vector is None:
                return
            self.matrix = np.zeros((max(1024, 2 * (slot + 1)), len(vector)), dtype=np.float32)
        if slot >= len(self.matrix):
            grown = np.zeros((2 * (slot + 1), self.matrix.shape[1]), dtype=np.float32)
            grown[:len(self.matrix)] = self.matrix
            self.matrix = grown
        if vector is not None and len(vector) == self.matrix.shape[1]:
            self.matrix[slot] = vector
        self.count = max(self.count, slot + 1)


def fuse(vecs: UserVectors, lexical: list[tuple[int, float]], qvec, weight: float,
         limit: int, newest: int, deleted) -> list[tuple[int, float]]:
    """(slot, fused score) best first: ``lexical`` (slot, score 0-1) and the cosine of the
    query with the lexical hits and the ``SCAN`` newest of the ``newest`` slots, weighted
    ``1 - weight`` and ``weight``; deleted slots left out."""
    np = _numpy()
    if vecs.matrix is None or not len(qvec) or len(qvec) != vecs.matrix.shape[1]:
        return lexical[:limit]
    q = np.asarray(qvec, dtype=np.float32)
    q = q / (float(np.linalg.norm(q)) or 1.0)
    end = min(newest, vecs.count)
    start = max(0, end - SCAN)
    older = [slot for slot, _ in lexical if slot < start]      # hits before the newest
    slots = np.concatenate([np.arange(start, end), np.array(older, dtype=np.int64)])
    # the newest are one contiguous slice: read in order, not gathered
    fused = weight * np.maximum(np.concatenate(
        [vecs.matrix[start:end] @ q, vecs.matrix[older] @ q]), 0.0)
    place = {slot: end - start + i for i, slot in enumerate(older)}
    extra = []
    for slot, score in lexical:
        at = slot - start if start <= slot < end else place.get(slot)
        if at is None:
            extra.append((slot, (1 - weight) * score))   # a hit without a vector row
        else:
            fused[at] += (1 - weight) * score
    if deleted:
        fused[np.isin(slots, np.fromiter(deleted, dtype=np.int64))] = 0.0
    k = min(len(fused), limit)
    top = np.argpartition(-fused, k - 1)[:k] if k else np.array([], dtype=np.int64)
    best = [(int(slots[i]), float(fused[i])) for i in top if fused[i] > 0] + extra
    best.sort(key=lambda hit: -hit[1])
    return best[:limit]


def normalise(vector) -> array:
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return array("f", (x / norm for x in vector))


def pack(vector) -> bytes:
    return normalise(vector).tobytes()


def unpack(blob: bytes) -> array:
    out = array("f")
    out.frombytes(blob)
    return out


def _numpy():
    import numpy      # a dependency (setup.cfg); imported when vectors are first used
    return numpy
