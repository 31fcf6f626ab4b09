"""What is particular to the PostgreSQL store: its user scope, migrations, term statistics.
(The behaviour it shares with SQLite is in ``test_store_contract.py``.)"""
from __future__ import annotations

import asyncio
import socket
import time

import asyncpg
import pytest

from memproxyd.config import PostgresConfig
from memproxyd.memory.base import MemoryError_, NewMemory
from memproxyd.memory.postgres import (term_stats, db as postgres_db,
                                       store as postgres_store)
from memproxyd.memory.postgres.db import PgDatabase
from memproxyd.memory.postgres.store import PostgresStore
from tests.conftest import free_port


@pytest.fixture
async def db(pg_dsn):
    database = PgDatabase(PostgresConfig(dsn=pg_dsn))
    await database.open()
    yield database
    await database.close()


@pytest.fixture
async def store(db):
    s = PostgresStore(db)
    await s.open()
    return s


@pytest.mark.parametrize("sql", ["SELECT content FROM memories",
                                 "SELECT content FROM memories WHERE user_id = $10",
                                 "SELECT content FROM memories WHERE user_id = $2"])
async def test_every_memory_statement_must_bind_the_user_id_as_1(store, sql):
    async with store.db.connection() as conn:
        with pytest.raises(AssertionError):
            await postgres_store._UserScope(conn, "alice").rows(sql)


async def test_schema_versions_are_recorded_and_a_new_migration_runs_once(pg_dsn, monkeypatch):
    opened, now = [], len(postgres_store.MIGRATIONS)
    for extra in ((), (("CREATE TABLE migrated_marker (x INTEGER)",),)):
        monkeypatch.setattr(postgres_store, "MIGRATIONS", postgres_store.MIGRATIONS + extra)
        for _ in range(2):           # a second open must not re-run it (CREATE would fail)
            db = PgDatabase(PostgresConfig(dsn=pg_dsn))
            await db.open()
            await PostgresStore(db).open()
            opened.append(dict(db.versions))
            await db.close()
    assert opened == [{"memories": now}] * 2 + [{"memories": now + 1}] * 2
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT version FROM schema_version"
                                   " WHERE component = 'memories'") == now + 1
    finally:
        await conn.close()


async def test_daemons_starting_together_migrate_once(pg_dsn):
    dbs = [PgDatabase(PostgresConfig(dsn=pg_dsn)) for _ in range(4)]
    await asyncio.gather(*(d.open() for d in dbs))
    try:
        await asyncio.gather(*(PostgresStore(d).open() for d in dbs))
        assert [d.versions for d in dbs] == [{"memories": len(postgres_store.MIGRATIONS)}] * 4
    finally:
        await asyncio.gather(*(d.close() for d in dbs))


async def test_an_unreachable_database_is_a_memory_error_and_a_status():
    port = free_port()
    db = PgDatabase(PostgresConfig(dsn=f"postgresql://u:pw@127.0.0.1:{port}/d",
                                   connect_timeout=1.0))
    await db.open()                  # the daemon starts all the same
    try:
        store = PostgresStore(db)
        await store.open()
        with pytest.raises(MemoryError_):
            await store.search("alice", "tangerine", 5)
        with pytest.raises(MemoryError_):
            await store.add("alice", "tangerine")
        status = store.status()
        assert status["reachable"] is False and status["database"] == f"127.0.0.1:{port}/d"
        assert "pw" not in repr(status)
    finally:
        await db.close()


def test_idf_is_positive_even_with_a_stale_table_size():
    assert term_stats.idf(5, 0) > 0
    assert term_stats.idf(1, 1000) > term_stats.idf(100, 1000) > 0


async def test_when_even_the_rarest_word_is_too_common_the_newest_rows_are_scored(
        store, monkeypatch):
    monkeypatch.setattr(term_stats, "POSTINGS_BUDGET", 10)
    await store.add_many("alice", [NewMemory(f"apple note {i}", {"i": i}) for i in range(40)])
    hits = await store.search("alice", "apple", 5)
    assert len(hits) == 5
    assert min(h.metadata["i"] for h in hits) >= 30          # within the newest quarter


async def test_frequent_words_take_their_counts_from_pg_stats(store):
    await store.add_many("alice", [NewMemory(f"kettle number {i}") for i in range(300)])
    await store.add("alice", "the rare teapot")
    async with store.db.connection() as conn:
        await conn.execute("ANALYZE memories")
        store.stats._counted_at = 0.0                      # as after MAX_AGE
        weighted, _ = await store.stats.choose_terms(conn, ["kettle", "teapot"])
    assert "kettl" in store.stats._common                  # from pg_stats, not counted
    assert [q for q, _ in weighted] == ["'teapot'", "'kettl'"]    # rarest first
    assert weighted[0][1] > weighted[1][1]
    hits = await store.search("alice", "teapot kettle", 1)
    assert hits[0].content == "the rare teapot"


