"""The SQLite store's direct outbox (``DirectOutbox``): an exchange is committed straight into
the store before ``enqueue`` returns, concurrent ones share transactions, a key is stored once,
a failed commit fails every caller in it, and nothing acknowledged is lost to a ``kill -9``."""
from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from memproxyd.app import _make_outbox
from memproxyd.config import load_config
from memproxyd.memory.base import NewMemory
from memproxyd.memory.outbox import DirectOutbox, Outbox
from memproxyd.memory.sqlite import writes
from memproxyd.memory.sqlite.store import SqliteStore
from tests.conftest import write_config
from tests.memory.test_outbox import enqueue_30_then_kill_9



@pytest.fixture
async def parts(tmp_path):
    store = SqliteStore(tmp_path / "memory.db")
    await store.open()
    outbox = DirectOutbox(tmp_path / "memory.db", store)
    await outbox.open()
    yield store, outbox
    await outbox.close()
    await store.close()


def exchange(n: int) -> NewMemory:
    return NewMemory(f"User: where is parcel {n}?\nAssistant: at depot {n}", {"n": n},
                     key=f"turn-{n}")


def stored(path: Path) -> list[str]:
    """What another connection sees committed."""
    other = sqlite3.connect(path)
    try:
        return [r[0] for r in other.execute("SELECT key FROM memories ORDER BY seq")]
    finally:
        other.close()


async def test_an_acknowledged_exchange_is_committed_in_the_store_not_queued(tmp_path, parts):
    store, outbox = parts
    await outbox.enqueue("alice", [exchange(1)])
    assert stored(tmp_path / "memory.db") == ["turn-1"]
    assert await outbox.count() == 0
    [hit] = await store.search("alice", "where is parcel 1", 5)    # indexed as well
    assert hit.content.endswith("at depot 1") and hit.metadata == {"n": 1}
    assert await store.search("bob", "parcel", 5) == []


async def test_concurrent_exchanges_share_transactions_each_its_own_batch(
        tmp_path, parts, monkeypatch):
    store, outbox = parts
    groups = []
    add_parts = writes.add_parts

    def counting(conn, group, **kwargs):
        groups.append(len(group))
        return add_parts(conn, group, **kwargs)

    monkeypatch.setattr(writes, "add_parts", counting)
    users = ["alice", "bob"]
    await asyncio.gather(*(outbox.enqueue(users[n % 2], [exchange(n)]) for n in range(40)))
    assert sum(groups) == 40 and len(groups) < 10       # grouped, not one per call
    assert sorted(stored(tmp_path / "memory.db")) == sorted(f"turn-{n}" for n in range(40))
    # each exchange is its own batch: none is another's neighbour context
    other = sqlite3.connect(tmp_path / "memory.db")
    assert other.execute("SELECT count(*) FROM memories WHERE grp != seq").fetchone() == (0,)
    other.close()
    assert len(await store.search("alice", "parcel depot", 40)) == 20


async def test_an_exchange_is_committed_even_when_its_caller_goes_away(tmp_path, parts):
    """What lets the memory service remember without a shield (a task per exchange): once
    ``enqueue`` first waits, the exchange is in the group commit, caller or no caller."""
    store, outbox = parts
    assert outbox.cancel_safe
    caller = asyncio.create_task(outbox.enqueue("alice", [exchange(9)]))
    await asyncio.sleep(0)                 # it ran up to its first wait
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    for _ in range(100):
        if stored(tmp_path / "memory.db"):
            break
        await asyncio.sleep(0.01)
    assert stored(tmp_path / "memory.db") == ["turn-9"]


async def test_a_resent_exchange_is_stored_once(tmp_path, parts):
    store, outbox = parts
    await asyncio.gather(*(outbox.enqueue("alice", [exchange(7)]) for _ in range(3)))
    await outbox.enqueue("alice", [exchange(7)])
    assert stored(tmp_path / "memory.db") == ["turn-7"]
    assert len(await store.search("alice", "parcel 7", 5)) == 1


