#!/usr/bin/env python3
"""LoCoMo retrieval benchmark: recall@5, recall@10 and search latency.

    python scripts/bench_recall.py ../shared/bench/locomo-dev --url http://127.0.0.1:8764 --key K
    python scripts/bench_recall.py ../shared/bench/locomo-dev --direct   # SqliteStore in-process
    python scripts/bench_recall.py ../shared/bench/locomo-dev --direct --backend postgres [--dsn D]
    python scripts/bench_recall.py ../shared/bench/locomo-dev --direct --embedder wordllama \
        [--vector-weight 0.4]     # vectors from a local model (``pip install wordllama``)
    python scripts/bench_recall.py ../shared/bench/locomo-dev --direct --embedder minilm \
        --model-dir DIR           # all-MiniLM-L6-v2 from its files (``bench_embedders.py``)

Each conversation file becomes one user id (``locomo-<n>-<random>``); every turn becomes one
memory ``"<speaker>: <text>"`` (plus `` [image: <caption>]`` where the turn shared one) with
metadata ``{dia_id, session, date}``, added one ``add_many`` per session in session order.
Every question with evidence (category 5, adversarial, skipped) is searched with the question
as the query; it is a hit at k when any evidence turn is in the top k.

``--dated`` stores each turn with its session's time as ``created_at`` (when it was said, as
``memproxyctl memory import-history`` keeps a transcript's times), so questions that name a day
("on 3 June, 2023", "in May 2023") are ranked by it (``memory/when.py``); without it every
memory is dated the time of the run.

``--distractors N`` first fills each user's memory with N other memories (turns of the *other*
conversations, varied: speakers swapped, words dropped), as a store that has been in use for
a while: recall at a realistic size, where bounded work (the postings budget) matters.
"""
from __future__ import annotations

import argparse
import asyncio
import calendar
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_data import load_conversation, vary  # noqa: E402
from bench_embedders import minilm_embedder, wordllama_embedder  # noqa: E402

TOP_K = 10


class DirectClient:
    """A store in-process: SqliteStore on a temporary file, or PostgresStore on ``dsn`` (a
    throwaway local server when none is given, see ``tests/pgcluster.py``)."""

    def __init__(self, backend: str = "sqlite", dsn: str | None = None, embedder=None,
                 vector_weight: float | None = None):
        self.backend = backend
        self.dsn = dsn
        self.embedder = embedder
        self.vector_weight = vector_weight

    async def __aenter__(self):
        from memproxyd.memory.base import NewMemory
        from stores import open_store
        self._new = NewMemory
        self._tmp = tempfile.TemporaryDirectory()
        self.store, self._close = await open_store(self.backend, Path(self._tmp.name),
                                                   self.dsn, self.embedder)
        if self.vector_weight is not None:
            self.store.vector_weight = self.vector_weight
        return self

    async def __aexit__(self, *exc):
        await self._close()
        self._tmp.cleanup()

    async def add(self, user_id, memories):
        await self.store.add_many(user_id, [self._new(m["content"], m["metadata"],
                                                      created_at=m.get("created_at"))
                                            for m in memories])

    async def search(self, user_id, query, limit):
        return [m.to_json(with_score=True) for m in await self.store.search(user_id, query, limit)]

    async def forget(self, user_id):
        await self.store.forget_all(user_id)


class HttpClient:
    """The daemon's memory HTTP API (aiohttp)."""

    def __init__(self, url: str, key: str | None):
        self.url = url.rstrip("/")
        self.headers = {"authorization": f"Bearer {key}"} if key else {}

    async def __aenter__(self):
        import aiohttp
        self.http = aiohttp.ClientSession(headers=self.headers)
        return self

    async def __aexit__(self, *exc):
        await self.http.close()

    async def add(self, user_id, memories):
        for i in range(0, len(memories), 100):
            body = {"user_id": user_id, "memories": [
                {**m, "created_at": iso(m["created_at"])} if "created_at" in m else m
                for m in memories[i:i + 100]]}
            async with self.http.post(f"{self.url}/v1/memories", json=body) as resp:
                if resp.status != 201:
                    raise SystemExit(f"add failed: {resp.status} {await resp.text()}")

    async def search(self, user_id, query, limit):
        body = {"user_id": user_id, "query": query, "limit": limit}
        async with self.http.post(f"{self.url}/v1/memories/search", json=body) as resp:
            if resp.status != 200:
                raise SystemExit(f"search failed: {resp.status} {await resp.text()}")
            return (await resp.json())["results"]

    async def forget(self, user_id):
        params = {"user_id": user_id, "all": "true"}
        async with self.http.delete(f"{self.url}/v1/memories", params=params) as resp:
            resp.raise_for_status()


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def session_time(date: str) -> float | None:
    """A LoCoMo session's "1:56 pm on 8 May, 2023" as unix seconds (taken as UTC)."""
    try:
        return calendar.timegm(time.strptime(date, "%I:%M %p on %d %B, %Y"))
    except ValueError:
        return None


