#!/usr/bin/env python3
"""Search latency of SqliteStore with a large store for one user.

    python scripts/bench_search.py ../shared/bench/locomo-dev [--memories 100000] [--queries 300]

Fills one user's store (a temp file, in-process) with synthetic but realistic memories --
LoCoMo turns re-sampled with their speakers swapped, words dropped and numbers changed, added
in batches of 100 as a conversation import would -- then times ``search`` for the benchmark's
questions (and variants) and prints p50/p95 in ms.
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

from bench_recall import load_conversation  # noqa: E402
from memproxyd.memory.base import NewMemory  # noqa: E402
from memproxyd.memory.sqlite_store import SqliteStore  # noqa: E402

NAMES = ["Alex", "Sam", "Jordan", "Priya", "Chen", "Maria", "Tom", "Aisha", "Lena", "Omar"]


def corpus(folder: Path) -> tuple[list[str], list[str]]:
    turns, questions = [], []
    for path in sorted(folder.glob("*.json")):
        sessions, qa = load_conversation(path)
        turns += [m["content"] for batch in sessions for m in batch]
        questions += [q["question"] for q in qa]
    return turns, questions


def vary(turn: str, rng: random.Random) -> str:
    """A plausible new memory: another speaker, a few words dropped, numbers changed."""
    _, _, said = turn.partition(": ")
    words = [w for w in said.split() if rng.random() > 0.15] or said.split()
    words = [str(rng.randint(1, 2030)) if w.isdigit() else w for w in words]
    return f"{rng.choice(NAMES)}: {' '.join(words)}"


async def fill(store: SqliteStore, user_id: str, turns: list[str], n: int, seed: int) -> float:
    rng = random.Random(seed)
    started = time.perf_counter()
    for start in range(0, n, 100):
        batch = [NewMemory(vary(rng.choice(turns), rng), {"i": start + j})
                 for j in range(min(100, n - start))]
        await store.add_many(user_id, batch)
    return time.perf_counter() - started


async def measure(folder: Path, n: int, queries: int, seed: int) -> None:
    turns, questions = corpus(folder)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "memory.db")
        await store.open()
        try:
            took = await fill(store, "bench-user", turns, n, seed)
            await store.add_many("other-user", [NewMemory(t) for t in turns[:1000]])
            print(f"filled {n} memories in {took:.1f} s ({n / took:.0f}/s)")
            asked = [rng.choice(questions) for _ in range(queries)]
            for q in asked[:20]:                      # warm the page cache
                await store.search("bench-user", q, 10)
            latencies = []
            for q in asked:
                started = time.perf_counter()
                await store.search("bench-user", q, 10)
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            await store.close()
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
    print(f"search over {n} memories, {queries} queries, top 10: "
          f"p50 {statistics.median(latencies):.2f} ms, p95 {p95:.2f} ms, "
          f"max {latencies[-1]:.2f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="folder of LoCoMo conversation JSON files")
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    asyncio.run(measure(args.path, args.memories, args.queries, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
