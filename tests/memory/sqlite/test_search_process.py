"""The sqlite store's search process (memory/search_worker.py, memory/search_process.py): a
real worker process, its index kept current by the store's writes, and what happens when it
dies."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from memproxyd.memory.base import NewMemory
from memproxyd.memory.sqlite import search_process
from memproxyd.memory.sqlite.search_process import SearchUnavailable
from memproxyd.memory.sqlite.store import SqliteStore


@pytest.fixture
async def store(tmp_path):
    s = SqliteStore(tmp_path / "memory.db", search_process=True)
    await s.open()
    yield s
    await s.close()


def contents(found) -> list[str]:
    return sorted(m.content for m in found)


async def restarted(store, old_pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while store.status()["search_process"] in (None, old_pid):
        assert time.monotonic() < deadline, "the search process was not restarted"
        await asyncio.sleep(0.02)
    return store.status()["search_process"]


async def test_every_write_reaches_the_built_index_before_the_next_search(store):
    await store.add("ann", "Ann: the kiln is hot")
    assert contents(await store.search("ann", "kiln", 10)) == ["Ann: the kiln is hot"]  # built
    more = await store.add_many("ann", [NewMemory("Ann: a second kiln arrives"),
                                        NewMemory("Ann: a glaze for the kiln")])
    await store.remember("ann", [NewMemory("User: which kiln?\nAssistant: the big one",
                                           key="k1")])
    assert len(await store.search("ann", "kiln", 10)) == 4
    await store.delete("ann", more[0].id)
    assert "Ann: a second kiln arrives" not in contents(await store.search("ann", "kiln", 10))
    assert contents(await store.search("bob", "kiln", 10)) == []        # per user
    await store.forget_all("ann")
    assert await store.search("ann", "kiln", 10) == []
    await store.add("ann", "Ann: a new kiln after all")
    assert contents(await store.search("ann", "kiln", 10)) == ["Ann: a new kiln after all"]


async def test_recall_gives_a_repeated_text_once_without_metadata(store):
    said = "User: which kiln?\nAssistant: the friday one"
    for n in range(3):
        await store.remember("ann", [NewMemory(said, {"n": n}, key=f"k{n}")])
    await store.add("ann", "Ann: the friday kiln is the big one", {"n": 9})
    found = await store.search("ann", "which kiln friday", 10)
    assert len(found) == 4 and sorted(m.metadata["n"] for m in found) == [0, 1, 2, 9]
    recalled = await store.recall("ann", "which kiln friday", 10)
    assert contents(recalled) == sorted([said, "Ann: the friday kiln is the big one"])
    assert all(m.metadata == {} for m in recalled)


async def test_a_killed_search_process_is_replaced_and_misses_nothing(store, monkeypatch):
    monkeypatch.setattr(search_process, "RESTART_SECONDS", 2.0)   # a window to see it down
    await store.add("ann", "Ann: the kiln is hot")
    assert len(await store.search("ann", "kiln", 10)) == 1
    pid = store.status()["search_process"]
    os.kill(pid, signal.SIGKILL)
    # while it is down: searches fail as a 503 would say, writes are kept in the file
    with pytest.raises(SearchUnavailable):
        for _ in range(100):
            await store.search("ann", "kiln", 10)
            await asyncio.sleep(0.01)
    await store.add("ann", "Ann: a kiln written while no search process ran")
    await restarted(store, pid)
    assert len(await store.search("ann", "kiln", 10)) == 2
    await store.add("ann", "Ann: and a kiln after the restart")
    assert len(await store.search("ann", "kiln", 10)) == 3


async def test_closing_the_store_ends_the_search_process(tmp_path):
    store = SqliteStore(tmp_path / "memory.db", search_process=True)
    await store.open()
    pid = store.status()["search_process"]
    await store.search("ann", "anything", 5)
    await store.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_one_user_being_indexed_holds_up_no_other_users_searches(tmp_path):
    """Indexing a large store takes seconds; it runs beside the other users' searches."""
    path = tmp_path / "memory.db"
    plain = SqliteStore(path)
    await plain.open()
    for start in range(0, 40_000, 2_000):
        await plain.add_many("big", [NewMemory(f"Big: kiln note {start + i} for the pottery")
                                     for i in range(2_000)])
    await plain.add("small", "Small: the kiln is hot")
    await plain.close()
    store = SqliteStore(path, search_process=True)
    await store.open()
    try:
        done: list[str] = []

        async def search(user: str) -> None:
            await store.search(user, "kiln", 5)
            done.append(user)

        big = asyncio.create_task(search("big"))
        await asyncio.sleep(0.05)                  # its index is being made
        await search("small")
        assert done == ["small"]
        await big
        assert done == ["small", "big"]
        assert len(await store.search("big", "kiln pottery", 5)) == 5
    finally:
        await store.close()


async def test_an_unreadable_reply_replaces_the_search_process(store, monkeypatch):
    monkeypatch.setattr(search_process, "RESTART_SECONDS", 0.0)
    await store.add("ann", "Ann: the kiln is hot")
    pid = store.status()["search_process"]
    protocol = store._searcher._transport.get_protocol()
    protocol.pipe_data_received(1, (5).to_bytes(4, "big") + b"hello")    # not a pickle
    await restarted(store, pid)
    assert len(await store.search("ann", "kiln", 10)) == 1
