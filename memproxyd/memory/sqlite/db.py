"""One SQLite connection owned by one dedicated worker thread, a small pool of read-only
connections, and schema migrations.

The memory store and the outbox share one database file (WAL mode lets each keep its own
connections). Blocking calls run on a connection's own thread, not on the event loop (the
store's one exception, a search's few hits by primary key, is explained there)::

    db = SqliteThread(path, "memory-store")
    await db.open("store", MIGRATIONS)
    rows = await db.run(lambda conn: conn.execute("SELECT 1").fetchall())
    readers = SqliteReaders(path, "memory-read", size=2)   # after the schema exists
    rows = await readers.run(lambda conn: conn.execute("SELECT 1").fetchall())
    await readers.close()
    await db.close()

WAL readers never wait for the writer nor for each other, and SQLite releases the GIL while
it works, so searches on the pool run beside deliveries on the writer thread.

Migrations are a tuple of steps per component; step ``n`` (1-based) brings the component to
schema version ``n``; a step is SQL statements, or functions of the connection for what SQL
alone cannot say. ``schema_version`` records the version per component, so a reopened file
only runs the steps it has not seen, all in one transaction.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")
Migration = tuple["str | Callable[[sqlite3.Connection], None]", ...]   # one schema version

_VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version ("
                  "component TEXT PRIMARY KEY, version INTEGER NOT NULL)")


class GroupCommit:
    """Concurrent writes share transactions (group commit): while one transaction is being
    written, what every caller that arrives meanwhile submits is gathered and written together
    in the next; each caller returns once the transaction holding its part has committed, and
    hears of its failure if it failed.

        group = GroupCommit(lambda parts: db.run(write_all, parts))
        await group.submit(part)        # committed
    """

    def __init__(self, commit: Callable[[list], Awaitable[Any]], name: str):
        self._commit = commit
        self._name = name
        self._waiting: list[tuple[Any, asyncio.Future]] = []
        self._committer: asyncio.Task | None = None

    async def submit(self, part) -> None:
        committed = asyncio.get_running_loop().create_future()
        self._waiting.append((part, committed))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_waiting(), name=self._name)
        # A caller that goes away still has its part committed with the others.
        await committed

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.shield(self._committer)   # callers are owed their commit

    async def _commit_waiting(self) -> None:
        """One transaction for everything waiting, again until nothing is."""
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                try:
                    await self._commit([part for part, _ in group])
                except Exception as exc:   # every caller of this group hears of it
                    for _, committed in group:
                        if not committed.done():       # done: its caller was cancelled
                            committed.set_exception(exc)
                else:
                    for _, committed in group:
                        if not committed.done():
                            committed.set_result(None)
        finally:
            self._committer = None


class SqliteThread:
    """A connection confined to a single worker thread; ``run`` executes a function on it."""

    def __init__(self, path: Path, name: str, *, synchronous: str = "NORMAL",
                 checkpoint_rows: int = 0):
        self.path = Path(path)
        self.name = name
        self.synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._jobs = 0                 # submitted jobs whose callers have not resumed yet
        # With ``checkpoint_rows``, the connection never checkpoints the WAL as part of a
        # commit (a commit ``run_here`` makes on the event loop must not copy megabytes and
        # fsync there): the thread checkpoints once that many rows were written (``wrote``).
        self.checkpoint_rows = checkpoint_rows
        self._written = 0
        self._checkpoint: asyncio.Task | None = None

    async def open(self, component: str, migrations: tuple[Migration, ...]) -> int:
        """Open the file (creating its folder), apply pending migrations; returns the version."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        await self._submit(self._connect)
        return await self.run(migrate, component, migrations)

    async def run(self, fn: Callable[..., T], *args) -> T:
        """``fn(conn, *args)`` on the connection's thread."""
        if self._conn is None:
            raise RuntimeError(f"{self.name}: database is not open")
        return await self._submit(fn, self._conn, *args)

    @property
    def idle(self) -> bool:
        """No job is queued or running, and every job's caller has resumed (so whatever
        the caller does after its job -- installing what it read -- is done as well)."""
        return self._jobs == 0 and self._conn is not None

    def run_here(self, fn: Callable[..., T], *args) -> T:
        """``fn(conn, *args)`` now, on the calling thread (the event loop), when ``idle``:
        for short writes whose thread hop costs more than they do -- at concurrency 32, the
        GIL hand-offs of a write on the thread cost ~0.08 ms of CPU per remembered exchange
        (measured), more than the write itself. The connection is the thread's, unused
        while idle; SQLite's own work still releases the GIL."""
        if not self.idle:
            raise RuntimeError(f"{self.name}: run_here while a job is under way")
        return fn(self._conn, *args)

    async def scrub(self) -> None:
        """After a delete: copy the WAL into the file and empty it (TRUNCATE), so the deleted
        text is gone from both files at once, not at some later checkpoint (``secure_delete``
        has zeroed it in the pages the delete wrote). A reader in the way only delays it: the
        checkpoint waits for it up to the busy timeout, and an incomplete one is finished by
        the next."""
        await self.run(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())

    def wrote(self, rows: int) -> None:
        """Count written rows; start a checkpoint on the thread when they reach
        ``checkpoint_rows`` (PASSIVE: it waits for no reader or writer)."""
        self._written += rows
        if (self.checkpoint_rows and self._written >= self.checkpoint_rows
                and self._checkpoint is None):
            self._written = 0
            self._checkpoint = asyncio.create_task(self._run_checkpoint(),
                                                   name=f"{self.name}-checkpoint")

    async def _run_checkpoint(self) -> None:
        try:
            await self.run(_checkpoint)
        except Exception as exc:   # the next one tries again; SQLite keeps the WAL meanwhile
            logging.getLogger(__name__).warning("%s: WAL checkpoint failed error=%s",
                                                self.name, type(exc).__name__)
        finally:
            self._checkpoint = None

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._checkpoint is not None:
            await asyncio.shield(self._checkpoint)
        if self._conn is not None:
            if self.checkpoint_rows:
                await self._submit(_checkpoint, self._conn)
            await self._submit(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _submit(self, fn, *args):
        loop = asyncio.get_running_loop()
        job = self._executor.submit(fn, *args)
        self._jobs += 1
        try:
            result = await asyncio.wrap_future(job, loop=loop)
        except BaseException:
            if job.done():
                self._jobs -= 1
            else:      # its caller was cancelled, the job runs on: counted until it ends
                job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._job_ended))
            raise
        self._jobs -= 1       # here, in the caller's step: ``idle`` also covers its resuming
        return result

    def _job_ended(self) -> None:
        self._jobs -= 1

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        if self.checkpoint_rows:
            conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn = conn


