"""The ``MemoryStore`` contract, run against every local backend: SQLite (its index on the
event loop, and in the search process the daemon runs) and PostgreSQL.

The PostgreSQL cases use a throwaway server (``tests/pgcluster.py``) and are skipped, with a
message naming what to install, where no PostgreSQL binaries exist.
"""
from __future__ import annotations

import asyncio

import pytest

from memproxyd.config import PostgresConfig
from memproxyd.memory.base import InvalidCursor, NewMemory
from memproxyd.memory.postgres.db import PgDatabase
from memproxyd.memory.postgres.store import PostgresStore
from memproxyd.memory.sqlite.store import SqliteStore


class Backend:
    """Opens stores of one backend on one database (a file, or a Postgres database)."""

    def __init__(self, kind: str, request, tmp_path):
        self.kind = kind
        self.where = (request.getfixturevalue("pg_dsn") if kind == "postgres"
                      else tmp_path / "memory.db")
        self.opened: list = []

    async def open(self, embedder=None):
        if self.kind.startswith("sqlite"):
            store = SqliteStore(self.where, embedder=embedder,
                                search_process=self.kind == "sqlite-process")
            await store.open()
            self.opened.append(store.close)
            return store
        db = PgDatabase(PostgresConfig(dsn=self.where))
        await db.open()
        self.opened.append(db.close)
        store = PostgresStore(db, embedder=embedder)
        await store.open()
        return store

    async def close(self):
        for close in reversed(self.opened):
            await close()


@pytest.fixture(params=["sqlite", "sqlite-process", "postgres"])
async def backend(request, tmp_path):
    b = Backend(request.param, request, tmp_path)
    yield b
    await b.close()


@pytest.fixture
async def store(backend):
    return await backend.open()


async def test_added_memory_is_found_by_a_differently_phrased_question(store):
    await store.add_many("alice", [NewMemory("Alice: I painted a lake sunrise last year"),
                                   NewMemory("Alice: my brother went skiing in March")])
    hits = await store.search("alice", "When did Alice paint the sunrise?", 5)
    assert hits[0].content == "Alice: I painted a lake sunrise last year"
    assert hits[0].score > 0


async def test_irregular_verb_forms_meet_their_base_form(store):
    await store.add("alice", "We went to the pride parade together")
    hits = await store.search("alice", "did they go to a parade", 5)
    assert [h.content for h in hits] == ["We went to the pride parade together"]


async def test_a_rare_word_outranks_a_common_one(store):
    await store.add_many("ann", [NewMemory(f"Ann: the weather was nice on day {i}")
                                 for i in range(8)])
    await store.add("ann", "Ann: my weather app mentioned a tornado")
    await store.add("ann", "Ann: the weather and the weather again, weather")
    hits = await store.search("ann", "weather tornado", 3)
    assert hits[0].content == "Ann: my weather app mentioned a tornado"


async def test_a_memory_is_found_through_its_neighbour_in_the_same_batch(store):
    batch = [NewMemory("Bob: did you finish the pottery class?"),
             NewMemory("Ann: yes, I made a bowl last weekend!"),
             NewMemory("Bob: we should get dinner soon")]
    await store.add_many("ann", batch)
    hits = await store.search("ann", "pottery", 3)
    assert hits[0].content.startswith("Bob: did you finish the pottery")
    assert "Ann: yes, I made a bowl last weekend!" in [h.content for h in hits]


async def test_user_b_never_sees_user_a_memories(store):
    a = await store.add("alice", "the launch code is tangerine")
    await store.add("bob", "bob likes tangerine juice")
    assert [m.content for m in await store.search("bob", "tangerine", 10)] == [
        "bob likes tangerine juice"]
    page, _ = await store.list("bob", 10)
    assert [m.user_id for m in page] == ["bob"]
    assert await store.get("bob", a.id) is None
    assert await store.delete("bob", a.id) is False
    assert await store.forget_all("bob") == 1
    assert await store.get("alice", a.id) == a
    assert [m.id for m in await store.search("alice", "tangerine", 10)] == [a.id]


async def test_repeated_key_returns_the_existing_memory_never_a_duplicate(store):
    first = await store.add_many("alice", [NewMemory("hello", key="k1")])
    again = await store.add_many("alice", [NewMemory("hello", key="k1"),
                                           NewMemory("other", key="k2"),
                                           NewMemory("other", key="k2")])
    assert again[0] == first[0]
    assert again[1].id == again[2].id
    page, _ = await store.list("alice", 10)
    assert sorted(m.content for m in page) == ["hello", "other"]