@pytest.mark.parametrize("dsn,shown", [
    ("postgresql://bob:hunter2@db.example:6543/mem", "db.example:6543/mem"),
    ("postgres://bob:hunter2@db.example/mem?sslmode=require", "db.example:5432/mem"),
    ("host=db user=bob password=hunter2", "(not a postgresql:// URL)"),
])
def test_the_dsn_is_shown_without_user_or_password(dsn, shown):
    assert postgres_db.describe_dsn(dsn) == shown


async def test_a_common_but_minority_word_scores_its_newest_rows_too(store, monkeypatch):
    """The other way to the newest rows (through the word's rows, filtered by seq)."""
    monkeypatch.setattr(term_stats, "POSTINGS_BUDGET", 10)
    for i in range(50):
        await store.add_many("alice", [NewMemory(f"filler {i}-{j}") for j in range(19)])
        await store.add("alice", f"apple note {i}", {"i": i})
    async with store.db.connection() as conn:
        _, share = await store.stats.choose_terms(conn, ["apple"])
        _, by_seq = await store._floor(postgres_store._UserScope(conn, "alice"), share)
    assert share == pytest.approx(0.2) and by_seq is False
    hits = await store.search("alice", "apple", 5)
    assert len(hits) == 5 and min(h.metadata["i"] for h in hits) >= 40


async def test_after_a_failed_connect_uses_fail_at_once_then_probe_again():
    """A server that accepts but never answers: the first use waits for the connect
    timeout, the next ones fail at once (an acknowledgement then goes to the spill without
    waiting), and after the pause a use tries again."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    db = PgDatabase(PostgresConfig(dsn=f"postgresql://u@127.0.0.1:{port}/d",
                                   connect_timeout=0.5))
    await db.open()
    try:
        timings = []
        for pause in (0, 0, postgres_db.PAUSE_AFTER_FAILED_CONNECT + 0.1):
            await asyncio.sleep(pause)
            started = time.monotonic()
            with pytest.raises(MemoryError_):
                async with db.connection():
                    pass
            timings.append(time.monotonic() - started)
        assert timings[0] >= 0.4 and timings[1] < 0.1 and timings[2] >= 0.4
    finally:
        await db.close()
        silent.close()


async def test_a_busy_pool_is_not_a_dead_database(pg_dsn):
    """Every connection in use past ``connect_timeout``: that use fails (``Busy``, handled
    as unreachable), but the database is not marked down: the status stays reachable and
    the next use, once a connection is free, goes through at once."""
    db = PgDatabase(PostgresConfig(dsn=pg_dsn, pool_size=1, connect_timeout=0.3))
    await db.open()
    try:
        async with db.connection() as held:
            await held.fetchval("SELECT 1")
            with pytest.raises(postgres_db.Busy):
                async with db.connection():
                    pass
            assert db.status()["reachable"] is True
        started = time.monotonic()
        async with db.connection() as conn:
            assert await conn.fetchval("SELECT 2") == 2
        assert time.monotonic() - started < 0.2          # no fail-fast pause after it
        assert db.status()["reachable"] is True
    finally:
        await db.close()


def topic_embedder(calls: list):
    async def embed(texts, session):
        calls.append(texts)
        return [[1.0, 0.0, 0.0] if ("cat" in t or "kitten" in t) else [0.0, 1.0, 0.1]
                for t in texts]
    return embed


async def test_pgvector_finds_the_nearest_memory_however_old(db, pg_cluster):
    if not pg_cluster.psql("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"):
        pytest.skip("pgvector is not installed in this PostgreSQL (MEMPROXYD_TEST_PG_BINDIR "
                    "can name a server that has it)")
    calls: list = []
    store = PostgresStore(db, embedder=topic_embedder(calls))
    await store.open()
    assert store.status()["pgvector"] is True
    await store.add("alice", "my kitten sleeps all day")             # the oldest memory
    for i in range(3):
        await store.add_many("alice", [NewMemory(f"report {i}-{j} is due") for j in range(100)])
    await store.add("bob", "bob's kitten")
    hits = await store.search("alice", "cat", 1)
    assert [h.content for h in hits] == ["my kitten sleeps all day"]


async def test_without_pgvector_the_newest_memories_are_compared_in_process(db):
    calls: list = []
    store = PostgresStore(db, embedder=topic_embedder(calls))
    await store.open()
    store.pgvector = False                       # as on a server without the extension
    await store.add("alice", "my kitten sleeps all day")
    await store.add_many("alice", [NewMemory(f"report {j} is due") for j in range(20)])
    hits = await store.search("alice", "cat", 1)
    assert [h.content for h in hits] == ["my kitten sleeps all day"]
    assert calls[-1] == ["cat"]
