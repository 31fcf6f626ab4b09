"""The SQLite store's direct outbox (``DirectOutbox``): an exchange is committed straight into
the store before ``enqueue`` returns, concurrent ones share transactions, a key is stored once,
a failed commit fails every caller in it, and nothing acknowledged is lost to a ``kill -9``."""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memproxyd.app import _make_outbox
from memproxyd.config import load_config
from memproxyd.memory.base import NewMemory
from memproxyd.memory.outbox import DirectOutbox, Outbox
from memproxyd.memory.sqlite_store import SqliteStore
from tests.conftest import write_config

ROOT = Path(__file__).resolve().parent.parent


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


async def test_concurrent_exchanges_share_transactions_each_its_own_batch(tmp_path, parts):
    store, outbox = parts
    groups = []
    run = store._db.run

    async def counting_run(fn, *args):
        if fn.__name__ == "_add_parts":
            groups.append(len(args[0]))
        return await run(fn, *args)

    store._db.run = counting_run
    users = ["alice", "bob"]
    await asyncio.gather(*(outbox.enqueue(users[n % 2], [exchange(n)]) for n in range(40)))
    assert sum(groups) == 40 and len(groups) < 10       # grouped, not one per call
    assert sorted(stored(tmp_path / "memory.db")) == sorted(f"turn-{n}" for n in range(40))
    # each exchange is its own batch: none is another's neighbour context
    other = sqlite3.connect(tmp_path / "memory.db")
    assert other.execute("SELECT count(*) FROM memories WHERE grp != seq").fetchone() == (0,)
    other.close()
    assert len(await store.search("alice", "parcel depot", 40)) == 20


async def test_a_resent_exchange_is_stored_once(tmp_path, parts):
    store, outbox = parts
    await asyncio.gather(*(outbox.enqueue("alice", [exchange(7)]) for _ in range(3)))
    await outbox.enqueue("alice", [exchange(7)])
    assert stored(tmp_path / "memory.db") == ["turn-7"]
    assert len(await store.search("alice", "parcel 7", 5)) == 1


async def test_a_failed_commit_fails_every_caller_in_it_and_stores_nothing(tmp_path, parts):
    store, outbox = parts

    async def broken(fn, *args):
        raise sqlite3.OperationalError("database or disk is full")

    store._db.run = broken
    results = await asyncio.gather(*(outbox.enqueue("alice", [exchange(n)]) for n in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert stored(tmp_path / "memory.db") == []


async def test_an_item_without_a_key_is_refused(parts):
    _, outbox = parts
    with pytest.raises(ValueError):
        await outbox.enqueue("alice", [NewMemory("no key")])


def test_acknowledged_exchanges_survive_kill_9(tmp_path):
    script = textwrap.dedent(f"""
        import asyncio, os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from memproxyd.memory.base import NewMemory
        from memproxyd.memory.outbox import DirectOutbox
        from memproxyd.memory.sqlite_store import SqliteStore
        async def main():
            store = SqliteStore({str(tmp_path / "memory.db")!r})
            await store.open()
            box = DirectOutbox({str(tmp_path / "memory.db")!r}, store)
            await box.open()
            await asyncio.gather(*(box.enqueue("alice", [NewMemory(f"fact {{n}}", key=f"k{{n}}")])
                                   for n in range(30)))
            os.kill(os.getpid(), signal.SIGKILL)    # all acknowledged, then killed
        asyncio.run(main())
    """)
    assert subprocess.run([sys.executable, "-c", script], timeout=30).returncode == -9
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
