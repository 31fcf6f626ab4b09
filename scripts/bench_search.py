#!/usr/bin/env python3
"""Search latency and memory-on overhead with a large store for one user, per backend.

    python scripts/bench_search.py ../shared/bench/locomo-dev
        [--backend sqlite sqlite-process postgres] [--memories 10000 100000]
        [--queries 300] [--calls 200] [--dsn postgresql://...] [--others 100000]

Fills one user's store (in-process; SQLite on a temp file, its index in this process or in
the search process the daemon runs; PostgreSQL on ``--dsn`` or a throwaway local server)
with synthetic but realistic memories -- LoCoMo turns re-sampled with their speakers
swapped, words dropped and numbers changed, added in batches of 100 as a conversation import
would -- up to each size in turn. At each size it times ``search`` for the benchmark's
questions (p50/p95, top 10; PostgreSQL after an ``ANALYZE``, as autovacuum keeps it), then
starts the real daemon on that store with a fake upstream and sends ``--calls`` chat
completions with those questions, reading the daemon's own ``x-memproxy-overhead-ms`` with
memory on (recall + remember) and off. With ``--others N`` it then stores N memories for
another user and times the searches again.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_procs as procs  # noqa: E402
from bench_data import corpus, vary  # noqa: E402
from memproxyd.memory.base import NewMemory  # noqa: E402
from stores import open_store  # noqa: E402

USER = "bench-user"


async def fill(store, turns: list[str], start: int, end: int, rng: random.Random,
               user: str = USER) -> float:
    started = time.perf_counter()
    for first in range(start, end, 100):
        batch = [NewMemory(vary(rng.choice(turns), rng), {"i": first + j})
                 for j in range(min(100, end - first))]
        await store.add_many(user, batch)
    return time.perf_counter() - started


def pcts(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.95))]


async def time_search(store, asked: list[str]) -> tuple[float, float]:
    for q in asked[:20]:                      # warm caches
        await store.search(USER, q, 10)
    latencies = []
    for q in asked:
        started = time.perf_counter()
        await store.search(USER, q, 10)
        latencies.append((time.perf_counter() - started) * 1000)
    return pcts(latencies)


def daemon_config(folder: Path, port: int, upstream: str, backend: str, dsn: str | None) -> Path:
    pg = f'[postgres]\ndsn = "{dsn}"\n' if backend == "postgres" else ""
    backend = backend.split("-")[0]        # the daemon's sqlite store: its search process
    path = folder / "bench-daemon.toml"
    path.write_text(
        f'[server]\nport = {port}\nstate_dir = "{folder}"\nlog_level = "WARNING"\n'
        f'[memory]\nbackend = "{backend}"\nrecall_timeout_ms = 1000\n{pg}'
        f'[[model_list]]\nmodel_name = "bench"\n[model_list.litellm_params]\n'
        f'model = "openai/m"\napi_base = "{upstream}/v1"\napi_key = "sk-bench"\n')
    return path


async def overhead(url: str, asked: list[str], mode: str) -> tuple[float, float]:
    reported = []
    headers = {"x-memory-user-id": USER, "x-memory-mode": mode}
    async with aiohttp.ClientSession() as http:
        for i, q in enumerate(asked):
            body = {"model": "bench", "messages": [{"role": "user", "content": q}]}
            async with http.post(f"{url}/v1/chat/completions", json=body,
                                 headers=headers) as resp:
                await resp.read()
                if i >= 10:                       # the first calls warm connections
                    reported.append(float(resp.headers["x-memproxy-overhead-ms"]))
    return pcts(reported)


async def through_daemon(folder: Path, backend: str, dsn, upstream: str,
                         asked: list[str]) -> dict:
    port = procs.free_port()
    config = daemon_config(folder, port, upstream, backend, dsn)
    daemon = await asyncio.to_thread(
        procs.start, "memproxyd", [sys.executable, "-m", "memproxyd", "--config", str(config)],
        f"http://127.0.0.1:{port}", "/health")
    try:
        return {"off": await overhead(daemon.url, asked, "off"),
                "on": await overhead(daemon.url, asked, "on")}
    finally:
        daemon.stop()


async def measure(args, backend: str, upstream: str) -> None:
    turns, questions = corpus(args.path)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store, close = await open_store(backend, folder, args.dsn)
        dsn = getattr(store, "dsn", None)
        try:
            await store.add_many("other-user", [NewMemory(t) for t in turns[:1000]])
            have = 0
            for size in sorted(args.memories):
                took = await fill(store, turns, have, size, rng)
                print(f"[{backend}] filled {size - have} memories in {took:.1f} s "
                      f"({(size - have) / took:.0f}/s)", flush=True)
                have = size
                if backend == "postgres":    # what autovacuum does within a minute
                    async with store.db.connection() as conn:
                        await conn.execute("ANALYZE memories")
                p50, p95 = await time_search(store, [rng.choice(questions)
                                                     for _ in range(args.queries)])
                calls = [rng.choice(questions) for _ in range(args.calls)]
                cost = await through_daemon(folder, backend, dsn, upstream, calls)
                (on50, on95), (off50, off95) = cost["on"], cost["off"]
                print(json.dumps({"backend": backend, "memories": size,
                                  "search_p50_ms": round(p50, 2), "search_p95_ms": round(p95, 2),
                                  "overhead_on_p50_ms": round(on50, 2),
                                  "overhead_on_p95_ms": round(on95, 2),
                                  "overhead_off_p50_ms": round(off50, 2),
                                  "overhead_off_p95_ms": round(off95, 2),
                                  "memory_on_added_p50_ms": round(on50 - off50, 2)}), flush=True)
            if args.others:
                await others(store, backend, turns, questions, args, rng)
        finally:
            await close()


async def others(store, backend: str, turns, questions, args, rng) -> None:
    """The same searches once another user has ``--others`` memories in the same store:
    recall latency should not depend on what other users have stored."""
    asked = [rng.choice(questions) for _ in range(args.queries)]
    before = await time_search(store, asked)
    await fill(store, turns, 0, args.others, rng, user="other-user")
    after = await time_search(store, asked)
    print(json.dumps({"backend": backend, "other_user_memories": args.others,
                      "search_p50_ms_before": round(before[0], 2),
                      "search_p50_ms_after": round(after[0], 2)}), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="folder of LoCoMo conversation JSON files")
    parser.add_argument("--backend", nargs="+", default=["sqlite", "sqlite-process", "postgres"],
                        choices=("sqlite", "sqlite-process", "postgres"))
    parser.add_argument("--memories", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--calls", type=int, default=200, help="daemon calls per mode")
    parser.add_argument("--dsn", help="postgres database (default: a throwaway local server)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--others", type=int, default=0,
                        help="then add this many memories for another user and search again")
    args = parser.parse_args(argv)
    fake = procs.start_fake()
    try:
        for backend in args.backend:
            asyncio.run(measure(args, backend, fake.url))
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
