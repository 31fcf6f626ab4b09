"""The SQLite store's writes: functions of a connection, run in the caller's transaction or
their own, on the writer thread or (``add_parts_now``) on the event loop.

    added = add_parts(conn, [("alice", [[item]]), ("bob", [[other]])])   # one transaction

Each new row comes back as (seq, index stems, stored fields, packed vector or None) for the
user's in-memory index
(``lexical.UserIndex.add_stemmed``); the stems are made here on the thread; on the loop
(None) by the index, only for a text it does not have yet.
Every statement goes through ``UserScope`` (``:user_id`` always bound).
"""
from __future__ import annotations

import json
import secrets
import time

from memproxyd.memory import vectors
from memproxyd.memory.base import Memory, NewMemory
from memproxyd.memory.sqlite import lexical
from memproxyd.memory.sqlite.db import BUSY_TIMEOUT_MS, transaction
from memproxyd.memory.sqlite.rows import COLUMNS, UserScope, memory as as_memory


def add_parts_now(conn, parts: list[tuple[str, list[list[NewMemory]]]]) -> list:
    """``add_parts`` on the event loop: never waiting for another connection's write
    lock there (busy: the caller goes to the thread instead)."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        return add_parts(conn, parts, stem=False)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def add_parts(conn, parts: list[tuple[str, list[list[NewMemory]]]], stem: bool = True) -> list:
    """Several users' batches in one transaction; each user's new rows."""
    with transaction(conn):
        return [write(conn, user_id, batches, None, stem)[1] for user_id, batches in parts]


def add_batches(conn, user_id: str, batches: list[list[NewMemory]],
                embedded, stem: bool = True) -> tuple[list[Memory], list[list[tuple]]]:
    with transaction(conn):
        return write(conn, user_id, batches, embedded, stem)


def write(conn, user_id: str, batches: list[list[NewMemory]],
          embedded, stem: bool = True) -> tuple[list[Memory], list[list[tuple]]]:
    """(the memories, the new rows of each batch as (seq, index stems, stored fields)):
    the stems are made here, on the writer thread, so the index update on the loop stays
    short. Inside the caller's transaction."""
    scope = UserScope(conn, user_id)
    out: list[Memory] = []
    added: list[list[tuple]] = []
    embedded = iter(embedded) if embedded is not None else None
    # The next row number, assigned explicitly so a batch's rows can carry their group
    # (the batch's first row). Statistics only: no memory is read.
    seq = conn.execute("SELECT coalesce(max(seq), 0) FROM memories").fetchone()[0]
    for batch in batches:
        added.append([])
        # each vector with its batch neighbours' (the batch is the memory's context)
        smoothed = (vectors.smooth([next(embedded) for _ in batch]) if embedded is not None
                    else [None] * len(batch))
        for item, vector in zip(batch, smoothed):
            packed = vectors.pack(vector) if vector is not None else None
            metadata = json.dumps(item.metadata)
            memory, new = insert(scope, item, seq + 1, seq + 1 - len(added[-1]),
                                       packed, metadata)
            out.append(memory)
            if new:
                seq += 1
                added[-1].append((seq, lexical.index_stems(item.content) if stem else None,
                                  (memory.id, memory.content, metadata,
                                   memory.created_at), packed))
    return out, added


