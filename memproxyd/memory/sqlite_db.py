"""One SQLite connection owned by one dedicated worker thread, plus schema migrations.

The memory store and the outbox share one database file (WAL mode lets each keep its own
connection). Every blocking call runs on the connection's own thread, never on the event loop::

    db = SqliteThread(path, "memory-store")
    await db.open("store", MIGRATIONS)
    rows = await db.run(lambda conn: conn.execute("SELECT 1").fetchall())
    await db.close()

Migrations are a tuple of steps per component; step ``n`` (1-based) brings the component to
schema version ``n``. ``schema_version`` records the version per component, so a reopened file
only runs the steps it has not seen, all in one transaction.
"""
from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")
Migration = tuple[str, ...]          # the statements of one schema version

_VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version ("
                  "component TEXT PRIMARY KEY, version INTEGER NOT NULL)")


class SqliteThread:
    """A connection confined to a single worker thread; ``run`` executes a function on it."""

    def __init__(self, path: Path, name: str, *, synchronous: str = "NORMAL"):
        self.path = Path(path)
        self.name = name
        self.synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

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

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._conn is not None:
            await self._submit(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _submit(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (see ``transaction``).
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-32000")      # 32 MB page cache
        self._conn = conn


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
            for sql in statements:
                conn.execute(sql)
        conn.execute("INSERT INTO schema_version(component, version) VALUES (?, ?) "
                     "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                     (component, len(migrations)))
    return len(migrations)
