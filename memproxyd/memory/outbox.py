"""The durable outbox: memories to write are committed here first, delivered to the store later.

    outbox = Outbox(state_dir / "memory.db")           # the store's file, its own connection
    await outbox.open()
    worker = OutboxWorker(outbox, lambda: store, sessions, retry_max_seconds=300)
    await worker.start()
    await outbox.enqueue("alice", [NewMemory(text, meta, key="conv-1:turn-7")])  # acknowledged
    ...
    await worker.flush(timeout=5)   # at shutdown
    await worker.close()
    await outbox.close()

``enqueue`` returns after the rows are committed (WAL), so a ``kill -9`` right after loses
nothing: the next process's worker delivers it on start. Concurrent enqueues share commits
(group commit): while one transaction is being written, the rows of every enqueue that
arrives meanwhile are gathered and committed together in the next, and each caller returns
once the transaction holding its rows has committed. Each item carries a stable ``key``;
the store's idempotency on that key makes a redelivery (crash between store write and outbox
delete) a no-op, never a duplicate. Failed deliveries stay in the outbox with exponential
backoff and jitter (or the backend's ``retry_after``); nothing is ever dropped on an error.
The worker delivers in batches: woken by an enqueue, it lingers ``linger`` seconds so that
the exchanges of a busy moment reach the store in one transaction per user.
An entry the backend rejects for good (any failure but ``RetryLater``: a 4xx, a row it cannot
store) becomes a *dead letter* after ``max_attempts`` tries: kept, counted in ``status``, no
longer retried until ``retry_dead`` puts it back in the queue.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Callable

import attrs

from memproxyd.memory.base import MemoryStore, NewMemory, RetryLater
from memproxyd.memory.sqlite.db import GroupCommit, Migration, SqliteThread, transaction

log = logging.getLogger(__name__)

MIGRATIONS: tuple[Migration, ...] = (
    (
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, key TEXT NOT NULL,"
        " content TEXT NOT NULL, metadata TEXT NOT NULL, created_at REAL NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, last_error TEXT,"
        " UNIQUE(user_id, key))",
        "CREATE INDEX outbox_due ON outbox(next_at, id)",
    ),
    # dead letters: entries that failed permanently MAX_ATTEMPTS times; kept, never retried
    # by the worker, until ``retry_dead`` (``memproxyctl memory retry-dead``)
    ("ALTER TABLE outbox ADD COLUMN dead_at REAL",),
)


def require_keys(items: list[NewMemory]) -> None:
    """Every outbox's rule: a redelivery is a no-op only if each item has a stable key."""
    if any(not item.key for item in items):
        raise ValueError("every outbox item needs a stable key")


@attrs.frozen
class OutboxEntry:
    id: int
    user_id: str
    item: NewMemory
    attempts: int


