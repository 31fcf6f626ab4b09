#!/usr/bin/env python3
"""`make bench`: memproxyd side by side with the LiteLLM proxy, on one fake upstream.

    .venv/bin/python scripts/bench.py [--data ../shared/bench/locomo-dev] [--rounds 3]
                                      [--memories 10000] [--no-peer] [--out bench]

Starts the fake upstream (bench_fake.py), memproxyd from a temp config, and the LiteLLM proxy
(bench_peer.sh, its own venv), fills one user's memory with ``--memories`` varied conversation
turns, then measures in rounds, interleaved (the order rotates each round), for each target:
latency p50/p99 at concurrency 1, requests/s and p99 at 32, and time to first token when
streaming; figures are medians over rounds. Memory off and on are the same daemon
(``x-memory-mode``). Then: every exchange remembered during the run is checked to be in the
store exactly once, and each process's RSS and time to ready are recorded.
Writes ``<out>/results.json``, ``<out>/results.md`` and ``<out>/results.png``.
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
import bench_report  # noqa: E402
from bench_data import corpus, vary  # noqa: E402
from bench_load import Questions, Target, latencies, one, summary, throughput  # noqa: E402

USER = "bench"


def chat_body(question: str, stream: bool) -> bytes:
    return json.dumps({"model": "bench", "stream": stream, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": question}]}).encode()


def messages_body(question: str, stream: bool) -> bytes:
    """Claude Code-shaped: a cached system block, one user turn."""
    return json.dumps({"model": "claude-bench", "max_tokens": 4096, "stream": stream,
                       "system": [{"type": "text", "text": "You are Claude Code.",
                                   "cache_control": {"type": "ephemeral"}}],
                       "messages": [{"role": "user",
                                     "content": [{"type": "text", "text": question}]}]}).encode()


def targets(fake: procs.Proc, daemon: procs.Proc, peer) -> dict[str, list[Target]]:
    json_ct = {"content-type": "application/json"}
    anthropic = {**json_ct, "anthropic-version": "2023-06-01", "x-api-key": "sk-client"}
    mem = {"x-memory-user-id": USER}
    out = {"chat": [
        Target("direct", fake.url + "/v1/chat/completions", chat_body, json_ct),
        Target("memproxyd memory off", daemon.url + "/v1/chat/completions", chat_body,
               {**json_ct, **mem, "x-memory-mode": "off"}),
        Target("memproxyd memory on", daemon.url + "/v1/chat/completions", chat_body,
               {**json_ct, **mem, "x-memory-mode": "on"}, remembers=True)],
        "messages": [
        Target("direct", fake.url + "/v1/messages", messages_body, anthropic),
        Target("memproxyd memory off", daemon.url + "/v1/messages", messages_body,
               {**anthropic, **mem, "x-memory-mode": "off"}),
        Target("memproxyd memory on", daemon.url + "/v1/messages", messages_body,
               {**anthropic, **mem, "x-memory-mode": "on"}, remembers=True)]}
    if isinstance(peer, procs.Proc):
        key = {"authorization": f"Bearer {procs.PEER_KEY}"}
        out["chat"].append(Target("LiteLLM proxy", peer.url + "/v1/chat/completions",
                                  chat_body, {**json_ct, **key}))
        out["messages"].append(Target("LiteLLM proxy", peer.url + "/v1/messages",
                                      messages_body, {**anthropic, **key}))
    return out


async def usable(cells: dict[str, list[Target]], questions: Questions) -> list[str]:
    """Drop the targets that fail a first request (JSON and streaming); the reasons."""
    dropped = []
    async with aiohttp.ClientSession() as http:
        for group, group_targets in cells.items():
            for target in list(group_targets):
                try:
                    for stream in (False, True):
                        await one(http, target, questions, stream)
                except (RuntimeError, aiohttp.ClientError) as exc:
                    group_targets.remove(target)
                    dropped.append(f"{group} {target.name}: {exc}")
    return dropped


async def fill(url: str, turns: list[str], n: int, seed: int = 1) -> float:
    rng = random.Random(seed)
    started = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        for start in range(0, n, 100):
            batch = [{"content": vary(rng.choice(turns), rng), "metadata": {"i": start + j}}
                     for j in range(min(100, n - start))]
            async with http.post(url + "/v1/memories",
                                 json={"user_id": USER, "memories": batch}) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"fill failed: HTTP {resp.status} {await resp.text()}")
    return time.perf_counter() - started


async def stored_questions(url: str) -> list[int]:
    """The request numbers of the user's stored exchanges (with repeats), from the
    conversation id each one was remembered under."""
    found, cursor = [], None
    async with aiohttp.ClientSession() as http:
        while True:
            params = {"user_id": USER, "limit": "1000", **({"cursor": cursor} if cursor else {})}
            async with http.get(url + "/v1/memories", params=params) as resp:
                page = await resp.json()
            found += [int(conversation[6:]) for item in page["data"]
                      if (conversation := str(item["metadata"].get("conversation_id", "")))
                      .startswith("bench-")]
            cursor = page.get("next_cursor")
            if not cursor:
                return found


async def check_remembered(url: str, sent: set[int], timeout: float = 60.0) -> dict:
    """Every remembered exchange in the store, once: how long after the load that took."""
    started = time.perf_counter()
    while True:
        found = await stored_questions(url)
        missing = sent - set(found)
        if not missing or time.perf_counter() - started > timeout:
            break
        await asyncio.sleep(0.25)
    return {"remembered": len(sent), "stored": len(sent & set(found)), "missing": len(missing),
            "doubled": len(found) - len(set(found)),
            "seconds_after_load": round(time.perf_counter() - started, 2)}


async def measure_round(cells: dict[str, list[Target]], questions: Questions, args,
                        shift: int) -> dict:
    out: dict = {}
    for group, group_targets in cells.items():
        order = group_targets[shift % len(group_targets):] + group_targets[:shift % len(group_targets)]
        for target in order:
            row = out.setdefault(group, {}).setdefault(target.name, {})
            row["c1"] = summary(await latencies(target, questions, args.requests))
            if group == "chat":
                row["ttft"] = summary(await latencies(target, questions,
                                                      args.requests // 2, stream=True))
            rps, lat = await throughput(target, questions, 32, args.seconds)
            row["c32"] = {"rps": rps, **summary(lat)}
    return out


def median_rows(rounds: list[dict]) -> dict:
    """Per target and metric, the median over rounds; overhead against direct per round."""
    out: dict = {}
    for group in rounds[0]:
        for name, row in rounds[0][group].items():
            merged = out.setdefault(group, {}).setdefault(name, {})
            for cell, metrics in row.items():
                for metric in metrics:
                    values = [r[group][name][cell][metric] for r in rounds]
                    merged.setdefault(cell, {})[metric] = statistics.median(values)
                if cell in ("c1", "ttft"):
                    merged[cell]["overhead_p50"] = statistics.median(
                        r[group][name][cell]["p50"] - r[group]["direct"][cell]["p50"]
                        for r in rounds)
    return out


async def run(args, daemon: procs.Proc, fake: procs.Proc, peer) -> dict:
    turns, questions = corpus(args.data)
    cells = targets(fake, daemon, peer)
    dropped = await usable(cells, Questions(questions, seed=99, start=99 * 10**7))
    for reason in dropped:
        print(f"not measured: {reason}", file=sys.stderr)
    rounds = []
    for i in range(args.rounds):
        print(f"round {i + 1}/{args.rounds}", flush=True)
        rounds.append(await measure_round(cells, Questions(questions, seed=i, start=i * 10**7),
                                          args, i))
    sent = set().union(*(t.sent for group in cells.values() for t in group))
    return {"rounds": rounds, "results": median_rows(rounds), "not_measured": dropped,
            "outbox": await check_remembered(daemon.url, sent)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="LoCoMo folder (default: the nearest "
                        "shared/bench/locomo-dev above the repository, else synthetic text)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300, help="per c=1 cell and round")
    parser.add_argument("--seconds", type=float, default=4.0, help="per c=32 cell and round")
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--no-peer", action="store_true", help="skip the LiteLLM proxy")
    parser.add_argument("--out", type=Path, default=procs.ROOT / "bench")
    args = parser.parse_args(argv)
    if args.data is None:    # ../shared beside the clone (or beside a worktree's parent)
        found = [p / "shared" / "bench" / "locomo-dev" for p in procs.ROOT.parents]
        args.data = next((p for p in found if p.is_dir()), None)
    if args.data is None:
        print("bench: no LoCoMo folder found (--data): memories and questions are synthetic",
              file=sys.stderr)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "processes.log"
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="memproxyd-bench-") as tmp:
        tmp = Path(tmp)
        fake = procs.start_fake()
        started: list[procs.Proc] = [fake]
        try:
            report = bench(args, tmp, fake, log, started)
        finally:
            for proc in reversed(started):
                proc.stop()
    bench_report.write(args.out, report)
    print((args.out / "results.md").read_text())
    return 0


def bench(args, tmp: Path, fake: procs.Proc, log: Path, started: list) -> dict:
    config = procs.memproxyd_config(tmp, fake.url)
    daemon = procs.start_memproxyd(config, log)
    turns, _ = corpus(args.data)
    filled = asyncio.run(fill(daemon.url, turns, args.memories))
    daemon.stop()                      # ready time is measured with the filled store
    daemon = procs.start_memproxyd(config, log)
    started.append(daemon)
    peer = None if args.no_peer else procs.start_peer(procs.peer_config(tmp, fake.url), log)
    if isinstance(peer, procs.Proc):
        started.append(peer)
    elif peer:
        print(f"LiteLLM proxy: {peer}", file=sys.stderr)
    report = asyncio.run(run(args, daemon, fake, peer))
    report.update(bench_report.machine(), memories=args.memories,
                  fill_seconds=round(filled, 2), data=str(args.data or "synthetic"),
                  processes={p.name: {"ready_s": round(p.ready_s, 3),
                                      "rss_mb_after_load": round(p.rss_mb(), 1)}
                             for p in started[1:]},
                  peer_error=None if isinstance(peer, procs.Proc) or peer is None else peer)
    return report


if __name__ == "__main__":
    sys.exit(main())
