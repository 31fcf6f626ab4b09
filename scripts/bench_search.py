#!/usr/bin/env python3
"""Search latency of SqliteStore with a large store for one user.

    python scripts/bench_search.py ../shared/bench/locomo-dev [--memories 100000] [--queries 300]
                                   [--others 100000]

Fills one user's store (a temp file, in-process) with synthetic but realistic memories --
LoCoMo turns re-sampled with their speakers swapped, words dropped and numbers changed, added
in batches of 100 as a conversation import would -- then times ``search`` for the benchmark's
questions (and variants) and prints p50/p95 in ms. With ``--others N`` it then stores N
memories for another user in the same file and times the first user's searches again: recall
latency should not depend on what other users have stored.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_load import corpus, vary  # noqa: E402
from memproxyd.memory.base import NewMemory  # noqa: E402
from memproxyd.memory.sqlite_store import SqliteStore  # noqa: E402


async def fill(store: SqliteStore, user_id: str, turns: list[str], n: int, seed: int) -> float:
    rng = random.Random(seed)
    started = time.perf_counter()
    for start in range(0, n, 100):
        batch = [NewMemory(vary(rng.choice(turns), rng), {"i": start + j})
                 for j in range(min(100, n - start))]
        await store.add_many(user_id, batch)
    return time.perf_counter() - started


async def timed(store: SqliteStore, asked: list[str]) -> list[float]:
    for q in asked[:20]:                      # warm the page cache (and build the index)
        await store.search("bench-user", q, 10)
    latencies = []
    for q in asked:
        started = time.perf_counter()
        await store.search("bench-user", q, 10)
        latencies.append((time.perf_counter() - started) * 1000)
    return sorted(latencies)


def report(label: str, runs: list[list[float]]) -> None:
    p50 = statistics.median(statistics.median(r) for r in runs)
    p95 = statistics.median(r[min(len(r) - 1, int(len(r) * 0.95))] for r in runs)
    print(f"{label}: p50 {p50:.2f} ms, p95 {p95:.2f} ms (medians of {len(runs)} runs)")


async def measure(folder: Path, n: int, queries: int, seed: int, others: int) -> None:
    turns, questions = corpus(folder)
    rng = random.Random(seed)
    asked = [rng.choice(questions) for _ in range(queries)]
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "memory.db")
        await store.open()
        try:
            took = await fill(store, "bench-user", turns, n, seed)
            print(f"filled {n} memories in {took:.1f} s ({n / took:.0f}/s)")
            report(f"search over {n} memories, {queries} queries, top 10",
                   [await timed(store, asked) for _ in range(3)])
            if others:
                await fill(store, "other-user", turns, others, seed + 1)
                await store.search("other-user", asked[0], 10)
                report(f"the same with {others} memories of another user in the file",
                       [await timed(store, asked) for _ in range(3)])
        finally:
            await store.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="folder of LoCoMo conversation JSON files")
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--others", type=int, default=0,
                        help="then add this many memories for another user and measure again")
    args = parser.parse_args(argv)
    asyncio.run(measure(args.path, args.memories, args.queries, args.seed, args.others))
    return 0


if __name__ == "__main__":
    sys.exit(main())