async def test_concurrent_writers_of_one_key_store_it_once(backend, store):
    other = await backend.open()        # a second connection (another daemon, for postgres)
    results = await asyncio.gather(*[s.add_many("alice", [NewMemory(f"try {i}", key="same")])
                                     for i, s in enumerate([store, other] * 4)])
    assert len({r[0].id for r in results}) == 1
    page, _ = await other.list("alice", 10)
    assert len(page) == 1


async def test_same_key_for_two_users_stores_one_memory_each(store):
    a = await store.add_many("alice", [NewMemory("a", key="k")])
    b = await store.add_many("bob", [NewMemory("b", key="k")])
    assert a[0].id != b[0].id
    assert (await store.get("bob", b[0].id)).content == "b"


async def test_list_pages_newest_first_with_an_opaque_cursor(store):
    await store.add_many("alice", [NewMemory(f"memory {i}", {"i": i}) for i in range(5)])
    seen, cursor = [], None
    while True:
        page, cursor = await store.list("alice", 2, cursor)
        seen += [(m.content, m.metadata) for m in page]
        if cursor is None:
            break
        assert "memory" not in cursor
    assert seen == [(f"memory {i}", {"i": i}) for i in reversed(range(5))]


@pytest.mark.parametrize("cursor", ["not-a-cursor", "djI6MTI", "!!!", "djE6eA"])
async def test_bad_cursor_is_an_invalid_cursor_error(store, cursor):
    with pytest.raises(InvalidCursor):
        await store.list("alice", 2, cursor)


async def test_delete_removes_the_memory_from_search(store):
    m = await store.add("alice", "the wifi password hint is giraffe")
    assert await store.delete("alice", m.id) is True
    assert await store.search("alice", "giraffe", 5) == []
    assert await store.get("alice", m.id) is None


async def test_forget_all_empties_one_user_and_counts(store):
    await store.add_many("alice", [NewMemory(f"note {i} about kites") for i in range(3)])
    await store.add("bob", "bob flies kites")
    assert await store.forget_all("alice") == 3
    assert await store.search("alice", "kites", 5) == []
    assert (await store.list("alice", 5))[0] == []
    assert [m.content for m in await store.search("bob", "kites", 5)] == ["bob flies kites"]


async def test_memories_survive_reopen(backend, store):
    m = await store.add("alice", "kept across restarts", {"n": 1})
    reopened = await backend.open()
    assert await reopened.get("alice", m.id) == m
    assert [h.id for h in await reopened.search("alice", "restarts", 5)] == [m.id]


async def test_a_memory_keeps_the_time_it_happened_when_given_one(backend, store):
    old, new = await store.add_many("alice", [
        NewMemory("we moved the cron job to fridays", created_at=1_746_178_200.0),
        NewMemory("the cron job now runs hourly")])
    assert old.created_at == 1_746_178_200.0 and new.created_at > 1_746_178_200.0 + 10 ** 7
    reopened = await backend.open()
    assert (await reopened.get("alice", old.id)).created_at == 1_746_178_200.0
    found = {m.id: m.created_at for m in await reopened.search("alice", "cron job", 5)}
    assert found[old.id] == 1_746_178_200.0


async def test_search_with_only_stop_words_returns_nothing(store):
    await store.add("alice", "something")
    assert await store.search("alice", "what is the", 5) == []


@pytest.mark.parametrize("query", ['problem" OR body:* NEAR(', "problem & !x | (y <-> z)",
                                   "problem'; DROP TABLE memories; --"])
async def test_query_operators_are_searched_as_plain_words(store, query):
    await store.add("alice", "NOT a problem OR maybe")
    assert await store.search("alice", query, 5)
    assert len((await store.list("alice", 5))[0]) == 1


async def test_vectors_fuse_with_lexical_ranking_when_an_embedder_is_given(backend):
    calls = []

    async def embedder(texts, session):
        calls.append(texts)
        # Two "topics": cat-ish texts point one way, everything else the other.
        return [[1.0, 0.0] if ("cat" in t or "kitten" in t) else [0.0, 1.0] for t in texts]

    store = await backend.open(embedder)
    await store.add_many("alice", [NewMemory("my kitten sleeps all day"),
                                   NewMemory("the report is due friday")])
    await store.add("bob", "bob's kitten")
    hits = await store.search("alice", "cat", 1)
    assert [h.content for h in hits] == ["my kitten sleeps all day"]
    assert calls[-1] == ["cat"]


async def test_scores_are_shares_of_the_best_match_and_request_words_find_nothing(backend):
    store = await backend.open()
    await store.add_many("alice", [NewMemory("deploy the cluster to staging"),
                                   NewMemory("the deploy window is friday"),
                                   NewMemory("please water the plants")])
    hits = await store.search("alice", "deploy cluster", 3)
    assert hits[0].content == "deploy the cluster to staging" and hits[0].score >= 0.9
    assert all(0 < h.score <= 1 for h in hits) and hits[1].score < hits[0].score
    assert await store.search("alice", "please tell me", 3) == []


