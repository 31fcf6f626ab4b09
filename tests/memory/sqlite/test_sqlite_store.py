"""What only the SQLite store has: statement scoping, migrations, its in-memory index, vectors.
The behaviour every store shares (search, isolation, keys, paging, delete) is in
``test_store_contract.py``, which runs it on SQLite and on PostgreSQL."""
import asyncio
import sqlite3

import pytest

from memproxyd.memory.base import NewMemory
from memproxyd.memory.sqlite import store as sqlite_store
from memproxyd.memory.sqlite.store import SqliteStore


@pytest.fixture
async def store(tmp_path):
    s = SqliteStore(tmp_path / "memory.db")
    await s.open()
    yield s
    await s.close()


async def test_every_memory_statement_must_bind_the_user_id(store, tmp_path):
    conn = sqlite3.connect(tmp_path / "memory.db")
    scope = sqlite_store._UserScope(conn, "alice")
    with pytest.raises(AssertionError):
        scope.rows("SELECT content FROM memories")
    conn.close()


async def test_memories_and_schema_survive_reopen_without_rerunning_migrations(tmp_path):
    path = tmp_path / "memory.db"
    store = SqliteStore(path)
    await store.open()
    m = await store.add("alice", "kept across restarts", {"n": 1})
    await store.close()

    reopened = SqliteStore(path)
    await reopened.open()
    try:
        assert reopened.schema_version == len(sqlite_store.MIGRATIONS)
        assert await reopened.get("alice", m.id) == m
        assert [h.id for h in await reopened.search("alice", "restarts", 5)] == [m.id]
    finally:
        await reopened.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version WHERE component = 'memories'"
                        ).fetchone() == (len(sqlite_store.MIGRATIONS),)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


async def test_a_new_migration_runs_once_on_reopen(tmp_path, monkeypatch):
    path = tmp_path / "memory.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    versions = len(sqlite_store.MIGRATIONS)
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", sqlite_store.MIGRATIONS + (
        ("CREATE TABLE migrated_marker (x INTEGER)",),))
    for _ in range(2):        # a second open must not re-run it (CREATE would fail)
        store = SqliteStore(path)
        await store.open()
        await store.close()
    assert store.schema_version == versions + 1


async def test_vectors_fuse_with_bm25_when_an_embedder_is_given(tmp_path):
    calls = []

    async def embedder(texts, session):
        calls.append(texts)
        # Two "topics": cat-ish texts point one way, everything else the other.
        return [[1.0, 0.0] if ("cat" in t or "kitten" in t) else [0.0, 1.0] for t in texts]

    store = SqliteStore(tmp_path / "memory.db", embedder=embedder)
    await store.open()
    try:
        await store.add_many("alice", [NewMemory("my kitten sleeps all day"),
                                       NewMemory("the report is due friday")])
        hits = await store.search("alice", "cat", 1)
        assert [h.content for h in hits] == ["my kitten sleeps all day"]
        assert calls[-1] == ["cat"]
    finally:
        await store.close()


async def test_a_v1_database_keeps_its_memories_and_their_context_after_the_upgrade(tmp_path):
    from memproxyd.memory.sqlite.db import migrate
    path = tmp_path / "memory.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, "memories", sqlite_store.MIGRATIONS[:1])
    turns = ["Bob: did you finish the pottery class?", "Ann: yes, I made a bowl!",
             "Bob: we should get dinner soon"]
    for seq, content in enumerate(turns, 1):      # one v1 batch: consecutive, same second
        conn.execute("INSERT INTO memories(seq, id, user_id, content, metadata, created_at)"
                     " VALUES (?, ?, 'ann', ?, '{}', 1000.0)", (seq, f"m{seq}", content))
        conn.execute("INSERT INTO memories_fts(rowid, body, near, far) VALUES (?, ?, '', '')",
                     (seq, content))
    conn.execute("INSERT INTO memories(seq, id, user_id, content, metadata, created_at)"
                 " VALUES (4, 'm4', 'ann', 'Ann: pottery again', '{}', 5000.0)")
    conn.close()

    store = SqliteStore(path)
    await store.open()
    try:
        hits = await store.search("ann", "pottery", 4)
        assert [h.id for h in hits][:2] in (["m1", "m4"], ["m4", "m1"])
        assert "m2" in [h.id for h in hits]          # found through its neighbour m1
        assert await store.get("ann", "m3") is not None
    finally:
        await store.close()
    check = sqlite3.connect(path)
    assert check.execute("SELECT seq, grp FROM memories ORDER BY seq").fetchall() == [
        (1, 1), (2, 1), (3, 1), (4, 4)]
    assert not check.execute("SELECT name FROM sqlite_master WHERE name = 'memories_fts'"
                             ).fetchall()
    check.close()


async def test_search_is_the_same_after_a_restart_rebuilds_the_index(tmp_path):
    path = tmp_path / "memory.db"
    store = SqliteStore(path)
    await store.open()
    await store.add_many("ann", [NewMemory("Bob: did you finish the pottery class?"),
                                 NewMemory("Ann: yes, I made a bowl last weekend!")])
    await store.add("ann", "Ann: pottery is relaxing")
    await store.search("ann", "pottery", 5)        # index built, then kept current
    await store.add("ann", "Bob: the pottery kiln broke")
    live = [(h.id, round(h.score, 4)) for h in await store.search("ann", "pottery", 5)]
    await store.close()
    reopened = SqliteStore(path)
    await reopened.open()
    try:
        assert [(h.id, round(h.score, 4))
                for h in await reopened.search("ann", "pottery", 5)] == live
    finally:
        await reopened.close()