def dated(sessions: list[list[dict]]) -> list[list[dict]]:
    """Each turn with its session's time as ``created_at``: when it happened, as an import
    of the conversation keeps it (``memproxyctl memory import-history``)."""
    out = []
    for batch in sessions:
        when = session_time(batch[0]["metadata"]["date"]) if batch else None
        out.append([{**m, "created_at": when} if when is not None else m for m in batch])
    return out


def distractors(folder: Path, path: Path, n: int) -> list[list[dict]]:
    """``n`` varied turns of the conversations other than ``path``, in batches of 100."""
    turns = [m["content"] for other in sorted(folder.glob("*.json")) if other != path
             for batch in load_conversation(other)[0] for m in batch]
    rng = random.Random(path.stem)
    made = [{"content": vary(rng.choice(turns), rng), "metadata": {"distractor": True}}
            for _ in range(n)]
    return [made[i:i + 100] for i in range(0, n, 100)]


async def run(folder: Path, client, verbose: bool, n_distractors: int = 0,
              with_dates: bool = False) -> dict:
    hits5 = hits10 = total = 0
    latencies = []
    for path in sorted(folder.glob("*.json")):
        sessions, questions = load_conversation(path)
        if with_dates:
            sessions = dated(sessions)
        user_id = f"locomo-{path.stem}-{secrets.token_hex(4)}"
        for batch in distractors(folder, path, n_distractors) + sessions:
            await client.add(user_id, batch)
        try:
            for q in questions:
                started = time.perf_counter()
                results = await client.search(user_id, q["question"], TOP_K)
                latencies.append((time.perf_counter() - started) * 1000)
                ranked = [r["metadata"].get("dia_id") for r in results]
                evidence = set(q["evidence"])
                hit5 = bool(evidence & set(ranked[:5]))
                hit10 = bool(evidence & set(ranked[:10]))
                hits5 += hit5
                hits10 += hit10
                total += 1
                if verbose and not hit10:
                    print(f"MISS {path.stem} c{q['category']} {q['question']!r} "
                          f"evidence={q['evidence']} got={ranked[:5]}")
        finally:
            await client.forget(user_id)
    latencies.sort()
    return {"recall@5": hits5 / total, "recall@10": hits10 / total, "questions": total,
            "p50_ms": statistics.median(latencies),
            "p95_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="folder of LoCoMo conversation JSON files")
    parser.add_argument("--url", default="http://127.0.0.1:8764", help="daemon base URL")
    parser.add_argument("--key", help="bearer key for the daemon")
    parser.add_argument("--direct", action="store_true",
                        help="use a store in-process instead of the daemon")
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"),
                        help="the in-process store of --direct")
    parser.add_argument("--dsn", help="postgres database for --direct --backend postgres "
                        "(default: a throwaway local server)")
    parser.add_argument("--distractors", type=int, default=0,
                        help="other memories stored first in each user's memory")
    parser.add_argument("--embedder", choices=("wordllama", "minilm"),
                        help="--direct with vectors from a local model (bench_embedders.py)")
    parser.add_argument("--model-dir", type=Path,
                        help="--embedder minilm: the model's files (config.json, "
                        "tokenizer.json, model.safetensors)")
    parser.add_argument("--vector-weight", type=float,
                        help="the vectors' share of a fused score (default: the store's)")
    parser.add_argument("--dated", action="store_true",
                        help="store each turn with its session's time as created_at (as an "
                        "import keeps it), not the time of the run")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every miss at 10")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    embedder = (wordllama_embedder() if args.embedder == "wordllama"
                else minilm_embedder(args.model_dir) if args.embedder == "minilm" else None)
    client = (DirectClient(args.backend, args.dsn, embedder, args.vector_weight) if args.direct
              else HttpClient(args.url, args.key))

    async def go():
        async with client:
            return await run(args.path, client, args.verbose, args.distractors, args.dated)

    result = asyncio.run(go())
    print(f"recall@5  {result['recall@5']:.3f}")
    print(f"recall@10 {result['recall@10']:.3f}")
    print(f"questions {result['questions']}")
    print(f"search latency p50 {result['p50_ms']:.2f} ms, p95 {result['p95_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
