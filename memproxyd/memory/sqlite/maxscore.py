"""MaxScore over a user's BM25 index (``lexical.UserIndex``): the top ``limit`` memories for a
query, the ones scoring every posting would give, without scoring most postings.

    maxscore.search(index, text.stems(text.query_terms("pottery class")), limit=5)

Scoring costs time per posting, so terms are taken rarest first and the common ones are rarely
scored in full (MaxScore, Turtle & Flood 1995). Each term's postings know their largest BM25
part (``peak``), so ``idf * peak`` bounds what the term can add to any memory. Once the terms
still to come could not, all together, lift a memory that none of the rarer terms matched
above the ``limit``-th score so far, only the memories already matched can make the top: the
remaining terms are looked up for those few (a binary search in their sorted postings, or one
gather in a dense array for a term in many memories) instead of scored over all their
postings, and before each lookup the candidates that can no longer make the top are dropped.
While still scoring in full, terms are taken while their postings stay within
``POSTINGS_BUDGET``; the most common words, whose IDF is lowest anyway, are dropped only when
a store is that large; when even the rarest term is that common, only its newest postings are
scored. Everything runs on numpy views of the index's arrays, on the caller's thread.
"""
from __future__ import annotations

import math

POSTINGS_BUDGET = 15_000   # postings one search may score in full
PRUNE_CHECK = 512          # a term with more postings than this is worth a MaxScore check
DENSE_SHARE = 8            # a term in 1/8 of the memories is looked up densely (``_dense``)
DENSE_TERMS = 16           # dense lookups kept per user (the most recently used terms)
WEAK_WEIGHT = 0.5          # a request word's share of its IDF weight
WEAK_POOL = 4              # request words reorder the 4 * limit best found by topic words


def search(index, terms: list[str], limit: int,
           weak: frozenset[str] = frozenset()) -> list[tuple[int, float]]:
    """(slot, score) best first for the stemmed query ``terms``, each score normalised to
    the query's best possible match (``ideal``): 0-1. The ``weak`` terms (request words,
    ``terms.weak``) only add to memories the other terms found (the ``WEAK_POOL * limit``
    best of them), at ``WEAK_WEIGHT``: a memory is never a hit by request words alone."""
    count = index.live_slots
    present = [t for t in set(terms) if t in index.postings]
    lists = sorted((index.postings[t] for t in present if t not in weak),
                   key=lambda p: len(p.slots))
    if not count or not lists:
        return []
    weights, rest = _bounds(index, lists, count)
    extra = sorted((index.postings[t] for t in present if t in weak), key=lambda p: len(p.slots))
    if not extra:
        ranked = _score(index, lists, weights, rest, limit)
    else:
        found = _score(index, lists, weights, rest, max(limit, WEAK_POOL * limit))
        more, more_rest = _bounds(index, extra, count, WEAK_WEIGHT)
        ranked = _complete(index, *_arrays(found), extra, more, more_rest, limit)
        weights += more
        lists += extra
    best = ideal(index, lists, weights, len(set(terms).difference(present, weak)), count)
    return [(slot, min(1.0, score / best)) for slot, score in ranked]


def ideal(index, lists: list, weights: list[float], unknown: int, count: int) -> float:
    """The score of the query's best possible match: a memory that holds every term of the
    query with the largest BM25 part any memory has for it; a topic word no memory has
    counts as if one memory had it once, at the average length (a request word no memory
    has does not count). What a search's scores are divided by, so 1.0 means "as good as
    this store can match this question" and 0.3 "a third of the question's weight"."""
    return (sum(w * p.peak for w, p in zip(weights, lists))
            + unknown * idf(1, count + 1)) or 1.0


def idf(hits: int, count: int) -> float:
    """Lucene's BM25 IDF, ``log(1 + (N - n + 0.5) / (n + 0.5))``: positive for every term,
    even one in most of a small store's memories (FTS5's ``log((N - n + 0.5) / (n + 0.5))``
    gives it ~0, so two memories that both say "deploy" scored nothing for "deploy")."""
    return math.log(1 + (count - hits + 0.5) / (hits + 0.5))