async def test_a_failed_commit_fails_every_caller_in_it_and_stores_nothing(
        tmp_path, parts, monkeypatch):
    store, outbox = parts

    def broken(conn, group, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(writes, "add_parts", broken)
    results = await asyncio.gather(*(outbox.enqueue("alice", [exchange(n)]) for n in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert stored(tmp_path / "memory.db") == []


async def test_an_item_without_a_key_is_refused(parts):
    _, outbox = parts
    with pytest.raises(ValueError):
        await outbox.enqueue("alice", [NewMemory("no key")])


async def test_an_exchange_waits_for_the_writer_threads_jobs_and_keeps_their_order(parts):
    """While a job is under way on the writer thread, a remembered exchange is written after
    it, on the thread; with the thread idle, on the loop."""
    store, outbox = parts
    here = []
    run_here = store._db.run_here
    store._db.run_here = lambda fn, *a: here.append(fn.__name__) or run_here(fn, *a)
    order = []

    def slow(conn):
        order.append("slow job")
        time.sleep(0.3)

    slow_job = asyncio.create_task(store._db.run(slow))
    while not order:
        await asyncio.sleep(0.01)
    await outbox.enqueue("alice", [exchange(1)])
    order.append("exchange")
    await slow_job
    assert order == ["slow job", "exchange"] and here == []
    assert len(await store.search("alice", "parcel", 5)) == 1   # (its index built on the thread)
    await outbox.enqueue("alice", [exchange(2)])
    assert here == ["add_parts_now"]
    assert len(await store.search("alice", "parcel", 5)) == 2


async def test_another_connections_write_lock_never_blocks_the_loop(tmp_path, parts):
    """On the loop an exchange never waits for a lock: it goes to the thread, which waits."""
    store, outbox = parts
    other = sqlite3.connect(tmp_path / "memory.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")                 # holds the write lock
    task = asyncio.create_task(outbox.enqueue("alice", [exchange(3)]))
    ticks = 0
    for _ in range(10):                              # the loop keeps running meanwhile
        await asyncio.sleep(0.02)
        ticks += 1
    assert ticks == 10 and not task.done()
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(task, 10)
    assert stored(tmp_path / "memory.db") == ["turn-3"]


async def test_the_store_checkpoints_on_its_thread_never_in_a_commit(tmp_path, monkeypatch):
    from memproxyd.memory.sqlite import db as sqlite_db, store as sqlite_store
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_ROWS", 10)
    checkpoints = []
    run_checkpoint = sqlite_db.SqliteThread._run_checkpoint

    async def counted(self):
        checkpoints.append(1)
        await run_checkpoint(self)
    monkeypatch.setattr(sqlite_db.SqliteThread, "_run_checkpoint", counted)
    store = SqliteStore(tmp_path / "memory.db")
    await store.open()
    outbox = DirectOutbox(tmp_path / "memory.db", store)
    await outbox.open()
    try:
        assert await store._db.run(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()) == (0,)
        for n in range(25):
            await outbox.enqueue("alice", [exchange(n)])
            await asyncio.sleep(0)
        assert len(checkpoints) >= 2
        # a checkpoint leaves no statement open on the connection: the API's writes go on
        await store.add_many("alice", [NewMemory(f"imported {n}") for n in range(30)])
        assert len(stored(tmp_path / "memory.db")) == 55
    finally:
        await outbox.close()
        await store.close()


def test_acknowledged_exchanges_survive_kill_9(tmp_path):
    enqueue_30_then_kill_9(f"""
        store = SqliteStore({str(tmp_path / "memory.db")!r})
        await store.open()
        box = DirectOutbox({str(tmp_path / "memory.db")!r}, store)
        await box.open()
    """)
    assert sorted(stored(tmp_path / "memory.db")) == sorted(f"k{n}" for n in range(30))


@pytest.mark.parametrize("memory, direct", [
    ('backend = "sqlite"', True),
    ('backend = "sqlite"\nembedding_model = "embed-ok"', False),   # needs a call first
    ('backend = "sqlite"\nextract_model = "gpt-ok"', False),
])
def test_only_a_store_with_nothing_to_call_first_is_written_directly(tmp_path, memory, direct):
    config = load_config(write_config(tmp_path, "http://127.0.0.1:9", memory=memory))
    outbox = _make_outbox(config, store=object())
    assert isinstance(outbox, Outbox)
    assert isinstance(outbox, DirectOutbox) is direct


async def test_a_cancelled_callers_job_keeps_the_writer_busy_until_it_ends(tmp_path):
    """``run_here`` must never share the connection with a job still on the thread, even one
    whose caller was cancelled."""
    from memproxyd.memory.sqlite.db import SqliteThread
    db = SqliteThread(tmp_path / "x.db", "test-writer")
    await db.open("x", ())
    try:
        assert db.idle
        release = asyncio.Event()
        loop = asyncio.get_running_loop()

        def slow(conn):
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(5)

        caller = asyncio.create_task(db.run(slow))
        await asyncio.sleep(0.05)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert not db.idle                            # the job is still on the thread
        with pytest.raises(RuntimeError):
            db.run_here(lambda conn: None)
        release.set()
        for _ in range(100):
            if db.idle:
                break
            await asyncio.sleep(0.01)
        assert db.idle
        assert db.run_here(lambda conn: conn.execute("SELECT 41 + 1").fetchone()) == (42,)
    finally:
        await db.close()
