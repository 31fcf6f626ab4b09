"""The search process of the sqlite store: every user's BM25 index (``lexical.UserIndex``) in
a process of its own, so searches run beside the daemon's event loop instead of on it (on two
cores, a search took a fifth of the loop's time with memory on; ``search_process.py`` is the
daemon's side).

    python -m memproxyd.memory.search_worker /path/to/memory.db

Reads frames from stdin, answers on stdout. A frame is a 4-byte big-endian length and a
pickled list of messages, handled in order:

* ``("add", user_id, batches)``: committed rows, each batch ``[(seq, stored), ...]`` with
  ``stored`` = (id, content, metadata JSON, created_at); its own context, as in the store.
* ``("remove", user_id, seqs)``, ``("reset", user_id)`` (every memory of the user forgotten),
  ``("build", user_id)`` (index the user now: the store's warm-up).
* ``("search", request, user_id, terms, limit, distinct)``: answered with
  ``(request, [(seq, score, stored), ...])`` or ``(request, "error text")``.

Why the indexes stay exact: the daemon sends a write's rows after its commit, and every
message down one pipe, in order. A user is indexed from the file (a read-only connection) the
first time a message names them in a search or build; rows committed before that read are in
it, and their messages, if they come after, are skipped (``add_stemmed`` skips a seq it has);
rows committed after it come as messages after it. Messages for a user not indexed yet are
dropped: their rows are in the file the later read sees. A stopped process loses nothing:
the next one reads the file again.
"""
from __future__ import annotations

import pickle
import sqlite3
import sys

from . import lexical
from .sqlite_rows import UserScope


def load(conn: sqlite3.Connection, user_id: str) -> lexical.UserIndex:
    """The user's index from their rows, oldest first, batches by group."""
    return lexical.build([(seq, grp, content, (mid, content, metadata, created_at))
                          for seq, grp, mid, content, metadata, created_at
                          in UserScope(conn, user_id).rows(
        "SELECT seq, grp, id, content, metadata, created_at FROM memories"
        " WHERE user_id = :user_id ORDER BY seq")])


class Worker:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.indexes: dict[str, lexical.UserIndex] = {}

    def index(self, user_id: str) -> lexical.UserIndex:
        index = self.indexes.get(user_id)
        if index is None or index.stale:
            index = self.indexes[user_id] = load(self.conn, user_id)
        return index

    def handle(self, messages: list[tuple]) -> list[tuple]:
        """The replies to the messages' searches."""
        replies = []
        for kind, *args in messages:
            if kind == "search":
                request, user_id, terms, limit, distinct = args
                try:
                    index = self.index(user_id)
                    replies.append((request, [(seq, score, index.stored_of(seq)) for seq, score
                                              in index.search(terms, limit, distinct)]))
                except Exception as exc:       # told to the caller; the worker goes on
                    replies.append((request, f"{type(exc).__name__}: {exc}"))
            elif kind == "build":
                self.index(args[0])
            elif (index := self.indexes.get(args[0])) is not None:
                if kind == "add":
                    for batch in args[1]:
                        index.add_batch([(seq, stored[1], stored) for seq, stored in batch])
                elif kind == "remove":
                    index.remove(args[1])
                elif kind == "reset":
                    self.indexes[args[0]] = lexical.UserIndex()
        return replies


def read_frame(stream) -> list | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    return pickle.loads(stream.read(int.from_bytes(head, "big")))


def frame(payload) -> bytes:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(4, "big") + data


def main(argv: list[str]) -> int:
    conn = sqlite3.connect(f"file:{argv[1]}?mode=ro", uri=True)
    worker = Worker(conn)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (messages := read_frame(stdin)) is not None:     # EOF: the daemon is gone
        replies = worker.handle(messages)
        if replies:
            stdout.write(frame(replies))
            stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
