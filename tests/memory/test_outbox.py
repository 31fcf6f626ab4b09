import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from memproxyd.memory.base import MemoryError_, NewMemory, RetryLater
from memproxyd.memory.outbox import Outbox, OutboxWorker
from memproxyd.memory.sqlite.store import SqliteStore

ROOT = Path(__file__).resolve().parents[2]


class FlakyStore(SqliteStore):
    """A real store whose first ``failures`` writes raise ``error``."""

    def __init__(self, path, failures=0, error=None):
        super().__init__(path)
        self.failures = failures
        self.error = error or MemoryError_("backend down")
        self.attempts: list[float] = []

    async def add_batches(self, user_id, batches, session=None):   # add_many's path too
        self.attempts.append(time.monotonic())
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return await super().add_batches(user_id, batches, session)


@pytest.fixture
async def outbox(tmp_path):
    box = Outbox(tmp_path / "memory.db")
    await box.open()
    yield box
    await box.close()


async def open_store(path, **kw):
    store = FlakyStore(path, **kw)
    await store.open()
    return store


def item(n):
    return NewMemory(f"user: fact number {n}", {"n": n}, key=f"conv-1:{n}")


async def wait_until(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def contents(store, user_id="alice"):
    page, _ = await store.list(user_id, 100)
    return sorted(m.content for m in page)


async def test_enqueue_requires_a_stable_key(outbox):
    with pytest.raises(ValueError):
        await outbox.enqueue("alice", [NewMemory("no key")])


async def test_enqueued_entries_survive_reopen_without_delivery(tmp_path, outbox):
    await outbox.enqueue("alice", [item(1), item(2)])
    await outbox.close()             # the process goes away before any delivery

    reopened = Outbox(tmp_path / "memory.db")
    await reopened.open()
    try:
        entries = await reopened.pending(10)
        assert [(e.user_id, e.item) for e in entries] == [("alice", item(1)), ("alice", item(2))]
    finally:
        await reopened.close()


async def test_the_same_key_is_queued_once(outbox):
    await outbox.enqueue("alice", [item(1)])
    await outbox.enqueue("alice", [item(1)])
    assert await outbox.count() == 1


async def test_killed_process_loses_nothing_and_next_start_delivers_exactly_once(
        tmp_path, sessions):
    script = textwrap.dedent(f"""
        import asyncio, os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from memproxyd.memory.base import NewMemory
        from memproxyd.memory.outbox import Outbox
        async def main():
            box = Outbox({str(tmp_path / "memory.db")!r})
            await box.open()
            await box.enqueue("alice", [NewMemory("user: remember the blue door", key="k-1")])
            os.kill(os.getpid(), signal.SIGKILL)    # acknowledged, then killed
        asyncio.run(main())
    """)
    proc = subprocess.run([sys.executable, "-c", script], timeout=30)
    assert proc.returncode == -9

    box = Outbox(tmp_path / "memory.db")
    await box.open()
    store = await open_store(tmp_path / "memory.db")
    worker = OutboxWorker(box, lambda: store, sessions)
    await worker.start()
    try:
        await wait_until(lambda: _is_empty(box))
        await worker.drain()          # a second pass finds nothing to deliver again
        assert await contents(store) == ["user: remember the blue door"]
    finally:
        await worker.close()
        await store.close()
        await box.close()


async def _is_empty(box):
    return await box.count() == 0


async def test_worker_retries_with_backoff_and_delivers_once_the_store_recovers(
        tmp_path, outbox, sessions):
    store = await open_store(tmp_path / "memory.db", failures=3)
    worker = OutboxWorker(outbox, lambda: store, sessions, retry_max_seconds=5)
    worker.base_delay = 0.05
    await worker.start()
    try:
        await outbox.enqueue("alice", [item(1), item(2)])
        await wait_until(lambda: _is_empty(outbox))
        assert await contents(store) == ["user: fact number 1", "user: fact number 2"]
        gaps = [b - a for a, b in zip(store.attempts, store.attempts[1:])]
        assert len(store.attempts) == 4
        assert gaps[0] >= 0.025 and gaps[2] >= 0.1 and gaps[2] > gaps[0]   # 0.05, 0.1, 0.2 ±jitter
    finally:
        await worker.close()
        await store.close()


async def test_failed_delivery_keeps_the_entry_with_its_error(tmp_path, outbox, sessions):
    store = await open_store(tmp_path / "memory.db", failures=100)
    worker = OutboxWorker(outbox, lambda: store, sessions)
    try:
        await outbox.enqueue("alice", [item(1)])
        assert await worker.drain() == 0
        assert await outbox.pending(10) == []         # backing off, not due yet
        assert await outbox.count() == 1
        assert await outbox.next_due() > time.time()
    finally:
        await store.close()


async def test_backoff_never_exceeds_the_configured_maximum(outbox, sessions):
    worker = OutboxWorker(outbox, lambda: None, sessions, retry_max_seconds=7)
    delays = [worker._delay(MemoryError_("x"), attempts) for attempts in range(40)]
    assert max(delays) <= 7
    assert delays[0] <= worker.base_delay


async def test_retry_after_from_the_backend_is_honoured(tmp_path, outbox, sessions):
    store = await open_store(tmp_path / "memory.db", failures=1,
                             error=RetryLater("429", retry_after=0.4))
    worker = OutboxWorker(outbox, lambda: store, sessions)
    worker.base_delay = 0.01
    await worker.start()
    try:
        await outbox.enqueue("alice", [item(1)])
        await wait_until(lambda: _is_empty(outbox))
        assert len(store.attempts) == 2
        assert store.attempts[1] - store.attempts[0] >= 0.38
    finally:
        await worker.close()
        await store.close()


async def test_enqueue_wakes_an_idle_worker_immediately(tmp_path, outbox, sessions):
    store = await open_store(tmp_path / "memory.db")
    worker = OutboxWorker(outbox, lambda: store, sessions)
    await worker.start()
    try:
        await asyncio.sleep(0.05)                     # worker is now idle (waits up to 60 s)
        started = time.monotonic()
        await outbox.enqueue("alice", [item(1)])
        await wait_until(lambda: _is_empty(outbox), timeout=1.0)
        assert time.monotonic() - started < 1.0
    finally:
        await worker.close()
        await store.close()


async def test_redelivery_after_a_crash_mid_delivery_is_not_a_duplicate(
        tmp_path, outbox, sessions):
    store = await open_store(tmp_path / "memory.db")
    await outbox.enqueue("alice", [item(1)])
    # The store write happened, then the process died before the outbox row was deleted.
    await store.add_many("alice", [item(1)])
    worker = OutboxWorker(outbox, lambda: store, sessions)
    try:
        assert await worker.drain() == 1
        assert await contents(store) == ["user: fact number 1"]
    finally:
        await store.close()


async def test_flush_delivers_what_it_can_and_keeps_the_rest(tmp_path, outbox, sessions):
    store = await open_store(tmp_path / "memory.db")
    worker = OutboxWorker(outbox, lambda: store, sessions)
    try:
        await outbox.enqueue("alice", [item(1)])
        await outbox.enqueue("bob", [item(2)])
        await outbox.failed((await outbox.pending(10))[1].id, time.time() + 3600, "down")
        assert await worker.flush(timeout=2) == 0      # even the backing-off entry is tried
        assert await contents(store, "alice") == ["user: fact number 1"]
        assert await contents(store, "bob") == ["user: fact number 2"]

        store.failures = 1
        await outbox.enqueue("alice", [item(3)])
        assert await worker.flush(timeout=2) == 1      # still queued for the next start
    finally:
        await store.close()


async def test_worker_without_a_store_keeps_entries_queued(outbox, sessions):
    worker = OutboxWorker(outbox, lambda: None, sessions)
    await outbox.enqueue("alice", [item(1)])
    assert await worker.drain() == 0
    assert await outbox.count() == 1



async def test_purge_drops_only_that_users_queued_entries_so_none_is_delivered(
        tmp_path, outbox, sessions):
    store = await open_store(tmp_path / "memory.db", failures=2)    # one per user
    worker = OutboxWorker(outbox, lambda: store, sessions)
    try:
        await outbox.enqueue("alice", [item(1), item(2)])
        await outbox.enqueue("bob", [item(3)])
        assert await worker.drain() == 0              # the store is down: all three wait
        assert await outbox.purge("alice") == 2
        assert await outbox.purge("alice") == 0
        assert await worker.flush(timeout=2) == 0     # the store is back
        assert await contents(store, "alice") == []
        assert await contents(store, "bob") == ["user: fact number 3"]
    finally:
        await store.close()


async def test_concurrent_enqueues_share_commits_and_each_returns_once_committed(
        tmp_path, outbox):
    transactions = []
    run = outbox._db.run

    async def counting_run(fn, *args):
        transactions.append(fn.__name__)
        return await run(fn, *args)

    outbox._db.run = counting_run
    await asyncio.gather(*(outbox.enqueue("alice", [item(n)]) for n in range(40)))
    assert transactions.count("_insert") < 10          # grouped, not one per call
    other = sqlite3.connect(tmp_path / "memory.db")     # committed, seen by another reader
    assert other.execute("SELECT count(*) FROM outbox").fetchone() == (40,)
    other.close()


async def test_a_failed_group_commit_fails_every_caller_in_it(outbox):
    async def broken(fn, *args):
        raise sqlite3.OperationalError("disk I/O error")

    outbox._db.run = broken
    results = await asyncio.gather(*(outbox.enqueue("alice", [item(n)]) for n in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)


def enqueue_30_then_kill_9(opening: str) -> None:
    """In a process of its own: ``opening`` (statements that open an outbox as ``box``, in
    ``main``), 30 concurrent enqueues, each acknowledged, then ``kill -9``."""
    script = textwrap.dedent("""
        import asyncio, os, signal, sys
        sys.path.insert(0, {root!r})
        from memproxyd.memory.base import NewMemory
        from memproxyd.memory.outbox import DirectOutbox, Outbox
        from memproxyd.memory.sqlite.store import SqliteStore
        async def main():
        {opening}
            await asyncio.gather(*(box.enqueue("alice", [NewMemory(f"fact {{n}}", key=f"k{{n}}")])
                                   for n in range(30)))
            os.kill(os.getpid(), signal.SIGKILL)    # all acknowledged, then killed
        asyncio.run(main())
    """).format(root=str(ROOT), opening=textwrap.indent(textwrap.dedent(opening), "    "))
    assert subprocess.run([sys.executable, "-c", script], timeout=30).returncode == -9


async def test_group_committed_enqueues_survive_kill_9(tmp_path, sessions):
    enqueue_30_then_kill_9(f"""
        box = Outbox({str(tmp_path / "memory.db")!r})
        await box.open()
    """)
    box = Outbox(tmp_path / "memory.db")
    await box.open()
    try:
        assert len(await box.pending(100)) == 30
    finally:
        await box.close()


async def test_a_busy_moment_is_delivered_in_one_call_each_exchange_on_its_own(
        tmp_path, outbox, sessions):
    store = await open_store(tmp_path / "memory.db")
    worker = OutboxWorker(outbox, lambda: store, sessions)
    await worker.start()
    try:
        await asyncio.sleep(0.05)
        await asyncio.gather(outbox.enqueue("alice", [NewMemory("user: I fly kites", key="a")]),
                             *(outbox.enqueue("alice", [item(n)]) for n in range(20)))
        await wait_until(lambda: _is_empty(outbox))
        assert len(store.attempts) == 1
        hits = await store.search("alice", "kites", 10)
        assert [h.content for h in hits] == ["user: I fly kites"]   # no borrowed context
    finally:
        await worker.close()
        await store.close()
