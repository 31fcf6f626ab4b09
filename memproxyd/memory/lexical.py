"""The search index of the sqlite store: one in-memory BM25 index per user.

SQLite holds every memory durably; this index is derived from it (built from the user's rows
on first use, then kept current by each write) and is what a search scores, on the event
loop, without a thread hop. Per user, so a search touches only that user's postings: its
cost and its statistics never depend on what other users have stored. It also keeps each
memory's stored fields (memories are never changed, only added and deleted), so a search's
hits are made without reading SQLite: ~0.3 KB of RAM a memory plus its text, for a search
without a statement, a thread hop or a GIL hand-off on the loop.

    index = UserIndex()
    index.add_batch([(11, "Bob: did you finish the pottery class?"),
                     (12, "Ann: yes, I made a bowl last weekend!")])
    index.search(text.stems(text.query_terms("pottery")), limit=5)   # [(11, 0.9), (12, 0.4)]
    index.stored[index.slot_of[11]]    # (id, content, metadata JSON, created_at) when given

Ranking -- what it does and why:
1. Terms: ``text.index_terms`` then the Porter stemmer, on memories and questions alike.
2. Neighbour context: each memory is indexed with the words of the memories added just
   before and after it in the same batch (a conversation session, an import) at
   ``NEAR_WEIGHT``, and the next ones out at ``FAR_WEIGHT``. In dialogue the topic of a turn is
   often named only by the turn before ("Did you paint this?" / "Yes, last year!"), so a
   memory must be findable by what surrounds it -- but less than by what it says itself.
3. BM25 exactly as SQLite FTS5's ``bm25()`` computes it with column weights (the weighted
   term frequency over memory and context, the length of both, k1 = 1.2, b = 0.75), with
   one posting per (term, memory) holding the weighted frequency. Scored with numpy over
   views of the postings (~10 ns a posting, where a Python loop or FTS5 take 150-800 ns).
4. Bounded work: scoring costs time per posting, so terms are taken rarest first and the
   common ones are rarely scored in full (MaxScore, Turtle & Flood 1995). Each term's
   postings know their largest BM25 part (``peak``), so ``idf * peak`` bounds what the term
   can add to any memory. Once the terms still to come could not, all together, lift a
   memory that none of the rarer terms matched above the ``limit``-th score so far, only
   the memories already matched can make the top: the remaining terms are looked up for
   those few (a binary search in their sorted postings) instead of scored over all their
   postings. The result is the one exhaustive scoring gives. While still scoring in full,
   terms are taken while their postings stay within ``POSTINGS_BUDGET``; the most common
   words, whose IDF is lowest anyway, are dropped only when a store is that large; when even
   the rarest term is that common, only its newest postings are scored.
"""
from __future__ import annotations

import math
from array import array
from collections import defaultdict
from typing import Any

from . import text
from .base import Memory
from .sse import loads

K1, B = 1.2, 0.75          # FTS5's bm25() constants
NEAR_WEIGHT = 0.4          # the memories just before and after
FAR_WEIGHT = 0.3           # the ones after those
FAR = 2                    # how far out the far context reaches
POSTINGS_BUDGET = 15_000   # postings one search may score in full (see 4. above)
PRUNE_CHECK = 512          # a term with more postings than this is worth a MaxScore check
DENSE_SHARE = 8            # a term in 1/8 of the memories is looked up densely (see Postings)
DENSE_TERMS = 16           # dense lookups kept per user (the most recently used terms)


def index_stems(content: str) -> list[str]:
    return text.stems(text.index_terms(content))


class Postings:
    """One term's postings: slots, weighted frequencies, and each posting's BM25 term-frequency
    part (``f * (k1 + 1) / (f + norm)``), valid for the index's current length normalisation
    (``generation``) and recomputed lazily after it changes."""

    __slots__ = ("slots", "frequencies", "impacts", "generation", "peak", "dense")

    def __init__(self, generation: int):
        self.slots = array("i")           # ascending: slots are handed out in order
        self.frequencies = array("f")
        self.impacts = array("f")
        self.generation = generation
        self.peak = 0.0                   # the largest of ``impacts``
        # For a common term MaxScore looks candidates up in: its impacts by slot (0 where
        # absent), one gather instead of a binary search per candidate; made on first use,
        # kept current by appends, dropped when renormalised or evicted (``DENSE_TERMS``).
        self.dense = None


