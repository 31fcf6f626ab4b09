#!/usr/bin/env python3
"""CPU time per request, per daemon process: what memory on costs, free of the scheduling
noise that throughput and latency carry on a small machine.

    PYTHONPATH=. .venv/bin/python scripts/bench_cpu.py [--requests 3000] [--concurrency 8]
                                                      [--memories 10000] [--rounds 3]

Starts the fake upstream and memproxyd (``bench_procs``), fills one user's memory with
``--memories`` varied LoCoMo turns (as ``bench.py`` does), then, in rounds, sends
``--requests`` chat completions with memory off and as many with memory on, each a new
question, ``--concurrency`` at a time, and reads each daemon process's user + system CPU
seconds (``/proc/<pid>/stat``) before and after: the daemon (its event loop and its threads:
the SQLite writer, the outbox) and each child (the search process). Prints the median over
rounds of CPU microseconds per request for each, memory off and on, and the difference.
Comparing two commits: run it from each one's checkout (``PYTHONPATH`` set to it), one after
the other on a quiet machine; the figures vary by a few percent between runs, where
throughput at c=32 varies by 10-20 %.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_procs as procs  # noqa: E402
from bench import USER, chat_body, fill  # noqa: E402
from bench_data import corpus  # noqa: E402
from bench_load import Questions, Target, one  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def processes(root: int) -> dict[str, int]:
    """The daemon and its children, by a readable name."""
    out = {"daemon": root}
    for pid in procs._tree(root):
        if pid != root:
            out[f"child {pid}"] = pid
    return out


async def load(target: Target, questions: Questions, n: int, concurrency: int) -> None:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        left = iter(range(n))

        async def client() -> None:
            for _ in left:
                await one(http, target, questions, False)
        await asyncio.gather(*(client() for _ in range(concurrency)))


async def measure(daemon: procs.Proc, questions: list[str], args) -> dict:
    headers = {"content-type": "application/json", "x-memory-user-id": USER}
    modes = {mode: Target(f"memory {mode}", daemon.url + "/v1/chat/completions", chat_body,
                          {**headers, "x-memory-mode": mode}, remembers=mode == "on")
             for mode in ("off", "on")}
    rounds: list[dict] = []
    for i in range(args.rounds):
        supply = Questions(questions, seed=i, start=(i + 1) * 10**7)
        row: dict = {}
        for mode, target in modes.items():
            await load(target, supply, 50, args.concurrency)             # warm
            pids = processes(daemon.popen.pid)
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            await load(target, supply, args.requests, args.concurrency)
            await asyncio.sleep(0.5)      # the outbox delivers what the load remembered
            row[mode] = {name: 1e6 * (cpu_seconds(pid) - before[name]) / args.requests
                         for name, pid in pids.items()}
        rounds.append(row)
        print(f"round {i + 1}: " + ", ".join(
            f"{mode} {sum(r.values()):.0f} µs" for mode, r in row.items()), flush=True)
    return {mode: {name: statistics.median(r[mode][name] for r in rounds)
                   for name in rounds[0][mode]} for mode in ("off", "on")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    turns, questions = corpus(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        fake = procs.start_fake()
        daemon = procs.start_memproxyd(procs.memproxyd_config(Path(tmp), fake.url),
                                       Path(tmp) / "daemon.log")
        try:
            asyncio.run(fill(daemon.url, turns, args.memories))
            result = asyncio.run(measure(daemon, questions, args))
        finally:
            daemon.stop()
            fake.stop()
    print(f"CPU µs per request (median of {args.rounds} rounds of {args.requests}, "
          f"c={args.concurrency}, {args.memories:,} memories first):")
    for name in result["on"]:
        off, on = result["off"][name], result["on"][name]
        print(f"  {name:>14}: off {off:7.0f}  on {on:7.0f}  (+{on - off:.0f})")
    total_off, total_on = sum(result["off"].values()), sum(result["on"].values())
    print(f"  {'all':>14}: off {total_off:7.0f}  on {total_on:7.0f}  (+{total_on - total_off:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
