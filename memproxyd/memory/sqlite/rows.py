"""Memory rows of the sqlite store: the user scope every statement goes through, rows as
``Memory``.

Isolation: ``UserScope`` refuses SQL that does not bind ``:user_id`` and always binds it to
the scope's user.
"""
from __future__ import annotations

import json
import sqlite3

from memproxyd.memory.base import Memory

COLUMNS = "m.seq, m.id, m.user_id, m.content, m.metadata, m.created_at, m.pinned"


class UserScope:
    """The only way to run SQL on memory tables: ``:user_id`` is always bound to one user."""

    def __init__(self, conn: sqlite3.Connection, user_id: str):
        self.conn = conn
        self.user_id = user_id

    def execute(self, sql: str, **params) -> sqlite3.Cursor:
        if ":user_id" not in sql:
            raise AssertionError(f"memory SQL without :user_id: {sql}")
        return self.conn.execute(sql, {**params, "user_id": self.user_id})

    def rows(self, sql: str, **params) -> list[tuple]:
        return self.execute(sql, **params).fetchall()


def memory(row: tuple, score: float = 0.0) -> Memory:
    _, mid, user_id, content, metadata, created_at, pinned = row[:7]
    return Memory(mid, user_id, content, json.loads(metadata), created_at, score, bool(pinned))


def rows(conn, user_id: str, sql: str, params: dict) -> list[tuple]:
    return UserScope(conn, user_id).rows(sql, **params)


def pinned(conn, user_id: str) -> list[Memory]:
    """The user's pinned memories, newest first."""
    return [memory(r) for r in UserScope(conn, user_id).rows(
        f"SELECT {COLUMNS} FROM memories m WHERE m.user_id = :user_id AND m.pinned"
        " ORDER BY m.seq DESC")]


def every_pin(conn) -> dict[str, list[Memory]]:
    """Every user's pinned memories (the users found first: statistics, no memory read)."""
    users = [r[0] for r in conn.execute("SELECT DISTINCT user_id FROM memories WHERE pinned")]
    return {user_id: pinned(conn, user_id) for user_id in users}
