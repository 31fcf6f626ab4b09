"""Open a memory store in-process for the benchmarks: SQLite on a file, or PostgreSQL.

    store, close = await open_store("postgres", tmp_dir)   # a throwaway local server
    ...
    await close()

Without a DSN, PostgreSQL runs as a throwaway cluster from the binaries on the machine
(``tests/pgcluster.py``: ``initdb`` into a temp dir, stopped and removed by ``close``).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memproxyd.config import PostgresConfig  # noqa: E402


async def open_store(backend: str, folder: Path, dsn: str | None = None, embedder=None):
    """(store, async close) for ``backend``: "sqlite" (its index in this process),
    "sqlite-process" (in a search process, as the daemon runs it) or "postgres"."""
    if backend.startswith("sqlite"):
        from memproxyd.memory.sqlite.store import SqliteStore
        store = SqliteStore(folder / "memory.db", embedder=embedder,
                            search_process=backend == "sqlite-process")
        await store.open()
        return store, store.close
    from memproxyd.memory.postgres.db import PgDatabase
    from memproxyd.memory.postgres.store import PostgresStore
    cluster = None
    if dsn is None:
        from tests.pgcluster import INSTALL_HINT, PgCluster
        cluster = PgCluster.find()
        if cluster is None:
            raise SystemExit(INSTALL_HINT)
        dsn = cluster.start().create_database("bench")
    db = PgDatabase(PostgresConfig(dsn=dsn, pool_size=4))
    await db.open()
    store = PostgresStore(db, embedder=embedder)
    await store.open()
    store.dsn = dsn

    async def close():
        await db.close()
        if cluster is not None:
            cluster.destroy()
    return store, close