def insert(scope: UserScope, item: NewMemory, seq: int, group: int,
            vector: bytes | None, metadata: str) -> tuple[Memory, bool]:
    """(the memory, whether it is new): an item whose key is stored is not stored twice
    (the insert yields to the user's unique key; only then is the stored one read)."""
    memory = Memory(secrets.token_hex(8), scope.user_id, item.content, dict(item.metadata),
                    time.time() if item.created_at is None else item.created_at,
                    pinned=item.pinned)
    inserted = scope.execute(
        "INSERT INTO memories(seq, id, user_id, key, content, metadata, created_at, grp,"
        " pinned) VALUES (:seq, :id, :user_id, :key, :content, :metadata, :created_at, :grp,"
        " :pinned) ON CONFLICT DO NOTHING",
        seq=seq, id=memory.id, key=item.key, content=memory.content,
        metadata=metadata, created_at=memory.created_at,
        grp=group, pinned=int(item.pinned)).rowcount
    if not inserted:
        existing = scope.rows(f"SELECT {COLUMNS} FROM memories m WHERE m.user_id ="
                              " :user_id AND m.key = :key", key=item.key)
        return as_memory(existing[0]), False
    if vector is not None:
        scope.execute("INSERT INTO memory_vectors(seq, user_id, vector)"
                      " VALUES (:seq, :user_id, :vector)", seq=seq, vector=vector)
    return memory, True


def delete(conn, user_id: str, where: str, params: dict) -> list[int]:
    scope = UserScope(conn, user_id)
    with transaction(conn):
        seqs = [r[0] for r in scope.rows(
            f"SELECT seq FROM memories WHERE user_id = :user_id {where}", **params)]
        scope.execute(f"DELETE FROM memory_vectors WHERE user_id = :user_id AND seq IN"
                      f" (SELECT seq FROM memories WHERE user_id = :user_id {where})",
                      **params)
        scope.execute(f"DELETE FROM memories WHERE user_id = :user_id {where}", **params)
    return seqs


def _seq_of(scope: UserScope, memory_id: str) -> int | None:
    found = scope.rows("SELECT seq FROM memories WHERE user_id = :user_id AND id = :id",
                       id=memory_id)
    return found[0][0] if found else None


def _stored(scope: UserScope, seq: int) -> tuple[Memory, int, bytes | None]:
    """(the memory, its seq, its packed vector or None), as the index takes it back."""
    row = scope.rows(f"SELECT {COLUMNS} FROM memories m WHERE m.user_id = :user_id"
                     " AND m.seq = :seq", seq=seq)[0]
    vector = scope.rows("SELECT vector FROM memory_vectors WHERE user_id = :user_id"
                        " AND seq = :seq", seq=seq)
    return as_memory(row), seq, vector[0][0] if vector else None


def update(conn, user_id: str, memory_id: str, changes: dict,
           vector) -> tuple[Memory, int, bytes | None] | None:
    """Change one memory's ``content``, ``metadata`` (JSON) and/or ``pinned`` in place, and
    its vector when given; (the memory, its seq, its packed vector for the index), or None
    when the user has no such memory."""
    scope = UserScope(conn, user_id)
    sets = ", ".join(f"{column} = :{column}" for column in changes)
    with transaction(conn):
        seq = _seq_of(scope, memory_id)
        if seq is None:
            return None
        scope.execute(f"UPDATE memories SET {sets} WHERE user_id = :user_id AND seq = :seq",
                      seq=seq, **changes)
        if vector is not None:
            scope.execute("INSERT OR REPLACE INTO memory_vectors(seq, user_id, vector)"
                          " VALUES (:seq, :user_id, :vector)", seq=seq,
                          vector=vectors.pack(vector))
        return _stored(scope, seq)


def move(conn, user_id: str, memory_id: str,
         to_user: str) -> tuple[Memory, int, bytes | None] | None:
    """Give one memory of ``user_id`` to ``to_user``, same row (id, time, vector); its
    idempotency key is dropped (it named a delivery to the old owner). (the memory, its
    seq, its packed vector), or None when ``user_id`` has no such memory."""
    scope = UserScope(conn, user_id)
    with transaction(conn):
        seq = _seq_of(scope, memory_id)
        if seq is None:
            return None
        scope.execute("UPDATE memories SET user_id = :to_user, key = NULL"
                      " WHERE user_id = :user_id AND seq = :seq", seq=seq, to_user=to_user)
        scope.execute("UPDATE memory_vectors SET user_id = :to_user"
                      " WHERE user_id = :user_id AND seq = :seq", seq=seq, to_user=to_user)
        return _stored(UserScope(conn, to_user), seq)
