"""The in-memory BM25 index (memory/lexical.py, memory/maxscore.py): MaxScore pruning returns
what scoring every posting returns."""
import math
import random

import pytest

from memproxyd.memory import lexical, maxscore


def exhaustive(index: lexical.UserIndex, terms: list[str], limit: int) -> list[float]:
    """The top ``limit`` scores by scoring every posting of every term, in plain Python."""
    count = len(index)
    index._drift(count)
    norms = index._current_norms()
    scores: dict[int, float] = {}
    for term in set(terms):
        postings = index.postings.get(term)
        if postings is None:
            continue
        hits = min(len(postings.slots), count)
        idf = math.log((count - hits + 0.5) / (hits + 0.5))
        for slot, f in zip(postings.slots, postings.frequencies):
            if slot not in index.deleted:
                impact = f * (lexical.K1 + 1) / (f + norms[slot])
                scores[slot] = scores.get(slot, 0.0) + (idf if idf > 0 else 1e-6) * impact
    return sorted((s for s in scores.values() if s > 0), reverse=True)[:limit]


def corpus(rng: random.Random, n: int) -> list[tuple[int, str]]:
    """Zipf-like words: a few in most memories (long postings, low IDF), many rare ones."""
    vocabulary = [f"w{i}" for i in range(400)]
    weights = [1 / (i + 1) for i in range(400)]
    return [(seq, " ".join(rng.choices(vocabulary, weights, k=rng.randint(3, 25))))
            for seq in range(1, n + 1)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dense", ["never", "common", "always"])
def test_pruned_search_finds_the_exhaustive_top_scores(seed, dense, monkeypatch):
    monkeypatch.setattr(maxscore, "POSTINGS_BUDGET", 10**9)     # no truncation: exact
    monkeypatch.setattr(maxscore, "PRUNE_CHECK", 8)             # prune even on short lists
    monkeypatch.setattr(maxscore, "DENSE_SHARE", {"never": 0, "common": 8, "always": 10**9}[dense])
    # "common": evictions happen too; "always": dense lookups live long, appends update them
    monkeypatch.setattr(maxscore, "DENSE_TERMS", 4 if dense == "common" else 64)
    rng = random.Random(seed)
    index = lexical.UserIndex()
    rows = corpus(rng, 3000)
    for start in range(0, 2500, 50):
        index.add_batch(rows[start:start + 50])
    if seed % 2:
        index.remove(seq for seq, _ in rng.sample(rows, 400))
    pruned, calls = 0, []
    complete = maxscore._complete
    monkeypatch.setattr(maxscore, "_complete",
                        lambda *a, **k: calls.append(1) or complete(*a, **k))
    for n in range(150):
        terms = [f"w{int(rng.paretovariate(0.8)) % 400}" for _ in range(rng.randint(1, 6))]
        if n % 5 == 4:          # memories arrive between searches; then searched for
            new = rows[2500 + n * 3:2503 + n * 3]
            index.add_batch(new)
            terms = new[0][1].split()[:3] + terms[:2]
        limit = rng.choice([1, 5, 10])
        calls.clear()
        found = index.search(lexical.text.stems(terms), limit)
        pruned += bool(calls)
        expected = exhaustive(index, lexical.text.stems(terms), limit)
        assert [s for _, s in found] == pytest.approx(expected, rel=1e-4), terms
        assert all(index.slot_of.get(seq) not in index.deleted for seq, _ in found)
    assert pruned > 30       # the pruned path really ran (and was checked) many times
