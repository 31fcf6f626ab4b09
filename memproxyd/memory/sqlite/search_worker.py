"""The search process of the sqlite store: every user's BM25 index (``lexical.UserIndex``) in
a process of its own, so searches run beside the daemon's event loop instead of on it (on two
cores, a search took a fifth of the loop's time with memory on; ``search_process.py`` is the
daemon's side).

    python -m memproxyd.memory.sqlite.search_worker /path/to/memory.db

Reads frames from stdin, answers on stdout. A frame is a 4-byte big-endian length and a
pickled list of messages, handled in order:

* ``("add", user_id, batches)``: committed rows as the store's writes return them, each
  batch ``[(seq, stems or None, stored, vector), ...]`` with ``stored`` = (id, content,
  metadata JSON, created_at) and ``vector`` the packed (smoothed) vector or None; its own
  context, as in the store (``UserIndex.add_stemmed``).
* ``("remove", user_id, seqs)``, ``("reset", user_id)`` (every memory of the user forgotten),
  ``("build", user_id)`` (index the user now: the store's warm-up).
* ``("search", request, user_id, query, limit, distinct[, qvec, weight])``: answered with
  ``(request, [(seq, score, stored), ...])`` or ``(request, "error text")``; with the
  query's vector (a list of floats) fused with the user's vectors at ``weight``.

Why the indexes stay exact: the daemon sends a write's rows after its commit, and every
message down one pipe, in order. A user is indexed from the file (a read-only connection) the
first time a search or build names them; rows committed before that read are in it, and
their messages, if they come after, are skipped (``add_stemmed`` skips a seq it has); rows
committed after it come as messages after it. Messages for a user not indexed and not being
indexed are dropped: their rows are in the file a later read sees. A stopped process loses
nothing: the next one reads the file again.

Indexing a user takes a while (~3 s for 100,000 memories), so it runs on a thread of its own
while the other users' searches go on; the user's messages wait for it, in order, and are
handled as soon as the index is in place.
"""
from __future__ import annotations

import pickle
import sqlite3
import sys
import threading

from memproxyd.memory import terms, when
from memproxyd.memory.sqlite import lexical
from memproxyd.memory.sqlite.db import read_only
from memproxyd.memory.sqlite.rows import UserScope


def load(conn: sqlite3.Connection, user_id: str) -> lexical.UserIndex:
    """The user's index from their rows, oldest first, batches by group."""
    return lexical.build([(seq, grp, content, (mid, content, metadata, created_at), vector)
                          for seq, grp, mid, content, metadata, created_at, vector
                          in UserScope(conn, user_id).rows(
        "SELECT m.seq, m.grp, m.id, m.content, m.metadata, m.created_at, v.vector"
        " FROM memories m LEFT JOIN memory_vectors v ON v.seq = m.seq"
        " WHERE m.user_id = :user_id ORDER BY m.seq")])


class Worker:
    def __init__(self, db_path: str, out):
        self.db_path = db_path
        self.out = out                       # replies: frames written under ``lock``
        self.lock = threading.Lock()         # one message at a time, from either thread
        self.indexes: dict[str, lexical.UserIndex] = {}
        self.building: dict[str, list[tuple]] = {}   # user → their messages meanwhile

    def handle(self, messages: list[tuple]) -> None:
        with self.lock:
            self.reply([reply for message in messages
                        if (reply := self._handle(message)) is not None])

    def _handle(self, message: tuple) -> tuple | None:
        kind, *args = message
        user_id = args[1] if kind == "search" else args[0]
        index = self.indexes.get(user_id)
        if index is not None and index.stale:     # mostly deleted: read it anew
            del self.indexes[user_id]
            index = None
        if index is None:
            if user_id in self.building:
                self.building[user_id].append(message)
            elif kind in ("search", "build"):
                self.building[user_id] = [message]
                threading.Thread(target=self._build, args=(user_id,), daemon=True).start()
            return None
        if kind == "search":
            request, _, query, limit, distinct, *fused = args
            try:
                stems = terms.stems(terms.query_terms(query))
                qvec, weight = fused if fused else (None, 0.0)
                return (request, index.hits(stems, limit, distinct, when.Question.of(query),
                                            qvec, weight))
            except Exception as exc:            # told to the caller; the worker goes on
                return (request, f"{type(exc).__name__}: {exc}")
        if kind == "add":
            for batch in args[1]:
                index.add_stemmed(batch)
        elif kind == "remove":
            index.remove(args[1])
        elif kind == "reset":
            self.indexes[user_id] = lexical.UserIndex()
        return None

    def _build(self, user_id: str) -> None:
        try:
            conn = read_only(self.db_path)
            try:
                index = load(conn, user_id)
            finally:
                conn.close()
        except Exception as exc:                  # its searches are told; the next one retries
            index, failed = None, f"{type(exc).__name__}: {exc}"
        with self.lock:
            waiting = self.building.pop(user_id)
            if index is None:
                self.reply([(m[1], failed) for m in waiting if m[0] == "search"])
                return
            self.indexes[user_id] = index
            self.reply([reply for message in waiting
                        if (reply := self._handle(message)) is not None])

    def reply(self, replies: list[tuple]) -> None:
        if replies:
            self.out.write(frame(replies))
            self.out.flush()


def read_frame(stream) -> list | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    return pickle.loads(stream.read(int.from_bytes(head, "big")))


def frame(payload) -> bytes:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(4, "big") + data


def main(argv: list[str]) -> int:
    worker = Worker(argv[1], sys.stdout.buffer)
    sys.stdout = sys.stderr          # a stray print must not land among the frames
    while (messages := read_frame(sys.stdin.buffer)) is not None:   # EOF: the daemon is gone
        worker.handle(messages)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
