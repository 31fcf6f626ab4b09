"""The PostgreSQL outbox: several workers (daemons) drain one outbox, each entry stored once.

Each "daemon" here is its own pool, outbox, store and the unchanged ``OutboxWorker``.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from memproxyd.config import PostgresConfig
from memproxyd.memory.base import NewMemory
from memproxyd.memory.outbox import Outbox, OutboxWorker
from memproxyd.memory.postgres.db import PgDatabase
from memproxyd.memory.postgres.outbox import PostgresOutbox
from memproxyd.memory.postgres.store import PostgresStore
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[3]


class CountingStore(PostgresStore):
    """A real store that records every key it is asked to add."""

    def __init__(self, db, log: Counter):
        super().__init__(db)
        self.log = log

    async def add_many(self, user_id, items, session=None):
        self.log.update(f"{user_id}/{item.key}" for item in items)
        await asyncio.sleep(0.01)          # a delivery takes a moment: claims must hold
        return await super().add_many(user_id, items, session)


class Node:
    """One daemon's memory side: pool, outbox (with its own spill file), store, worker."""

    def __init__(self, dsn: str, spill: Path, log: Counter, sessions, lease: float = 30.0):
        self.db = PgDatabase(PostgresConfig(dsn=dsn, connect_timeout=1.0))
        self.outbox = PostgresOutbox(self.db, Outbox(spill), lease_seconds=lease,
                                     retry_seconds=0.1)
        self.store = CountingStore(self.db, log)
        self.worker = OutboxWorker(self.outbox, lambda: self.store, sessions)

    async def open(self) -> "Node":
        await self.db.open()
        await self.store.open()
        await self.outbox.open()
        return self

    async def close(self) -> None:
        await self.worker.close()
        await self.outbox.close()
        await self.db.close()


@pytest.fixture
async def nodes(pg_dsn, tmp_path, sessions):
    log: Counter = Counter()
    made: list[Node] = []

    async def make(name: str, dsn: str = pg_dsn, lease: float = 30.0) -> Node:
        node = await Node(dsn, tmp_path / f"{name}.db", log, sessions, lease).open()
        made.append(node)
        return node
    make.log = log
    yield make
    for node in reversed(made):
        await node.close()


def item(n: int) -> NewMemory:
    return NewMemory(f"user: fact number {n}", {"n": n}, key=f"k{n}")


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def all_contents(store, user_id: str) -> list[str]:
    page, _ = await store.list(user_id, 1000)
    return sorted(m.content for m in page)


async def test_two_daemons_draining_one_outbox_store_each_entry_once(nodes):
    a, b = await nodes("a"), await nodes("b")
    await a.worker.start()
    await b.worker.start()
    for n in range(60):                    # both daemons enqueue, both drain
        await (a if n % 2 else b).outbox.enqueue(f"user{n % 3}", [item(n)])

    async def drained():
        return await a.outbox.count() == 0
    await wait_until(drained)
    assert sorted(nodes.log.values()) == [1] * 60          # no entry was delivered twice
    stored = [len(await all_contents(b.store, f"user{u}")) for u in range(3)]
    assert stored == [20, 20, 20]


async def test_a_claim_holds_until_its_lease_runs_out(nodes):
    a, b = await nodes("a", lease=1.0), await nodes("b", lease=1.0)
    await a.outbox.enqueue("alice", [item(1)])
    claimed = await a.outbox.pending(10)              # a claims it, then dies silently
    assert [e.item for e in claimed] == [item(1)]
    assert await b.outbox.pending(10) == []
    assert await b.outbox.next_due() > time.time()    # due when the lease runs out
    await asyncio.sleep(1.1)
    assert await b.worker.drain() == 1
    assert await all_contents(b.store, "alice") == ["user: fact number 1"]
    await a.outbox.delivered([e.id for e in claimed])  # a late "delivered" is harmless
    assert await b.outbox.count() == 0


async def test_an_idle_worker_takes_over_what_a_dead_daemon_claimed(nodes):
    """Nothing wakes ``b`` when ``a`` dies: its idle worker (woken by its own enqueues only,
    its last look found the outbox empty) must still look again within the lease."""
    a, b = await nodes("a", lease=1.0), await nodes("b", lease=1.0)
    await b.worker.start()
    await asyncio.sleep(0.3)                          # b found nothing due and went idle
    await a.outbox.enqueue("alice", [item(1)])
    await a.outbox.enqueue("alice", [item(2)])
    assert [e.item for e in await a.outbox.pending(1)] == [item(1)]   # claimed; a dies

    async def delivered():                            # stored, then taken off the outbox
        return (len(await all_contents(b.store, "alice")) == 2
                and await b.outbox.count() == 0)
    await wait_until(delivered, timeout=10.0)        # the idle wait alone is 60 s


