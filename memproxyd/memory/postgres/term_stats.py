"""Term statistics for the PostgreSQL store: which query terms to score, and how much each counts.

``ts_rank`` scores a row by where and how often the query's words occur in it, but not by how
rare they are, and a search's cost grows with the rows its words match. ``TermStats`` keeps,
per process, a capped count of the rows holding each term (one GIN lookup per new term,
cached) and the number of memories, and turns them into

* the BM25 inverse document frequency of each term (``idf``), the weight of its ``ts_rank``;
* the rarest terms whose rows together stay within ``POSTINGS_BUDGET``, and the share of
  those rows a search may score (below 1 when even the rarest term alone is that common; the
  store then scores the newest rows only), as ``sqlite_store`` does.

Counting a common word's rows is what costs (a heap visit per row), so a word that
PostgreSQL's own statistics list among the table's most common elements (``pg_stats``, kept
by autovacuum's ANALYZE) takes its frequency from there; only the others are counted.

The counts span all users, like FTS5's own statistics in the SQLite store: they read no
memory, only how many rows match a word. Counts are refreshed after ``POSTINGS_BUDGET``
writes by this process or ``MAX_AGE`` seconds (other daemons write too).
"""
from __future__ import annotations

import math
import re
import time

import asyncpg

POSTINGS_BUDGET = 2500    # index rows one search may score
COUNT_CAP = 4 * POSTINGS_BUDGET
MAX_AGE = 60.0            # seconds a count is trusted
_PLAIN = re.compile(r"[^\W_]+")    # what ``text.words`` yields; never a tsquery operator
_LEXEME = re.compile(r"'((?:[^']|'')*)'")


def idf(df: int, n: int) -> float:
    """BM25's inverse document frequency; positive even when ``n`` is a stale count."""
    n = max(n, df)
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


class TermStats:
    def __init__(self):
        self._postings: dict[str, int] = {}
        self._queries: dict[str, str] = {}      # term → its tsquery (text), '' = no lexeme
        self._total = 0
        self._writes = 0
        self._counted_at = 0.0
        self._common: dict[str, float] = {}     # lexeme → share of rows (pg_stats)

    def wrote(self, n: int) -> None:
        self._writes += n
        self._total += n

    async def choose_terms(self, conn: asyncpg.Connection,
                           terms: list[str]) -> tuple[list[tuple[str, float]], float]:
        """[(tsquery text, idf)] rarest first within the budget, and the share of rows to
        score. A term the ``english`` configuration drops (a stop word there) is left out."""
        terms = [t for t in terms if _PLAIN.fullmatch(t)]
        await self._refresh(conn, terms)
        terms = [t for t in dict.fromkeys(terms) if self._queries[t]]
        # A count of 0 may be stale (counted before another call stored the word): such a
        # term costs nothing to search, so it is kept, with the highest weight.
        keep, total = [], 0
        for term in sorted(terms, key=self._postings.__getitem__):
            if keep and total + self._postings[term] > POSTINGS_BUDGET:
                break
            keep.append((self._queries[term], idf(self._postings[term], self._total)))
            total += self._postings[term]
        return keep, min(1.0, POSTINGS_BUDGET / max(total, 1))

    async def _refresh(self, conn: asyncpg.Connection, terms: list[str]) -> None:
        stale = (self._writes > POSTINGS_BUDGET or len(self._postings) > 50_000
                 or time.monotonic() - self._counted_at > MAX_AGE)
        if stale:
            await self._restart(conn)
        missing = [t for t in dict.fromkeys(terms) if t not in self._postings]
        if not missing:
            return
        rows = await conn.fetch("SELECT t, to_tsquery('english', t)::text AS q"
                                " FROM unnest($1::text[]) AS t", missing)
        self._queries.update((r["t"], r["q"]) for r in rows)
        to_count = []
        for term in missing:
            lexemes = _LEXEME.findall(self._queries[term])
            if lexemes and all(lx in self._common for lx in lexemes):
                freq = min(self._common[lx] for lx in lexemes)
                self._postings[term] = int(freq * self._total)
            else:
                to_count.append(self._queries[term] or "''")
        if to_count:
            # Statistics only (how many rows of any user hold the word, capped): no memory is
            # read, so this is the one statement outside the store's ``_UserScope``.
            counts = await conn.fetch(
                "SELECT q, (SELECT count(*) FROM (SELECT 1 FROM memories WHERE tsv @@ q::tsquery"
                " LIMIT $2) s) AS n FROM unnest($1::text[]) AS q", to_count, COUNT_CAP)
            by_query = {r["q"]: r["n"] for r in counts}
            for term in missing:
                if term not in self._postings:
                    self._postings[term] = by_query.get(self._queries[term] or "''", 0)

    async def _restart(self, conn: asyncpg.Connection) -> None:
        """Forget every count; read the table size and its common words from ``pg_stats``
        (kept by autovacuum's ANALYZE: frequent words need no counting at all)."""
        self._postings.clear()
        self._queries.clear()
        self._writes = 0
        self._counted_at = time.monotonic()
        row = await conn.fetchrow(
            "SELECT s.most_common_elems::text::text[] AS words, s.most_common_elem_freqs AS"
            " freqs, c.reltuples::bigint AS n FROM pg_class c LEFT JOIN pg_stats s ON"
            " s.tablename = 'memories' AND s.attname = 'tsv' AND s.schemaname = ANY"
            " (current_schemas(false)) WHERE c.oid = 'memories'::regclass")
        self._common = dict(zip(row["words"] or (), row["freqs"] or ()))
        self._total = row["n"] if row["n"] > 0 and self._common else await conn.fetchval(
            "SELECT count(*) FROM memories")
