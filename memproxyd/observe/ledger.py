"""The usage ledger: one row per proxied call in ``<state_dir>/usage.db`` (SQLite, WAL).

    ledger = Ledger(state_dir / "usage.db", retention_days=90)
    await ledger.open()
    ledger.add(row)                    # the request path: a list append, no I/O
    await ledger.flush()               # commit what is pending (queries do this first)
    rows = await ledger.summary(since=time.time() - 86400, by="model")
    await ledger.close()               # commits the rest

The writer discipline is the outbox's without its per-call commit: rows wait in memory and
a background task commits them in one transaction every ``flush_seconds`` (or sooner when
many are waiting), on the ledger's own thread. Usage numbers are read from the kept reply
documents and priced there too (``usage.usage_of``, ``prices.PriceBook``). A crash loses at
most the rows of the last interval: the ledger is an account, not a promise to a client.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from memproxyd.observe.meter import Row, usage_of
from memproxyd.observe.prices import PriceBook

log = logging.getLogger(__name__)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS usage (id INTEGER PRIMARY KEY, ts REAL NOT NULL,"
    " user_id TEXT NOT NULL, project TEXT NOT NULL, protocol TEXT NOT NULL,"
    " endpoint TEXT NOT NULL, model TEXT NOT NULL, deployment TEXT NOT NULL,"
    " status INTEGER NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER,"
    " cached_tokens INTEGER, cost_usd REAL, overhead_ms REAL, upstream_ms REAL,"
    " latency_ms REAL NOT NULL, ttft_ms REAL, memory TEXT NOT NULL,"
    " memories INTEGER NOT NULL, trace_id TEXT NOT NULL, cache_write_tokens INTEGER)",
    "CREATE INDEX IF NOT EXISTS usage_ts ON usage(ts)",
    "CREATE INDEX IF NOT EXISTS usage_user_ts ON usage(user_id, ts)",
)
# columns added since the first schema: a usage.db written before them gets them, empty
ADDED = (("cache_write_tokens", "INTEGER"),)
COLUMNS = ("ts", "user_id", "project", "protocol", "endpoint", "model", "deployment", "status",
           "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "overhead_ms",
           "upstream_ms", "latency_ms", "ttft_ms", "memory", "memories", "trace_id",
           "cache_write_tokens")
TOKENS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens")
GROUPS = {"model": "model", "project": "user_id",
          "day": "strftime('%Y-%m-%d', ts, 'unixepoch')"}
BATCH = 500          # rows that trigger a commit before the interval is over
PRUNE_EVERY = 3600.0


class Ledger:
    def __init__(self, path: Path, *, retention_days: int = 90, flush_seconds: float = 1.0):
        self.path = Path(path)
        self.retention_days = retention_days
        self.flush_seconds = flush_seconds
        self.pending: list[Row] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="usage-ledger")
        self._conn: sqlite3.Connection | None = None
        self._prices: PriceBook | None = None
        self._task: asyncio.Task | None = None
        self._pruned = 0.0

    async def open(self) -> None:
        await self._run(self._connect)
        self._task = asyncio.create_task(self._loop(), name="usage-ledger")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        await self._run(self._conn.close)
        self._executor.shutdown(wait=True)

    def add(self, row: Row) -> None:
        self.pending.append(row)
        if len(self.pending) >= BATCH:
            self._wake.set()

    async def flush(self) -> int:
        """Commit every pending row; returns how many."""
        rows, self.pending = self.pending, []
        if rows:
            await self._run(self._write, rows)
        return len(rows)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            self._wake.clear()
            try:
                await self.flush()
                if time.time() - self._pruned > PRUNE_EVERY:
                    self._pruned = time.time()
                    await self._run(self._prune)
            except Exception:   # a full disk must not stop the daemon; rows of this batch are lost
                log.exception("usage ledger write failed")

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for sql in SCHEMA:
            conn.execute(sql)
        _migrate(conn)
        self._conn = conn
        # ~3 MB of JSON parsed in ~20 ms, holding the GIL: at start, not under traffic
        self._prices = PriceBook.bundled()

    def _write(self, rows: list[Row]) -> None:
        values = [self._values(row) for row in rows]
        marks = ", ".join("?" * len(COLUMNS))
        self._conn.execute("BEGIN")
        try:
            self._conn.executemany(
                f"INSERT INTO usage({', '.join(COLUMNS)}) VALUES ({marks})", values)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def _values(self, row: Row) -> tuple:
        tokens = usage_of(row.documents) if row.documents else None
        prompt, completion, cached, written = tokens if tokens else (None,) * 4
        cost = None
        if tokens is not None:
            cost = self._prices.cost(row.entry, row.deployment, *tokens)
        return (row.ts, row.user_id, row.project, row.protocol, row.endpoint, row.model,
                row.deployment, row.status, prompt, completion, cached, cost, row.overhead_ms,
                row.upstream_ms, row.latency_ms, row.ttft_ms, row.memory, row.memories,
                row.trace_id, written)

    def _prune(self) -> None:
        cutoff = time.time() - self.retention_days * 86400
        deleted = self._conn.execute("DELETE FROM usage WHERE ts < ?", (cutoff,)).rowcount
        if deleted:
            log.info("usage ledger pruned rows=%d retention_days=%d", deleted,
                     self.retention_days)

    # -- queries -----------------------------------------------------------------------

    async def summary(self, *, since: float, by: str | tuple[str, ...],
                      user_id: str | None = None) -> list[dict]:
        """Per group of ``by`` (one or more ``GROUPS`` keys, e.g. ``("day", "model")``):
        calls, tokens, cost, p50/p95 latency, errors."""
        await self.flush()
        by = (by,) if isinstance(by, str) else tuple(by)
        return await self._run(self._summary, since, by, user_id)

    async def rows(self, *, since: float, user_id: str | None = None,
                   limit: int = 100) -> list[dict]:
        """The newest rows, newest first."""
        await self.flush()
        return await self._run(self._rows, since, user_id, limit)

    def _where(self, since: float, user_id: str | None) -> tuple[str, tuple]:
        if user_id is None:
            return "ts >= ?", (since,)
        return "ts >= ? AND user_id = ?", (since, user_id)

    def _summary(self, since: float, by: tuple[str, ...], user_id: str | None) -> list[dict]:
        where, params = self._where(since, user_id)
        keys = ", ".join(GROUPS[name] for name in by)
        cursor = self._conn.execute(
            f"SELECT {keys}, latency_ms, status, cost_usd, {', '.join(TOKENS)}"
            f" FROM usage WHERE {where}", params)
        groups: dict[tuple, dict] = {}
        width = len(by)
        for values in cursor:
            key = values[:width]
            latency, status, cost = values[width:width + 3]
            group = groups.get(key)
            if group is None:
                group = groups[key] = {**dict(zip(by, key)), "calls": 0, "errors": 0,
                                       **dict.fromkeys(TOKENS, 0), "cost_usd": 0.0,
                                       "latencies": []}
            group["calls"] += 1
            group["errors"] += status >= 400
            for name, value in zip(TOKENS, values[width + 3:]):
                group[name] += value or 0
            group["cost_usd"] += cost or 0.0
            group["latencies"].append(latency)
        return [_percentiles(g) for _, g in sorted(groups.items())]

    def _rows(self, since: float, user_id: str | None, limit: int) -> list[dict]:
        where, params = self._where(since, user_id)
        cursor = self._conn.execute(f"SELECT {', '.join(COLUMNS)} FROM usage WHERE {where}"
                                    " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [dict(zip(COLUMNS, values)) for values in cursor]


def _migrate(conn: sqlite3.Connection) -> None:
    """Add the columns a usage.db from an older version lacks (SQLite adds them empty)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(usage)")}
    for name, kind in ADDED:
        if name not in present:
            conn.execute(f"ALTER TABLE usage ADD COLUMN {name} {kind}")
            log.info("usage ledger migrated column=%s", name)


def _percentiles(group: dict) -> dict:
    latencies = sorted(group.pop("latencies"))
    group["cost_usd"] = round(group["cost_usd"], 8)
    group["latency_p50_ms"] = round(statistics.median(latencies), 3)
    group["latency_p95_ms"] = round(latencies[min(len(latencies) - 1,
                                                  int(0.95 * len(latencies)))], 3)
    return group
