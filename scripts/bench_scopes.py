"""What pins and the personal scope cost a recall: the block of one turn made from an
in-process SqliteStore (its index on the loop, as ``search_now`` serves it), without and with
pins and a personal scope.

    python scripts/bench_scopes.py [--memories 10000] [--personal 1000] [--pins 3] [--runs 2000]

Prints microseconds per block (median of the runs) for: the user's hits alone (what a recall
cost before pins and scopes), the user's pins and hits, and pins and hits of the user and the
personal scope.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import types
from pathlib import Path

from memproxyd.memory.base import NewMemory
from memproxyd.memory.block import compose, format_block
from memproxyd.memory.scopes import Scopes
from memproxyd.memory.sqlite.store import SqliteStore

WORDS = ("kiln glaze clay wheel fire cone bisque slip throw trim bowl vase mug plate "
         "deploy release branch merge test build lint cache queue worker index shard").split()


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))


async def fill(store: SqliteStore, user: str, count: int, pins: int, rng) -> None:
    for start in range(0, count, 500):
        await store.add_many(user, [NewMemory(text(rng)) for _ in range(min(500, count - start))])
    await store.add_many(user, [NewMemory(f"pinned rule {i}: " + text(rng), pinned=True)
                                for i in range(pins)])


def timed(fn, runs: int) -> float:
    spent = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        spent.append(time.perf_counter() - started)
    return statistics.median(spent) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--personal", type=int, default=1_000)
    parser.add_argument("--pins", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2_000)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "memory.db")
        await store.open()
        await fill(store, "alpha", args.memories, args.pins, rng)
        await fill(store, "me", args.personal, args.pins, rng)
        for user in ("alpha", "me"):
            await store.search(user, "kiln", 1)          # indexes built
        queries = [" ".join(rng.sample(WORDS, 4)) for _ in range(64)]

        def state(personal: str):
            return types.SimpleNamespace(project_ports={}, config=types.SimpleNamespace(
                memory=types.SimpleNamespace(personal=personal)))
        alone, shared = Scopes(state(""), store), Scopes(state("me"), store)

        def before():
            format_block(store.search_now("alpha", rng.choice(queries), 10, distinct=True), 4000)

        def with_scopes(scopes):
            def run():
                pinned, found = scopes.recall_now("alpha", rng.choice(queries), 10)
                compose(pinned, found[:5], 4000, scopes.personal())
            return run
        figures = {"hits only (before)": timed(before, args.runs),
                   "pins + hits": timed(with_scopes(alone), args.runs),
                   "pins + hits, personal scope": timed(with_scopes(shared), args.runs)}
        await store.close()
    print(f"{args.memories} memories, {args.personal} personal, {args.pins} pins each")
    for name, micros in figures.items():
        print(f"  {name:32} {micros:8.1f} µs per block (median of {args.runs})")


if __name__ == "__main__":
    asyncio.run(main())
