"""One asyncpg pool to a shared PostgreSQL database, plus schema migrations.

The memory store and the outbox share one ``PgDatabase`` (one pool, one set of settings)::

    db = PgDatabase(config.postgres)          # [postgres] dsn, pool_size, statement_timeout_ms
    await db.open()                           # never raises: an unreachable server is a state
    await db.migrate("memories", MIGRATIONS)  # before first use, once per component
    async with db.connection() as conn:       # MemoryError_ while the server is unreachable
        await conn.fetch("SELECT 1")
    await db.close()

The server may be down when the daemon starts or go away later: every use that cannot reach
it raises ``Unreachable`` (a ``MemoryError_``, which recall reports as ``error`` and the
outbox retries), and the first use after it is back applies pending migrations.

Migrations mirror ``sqlite_db``: a tuple of steps per component, ``schema_version`` records
the version of each, and a transaction-scoped advisory lock serialises daemons that start at
once against the same database. The DSN, which may carry a password, is never logged or
shown: ``status`` names host, port and database only.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import asyncpg

from memproxyd.config import PostgresConfig, resolve_secret
from memproxyd.memory.base import MemoryError_

log = logging.getLogger(__name__)

Migration = tuple[str, ...]
_VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version ("
                  "component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
# Errors that mean "the server is not there right now" rather than "this SQL is wrong".
CONNECTION_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
                     asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                     asyncpg.AdminShutdownError, asyncpg.InsufficientResourcesError)


PAUSE_AFTER_FAILED_CONNECT = 1.0   # seconds in which uses fail at once, after a failed connect


class Unreachable(MemoryError_):
    """The database cannot be reached (down, refused, no DSN); the operation may be retried."""


class Busy(Unreachable):
    """Every connection of this daemon's pool stayed in use for ``connect_timeout``: the
    server answers, this daemon is saturated. Handled like ``Unreachable`` by each use (an
    acknowledgement goes to the spill, recall reports ``error``), but the database is not
    marked down: no pause in which every use fails at once, and the status stays reachable."""


def describe_dsn(dsn: str) -> str:
    """host:port/database of a DSN, without user or password (nor anything else)."""
    parts = urlsplit(dsn)
    try:
        port = parts.port or 5432
    except ValueError:
        port = "?"
    if parts.scheme not in ("postgres", "postgresql"):
        return "(not a postgresql:// URL)"
    return f"{parts.hostname or 'localhost'}:{port}{parts.path or '/'}"


class PgDatabase:
    def __init__(self, config: PostgresConfig):
        self.config = config
        self.dsn = resolve_secret(config.dsn) or ""
        self._pool: asyncpg.Pool | None = None
        self._migrations: dict[str, tuple[Migration, ...]] = {}
        self._migrated: set[str] = set()
        self._lock = asyncio.Lock()
        self.versions: dict[str, int] = {}
        self.last_error = "" if self.dsn else "postgres.dsn is empty or names an unset variable"
        self.last_ok = 0.0
        self._down_until = 0.0
        self._busy_logged = -60.0

    async def open(self) -> None:
        """Create the pool (no connection is made yet; see ``connection``)."""
        if self.dsn:
            self._pool = asyncpg.create_pool(
                self.dsn, min_size=0, max_size=self.config.pool_size,
                timeout=self.config.connect_timeout,
                command_timeout=self.config.statement_timeout_ms / 1000 + 1,
                server_settings={"application_name": "memproxyd",
                                 "statement_timeout": str(self.config.statement_timeout_ms),
                                 "client_min_messages": "warning",
                                 # A generic plan cannot see how rare a searched word is and
                                 # scans a user's every row; planning costs ~0.2 ms.
                                 "plan_cache_mode": "force_custom_plan"})
            await self._pool
            await self._try_migrate()

    async def close(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._pool.close(), 5)
            self._pool.terminate()
            self._pool = None

    async def migrate(self, component: str, migrations: tuple[Migration, ...]) -> None:
        """Register ``component``'s migrations; applied now if the server is reachable."""
        self._migrations[component] = migrations
        self._migrated.discard(component)
        await self._try_migrate()

    async def _try_migrate(self) -> None:
        """Migrate now if possible; otherwise the first use will (and fail until it can)."""
        try:
            await self._ensure_migrated()
        except Unreachable:
            pass                       # logged once by ``_failed``
        except MemoryError_ as exc:    # e.g. a schema newer than this program
            log.error("postgres schema not usable: %s", exc)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, schemas up to date; ``Unreachable`` when the server is not."""
        await self._ensure_migrated()
        async with self._acquire() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise Unreachable(self.last_error or "database is not open")
        if time.monotonic() < self._down_until:
            # Connecting failed just now: fail fast rather than make every call (and every
            # acknowledgement, which then goes to the spill) wait for the connect timeout.
            raise Unreachable(f"database unreachable: {self.last_error}")
        try:
            conn = await self._pool.acquire(timeout=self.config.connect_timeout)
        except CONNECTION_ERRORS as exc:
            if isinstance(exc, asyncio.TimeoutError) and self._saturated():
                self._busy()
                raise Busy("database pool busy: every connection stayed in use for "
                           f"{self.config.connect_timeout:g} s") from exc
            self._down_until = time.monotonic() + PAUSE_AFTER_FAILED_CONNECT
            self._failed(exc)
            raise Unreachable(f"database unreachable: {type(exc).__name__}") from exc
        try:
            yield conn
        except CONNECTION_ERRORS as exc:   # e.g. a pooled connection the server dropped
            self._failed(exc)
            raise Unreachable(f"database unreachable: {type(exc).__name__}") from exc
        finally:
            with contextlib.suppress(*CONNECTION_ERRORS):   # a dead connection is dropped
                await self._pool.release(conn)
        if self.last_error:
            log.info("postgres reachable database=%s", describe_dsn(self.dsn))
        self.last_ok, self.last_error = time.time(), ""

    def _saturated(self) -> bool:
        """Every connection the pool may open is open and in use (a dead server leaves none
        open: its connections are dropped at their first failed use)."""
        pool = self._pool
        return (pool is not None and pool.get_size() >= pool.get_max_size()
                and pool.get_idle_size() == 0)

    def _busy(self) -> None:
        now = time.monotonic()
        if now - self._busy_logged >= 60:
            self._busy_logged = now
            log.warning("postgres pool busy database=%s pool_size=%d connect_timeout=%g "
                        "(raise [postgres] pool_size?)", describe_dsn(self.dsn),
                        self.config.pool_size, self.config.connect_timeout)

    def _failed(self, exc: BaseException) -> None:
        if not self.last_error:
            log.warning("postgres unreachable database=%s error=%s",
                        describe_dsn(self.dsn), type(exc).__name__)
        self.last_error = f"{type(exc).__name__}"
        self._migrated.clear()        # a restarted (or replaced) server is checked again

    async def _ensure_migrated(self) -> None:
        if self._migrated >= self._migrations.keys():
            return
        async with self._lock:
            pending = {c: m for c, m in self._migrations.items() if c not in self._migrated}
            if not pending:
                return
            async with self._acquire() as conn:
                for component, migrations in pending.items():
                    self.versions[component] = await _migrate(conn, component, migrations)
                    self._migrated.add(component)

    def status(self) -> dict[str, Any]:
        pool = self._pool
        return {"database": describe_dsn(self.dsn) if self.dsn else None,
                "reachable": not self.last_error,
                "error": self.last_error or None,
                "schema_versions": dict(self.versions),
                "pool": {"size": pool.get_size() if pool else 0,
                         "idle": pool.get_idle_size() if pool else 0,
                         "max": self.config.pool_size}}


async def _migrate(conn: asyncpg.Connection, component: str,
                   migrations: tuple[Migration, ...]) -> int:
    """Bring ``component`` to ``len(migrations)`` in one transaction; returns the version."""
    async with conn.transaction():
        # Daemons starting together queue here; the lock ends with the transaction.
        await conn.execute("SELECT pg_advisory_xact_lock($1)",
                           zlib.crc32(b"memproxyd-schema") - 2 ** 31)
        await conn.execute(_VERSION_TABLE)
        current = await conn.fetchval(
            "SELECT version FROM schema_version WHERE component = $1", component) or 0
        if current > len(migrations):
            raise MemoryError_(f"{component}: database schema v{current} is newer than this "
                               f"program (v{len(migrations)})")
        for statements in migrations[current:]:
            for sql in statements:
                await conn.execute(sql)
        await conn.execute(
            "INSERT INTO schema_version(component, version) VALUES ($1, $2) "
            "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            component, len(migrations))
    return len(migrations)
