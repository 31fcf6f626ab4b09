"""Load generation for ``bench.py``: realistic questions, latency, throughput, time to first
token, each against one target (a URL, a body maker, headers).

Every request carries a new question (a LoCoMo question with its names swapped, as a new
human turn would), so memory recall really runs on every call. Each request is its own
conversation (``x-memproxy-conversation-id: bench-<n>``, kept in the remembered memory's
metadata), which is how the bench finds every remembered exchange in the store afterwards.
"""
from __future__ import annotations

import asyncio
import itertools
import random
import re
import statistics
import time
from typing import Callable

import aiohttp
import attrs

from bench_data import NAMES


class Questions:
    """An endless supply of numbered questions."""

    CONVERSATION = "x-memproxy-conversation-id"

    def __init__(self, questions: list[str], seed: int = 7, start: int = 1):
        self.rng = random.Random(seed)
        self.questions = questions
        self.counter = itertools.count(start)

    def next(self) -> tuple[int, str]:
        n = next(self.counter)
        text = self.rng.choice(self.questions)
        for name in set(re.findall(r"\b[A-Z][a-z]+\b", text)) & {"Caroline", "Melanie",
                                                                "Jon", "Gina", "John", "Maria"}:
            text = text.replace(name, self.rng.choice(NAMES))
        return n, text


@attrs.define
class Target:
    name: str
    url: str
    make_body: Callable[[str, bool], bytes]
    headers: dict[str, str]
    remembers: bool = False          # its answers are remembered: record question numbers
    sent: set[int] = attrs.field(factory=set)


async def one(http: aiohttp.ClientSession, target: Target, questions: Questions,
              stream: bool) -> float:
    """Seconds to the full reply (or to the first whole SSE event when streaming)."""
    n, question = questions.next()
    started = time.perf_counter()
    headers = {**target.headers, Questions.CONVERSATION: f"bench-{n}"}
    async with http.post(target.url, data=target.make_body(question, stream),
                         headers=headers) as resp:
        if stream:
            await resp.content.readuntil(b"\n\n")
            elapsed = time.perf_counter() - started
            await resp.read()
        else:
            await resp.read()
            elapsed = time.perf_counter() - started
        if resp.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {resp.status}: {(await resp.text())[:200]}")
    if target.remembers:
        target.sent.add(n)
    return elapsed


async def latencies(target: Target, questions: Questions, n: int, stream: bool = False
                    ) -> list[float]:
    """``n`` sequential requests (after a short warm-up); milliseconds each."""
    async with aiohttp.ClientSession() as http:
        for _ in range(10):
            await one(http, target, questions, stream)
        return [1000 * await one(http, target, questions, stream) for _ in range(n)]


async def throughput(target: Target, questions: Questions, concurrency: int,
                     seconds: float) -> tuple[float, list[float]]:
    """Requests per second with ``concurrency`` clients for ``seconds``, and the latencies."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(one(http, target, questions, False) for _ in range(concurrency)))
        done: list[float] = []
        stop = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < stop:
                done.append(1000 * await one(http, target, questions, False))

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return len(done) / (time.perf_counter() - started), done


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p99": pct(values, 99)}
