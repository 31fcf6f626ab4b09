"""The injection journal's SQLite table, in a file of its own in ``state_dir`` (its own
connection and thread, component ``journal``; not the memories' file, whose one write lock
the remembered exchanges need). One daemon owns the file, so the journal in memory
(``memory/journal.py``) is the truth while it runs: writes are queued and committed in
batches behind the call (a crash loses at most the last few, which costs one cache miss each,
never a wrong block); reads happen after a restart only. A turn that got no block is not
written: after a restart, a turn the journal does not know gets no block either.

    journal = SqliteJournal(state_dir / "journal.db")
    await journal.open()
    await journal.add("alpha", conversation, injection)
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from pathlib import Path

from memproxyd.memory.journal import Injection
from memproxyd.memory.sqlite.db import Migration, SqliteThread, transaction

log = logging.getLogger(__name__)

MIGRATIONS: tuple[Migration, ...] = ((
    "CREATE TABLE injections (user_id TEXT NOT NULL, conversation TEXT NOT NULL,"
    " ordinal INTEGER NOT NULL, fingerprint TEXT NOT NULL, block TEXT NOT NULL,"
    " ids TEXT NOT NULL, scores TEXT NOT NULL, trace_id TEXT NOT NULL, created REAL NOT NULL,"
    " PRIMARY KEY (user_id, conversation, ordinal, fingerprint))",
    "CREATE INDEX injections_trace ON injections(user_id, trace_id)",
),)
GATHER_SECONDS = 0.2      # how long a write waits for others to commit with it
COLUMNS = "conversation, ordinal, fingerprint, block, ids, scores, trace_id, created"


def row_of(user_id: str, conversation: str, i: Injection) -> tuple:
    return (user_id, conversation, i.ordinal, i.fingerprint, i.block, json.dumps(i.ids),
            json.dumps(i.scores), i.trace_id, i.created)


def injection_of(row) -> tuple[str, Injection]:
    conversation, ordinal, fingerprint, block, ids, scores, trace_id, created = row
    return conversation, Injection(ordinal, fingerprint, block, tuple(json.loads(ids)),
                                   tuple(json.loads(scores)), trace_id, created)


def _insert(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    with transaction(conn):
        conn.executemany("INSERT OR REPLACE INTO injections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         rows)


def _select(conn: sqlite3.Connection, where: str, params: tuple) -> list:
    return conn.execute(f"SELECT {COLUMNS} FROM injections WHERE {where} ORDER BY created,"
                        " ordinal", params).fetchall()


def _delete(conn: sqlite3.Connection, where: str, params: tuple) -> int:
    with transaction(conn):
        return conn.execute(f"DELETE FROM injections WHERE {where}", params).rowcount


class SqliteJournal:
    shared = False

    def __init__(self, db_path: Path):
        self._db = SqliteThread(Path(db_path), "memory-journal")
        self._queued: list[tuple] = []
        self._flushing: asyncio.Task | None = None

    async def open(self) -> None:
        await self._db.open("journal", MIGRATIONS)

    async def close(self) -> None:
        await self.flush()
        await self._db.close()

    async def add(self, user_id: str, conversation: str, injection: Injection) -> None:
        """Queued; committed with whatever else is queued, behind the call."""
        if not injection.block:
            return
        self._queued.append(row_of(user_id, conversation, injection))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush_queued(), name="journal-write")

    async def flush(self) -> None:
        """Every queued injection committed now (reads and shutdown wait for it)."""
        flushing, self._flushing = self._flushing, None
        if flushing is not None:     # (a task cancelled before it ran never runs its finally)
            flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flushing
        if self._queued:
            rows, self._queued = self._queued, []
            await self._db.run(_insert, rows)

    async def _flush_queued(self) -> None:
        try:
            # rows gathered for a moment are one transaction and one hop to the thread
            await asyncio.sleep(GATHER_SECONDS)
            while self._queued:
                rows, self._queued = self._queued, []
                await self._db.run(_insert, rows)
        except Exception:   # the journal never fails a call; these turns are re-recalled
            log.exception("injection journal write failed")
            self._queued.clear()
        finally:
            if self._flushing is asyncio.current_task():
                self._flushing = None

    async def load(self, user_id: str, conversation: str) -> list[Injection]:
        await self.flush()
        rows = await self._db.run(_select, "user_id = ? AND conversation = ?",
                                  (user_id, conversation))
        return [injection_of(r)[1] for r in rows]

    async def find(self, user_id: str, *, conversation: str | None = None,
                   trace_id: str | None = None) -> list[tuple[str, Injection]]:
        await self.flush()
        where, params = "user_id = ?", [user_id]
        if conversation is not None:
            where, params = f"{where} AND conversation = ?", [*params, conversation]
        if trace_id is not None:
            where, params = f"{where} AND trace_id = ?", [*params, trace_id]
        return [injection_of(r) for r in await self._db.run(_select, where, tuple(params))]

    async def forget(self, user_id: str | None, memory_id: str | None) -> None:
        await self.flush()
        if memory_id is None:
            await self._db.run(_delete, "user_id = ?", (user_id,))
        elif user_id is None:      # a personal memory: every user's turns that showed it
            await self._db.run(_delete, "instr(ids, ?) > 0", (json.dumps(memory_id),))
        else:
            await self._db.run(_delete, "user_id = ? AND instr(ids, ?) > 0",
                               (user_id, json.dumps(memory_id)))
        await self._db.scrub()      # the blocks quoted the memory: gone from the file too

    async def expire(self, before: float) -> int:
        """Forget the conversations without a new turn since ``before``."""
        return await self._db.run(_delete, "(user_id, conversation) IN (SELECT user_id,"
                                  " conversation FROM injections GROUP BY 1, 2"
                                  " HAVING max(created) < ?)", (before,))
