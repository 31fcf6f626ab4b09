#!/usr/bin/env python3
"""Measure what memproxyd adds to ``/v1/messages``: direct to a local fake Anthropic upstream
vs through the daemon (native passthrough), memory off unless asked.

    .venv/bin/python scripts/bench_messages.py [--requests 2000] [--memory off|sqlite]

Starts a fake Anthropic upstream (a subprocess of this script) and the real daemon
(subprocess) on a temp config, then for concurrency 1 and 32 sends the same Messages request
direct and through the gateway, non-streaming (full reply) and streaming (time to the first
event), and prints p50/p99 and the difference. Needs the daemon to serve ``/v1/messages``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
from aiohttp import web

REPLY = {"id": "msg_bench", "type": "message", "role": "assistant", "model": "m",
         "content": [{"type": "text", "text": "The answer is 42."}], "stop_reason": "end_turn",
         "stop_sequence": None, "usage": {"input_tokens": 9, "output_tokens": 5}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0) -> None:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.005)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def sse(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


EVENTS = [sse(e) for e in (
    {"type": "message_start", "message": {**REPLY, "content": [], "stop_reason": None}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}
      for w in ("The ", "answer ", "is ", "42.")),
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}},
    {"type": "message_stop"})]


def serve_fake(port: int) -> None:
    async def messages(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(REPLY)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in EVENTS:
            await response.write(event)
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/health", lambda request: web.json_response({"status": "ok"}))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def write_config(directory: Path, port: int, upstream: str, memory: str) -> Path:
    path = directory / "bench.toml"
    path.write_text(f"""
[server]
port = {port}
state_dir = "{directory / 'state'}"
log_level = "WARNING"
[memory]
backend = "{memory}"
[[model_list]]
model_name = "claude-bench"
[model_list.litellm_params]
model = "anthropic/m"
api_base = "{upstream}"
api_key = "sk-bench"
""")
    return path


def request_body(stream: bool) -> bytes:
    """A Claude Code-shaped request: cached system blocks, one user turn."""
    return json.dumps({
        "model": "claude-bench", "max_tokens": 4096, "stream": stream,
        "system": [{"type": "text", "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What did we decide about the deployment schedule?"}]}],
    }).encode()


async def one(http: aiohttp.ClientSession, url: str, body: bytes, stream: bool,
              headers: dict) -> tuple[float, float | None]:
    started = time.perf_counter()
    async with http.post(url, data=body, headers=headers) as resp:
        if stream:
            await resp.content.readuntil(b"\n\n")   # the first whole event: message_start
            first = time.perf_counter() - started
            await resp.read()
            return first, None
        await resp.read()
        overhead = resp.headers.get("x-memproxy-overhead-ms")
        return time.perf_counter() - started, float(overhead) if overhead else None


async def measure(url: str, requests: int, concurrency: int,
                  stream: bool) -> tuple[list[float], list[float]]:
    body = request_body(stream)
    headers = {"content-type": "application/json", "x-api-key": "sk-client",
               "anthropic-version": "2023-06-01", "x-memory-user-id": "bench"}
    latencies: list[float] = []
    reported: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(min(50, requests)):  # warm-up: connections, first-call paths
            await one(http, url, body, stream, headers)
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                latency, overhead = await one(http, url, body, stream, headers)
                latencies.append(latency * 1000)
                if overhead is not None:
                    reported.append(overhead)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, reported


async def run(args) -> None:
    for concurrency in (1, 32):
        for stream in (False, True):
            direct, _ = await measure(args.upstream + "/v1/messages", args.requests,
                                      concurrency, stream)
            via, reported = await measure(args.gateway + "/v1/messages", args.requests,
                                          concurrency, stream)
            kind = "first event" if stream else "non-stream"
            d50, g50 = statistics.median(direct), statistics.median(via)
            print(f"c={concurrency:<3} {kind:<12} direct p50 {d50:7.3f} ms p99 "
                  f"{pct(direct, 99):7.3f} | memproxyd p50 {g50:7.3f} ms p99 "
                  f"{pct(via, 99):7.3f} | overhead p50 {g50 - d50:6.3f} ms"
                  + (f" (self-reported p50 {statistics.median(reported):.3f} ms)"
                     if reported else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--memory", default="off", choices=("off", "sqlite"))
    parser.add_argument("--serve-fake", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        serve_fake(args.serve_fake)
        return 0
    fake_port, gateway_port = free_port(), free_port()
    args.upstream = f"http://127.0.0.1:{fake_port}"
    args.gateway = f"http://127.0.0.1:{gateway_port}"
    procs = [subprocess.Popen([sys.executable, __file__, "--serve-fake", str(fake_port)])]
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), gateway_port, args.upstream, args.memory)
        try:
            wait_http(args.upstream + "/health")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "memproxyd", "--config", str(config)],
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}))
            wait_http(args.gateway + "/health")
            print(f"memory backend: {args.memory}; {args.requests} requests per cell")
            asyncio.run(run(args))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