def _checkpoint(conn: sqlite3.Connection) -> tuple:
    # (read to the end: a statement left open would keep the next COMMIT from happening)
    return conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


BUSY_TIMEOUT_MS = 30_000    # how long a write waits for another connection's write lock


def connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves (see ``transaction``).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT_MS / 1000, cached_statements=256)
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-32000")      # 32 MB page cache
    conn.execute("PRAGMA secure_delete=ON")       # a forgotten memory's text is overwritten
    return conn


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection (WAL: it never waits for the writer)."""
    conn = connect(path)
    conn.execute("PRAGMA query_only=ON")
    return conn


class SqliteReaders:
    """``size`` read-only connections, each confined to one thread of a pool."""

    def __init__(self, path: Path, name: str, *, size: int = 2):
        self.path = Path(path)
        self.name = name
        self.size = size
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(self.size, thread_name_prefix=self.name)

    async def run(self, fn: Callable[..., T], *args) -> T:
        """``fn(conn, *args)`` on one of the pool's threads, with that thread's connection."""
        if self._executor is None:
            raise RuntimeError(f"{self.name}: database is not open")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._call, fn, args)

    def _call(self, fn, args):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = read_only(self.path)
            with self._lock:
                self._conns.append(conn)
        return fn(conn, *args)

    async def close(self) -> None:
        if self._executor is None:
            return
        self._executor.shutdown(wait=True)
        self._executor = None
        for conn in self._conns:      # their threads are gone; nothing else uses them
            conn.close()
        self._conns.clear()


class transaction:
    """``with transaction(conn):`` BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def migrate(conn: sqlite3.Connection, component: str, migrations: tuple[Migration, ...]) -> int:
    """Bring ``component`` to ``len(migrations)``; returns the resulting version."""
    with transaction(conn):
        conn.execute(_VERSION_TABLE)
        row = conn.execute("SELECT version FROM schema_version WHERE component = ?",
                           (component,)).fetchone()
        current = row[0] if row else 0
        if current > len(migrations):
            raise RuntimeError(f"{component}: database schema v{current} is newer than this "
                               f"program (v{len(migrations)})")
        for statements in migrations[current:]:
            for step in statements:
                step(conn) if callable(step) else conn.execute(step)
        conn.execute("INSERT INTO schema_version(component, version) VALUES (?, ?) "
                     "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                     (component, len(migrations)))
    return len(migrations)