class Outbox:
    """The outbox table in the memory database file."""

    def __init__(self, db_path: Path, *, synchronous: str = "NORMAL"):
        # NORMAL in WAL mode: a commit survives a killed process; FULL also survives power loss.
        self._db = SqliteThread(Path(db_path), "memory-outbox", synchronous=synchronous)
        self.enqueued = asyncio.Event()      # set on every enqueue; the worker waits on it
        self._group = GroupCommit(
            lambda parts: self._db.run(_insert, [row for rows in parts for row in rows]),
            "outbox-commit")

    async def open(self) -> None:
        await self._db.open("outbox", MIGRATIONS)

    async def close(self) -> None:
        await self._group.close()
        await self._db.close()

    async def enqueue(self, user_id: str, items: list[NewMemory]) -> None:
        """Commit ``items`` durably; an item whose key is already queued is not queued twice."""
        require_keys(items)
        now = time.time()
        await self._group.submit([(user_id, item.key, item.content, json.dumps(item.metadata),
                                   now, now) for item in items])
        self.enqueued.set()

    async def pending(self, limit: int, now: float | None = None) -> list[OutboxEntry]:
        """Entries due at ``now`` (default: the current time), oldest first."""
        now = time.time() if now is None else now
        rows = await self._db.run(_select, "SELECT id, user_id, key, content, metadata, attempts"
                                  " FROM outbox WHERE next_at <= ? AND dead_at IS NULL"
                                  " ORDER BY id LIMIT ?", (now, limit))
        return [OutboxEntry(r[0], r[1], NewMemory(r[3], json.loads(r[4]), r[2]), r[5])
                for r in rows]

    async def purge(self, user_id: str) -> int:
        """Drop every queued entry of ``user_id`` (forget-all); returns how many. Queued
        entries have no store id yet, so forgetting one memory by id needs no purge."""
        return await self._db.run(_delete_user, user_id)

    async def delivered(self, ids: list[int]) -> None:
        await self._db.run(_execute_many, "DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    async def failed(self, id: int, retry_at: float, error: str, dead: bool = False) -> None:
        """One more failed try; with ``dead`` the entry becomes a dead letter."""
        await self._db.run(_execute_many, "UPDATE outbox SET attempts = attempts + 1,"
                           " next_at = ?, last_error = ?, dead_at = ? WHERE id = ?",
                           [(retry_at, error[:500], time.time() if dead else None, id)])

    async def dead(self) -> int:
        """How many dead letters there are."""
        return (await self._db.run(_select, "SELECT count(*) FROM outbox"
                                   " WHERE dead_at IS NOT NULL", ()))[0][0]

    async def retry_dead(self) -> int:
        """Put every dead letter back in the queue, due now, its tries counted afresh."""
        count = await self._db.run(_update, "UPDATE outbox SET dead_at = NULL, attempts = 0,"
                                   " next_at = ? WHERE dead_at IS NOT NULL", (time.time(),))
        self.enqueued.set()
        return count

    async def next_due(self) -> float | None:
        """When the earliest live entry is due (unix seconds), or None when there is none."""
        return (await self._db.run(_select, "SELECT min(next_at) FROM outbox"
                                   " WHERE dead_at IS NULL", ()))[0][0]

    async def count(self) -> int:
        return (await self._db.run(_select, "SELECT count(*) FROM outbox", ()))[0][0]


def _insert(conn, rows) -> None:
    with transaction(conn):
        conn.executemany("INSERT INTO outbox(user_id, key, content, metadata, created_at, next_at)"
                         " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(user_id, key) DO NOTHING", rows)


def _delete_user(conn, user_id: str) -> int:
    with transaction(conn):
        return conn.execute("DELETE FROM outbox WHERE user_id = ?", (user_id,)).rowcount


def _select(conn, sql: str, params: tuple) -> list[tuple]:
    return conn.execute(sql, params).fetchall()


def _update(conn, sql: str, params: tuple) -> int:
    with transaction(conn):
        return conn.execute(sql, params).rowcount


def _execute_many(conn, sql: str, rows: list[tuple]) -> None:
    with transaction(conn):
        conn.executemany(sql, rows)


class DirectOutbox(Outbox):
    """The outbox of the local SQLite store when nothing remote stands between an exchange
    and it (no ``embedding_model``, no ``extract_model``): ``enqueue`` writes the exchange
    straight into the store, in the same file, under the same key, committed (group commit)
    before it returns -- the outbox's guarantee without writing everything twice and
    delivering it in a second transaction (that round trip cost ~0.16 ms of CPU per
    exchange at concurrency 32, measured). Everything else is the outbox's: entries an
    earlier configuration left queued are delivered by the worker as before.
    """

    # ``enqueue`` hands its exchange to the store's group commit before it first waits, and
    # the commit happens whether or not the caller is still there: a remembering caller needs
    # no shield (a task per exchange) against its client hanging up.
    cancel_safe = True

    def __init__(self, db_path: Path, store, *, synchronous: str = "NORMAL"):
        super().__init__(db_path, synchronous=synchronous)
        self.store = store

    async def enqueue(self, user_id: str, items: list[NewMemory]) -> None:
        require_keys(items)
        await self.store.remember(user_id, items)


class OutboxWorker:
    """Drains the outbox into the memory store in the background."""

    batch_size = 500
    base_delay = 1.0          # seconds before the first retry
    linger = 0.05             # seconds to gather more exchanges after a wake-up
    idle_wait = 60.0          # re-check at least this often with nothing due (an outbox
                              # that others fill too may ask sooner: its ``poll_seconds``)

    def __init__(self, outbox: Outbox, store_getter: Callable[[], MemoryStore | None], sessions,
                 *, retry_max_seconds: float = 300.0, max_attempts: int = 8):
        self.max_attempts = max_attempts     # permanent failures before a dead letter
        self.outbox = outbox
        self.store_getter = store_getter
        self.sessions = sessions
        self.retry_max_seconds = retry_max_seconds
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()          # one drain at a time (loop or flush)
        self._idle = min(self.idle_wait, getattr(outbox, "poll_seconds", self.idle_wait))

    async def start(self) -> None:
        """Start draining; whatever a previous process left is delivered first."""
        self._task = asyncio.create_task(self._run(), name="memory-outbox")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def flush(self, timeout: float) -> int:
        """Try every entry once, due or backing off, within ``timeout``; returns how many are
        left in the outbox (they are delivered by the next start)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.drain(now=math.inf), timeout)
        return await self.outbox.count()

    async def drain(self, now: float | None = None) -> int:
        """Deliver the entries due at ``now``; returns how many were delivered."""
        done = 0
        async with self._lock:
            attempted: set[int] = set()
            while True:
                entries = [e for e in await self.outbox.pending(self.batch_size, now)
                           if e.id not in attempted]
                if not entries:
                    return done
                attempted.update(e.id for e in entries)
                by_user: dict[str, list[OutboxEntry]] = {}
                for entry in entries:
                    by_user.setdefault(entry.user_id, []).append(entry)
                for user_id, group in by_user.items():
                    done += await self._deliver(user_id, group)

    async def _deliver(self, user_id: str, entries: list[OutboxEntry]) -> int:
        store = self.store_getter()
        try:
            if store is None:
                raise RetryLater("no memory store configured")
            async with self.sessions.lease(user_id) as session:
                await _add(store, user_id, entries, session)
        except asyncio.CancelledError:
            raise
        except Exception as exc:   # every failure is retried; the entries stay queued
            retry_at = time.time() + self._delay(exc, max(e.attempts for e in entries))
            log.warning("memory outbox delivery failed user_id=%s entries=%d error=%s",
                        user_id, len(entries), type(exc).__name__)
            for entry in entries:
                # a backend that is down (RetryLater) is waited for, however long it takes
                dead = (not isinstance(exc, RetryLater)
                        and entry.attempts + 1 >= self.max_attempts)
                if dead:
                    log.error("memory outbox entry is a dead letter user_id=%s entry=%d "
                              "attempts=%d error=%s", user_id, entry.id, entry.attempts + 1,
                              type(exc).__name__)
                await self.outbox.failed(entry.id, retry_at, f"{type(exc).__name__}: {exc}",
                                         dead)
            return 0
        await self.outbox.delivered([e.id for e in entries])
        return len(entries)

    def _delay(self, exc: Exception, attempts: int) -> float:
        if isinstance(exc, RetryLater) and exc.retry_after is not None:
            return exc.retry_after
        ceiling = min(self.retry_max_seconds, self.base_delay * 2 ** min(attempts, 30))
        return random.uniform(ceiling / 2, ceiling)     # "equal jitter"

    async def _run(self) -> None:
        while True:
            self.outbox.enqueued.clear()
            wait = self._idle
            try:
                await self.drain()
                due = await self.outbox.next_due()
                if due is not None:
                    wait = max(0.0, due - time.time())
            except asyncio.CancelledError:
                raise
            except Exception:   # the outbox file itself failed; keep the worker alive
                log.exception("memory outbox drain failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.outbox.enqueued.wait(), min(wait, self._idle))
            if self.outbox.enqueued.is_set():
                await asyncio.sleep(self.linger)


async def _add(store: MemoryStore, user_id: str, entries: list[OutboxEntry], session) -> None:
    """Deliver in one call: each exchange its own batch (unrelated exchanges are not each
    other's neighbour context) where the store takes batches, else one ``add_many``."""
    add_batches = getattr(store, "add_batches", None)
    if add_batches is not None:
        await add_batches(user_id, [[e.item] for e in entries], session)
    else:
        await store.add_many(user_id, [e.item for e in entries], session)