async def test_vectors_never_push_an_exact_lexical_hit_below_a_vague_one(backend):
    async def embedder(texts, session):
        # the question and the vague memory point one way, the exact hit another
        return [[0.0, 1.0] if "booked" in t else [1.0, 0.0] for t in texts]

    store = await backend.open(embedder)
    await store.add("alice", "the feline vaccination is booked for march")
    await store.add("alice", "cats purr when happy")
    hits = await store.search("alice", "feline vaccination", 2)
    assert [h.content for h in hits][0] == "the feline vaccination is booked for march"
    assert all(0 < h.score <= 1 for h in hits)


async def test_an_edited_memory_is_found_by_its_new_words_at_once_never_its_old(store):
    m = await store.add("alice", "the deploy runs on tuesdays", {"n": 1})
    await store.search("alice", "deploy", 5)          # the index is built before the edit
    edited = await store.update("alice", m.id, content="the release ships on thursdays")
    assert (edited.id, edited.content, edited.metadata, edited.created_at) == (
        m.id, "the release ships on thursdays", {"n": 1}, m.created_at)
    assert [h.id for h in await store.search("alice", "thursdays release", 5)] == [m.id]
    assert await store.search("alice", "tuesdays", 5) == []
    assert (await store.get("alice", m.id)).content == "the release ships on thursdays"


async def test_metadata_and_pin_edits_change_only_what_is_given(store):
    m = await store.add("alice", "use black for formatting", {"a": 1})
    pinned = await store.update("alice", m.id, pinned=True)
    assert (pinned.content, pinned.metadata, pinned.pinned) == (m.content, {"a": 1}, True)
    relabelled = await store.update("alice", m.id, metadata={"b": 2})
    assert (relabelled.metadata, relabelled.pinned) == ({"b": 2}, True)
    assert (await store.list("alice", 5))[0][0].pinned is True
    assert [h.id for h in await store.search("alice", "formatting", 5)] == [m.id]


async def test_an_edit_of_another_users_memory_changes_nothing(store):
    m = await store.add("alice", "alice's secret plan")
    assert await store.update("bob", m.id, content="bob's now", pinned=True) is None
    assert await store.move("bob", m.id, "mallory") is None
    kept = await store.get("alice", m.id)
    assert (kept.content, kept.pinned) == ("alice's secret plan", False)


async def test_pinned_lists_only_the_users_pins_newest_first(store):
    first = await store.add_many("alice", [NewMemory("pin one", pinned=True)])
    await store.add("alice", "not pinned")
    second = await store.add("alice", "pin two")
    await store.update("alice", second.id, pinned=True)
    await store.add_many("bob", [NewMemory("bob's pin", pinned=True)])
    assert [m.content for m in await store.pinned("alice")] == ["pin two", "pin one"]
    assert first[0].pinned and all(m.pinned for m in await store.pinned("alice"))
    await store.update("alice", second.id, pinned=False)
    assert [m.content for m in await store.pinned("alice")] == ["pin one"]


async def test_a_moved_memory_belongs_to_its_new_owner_only(store):
    m = await store.add("alpha", "I prefer tabs over spaces", {"x": 1})
    await store.search("alpha", "tabs", 5)
    moved = await store.move("alpha", m.id, "me")
    assert (moved.id, moved.user_id, moved.content, moved.created_at) == (
        m.id, "me", m.content, m.created_at)
    assert await store.get("alpha", m.id) is None
    assert await store.search("alpha", "tabs", 5) == []
    assert [h.id for h in await store.search("me", "tabs spaces", 5)] == [m.id]
    assert (await store.count("alpha"), await store.count("me")) == (0, 1)


async def test_count_is_every_memory_of_the_user(store):
    await store.add_many("alice", [NewMemory(f"note {i}") for i in range(120)])
    await store.add("bob", "one")
    assert (await store.count("alice"), await store.count("bob")) == (120, 1)


async def test_an_edited_memory_is_embedded_again(backend):
    calls = []

    async def embedder(texts, session):
        calls.append(texts)
        return [[1.0, 0.0] if ("cat" in t or "kitten" in t) else [0.0, 1.0] for t in texts]

    store = await backend.open(embedder)
    [pet, report] = await store.add_many("alice", [NewMemory("my dog barks all day"),
                                                   NewMemory("the report is due friday")])
    await store.update("alice", pet.id, content="my kitten naps all day")
    assert calls[-1] == ["my kitten naps all day"]
    assert [h.id for h in await store.search("alice", "cat", 1)] == [pet.id]