def _arrays(found: list[tuple[int, float]]):
    """(slots, scores) of ``found`` as numpy arrays, ordered by slot."""
    np = lazy_numpy()
    found = sorted(found)
    return (np.array([slot for slot, _ in found], dtype=np.int32),
            np.array([score for _, score in found], dtype=np.float32))


def _bounds(index, lists: list, count: int,
            scale: float = 1.0) -> tuple[list[float], list[float]]:
    """Each term's IDF weight (times ``scale``; its impacts brought to the current
    normalisation), and ``rest[i]``: the most the terms from the i-th on can add to any one
    memory."""
    index._drift(count)
    weights = []
    generation = index._generation
    for postings in lists:
        # deleted memories keep their postings until a rebuild: never more hits than
        # live memories
        weights.append(scale * idf(min(len(postings.slots), count), count))
        if postings.generation != generation:
            index._renormalise(postings, index._current_norms())
    rest = [0.0] * (len(lists) + 1)
    for i in range(len(lists) - 1, -1, -1):
        rest[i] = rest[i + 1] + weights[i] * lists[i].peak
    return weights, rest


def _score(index, lists: list, weights: list[float], rest: list[float],
           limit: int) -> list[tuple[int, float]]:
    """Terms scored in full, rarest first, until MaxScore's test passes (then the rest are
    looked up for the candidates) or the budget is spent."""
    np = lazy_numpy()
    scores = _per_slot(index, "_scores", "float32")   # zero between searches
    touched: list = []
    scored = 0
    budget = POSTINGS_BUDGET
    for i, postings in enumerate(lists):
        if budget <= 0:
            break
        # the test can only pass once the terms scored so far can outweigh the rest
        # (the limit-th score is at most what they add together) and is worth its cost
        # only before a long posting list
        if (touched and len(postings.slots) > max(PRUNE_CHECK, scored)
                and rest[i] < rest[0] - rest[i]):
            found = _matched(index, scores, touched, limit, rest[i])
            if found is not None:
                return _complete(index, *found, lists[i:], weights[i:], rest[i:], limit)
        # Views, not copies; no append can happen while they live (same thread).
        slots = np.frombuffer(postings.slots, dtype=np.int32)[-budget:]
        impacts = np.frombuffer(postings.impacts, dtype=np.float32)[-budget:]
        budget -= len(slots)
        scored += len(slots)
        # a term's slots are distinct, so a fancy-indexed += adds each posting once
        scores[slots] += weights[i] * impacts
        touched.append(slots)
    if index.deleted:
        scores[list(index.deleted)] = 0.0
    return _best(index, scores, touched, limit)


def _matched(index, scores, touched: list, limit: int, rest: float):
    """MaxScore's test: when no memory outside the ``touched`` ones can reach the top
    ``limit`` (``rest`` is the most the remaining terms add), the touched live memories
    that still can and their scores so far, ordered by slot (``scores`` zeroed again);
    else None."""
    np = lazy_numpy()
    candidates = touched[0] if len(touched) == 1 else np.concatenate(touched)
    if len(touched) > 1:     # one place per slot: the last of its places wins the scatter
        places = _arange(index, len(candidates))
        owner = _per_slot(index, "_owners", "int32")
        owner[candidates] = places
        candidates = candidates[owner[candidates] == places]
    if len(candidates) < limit:
        return None
    partial = scores[candidates]
    if index.deleted:
        partial[np.isin(candidates, list(index.deleted))] = 0.0
    threshold = np.partition(partial, len(partial) - limit)[len(partial) - limit]
    if rest >= threshold:
        return None
    scores[candidates] = 0.0
    keep = partial >= threshold - rest
    candidates, partial = candidates[keep], partial[keep]
    order = candidates.argsort()     # sorted needles: searchsorted goes faster
    return candidates[order], partial[order]