async def test_the_same_key_is_queued_once(nodes):
    a = await nodes("a")
    await a.outbox.enqueue("alice", [item(1)])
    await a.outbox.enqueue("alice", [item(1), item(2)])
    assert await a.outbox.count() == 2


async def test_enqueue_while_the_database_is_unreachable_spills_and_moves_later(
        nodes, tmp_path):
    down = await nodes("spill", dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    await down.outbox.enqueue("alice", [item(1), item(2)])      # acknowledged all the same
    assert await down.outbox.pending(10) == []
    assert await down.outbox.count() == 2
    assert down.store.status()["reachable"] is False
    await down.close()

    up = await nodes("spill")              # same local file, the database back
    assert await up.worker.drain() == 2
    assert await all_contents(up.store, "alice") == ["user: fact number 1",
                                                     "user: fact number 2"]
    assert await up.outbox.count() == 0


async def test_failed_delivery_releases_the_claim_with_its_retry_time(nodes):
    a = await nodes("a")
    await a.outbox.enqueue("alice", [item(1)])
    [entry] = await a.outbox.pending(10)
    await a.outbox.failed(entry.id, time.time() + 3600, "down")
    assert await a.outbox.pending(10) == []
    [again] = await a.outbox.pending(10, now=time.time() + 7200)
    assert again.attempts == 1


async def test_purge_drops_only_that_users_entries(nodes):
    a = await nodes("a")
    await a.outbox.enqueue("alice", [item(1), item(2)])
    await a.outbox.enqueue("bob", [item(3)])
    assert await a.outbox.purge("alice") == 2
    assert await a.worker.drain() == 1
    assert await all_contents(a.store, "alice") == []
    assert await all_contents(a.store, "bob") == ["user: fact number 3"]


async def test_killed_process_loses_nothing_and_another_delivers_it_once(nodes, pg_dsn,
                                                                          tmp_path):
    script = textwrap.dedent(f"""
        import asyncio, os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from memproxyd.config import PostgresConfig
        from memproxyd.memory.base import NewMemory
        from memproxyd.memory.outbox import Outbox
        from memproxyd.memory.postgres.db import PgDatabase
        from memproxyd.memory.postgres.outbox import PostgresOutbox
        async def main():
            db = PgDatabase(PostgresConfig(dsn={pg_dsn!r}))
            await db.open()
            box = PostgresOutbox(db, Outbox({str(tmp_path / "dead.db")!r}), lease_seconds=0.5)
            await box.open()
            await box.enqueue("alice", [NewMemory("user: remember the blue door", key="k-1")])
            await box.pending(10)                    # claimed, never delivered
            os.kill(os.getpid(), signal.SIGKILL)
        asyncio.run(main())
    """)
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == -9
    other = await nodes("other")
    await other.worker.start()

    async def drained():
        return await other.outbox.count() == 0
    await wait_until(drained)
    assert await all_contents(other.store, "alice") == ["user: remember the blue door"]
    assert nodes.log["alice/k-1"] == 1


async def test_dead_letters_are_kept_out_of_claims_counted_and_requeued(nodes):
    """A permanent failure marks the entry dead (the worker decides when, as for SQLite):
    no daemon claims it again until ``retry_dead`` puts it back, due at once."""
    a, b = await nodes("a"), await nodes("b")
    await a.outbox.enqueue("u", [item(1), item(2)])
    first, second = await a.outbox.pending(10)
    await a.outbox.failed(first.id, time.time(), "ValueError: rejected", dead=True)
    await a.outbox.failed(second.id, time.time(), "RetryLater: busy")
    assert [e.item.key for e in await b.outbox.pending(10)] == ["k2"]
    assert await b.outbox.dead() == 1 and await a.outbox.count() == 2
    assert await b.outbox.retry_dead() == 1 and await a.outbox.dead() == 0
    [again] = await a.outbox.pending(10)
    assert again.item.key == "k1" and again.attempts == 0
