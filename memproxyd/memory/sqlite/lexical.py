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
4. Bounded work: terms rarest first, the common ones rarely scored in full, the result the
   one exhaustive scoring gives (MaxScore: ``maxscore.py``).
5. Identical memories are one document: a memory alone in its batch (a remembered exchange)
   whose text an indexed one alone in its batch already has is that slot's *twin* -- no
   postings, no stemming, a search returns it beside the slot's own memory (newest first).
   The statistics (memory count, document frequencies, average length) count each distinct
   text once, so a question asked a thousand times neither buries the rest of the store's
   words under low IDF nor lengthens every search over the repeats.
"""
from __future__ import annotations

from array import array
from collections import defaultdict
from itertools import chain, islice
from typing import Any

from memproxyd.memory import terms as text, vectors, when
from memproxyd.memory.base import Memory, loads
from memproxyd.memory.sqlite import maxscore
from memproxyd.memory.sqlite.maxscore import lazy_numpy

K1, B = 1.2, 0.75          # FTS5's bm25() constants
NEAR_WEIGHT = 0.4          # the memories just before and after
FAR_WEIGHT = 0.3           # the ones after those
FAR = 2                    # how far out the far context reaches


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
        # kept current by appends, dropped when renormalised or evicted (``maxscore.DENSE_TERMS``).
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
        self.twins: dict[int, list[int]] = {}     # slot → its other memories' seqs, oldest first
        self._twin_stored: dict[int, tuple] = {}  # a twin's seq → its stored fields
        self._texts: dict[str, int] = {}          # the text of a slot alone in its batch → slot
        self.live_length = 0.0
        self._norms: Any = ()              # k1 * (1 - b + b * length / avg) per slot (numpy)
        self._norms_avg = 0.0
        self._normed = 0                   # slots with a norm in ``_norms`` (it has spare room)
        self._generation = 0               # bumped when ``_norms`` are recomputed
        self._scores: Any = ()             # reused accumulator (numpy), zero between searches
        self._owners: Any = ()             # scratch (numpy) for ``_matched``
        self._densed: dict[Postings, None] = {}   # postings with a dense lookup, oldest first
        self._places: Any = ()             # 0, 1, 2, ... (numpy) for ``_matched``
        self.vectors = vectors.UserVectors()      # a unit vector per slot, when embedded

    def __len__(self) -> int:
        """Live memories, twins included."""
        return self.live_slots + len(self._twin_stored)

    @property
    def live_slots(self) -> int:
        """Live distinct documents: what the statistics count."""
        return len(self.seqs) - len(self.deleted)

    def add_batch(self, rows: list[tuple]) -> None:
        """Index a batch of (seq, content[, stored[, vector]]) in order; each row's context is
        its batch. ``stored``: the memory's (id, content, metadata JSON, created_at);
        ``vector``: its packed unit vector (``vectors.pack``) or None."""
        # alone in its batch with its fields, a row is stemmed only if it is not a twin
        alone = len(rows) == 1 and len(rows[0]) > 2
        self.add_stemmed([(row[0], None if alone else index_stems(row[1]), *row[2:])
                          for row in rows])

    def add_stemmed(self, rows: list[tuple]) -> None:
        """``add_batch`` with each row's ``index_stems`` already made (off the event loop), or
        None to make them here if needed: (seq, stems[, stored[, vector]]). Rows already indexed are
        skipped (a write seen twice is indexed once)."""
        if len(rows) == 1 and self._twin(rows[0]):
            return
        terms = [row[1] if row[1] is not None else index_stems(row[2][1]) for row in rows]
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
            if len(stored) > 1:          # (seq, stems, stored, packed vector or None)
                self.vectors.put(self.slot_of[seq], stored[1])
            if len(rows) == 1 and stored:
                self._texts.setdefault(stored[0][1], self.slot_of[seq])

    def _twin(self, row: tuple) -> bool:
        """Whether the row (alone in its batch) joined the slot of an identical text."""
        seq, _, *stored = row
        slot = self._texts.get(stored[0][1]) if stored else None
        if slot is None or seq in self.slot_of:
            return seq in self.slot_of
        self.slot_of[seq] = slot
        self.twins.setdefault(slot, []).append(seq)
        self._twin_stored[seq] = stored[0]
        return True

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
            if slot is None:
                continue
            twins = self.twins.get(slot)
            if twins:     # the text stays: a twin leaves, or the oldest takes the slot's place
                if self.seqs[slot] == seq:
                    self.seqs[slot] = twins.pop(0)
                    self.stored[slot] = self._twin_stored.pop(self.seqs[slot])
                else:
                    twins.remove(seq)
                    del self._twin_stored[seq]
                if not twins:
                    del self.twins[slot]
                continue
            self.deleted.add(slot)
            self.live_length -= self.lengths[slot]
            if self.stored[slot] is not None and self._texts.get(self.stored[slot][1]) == slot:
                del self._texts[self.stored[slot][1]]
            self.stored[slot] = None

    @property
    def stale(self) -> bool:
        """Mostly deleted postings: worth rebuilding from the database."""
        return len(self.deleted) > 1000 and len(self.deleted) > len(self.seqs) // 4

    def search(self, terms: list[str], limit: int, distinct: bool = False, qvec=None,
               weight: float = 0.0) -> list[tuple[int, float]]:
        """(seq, score 0-1) best first for the stemmed query ``terms`` (``maxscore.search``,
        request words ``text.weak``), fused with the query's vector ``qvec`` when given
        (``vectors.fuse``, ``weight``): a slot's twins beside it, newest first, or with
        ``distinct`` only its newest memory."""
        if qvec is None:
            ranked = maxscore.search(self, terms, limit, text.weak(terms))
        else:
            ranked = vectors.fuse(self.vectors, maxscore.search(
                self, terms, max(limit, vectors.CANDIDATES), text.weak(terms)),
                qvec, weight, limit, len(self.seqs), self.deleted)
        if not self.twins:
            return [(self.seqs[slot], score) for slot, score in ranked]
        out: list[tuple[int, float]] = []
        for slot, score in ranked:
            seqs = chain(reversed(self.twins.get(slot, ())), (self.seqs[slot],))
            out += [(seq, score) for seq in islice(seqs, 1 if distinct else limit - len(out))]
            if len(out) >= limit:
                break
        return out

    def stored_of(self, seq: int) -> tuple | None:
        """The memory's stored fields; None when not indexed (or indexed without them)."""
        slot = self.slot_of.get(seq)
        if slot is None:
            return None
        return self.stored[slot] if self.seqs[slot] == seq else self._twin_stored.get(seq)

    def hits(self, terms: list[str], limit: int, distinct: bool = False,
             question: when.Question | None = None, qvec=None,
             weight: float = 0.0) -> list[tuple]:
        """``search`` with each memory's stored fields: (seq, score, stored) best first
        (``as_memories`` makes them memories); for a ``question`` about time, the
        ``when.POOL * limit`` best reordered by ``when.rerank``."""
        timed = question is not None and question.timed
        found = [(seq, score, self.stored_of(seq)) for seq, score in self.search(
            terms, when.POOL * limit if timed else limit, distinct, qvec, weight)]
        return when.rerank(question, found, limit) if timed else found

    def _renormalise(self, postings: Postings, norms) -> None:
        np = lazy_numpy()
        slots = np.frombuffer(postings.slots, dtype=np.int32)
        f = np.frombuffer(postings.frequencies, dtype=np.float32)
        impacts = (f * (K1 + 1) / (f + norms[slots])).astype(np.float32)
        postings.impacts = array("f", impacts.tobytes())
        postings.peak = float(impacts.max()) if len(impacts) else 0.0
        postings.generation = self._generation
        if postings.dense is not None:
            postings.dense = None
            self._densed.pop(postings, None)

    def _drift(self, count: int) -> None:
        """A new normalisation (``generation``) when the average length of the ``count`` live
        slots moved by more than 5 %: every term's impacts are recomputed when next searched."""
        avg = self.live_length / count or 1.0
        if abs(avg - self._norms_avg) > 0.05 * self._norms_avg:
            self._norms_avg = avg
            self._generation += 1
            self._normed = 0

    def _current_norms(self):
        """Per-slot length normalisation ``k1 * (1 - b + b * length / avg)`` at the current
        average: made anew after a drift, else extended to the memories added since (only
        when a term is renormalised: new postings get theirs when appended)."""
        np = lazy_numpy()
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


def as_memories(user_id: str, hits: list[tuple], metadata: bool = True) -> list[Memory]:
    """(seq, score, stored fields or None) as memories, metadata parsed if ``metadata``."""
    return [Memory(stored[0], user_id, stored[1], loads(stored[2]) if metadata else {},
                   stored[3], score) for _, score, stored in hits if stored is not None]


def _grown(dense, slot: int):
    grown = lazy_numpy().zeros(max(1024, 2 * (slot + 1)), dtype=dense.dtype)
    grown[:len(dense)] = dense
    return grown


def build(rows: list[tuple]) -> UserIndex:
    """An index of the rows (seq, group, content[, stored[, vector]]), oldest first; consecutive rows
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
    lazy_numpy()      # imported here, on the builder's thread, not by the first search on the loop
    return index