def _complete(index, candidates, partial, lists: list, weights: list[float],
              rest: list[float], limit: int) -> list[tuple[int, float]]:
    """Add the remaining terms to the candidates' scores by looking each candidate up in
    their postings (sorted), dropping, before each term, the candidates that can no
    longer reach the top ``limit`` (``rest[j]``: the most terms ``j``... can add), and
    take the ``limit`` best."""
    np = lazy_numpy()
    for j, (postings, weight) in enumerate(zip(lists, weights)):
        if j and len(partial) > 4 * limit:
            threshold = np.partition(partial, len(partial) - limit)[len(partial) - limit]
            keep = partial >= threshold - rest[j]
            candidates, partial = candidates[keep], partial[keep]
        if postings.dense is not None or len(postings.slots) * DENSE_SHARE >= len(index.seqs):
            partial += weight * _dense(index, postings)[candidates]
            continue
        slots = np.frombuffer(postings.slots, dtype=np.int32)
        at = slots.searchsorted(candidates)
        at[at == len(slots)] = 0
        hit = slots[at] == candidates
        partial[hit] += weight * np.frombuffer(postings.impacts, dtype=np.float32)[at[hit]]
    if len(partial) > limit:
        top = np.argpartition(partial, -limit)[-limit:]
        candidates, partial = candidates[top], partial[top]
    order = np.argsort(-partial, kind="stable")
    return [(slot, score) for slot, score
            in zip(candidates[order].tolist(), partial[order].tolist()) if score > 0]


def _dense(index, postings):
    """The term's dense impacts, made if needed (the least recently used one of more
    than ``DENSE_TERMS`` is dropped)."""
    np = lazy_numpy()
    if postings.dense is None:
        dense = np.zeros(max(1024, 2 * len(index.seqs)), dtype=np.float32)
        dense[np.frombuffer(postings.slots, dtype=np.int32)] = np.frombuffer(
            postings.impacts, dtype=np.float32)
        postings.dense = dense
    index._densed.pop(postings, None)
    index._densed[postings] = None
    if len(index._densed) > DENSE_TERMS:
        oldest = next(iter(index._densed))
        del index._densed[oldest]
        oldest.dense = None
    return postings.dense


def _best(index, scores, touched: list, limit: int) -> list[tuple[int, float]]:
    """The ``limit`` best of the touched slots, and the buffer zeroed again."""
    np = lazy_numpy()
    candidates = np.concatenate(touched)
    values = scores[candidates]
    scores[candidates] = 0.0
    # a slot is in ``candidates`` once per matching term: take enough to cover repeats
    k = min(len(values), limit * len(touched))
    top = np.argpartition(values, -k)[-k:]
    top = top[np.argsort(-values[top], kind="stable")]
    out: dict[int, float] = {}
    for slot, score in zip(candidates[top].tolist(), values[top].tolist()):
        if score > 0 and slot not in out:
            out[slot] = score
            if len(out) == limit:
                break
    return list(out.items())



def _per_slot(index, name: str, dtype: str):
    """The index's scratch array ``name``, zeroed when made, with a place per slot."""
    kept = getattr(index, name)
    if len(kept) < len(index.seqs):
        kept = lazy_numpy().zeros(max(1024, 2 * len(index.seqs)), dtype=dtype)
        setattr(index, name, kept)
    return kept


def _arange(index, n: int):
    """0..n-1 as int32 (a view of an array the index keeps)."""
    if len(index._places) < n:
        index._places = lazy_numpy().arange(max(1024, 2 * n), dtype="int32")
    return index._places[:n]


_np = None


def lazy_numpy():
    """numpy, imported on first use (not at daemon start: it costs ~0.1 s)."""
    global _np
    if _np is None:
        import numpy
        _np = numpy
    return _np
