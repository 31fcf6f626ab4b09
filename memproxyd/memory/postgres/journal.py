"""The injection journal in PostgreSQL (component ``journal``), shared by every gateway on the
database: a turn one gateway injected is re-injected, byte for byte, by whichever serves the
conversation's next call. Written before the call's reply goes out (so the next turn, wherever
it lands, finds it); read when a turn of a request is not in this gateway's memory.

An unreachable database costs the cache, never the call: a failed read is an empty journal
(the turn is recalled anew), a failed write is logged.
"""
from __future__ import annotations

import json
import logging

from memproxyd.memory.journal import Injection
from memproxyd.memory.postgres.db import PgDatabase

log = logging.getLogger(__name__)

MIGRATIONS: tuple[tuple[str, ...], ...] = ((
    "CREATE TABLE memory_injections (user_id TEXT NOT NULL, conversation TEXT NOT NULL,"
    " ordinal INTEGER NOT NULL, fingerprint TEXT NOT NULL, block TEXT NOT NULL,"
    " ids JSONB NOT NULL, scores JSONB NOT NULL, trace_id TEXT NOT NULL,"
    " created DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (user_id, conversation, ordinal, fingerprint))",
    "CREATE INDEX memory_injections_trace ON memory_injections(user_id, trace_id)",
),)
COLUMNS = "conversation, ordinal, fingerprint, block, ids, scores, trace_id, created"
_UPSERT = ("INSERT INTO memory_injections VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8,"
           " $9) ON CONFLICT (user_id, conversation, ordinal, fingerprint) DO UPDATE SET"
           " block = excluded.block, ids = excluded.ids, scores = excluded.scores,"
           " trace_id = excluded.trace_id, created = excluded.created")


def _injection(row) -> tuple[str, Injection]:
    return row["conversation"], Injection(
        row["ordinal"], row["fingerprint"], row["block"], tuple(json.loads(row["ids"])),
        tuple(json.loads(row["scores"])), row["trace_id"], row["created"])


class PgJournal:
    shared = True

    def __init__(self, db: PgDatabase):
        self.db = db

    async def open(self) -> None:
        await self.db.migrate("journal", MIGRATIONS)

    async def close(self) -> None:
        """The database is closed by its owner."""

    async def add(self, user_id: str, conversation: str, injection: Injection) -> None:
        try:
            async with self.db.connection() as conn:
                await conn.execute(_UPSERT, user_id, conversation, injection.ordinal,
                                   injection.fingerprint, injection.block,
                                   json.dumps(injection.ids), json.dumps(injection.scores),
                                   injection.trace_id, injection.created)
        except Exception as exc:   # the journal never fails a call
            log.warning("injection journal write failed user_id=%s error=%s", user_id,
                        type(exc).__name__)

    async def load(self, user_id: str, conversation: str) -> list[Injection]:
        try:
            return [i for _, i in await self._select(
                "user_id = $1 AND conversation = $2", user_id, conversation)]
        except Exception as exc:
            log.warning("injection journal read failed user_id=%s error=%s", user_id,
                        type(exc).__name__)
            return []

    async def find(self, user_id: str, *, conversation: str | None = None,
                   trace_id: str | None = None) -> list[tuple[str, Injection]]:
        where, params = ["user_id = $1"], [user_id]
        for column, value in (("conversation", conversation), ("trace_id", trace_id)):
            if value is not None:
                params.append(value)
                where.append(f"{column} = ${len(params)}")
        return await self._select(" AND ".join(where), *params)

    async def _select(self, where: str, *params) -> list[tuple[str, Injection]]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(f"SELECT {COLUMNS} FROM memory_injections WHERE {where}"
                                    " ORDER BY created, ordinal", *params)
        return [_injection(r) for r in rows]

    async def forget(self, user_id: str | None, memory_id: str | None) -> None:
        async with self.db.connection() as conn:
            if memory_id is None:
                await conn.execute("DELETE FROM memory_injections WHERE user_id = $1", user_id)
            elif user_id is None:      # a personal memory: every user's turns that showed it
                await conn.execute("DELETE FROM memory_injections WHERE ids ? $1", memory_id)
            else:
                await conn.execute("DELETE FROM memory_injections WHERE user_id = $1 AND"
                                   " ids ? $2", user_id, memory_id)

    async def expire(self, before: float) -> int:
        async with self.db.connection() as conn:
            done = await conn.execute(
                "DELETE FROM memory_injections WHERE (user_id, conversation) IN (SELECT"
                " user_id, conversation FROM memory_injections GROUP BY 1, 2"
                " HAVING max(created) < $1)", before)
        return int(done.split()[-1])
