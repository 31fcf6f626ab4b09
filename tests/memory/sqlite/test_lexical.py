"""The in-memory BM25 index (memory/lexical.py, memory/maxscore.py): MaxScore pruning returns
what scoring every posting returns."""
import math
import random

import pytest

from memproxyd.memory.sqlite import lexical, maxscore


def exhaustive(index: lexical.UserIndex, terms: list[str], limit: int) -> list[float]:
    """The top ``limit`` scores by scoring every posting of every term, in plain Python: one
    score per live memory, a slot's twins scoring as the slot (the statistics count each
    distinct text once), over the best possible match: every term at its best BM25 part (a
    term no memory has: as if one had it)."""
    count = index.live_slots
    index._drift(count)
    norms = index._current_norms()
    scores: dict[int, float] = {}
    ideal = 0.0
    for term in set(terms):
        postings = index.postings.get(term)
        if postings is None:
            ideal += math.log(1 + (count + 0.5) / 1.5)
            continue
        hits = min(len(postings.slots), count)
        idf = math.log(1 + (count - hits + 0.5) / (hits + 0.5))
        impacts = [f * (lexical.K1 + 1) / (f + norms[slot])
                   for slot, f in zip(postings.slots, postings.frequencies)]
        ideal += idf * max(impacts)
        for slot, impact in zip(postings.slots, impacts):
            if slot not in index.deleted:
                scores[slot] = scores.get(slot, 0.0) + idf * impact
    per_memory = [scores.get(slot, 0.0) / ideal for slot in index.slot_of.values()]
    return sorted((s for s in per_memory if s > 0), reverse=True)[:limit]


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
    # remembered exchanges, each alone in its batch, many of them the same text (twins)
    for seq in range(10_000, 10_600):
        said = rows[rng.randrange(2500, 2530)][1] if rng.random() < 0.7 else rows[seq - 8000][1]
        index.add_batch([(seq, said, (str(seq), said, "{}", 0.0))])
    if seed % 2:
        index.remove(seq for seq, _ in rng.sample(rows, 400))
        index.remove(rng.sample(range(10_000, 10_600), 150))    # twins and the slots' own
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


def alone(index: lexical.UserIndex, seq: int, said: str) -> None:
    """A remembered exchange: alone in its batch, with its stored fields."""
    index.add_batch([(seq, said, (f"m{seq}", said, "{}", float(seq)))])


def test_identical_texts_alone_in_their_batch_are_one_document():
    said = "User: which kiln did we fire?\nAssistant: the friday one"
    index = lexical.UserIndex()
    index.add_batch([(1, "we painted the fence blue"), (2, "the pottery class is on friday")])
    terms = lexical.text.stems(["kiln", "friday"])
    for seq in (10, 11, 12):
        alone(index, seq, said)
    alone(index, 13, "User: which kiln did we fire?\nAssistant: the monday one")
    assert len(index.seqs) == 4 and len(index) == 6 and index.live_slots == 4
    assert index.twins == {index.slot_of[10]: [11, 12]}
    found = index.search(terms, 10)
    assert [seq for seq, _ in found] == [12, 11, 10, 13, 2, 1]    # twins together, newest first
    assert found[0][1] == found[1][1] == found[2][1] > found[3][1]
    assert [seq for seq, _ in index.search(terms, 2)] == [12, 11]
    assert [seq for seq, _ in index.search(terms, 10, distinct=True)] == [12, 13, 2, 1]
    assert [m.id for m in lexical.as_memories("u", index.hits(terms, 3))] == ["m12", "m11", "m10"]

    index.remove([10])                   # the slot's own memory: the oldest twin takes over
    assert [seq for seq, _ in index.search(terms, 3)] == [12, 11, 13]
    assert index.stored_of(11)[0] == "m11" and index.seqs[index.slot_of[11]] == 11
    index.remove([12, 11])
    assert not index.twins and index.live_slots == 3 and len(index) == 3
    assert [seq for seq, _ in index.search(terms, 10)] == [13, 2, 1]
    alone(index, 16, said)               # the text is new again: a slot of its own
    assert index.seqs[index.slot_of[16]] == 16 and len(index.seqs) == 5
    alone(index, 17, said)
    index.add_batch([(18, said, ("m18", said, "{}", 18.0)), (19, "ok", ("m19", "ok", "{}", 19.0))])
    assert index.twins == {index.slot_of[16]: [17]}      # in a batch of two: has context
    assert len(index.seqs) == 7 and index.slot_of[18] != index.slot_of[16]


def test_twins_change_no_statistic():
    """A text remembered a thousand times scores the rest of the store as if once."""
    index, once = lexical.UserIndex(), lexical.UserIndex()
    rows = corpus(random.Random(3), 400)
    index.add_batch(rows)
    once.add_batch(rows)
    alone(once, 1000, "w1 w2 w3 w7")
    for seq in range(1000, 2000):
        alone(index, seq, "w1 w2 w3 w7")
    assert len(index) == 1400 and index.live_slots == once.live_slots == 401
    for terms in (["w1", "w2"], ["w3", "w9", "w40"], ["w7"]):
        stems = lexical.text.stems(terms)
        assert ([s for _, s in index.search(stems, 5, distinct=True)]
                == pytest.approx([s for _, s in once.search(stems, 5)]))


def scored(index: lexical.UserIndex, query: str) -> dict[str, float]:
    return {stored[1]: score for _, score, stored
            in index.hits(lexical.text.stems(lexical.text.query_terms(query)), 10)}


def test_scores_are_shares_of_the_best_possible_match():
    index = lexical.UserIndex()
    for seq, said in enumerate(["deploy the cluster to staging", "the deploy window is friday",
                                "we painted the fence blue"]):
        alone(index, seq, said)
    found = scored(index, "deploy cluster")
    assert found["deploy the cluster to staging"] == pytest.approx(1.0)  # every word, at best
    assert 0.2 < found["the deploy window is friday"] < 0.6
    assert "we painted the fence blue" not in found
    # a word no memory has is part of the question: the same fact matches less of it
    assert 0.4 < scored(index, "deploy cluster kubernetes")["deploy the cluster to staging"] < 0.8


def test_request_words_are_never_the_only_reason_for_a_hit():
    index = lexical.UserIndex()
    for seq, said in enumerate(["User: Please deploy the api cluster to staging tonight.",
                                "User: Can you tell me why the nightly build failed?",
                                "User: the notes say to use tabs for indentation"]):
        alone(index, seq, said)
    found = scored(index, "Please read the notes in CLAUDE.md and tell me the indentation rule")
    assert list(found) == ["User: the notes say to use tabs for indentation"]
    assert scored(index, "please tell me") == {}
    # among what a topic word found, request words still count
    alone(index, 9, "User: please check the indentation")
    found = scored(index, "please fix the indentation")
    assert list(found)[0] == "User: please check the indentation"
