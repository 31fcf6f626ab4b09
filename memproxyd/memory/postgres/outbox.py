"""The outbox in the shared PostgreSQL database, drained by several daemons at once.

    outbox = PostgresOutbox(db, Outbox(state_dir / "memory.db"), lease_seconds=60)
    await outbox.open()
    worker = OutboxWorker(outbox, lambda: store, sessions)     # the worker of ``outbox.py``

The interface is ``outbox.Outbox``'s, so the same ``OutboxWorker`` drains it. What changes:

* **Claims.** ``pending`` claims the due entries it returns: one ``UPDATE ... FROM (SELECT
  ... FOR UPDATE SKIP LOCKED)`` marks them ``claimed_by`` this daemon until ``claim_until``
  (the database's clock + ``lease_seconds``). Another daemon's ``pending`` skips rows being
  claimed and rows whose lease runs, so no two daemons deliver one entry at once.
  ``delivered`` deletes the rows; ``failed`` releases the claim with the retry time.
* **``kill -9``.** ``enqueue`` returns after the commit. A daemon killed mid-delivery leaves
  its claims behind; when the lease runs out any daemon (or its own next start) takes them.
  A killed delivery may already have reached the store: the store ignores a key it has, so
  the exchange is stored once. Nothing wakes the other daemons' workers when a daemon dies,
  so a worker with nothing due looks again every ``poll_seconds`` (half the lease): what a
  killed daemon claimed or queued is delivered within about 1.5 leases.
* **The database goes away.** ``enqueue`` then commits to the local SQLite outbox (the
  *spill*, ``outbox.Outbox``) and still acknowledges; ``pending`` moves spilled entries into
  the database (same keys, so a move repeated after a crash is a no-op) before claiming.
  While the database is unreachable ``pending`` finds nothing, ``next_due`` asks again in
  ``retry_seconds``, and ``failed``/``delivered`` leave the lease to expire.
"""
from __future__ import annotations

import json
import logging
import math
import os
import secrets
import socket
import time
from typing import Any

from memproxyd.memory.base import NewMemory
from memproxyd.memory.outbox import Outbox, OutboxEntry, require_keys
from memproxyd.memory.postgres.db import PgDatabase, Unreachable

log = logging.getLogger(__name__)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE memory_outbox (id BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL,"
        " key TEXT NOT NULL, content TEXT NOT NULL, metadata JSONB NOT NULL,"
        " created_at DOUBLE PRECISION NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
        " next_at DOUBLE PRECISION NOT NULL, last_error TEXT, claimed_by TEXT,"
        " claim_until DOUBLE PRECISION, UNIQUE (user_id, key))",
        "CREATE INDEX memory_outbox_due ON memory_outbox(next_at, id)",
    ),
    # dead letters, as in the SQLite outbox: failed for good, kept, not retried until
    # ``retry_dead`` (``memproxyctl memory retry-dead``)
    ("ALTER TABLE memory_outbox ADD COLUMN dead_at DOUBLE PRECISION",),
)
_NOW = "extract(epoch FROM clock_timestamp())"
_INSERT = ("INSERT INTO memory_outbox(user_id, key, content, metadata, created_at, next_at)"
           " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[],"
           " $5::float8[], $6::float8[]) ON CONFLICT (user_id, key) DO NOTHING")