async def test_writes_racing_the_first_index_build_are_indexed_once(store):
    await store.add_many("ann", [NewMemory(f"Ann: note {i} about kites") for i in range(50)])
    store._indexes.clear()                          # as after a restart: not built yet
    adds = [store.add("ann", f"Ann: kite number {i}") for i in range(20)]
    results = await asyncio.gather(store.search("ann", "kites", 100), *adds,
                                   store.search("ann", "kite", 100))
    hits = await store.search("ann", "kite", 100)
    assert len(hits) == 70 == len({h.id for h in hits})
    assert results[-1]                               # searches during the build answer


async def test_other_users_memories_never_change_a_users_ranking_or_scores(store):
    await store.add_many("alice", [NewMemory("Alice: I painted a lake sunrise"),
                                   NewMemory("Alice: the sunrise hike was cold")])
    before = [(h.id, h.score) for h in await store.search("alice", "sunrise painting", 5)]
    await store.add_many("bob", [NewMemory(f"Bob: sunrise number {i}") for i in range(200)])
    assert [(h.id, h.score) for h in await store.search("alice", "sunrise painting", 5)] == before


async def test_a_users_first_write_builds_their_index_before_any_search(store):
    assert store.status()["indexed_users"] == 0
    await store.add("ann", "Ann: the first thing I ever stored")
    for _ in range(100):                            # built in the background, on the writer
        if store.status()["indexed_users"] == 1:
            break
        await asyncio.sleep(0.01)
    assert store.status()["indexed_users"] == 1
    assert [m.content for m in await store.search("ann", "first thing stored", 5)] == [
        "Ann: the first thing I ever stored"]


async def test_a_mostly_deleted_index_is_rebuilt_and_still_answers(store):
    kept = await store.add("ann", "Ann: the kite festival is in May")
    gone = await store.add_many("ann", [NewMemory(f"Ann: kite note {i}") for i in range(1100)])
    assert len(await store.search("ann", "kite", 2000)) == 1101
    for memory in gone:
        await store.delete("ann", memory.id)
    assert [m.id for m in await store.search("ann", "kite festival", 10)] == [kept.id]
    assert len(store._indexes["ann"].seqs) == 1      # rebuilt without the deleted postings


async def test_search_after_deleting_most_memories_that_share_a_word(tmp_path):
    """Deleted memories keep their postings until a rebuild; the word's document frequency
    must not exceed the live count (that once raised a math domain error)."""
    store = SqliteStore(tmp_path / "memory.db")
    await store.open()
    try:
        first = await store.add("u", "the deploy codename is OLDFISH")
        await store.delete("u", first.id)
        await store.add("u", "the deploy codename is BLUEFIN")
        [found] = await store.search("u", "deploy codename", 5)
        assert "BLUEFIN" in found.content
    finally:
        await store.close()


async def test_search_now_answers_from_a_built_index_only_and_as_search_does(store):
    assert store.search_now("ann", "kite festival", 5) is None        # no index yet
    await store.add_many("ann", [NewMemory("Ann: the kite festival is in May", {"src": "a"}),
                                 NewMemory("Ann: my kite is red"), NewMemory("Ann: lunch")])
    searched = await store.search("ann", "kite festival", 5)          # (waits for the build)
    now = store.search_now("ann", "kite festival", 5)
    assert now == searched and now[0].content == "Ann: the kite festival is in May"
    bare = store.search_now("ann", "kite festival", 5, metadata=False)   # the recall's way
    assert [(m.id, m.content, m.score, m.metadata) for m in bare] == [
        (m.id, m.content, m.score, {}) for m in searched]
    assert store.search_now("ann", "the of", 5) == []                 # stop words only
    assert store.search_now("bob", "kite", 5) is None                 # bob has no index


async def test_search_now_defers_to_search_with_an_embedder(tmp_path):
    async def embed(texts, session):
        return [[1.0, 0.0] for _ in texts]
    store = SqliteStore(tmp_path / "memory.db", embedder=embed)
    await store.open()
    try:
        await store.add("ann", "Ann: the kite festival is in May")
        assert len(await store.search("ann", "kite", 5)) == 1
        assert store.search_now("ann", "kite", 5) is None
    finally:
        await store.close()


async def test_remembered_repeats_are_twins_in_the_index_live_and_after_reopen(tmp_path):
    """Exchanges stored alone with the same text share one document of the index, whether
    indexed as they are written (on the loop, unstemmed) or rebuilt from the file."""
    path = tmp_path / "memory.db"
    said = "User: which kiln?\nAssistant: the friday one"
    for reopen in (False, True):
        store = SqliteStore(path)
        await store.open()
        try:
            if not reopen:
                await store.add("ann", "Ann: the kiln is hot")     # index built
                await asyncio.sleep(0.1)
                for n in range(3):
                    await store.remember("ann", [NewMemory(said, {"n": n}, key=f"k{n}")])
                await store.remember("ann", [NewMemory(said + "!", {}, key="k9")])
            await asyncio.sleep(0.1)
            found = await store.search("ann", "which kiln friday", 10)
            index = store._indexes["ann"]
            assert len(index.seqs) == 3 and len(index) == 5
            assert [m.metadata.get("n") for m in found[:3]] == [2, 1, 0]    # newest first
            assert [m.content for m in found[:3]] == [said] * 3 and len(found) == 5
            distinct = store.search_now("ann", "which kiln friday", 10, distinct=True)
            assert [m.metadata.get("n") for m in distinct][:1] == [2] and len(distinct) == 3
        finally:
            await store.close()
