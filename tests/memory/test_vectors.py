"""Vector recall (memory/vectors.py): fused with the lexical ranking, weighted toward it, so
it finds what words cannot and never pushes a strong lexical hit below a vague one; vectors
smoothed with their batch neighbours, held in the search process beside the lexical index."""
import aiohttp
import pytest

from memproxyd.memory import terms, vectors
from memproxyd.memory.sqlite import lexical
from tests.conftest import GATEWAY_KEY, write_config
from tests.fakes import topic_embeddings
from tests.fakes.threaded import ThreadedServer


def index_of(batches: list[list[str]]) -> lexical.UserIndex:
    """An index of the batches, each memory with its (smoothed) topic vector."""
    index, seq = lexical.UserIndex(), 0
    for batch in batches:
        smoothed = vectors.smooth([topic_embeddings.vector(t) for t in batch])
        rows = []
        for said, vector in zip(batch, smoothed):
            seq += 1
            rows.append((seq, said, (f"m{seq}", said, "{}", 0.0), vectors.pack(vector)))
        index.add_batch(rows)
    return index


def found(index, query: str, weight: float = 0.4, limit: int = 3) -> list[tuple[str, float]]:
    stems = terms.stems(terms.query_terms(query))
    return [(stored[1], round(score, 3)) for _, score, stored in index.hits(
        stems, limit, qvec=topic_embeddings.vector(query), weight=weight)]


def test_vectors_find_what_shares_no_word_and_scores_stay_0_to_1():
    index = index_of([["my kitten sleeps all day"], ["the sedan needs new tyres"],
                      ["the report is due friday"]])
    [(best, score), *_] = found(index, "feline")
    assert best == "my kitten sleeps all day" and 0 < score <= 0.4
    assert found(index, "feline", weight=0.0) == []          # words alone: nothing


def test_a_strong_lexical_hit_stays_above_memories_only_near_in_meaning():
    index = index_of([["my kitten sleeps all day", "cats purr when happy"],
                      ["the feline vaccination is booked for march"]])
    ranked = [text for text, _ in found(index, "feline vaccination")]
    assert ranked[0] == "the feline vaccination is booked for march"
    # with the ranks fused at equal weight, the vague "cats purr" tied the exact hit
    assert [text for text, _ in found(index, "feline vaccination", weight=0.5)][0] == \
        "the feline vaccination is booked for march"


def test_a_memory_is_near_what_its_neighbours_are_about():
    """"Yes, last year!" answers the turn before it: its vector carries that turn's topic."""
    index = index_of([["did you sell the sedan?", "yes, last year!"],
                      ["lunch was great"]])
    ranked = dict(found(index, "vehicle", limit=5))
    assert ranked["yes, last year!"] > ranked.get("lunch was great", 0.0)


def test_deleted_memories_and_vectors_of_another_dimension_are_left_out():
    index = index_of([["my kitten sleeps all day"], ["cats purr when happy"]])
    index.remove([1])
    assert [text for text, _ in found(index, "feline")] == ["cats purr when happy"]
    index.add_batch([(9, "a kitten again", ("m9", "a kitten again", "{}", 0.0),
                      vectors.pack([1.0, 0.0]))])              # the model was changed
    assert "a kitten again" not in dict(found(index, "feline"))


@pytest.fixture
def embedding_fake():
    server = ThreadedServer(topic_embeddings.create_app()).start()
    yield server
    server.stop()


async def post(url: str, body: dict) -> dict:
    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as http:
        async with http.post(url, json=body) as resp:
            assert resp.status in (200, 201), await resp.text()
            return await resp.json()


@pytest.mark.parametrize("weight, finds", [(0.4, True), (0.0, False)])
async def test_the_daemon_recalls_by_meaning_through_an_embedding_deployment(
        tmp_path, openai_fake, embedding_fake, start_daemon, weight, finds):
    models = ('[[model_list]]\nmodel_name = "topics"\n[model_list.litellm_params]\n'
              f'model = "openai/topics"\napi_base = "{embedding_fake.url}/v1"\n'
              'api_key = "sk-up"\n')
    daemon = start_daemon(write_config(tmp_path, openai_fake.url, extra=models, memory=(
        f'backend = "sqlite"\nembedding_model = "topics"\nvector_weight = {weight}\n'
        'recall_timeout_ms = 20000')))
    await post(f"{daemon.url}/v1/memories", {"user_id": "alpha", "memories": [
        {"content": "my kitten sleeps all day"}, {"content": "the report is due friday"}]})
    await post(f"{daemon.url}/v1/memories", {"user_id": "alpha", "content":
                                             "the sedan needs new tyres"})
    results = (await post(f"{daemon.url}/v1/memories/search",
                          {"user_id": "alpha", "query": "feline", "limit": 2}))["results"]
    assert bool(results and results[0]["content"] == "my kitten sleeps all day") is finds
    assert all(0 < r["score"] <= 1 for r in results)
    exact = (await post(f"{daemon.url}/v1/memories/search",
                        {"user_id": "alpha", "query": "sedan tyres", "limit": 2}))["results"]
    assert exact[0]["content"] == "the sedan needs new tyres"
    assert embedding_fake.call(lambda: list(embedding_fake.app[topic_embeddings.REQUESTS]))