class PostgresOutbox:
    def __init__(self, db: PgDatabase, spill: Outbox, *, lease_seconds: float = 60.0,
                 retry_seconds: float = 1.0):
        self.db = db
        self.spill = spill
        self.lease_seconds = lease_seconds
        self.retry_seconds = retry_seconds
        self.poll_seconds = lease_seconds / 2   # the longest an idle worker waits (above)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.enqueued = spill.enqueued       # one event: a spill wakes the worker too
        self.depth: int | None = None        # last count seen (status)
        self._spill_checked = False          # False: the spill may hold entries

    async def open(self) -> None:
        await self.spill.open()
        await self.db.migrate("outbox", MIGRATIONS)

    async def close(self) -> None:
        await self.spill.close()

    async def enqueue(self, user_id: str, items: list[NewMemory]) -> None:
        """Commit ``items`` durably (the database, else the local spill); an item whose key
        is already queued is not queued twice."""
        require_keys(items)
        try:
            await self._insert([(user_id, item) for item in items], time.time())
        except Exception as exc:   # down, refused, timed out: the spill still commits it
            await self.spill.enqueue(user_id, items)
            self._spill_checked = False
            log.warning("outbox spilled to local file user_id=%s entries=%d error=%s",
                        user_id, len(items), type(exc).__name__)
        self.enqueued.set()

    async def _insert(self, rows: list[tuple[str, NewMemory]], now: float,
                      due: float | None = None) -> None:
        async with self.db.connection() as conn:
            await conn.execute(_INSERT, [u for u, _ in rows], [i.key for _, i in rows],
                               [i.content for _, i in rows],
                               [json.dumps(i.metadata) for _, i in rows],
                               [now] * len(rows), [now if due is None else due] * len(rows))

    async def pending(self, limit: int, now: float | None = None) -> list[OutboxEntry]:
        """Claim and return the entries due at ``now`` that no live lease holds, oldest first."""
        now = time.time() if now is None else now
        try:
            await self._move_spill()
            async with self.db.connection() as conn:
                rows = await conn.fetch(
                    f"UPDATE memory_outbox o SET claimed_by = $1, claim_until = {_NOW} + $2"
                    " FROM (SELECT id FROM memory_outbox WHERE next_at <= $3 AND dead_at IS NULL AND"
                    f" (claim_until IS NULL OR claim_until < {_NOW}) ORDER BY id LIMIT $4"
                    " FOR UPDATE SKIP LOCKED) due WHERE o.id = due.id"
                    " RETURNING o.id, o.user_id, o.key, o.content, o.metadata, o.attempts",
                    self.owner, self.lease_seconds, now, limit)
        except Unreachable:
            return []
        return [OutboxEntry(r["id"], r["user_id"], NewMemory(r["content"],
                                                             json.loads(r["metadata"]),
                                                             r["key"]), r["attempts"])
                for r in sorted(rows, key=lambda r: r["id"])]

    async def _move_spill(self) -> None:
        """Spilled entries into the database; each leaves the spill once it is committed."""
        while not self._spill_checked:
            entries = await self.spill.pending(500, now=math.inf)
            if not entries:
                self._spill_checked = True
                return
            await self._insert([(e.user_id, e.item) for e in entries], time.time(), due=0.0)
            await self.spill.delivered([e.id for e in entries])
            log.info("outbox spill moved to database entries=%d", len(entries))

    async def purge(self, user_id: str) -> int:
        """Drop every queued entry of ``user_id`` here and in the spill; returns how many."""
        spilled = await self.spill.purge(user_id)
        async with self.db.connection() as conn:
            status = await conn.execute("DELETE FROM memory_outbox WHERE user_id = $1", user_id)
        return spilled + int(status.split()[-1])

    async def delivered(self, ids: list[int]) -> None:
        try:
            async with self.db.connection() as conn:
                await conn.execute("DELETE FROM memory_outbox WHERE id = ANY($1::bigint[])", ids)
        except Unreachable:   # the lease runs out, redelivery hits the store's key: no duplicate
            log.warning("outbox delivered but not cleared entries=%d", len(ids))

    async def failed(self, id: int, retry_at: float, error: str, dead: bool = False) -> None:
        """One more failed try; with ``dead`` the entry becomes a dead letter."""
        try:
            async with self.db.connection() as conn:
                await conn.execute(
                    "UPDATE memory_outbox SET attempts = attempts + 1, next_at = $2,"
                    " last_error = $3, claimed_by = NULL, claim_until = NULL,"
                    f" dead_at = CASE WHEN $5 THEN {_NOW} END"
                    " WHERE id = $1 AND claimed_by = $4", id, retry_at, error[:500], self.owner,
                    dead)
        except Unreachable:   # the claim simply expires: retried after the lease
            pass

    async def dead(self) -> int:
        """How many dead letters there are (shared by every daemon on the database)."""
        async with self.db.connection() as conn:
            return await conn.fetchval(
                "SELECT count(*) FROM memory_outbox WHERE dead_at IS NOT NULL")

    async def retry_dead(self) -> int:
        """Put every dead letter back in the queue, due now, its tries counted afresh."""
        async with self.db.connection() as conn:
            status = await conn.execute(
                "UPDATE memory_outbox SET dead_at = NULL, attempts = 0,"
                f" next_at = {_NOW} WHERE dead_at IS NOT NULL")
        self.enqueued.set()
        return int(status.split()[-1])

    async def next_due(self) -> float | None:
        """When the earliest entry is due (a running lease counts), or None when empty."""
        try:
            async with self.db.connection() as conn:
                row = await conn.fetchrow(
                    "SELECT min(greatest(next_at, coalesce(claim_until, 0)))"
                    " FILTER (WHERE dead_at IS NULL) AS due, count(*) AS n FROM memory_outbox")
        except Unreachable:
            return time.time() + self.retry_seconds
        self.depth = row["n"]
        if not self._spill_checked:
            return time.time() + self.retry_seconds
        return row["due"]

    async def count(self) -> int:
        """Entries waiting here and in the spill (the last known count while unreachable)."""
        spilled = await self.spill.count()
        try:
            async with self.db.connection() as conn:
                self.depth = await conn.fetchval("SELECT count(*) FROM memory_outbox")
        except Unreachable:
            pass
        return spilled + (self.depth or 0)

    def status(self) -> dict[str, Any]:
        return {"depth": self.depth, "lease_seconds": self.lease_seconds, "owner": self.owner}