class UserIndex:
    """One user's memories as postings per term. A slot is a memory's place in insertion
    order; ``seqs[slot]`` is its row in SQLite."""

    def __init__(self) -> None:
        self.seqs = array("q")
        self.slot_of: dict[int, int] = {}
        self.stored: list[tuple | None] = []   # per slot: (id, content, metadata JSON, created)
        self.lengths = array("f")          # tokens of the memory and its context
        self.postings: dict[str, Postings] = {}
        self.deleted: set[int] = set()
        self.live_length = 0.0
        self._norms: Any = ()              # k1 * (1 - b + b * length / avg) per slot (numpy)
        self._norms_avg = 0.0
        self._normed = 0                   # slots with a norm in ``_norms`` (it has spare room)
        self._generation = 0               # bumped when ``_norms`` are recomputed
        self._scores: Any = ()             # reused accumulator (numpy), zero between searches
        self._owners: Any = ()             # scratch (numpy) for ``_matched``
        self._densed: dict[int, Postings] = {}   # postings with a dense lookup, oldest first
        self._places: Any = ()             # 0, 1, 2, ... (numpy) for ``_matched``

    def __len__(self) -> int:
        return len(self.seqs) - len(self.deleted)

    def add_batch(self, rows: list[tuple]) -> None:
        """Index a batch of (seq, content[, stored]) in order; each row's context is its
        batch. ``stored``: the memory's (id, content, metadata JSON, created_at)."""
        self.add_stemmed([(row[0], index_stems(row[1]), *row[2:]) for row in rows])

    def add_stemmed(self, rows: list[tuple]) -> None:
        """``add_batch`` with each row's ``index_stems`` already made (off the event loop):
        (seq, stems[, stored]). Rows already indexed are skipped (a write seen twice is
        indexed once)."""
        terms = [row[1] for row in rows]
        for i, (seq, _, *stored) in enumerate(rows):
            if seq in self.slot_of:
                continue
            weighted: dict[str, float] = defaultdict(float)
            length = 0
            for j in range(max(0, i - FAR), min(len(rows), i + FAR + 1)):
                weight = 1.0 if j == i else NEAR_WEIGHT if abs(j - i) == 1 else FAR_WEIGHT
                for term in terms[j]:
                    weighted[term] += weight
                length += len(terms[j])
            self._append(seq, weighted, length, stored[0] if stored else None)

    def _append(self, seq: int, weighted: dict[str, float], length: int,
                stored: tuple | None) -> None:
        slot = len(self.seqs)
        self.seqs.append(seq)
        self.slot_of[seq] = slot
        self.stored.append(stored)
        self.lengths.append(length)
        self.live_length += length
        # with the normalisation in force: the one ``_current_norms`` extends to new slots
        norm = K1 * (1 - B + B * length / (self._norms_avg or 1.0))
        for term, frequency in weighted.items():
            postings = self.postings.get(term)
            if postings is None:
                postings = self.postings[term] = Postings(self._generation)
            postings.slots.append(slot)
            postings.frequencies.append(frequency)
            impact = frequency * (K1 + 1) / (frequency + norm)
            postings.impacts.append(impact)
            if impact > postings.peak:
                postings.peak = impact
            if postings.dense is not None:
                if slot >= len(postings.dense):
                    postings.dense = _grown(postings.dense, slot)
                postings.dense[slot] = impact

    def remove(self, seqs) -> None:
        for seq in seqs:
            slot = self.slot_of.pop(seq, None)
            if slot is not None:
                self.deleted.add(slot)
                self.live_length -= self.lengths[slot]
                self.stored[slot] = None

    @property
    def stale(self) -> bool:
        """Mostly deleted postings: worth rebuilding from the database."""
        return len(self.deleted) > 1000 and len(self.deleted) > len(self.seqs) // 4

    def search(self, terms: list[str], limit: int) -> list[tuple[int, float]]:
        """(seq, score) best first for the stemmed query ``terms``."""
        np = _numpy()
        count = len(self)
        lists = sorted((self.postings[t] for t in set(terms) if t in self.postings),
                       key=lambda p: len(p.slots))
        if not count or not lists:
            return []
        self._drift(count)
        weights = []
        generation, log = self._generation, math.log
        for postings in lists:
            # deleted memories keep their postings until a rebuild: never more hits than
            # live memories (the log's argument would go below zero)
            hits = min(len(postings.slots), count)
            idf = log((count - hits + 0.5) / (hits + 0.5))
            weights.append(idf if idf > 0 else 1e-6)
            if postings.generation != generation:
                self._renormalise(postings, self._current_norms())
        # rest[i]: the most the terms from the i-th on can add to any one memory
        rest = [0.0] * (len(lists) + 1)
        for i in range(len(lists) - 1, -1, -1):
            rest[i] = rest[i + 1] + weights[i] * lists[i].peak
        scores = self._scores_buffer()
        touched: list = []
        scored = 0
        budget = POSTINGS_BUDGET
        for i, postings in enumerate(lists):
            if budget <= 0:
                break
            size = len(postings.slots)
            # the test can only pass once the terms scored so far can outweigh the rest
            # (the limit-th score is at most what they add together) and is worth its cost
            # only before a long posting list
            if touched and size > max(PRUNE_CHECK, scored) and rest[i] < rest[0] - rest[i]:
                found = self._matched(scores, touched, limit, rest[i])
                if found is not None:
                    return self._complete(*found, lists[i:], weights[i:], rest[i:], limit)
            # Views, not copies; no append can happen while they live (same thread).
            slots = np.frombuffer(postings.slots, dtype=np.int32)[-budget:]
            impacts = np.frombuffer(postings.impacts, dtype=np.float32)[-budget:]
            budget -= len(slots)
            scored += len(slots)
            # a term's slots are distinct, so a fancy-indexed += adds each posting once
            scores[slots] += weights[i] * impacts
            touched.append(slots)
        if self.deleted:
            scores[list(self.deleted)] = 0.0
        return self._best(scores, touched, limit)

    def _matched(self, scores, touched: list, limit: int, rest: float):
        """MaxScore's test: when no memory outside the ``touched`` ones can reach the top
        ``limit`` (``rest`` is the most the remaining terms add), the touched live memories
        that still can and their scores so far, ordered by slot (``scores`` zeroed again);
        else None."""
        np = _numpy()
        candidates = touched[0] if len(touched) == 1 else np.concatenate(touched)
        if len(touched) > 1:     # one place per slot: the last of its places wins the scatter
            places = self._arange(len(candidates))
            owner = self._owners_buffer()
            owner[candidates] = places
            candidates = candidates[owner[candidates] == places]
        if len(candidates) < limit:
            return None
        partial = scores[candidates]
        if self.deleted:
            partial[np.isin(candidates, list(self.deleted))] = 0.0
        threshold = np.partition(partial, len(partial) - limit)[len(partial) - limit]
        if rest >= threshold:
            return None
        scores[candidates] = 0.0
        keep = partial >= threshold - rest
        candidates, partial = candidates[keep], partial[keep]
        order = candidates.argsort()     # sorted needles: searchsorted goes faster
        return candidates[order], partial[order]

    def _complete(self, candidates, partial, lists: list[Postings], weights: list[float],
                  rest: list[float], limit: int) -> list[tuple[int, float]]:
        """Add the remaining terms to the candidates' scores by looking each candidate up in
        their postings (sorted), dropping, before each term, the candidates that can no
        longer reach the top ``limit`` (``rest[j]``: the most terms ``j``... can add), and
        take the ``limit`` best."""
        np = _numpy()
        for j, (postings, weight) in enumerate(zip(lists, weights)):
            if j and len(partial) > 4 * limit:
                threshold = np.partition(partial, len(partial) - limit)[len(partial) - limit]
                keep = partial >= threshold - rest[j]
                candidates, partial = candidates[keep], partial[keep]
            if postings.dense is not None or len(postings.slots) * DENSE_SHARE >= len(self.seqs):
                partial += weight * self._dense(postings)[candidates]
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
        return [(self.seqs[slot], score) for slot, score
                in zip(candidates[order].tolist(), partial[order].tolist()) if score > 0]

    def _dense(self, postings: Postings):
        """The term's dense impacts, made if needed (the least recently used one of more
        than ``DENSE_TERMS`` is dropped)."""
        np = _numpy()
        if postings.dense is None:
            dense = np.zeros(max(1024, 2 * len(self.seqs)), dtype=np.float32)
            dense[np.frombuffer(postings.slots, dtype=np.int32)] = np.frombuffer(
                postings.impacts, dtype=np.float32)
            postings.dense = dense
        self._densed.pop(id(postings), None)
        self._densed[id(postings)] = postings
        if len(self._densed) > DENSE_TERMS:
            oldest = next(iter(self._densed))
            self._densed.pop(oldest).dense = None
        return postings.dense

    def _arange(self, n: int):
        """0..n-1 as int32 (a view of a kept array)."""
        np = _numpy()
        if len(self._places) < n:
            self._places = np.arange(max(1024, 2 * n), dtype=np.int32)
        return self._places[:n]

    def _owners_buffer(self):
        """An int32 array with a place per slot (scratch for ``_matched``)."""
        np = _numpy()
        if len(self._owners) < len(self.seqs):
            self._owners = np.zeros(max(1024, 2 * len(self.seqs)), dtype=np.int32)
        return self._owners

    def _best(self, scores, touched: list, limit: int) -> list[tuple[int, float]]:
        """The ``limit`` best of the touched slots, and the buffer zeroed again."""
        np = _numpy()
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
        return [(self.seqs[slot], score) for slot, score in out.items()]

    def memories(self, user_id: str, ranked: list[tuple[int, float]],
                 metadata: bool = True) -> list[Memory]:
        """The ranked (seq, score) as memories, from the fields kept with the index (without
        their metadata, ``{}``, unless ``metadata``)."""
        out = []
        for seq, score in ranked:
            slot = self.slot_of.get(seq)
            stored = self.stored[slot] if slot is not None else None
            if stored is not None:
                mid, content, meta, created_at = stored
                out.append(Memory(mid, user_id, content, loads(meta) if metadata else {},
                                  created_at, score))
        return out

    def _scores_buffer(self):
        """A zeroed float32 array with a place per slot, reused across searches."""
        np = _numpy()
        if len(self._scores) < len(self.seqs):
            self._scores = np.zeros(max(1024, 2 * len(self.seqs)), dtype=np.float32)
        return self._scores

    def _renormalise(self, postings: Postings, norms) -> None:
        np = _numpy()
        slots = np.frombuffer(postings.slots, dtype=np.int32)
        f = np.frombuffer(postings.frequencies, dtype=np.float32)
        impacts = (f * (K1 + 1) / (f + norms[slots])).astype(np.float32)
        postings.impacts = array("f", impacts.tobytes())
        postings.peak = float(impacts.max()) if len(impacts) else 0.0
        postings.generation = self._generation
        if postings.dense is not None:
            postings.dense = None
            self._densed.pop(id(postings), None)

    def _drift(self, count: int) -> None:
        """A new normalisation (``generation``) when the average length moved by more than
        5 %: every term's impacts are recomputed when next searched."""
        avg = self.live_length / count or 1.0
        if abs(avg - self._norms_avg) > 0.05 * self._norms_avg:
            self._norms_avg = avg
            self._generation += 1
            self._normed = 0

    def _current_norms(self):
        """Per-slot length normalisation ``k1 * (1 - b + b * length / avg)`` at the current
        average: made anew after a drift, else extended to the memories added since (only
        when a term is renormalised: new postings get theirs when appended)."""
        np = _numpy()
        lengths = np.frombuffer(self.lengths, dtype=np.float32)
        if self._normed == 0 or len(self._norms) < len(lengths):
            grown = np.empty(max(1024, 2 * len(lengths)), dtype=np.float32)
            grown[:self._normed] = self._norms[:self._normed]
            self._norms = grown
        if self._normed < len(lengths):
            self._norms[self._normed:len(lengths)] = (
                K1 * (1 - B + B * lengths[self._normed:] / self._norms_avg))
            self._normed = len(lengths)
        return self._norms


def _grown(dense, slot: int):
    grown = _numpy().zeros(max(1024, 2 * (slot + 1)), dtype=dense.dtype)
    grown[:len(dense)] = dense
    return grown


_np = None


def _numpy():
    """numpy, imported on first use (not at daemon start: it costs ~0.1 s)."""
    global _np
    if _np is None:
        import numpy
        _np = numpy
    return _np


def build(rows: list[tuple]) -> UserIndex:
    """An index of the rows (seq, group, content[, stored]), oldest first; consecutive rows
    of one group are a batch (each other's context)."""
    index = UserIndex()
    batch: list[tuple] = []
    group = None
    for seq, grp, *rest in rows:
        if batch and (grp != group or grp is None):
            index.add_batch(batch)
            batch = []
        batch.append((seq, *rest))
        group = grp
    if batch:
        index.add_batch(batch)
    _numpy()      # imported here, on the builder's thread, not by the first search on the loop
    return index
