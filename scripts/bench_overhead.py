#!/usr/bin/env python3
"""Measure what memproxyd adds to a call: direct to a local fake upstream vs through the daemon.

    .venv/bin/python scripts/bench_overhead.py [--requests 2000] [--memory off|sqlite]
                                               [--protocol openai|anthropic|both]

Starts one fake upstream serving both wire protocols (a subprocess of this script) and the
real daemon (subprocess) on a temp config with one native deployment per protocol. For
concurrency 1 and 32 it sends the same request direct and through the gateway, non-streaming
(full reply) and streaming (time to the first whole SSE event), and prints p50/p99 and the
difference. It also prints the daemon's time to ready (spawn → /health answering).
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

QUESTION = "What did we decide about the deployment schedule?"
WORDS = ("The ", "answer ", "is ", "42.")
OPENAI_REPLY = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(WORDS)}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}}
ANTHROPIC_REPLY = {"id": "msg_bench", "type": "message", "role": "assistant", "model": "m",
                   "content": [{"type": "text", "text": "".join(WORDS)}],
                   "stop_reason": "end_turn", "stop_sequence": None,
                   "usage": {"input_tokens": 9, "output_tokens": 5}}


def _openai_events() -> list[bytes]:
    chunks = [{"id": "x", "object": "chat.completion.chunk", "model": "m",
               "choices": [{"index": 0, "delta": {"content": w}}]} for w in WORDS]
    return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]


def _anthropic_events() -> list[bytes]:
    events = [
        {"type": "message_start", "message": {**ANTHROPIC_REPLY, "content": [],
                                              "stop_reason": None}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0,
           "delta": {"type": "text_delta", "text": w}} for w in WORDS),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 5}},
        {"type": "message_stop"}]
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


# protocol → (path, JSON reply, SSE events, model_list entry, request body, request headers)
PROTOCOLS = {
    "openai": ("/v1/chat/completions", OPENAI_REPLY, _openai_events(),
               ("bench", "openai/m", "{upstream}/v1"),
               lambda stream: {"model": "bench", "stream": stream, "messages": [
                   {"role": "system", "content": "You are terse."},
                   {"role": "user", "content": QUESTION}]},
               {}),
    "anthropic": ("/v1/messages", ANTHROPIC_REPLY, _anthropic_events(),
                  ("claude-bench", "anthropic/m", "{upstream}"),
                  lambda stream: {  # Claude Code-shaped: a cached system block, one user turn
                      "model": "claude-bench", "max_tokens": 4096, "stream": stream,
                      "system": [{"type": "text", "text": "You are Claude Code.",
                                  "cache_control": {"type": "ephemeral"}}],
                      "messages": [{"role": "user",
                                    "content": [{"type": "text", "text": QUESTION}]}]},
                  {"anthropic-version": "2023-06-01", "x-api-key": "sk-client"}),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_fake(port: int) -> None:
    def handler(reply: dict, events: list[bytes]):
        async def handle(request: web.Request) -> web.StreamResponse:
            if not (await request.json()).get("stream"):
                return web.json_response(reply)
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            for event in events:
                await response.write(event)
            return response
        return handle

    app = web.Application()
    for path, reply, events, *_ in PROTOCOLS.values():
        app.router.add_post(path, handler(reply, events))
    app.router.add_get("/health", lambda request: web.json_response({"status": "ok"}))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def wait_http(url: str, timeout: float = 20.0) -> None:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.005)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def write_config(directory: Path, port: int, upstream: str, memory: str) -> Path:
    models = "".join(
        f'[[model_list]]\nmodel_name = "{name}"\n[model_list.litellm_params]\n'
        f'model = "{model}"\napi_base = "{base.format(upstream=upstream)}"\n'
        'api_key = "sk-bench"\n'
        for _, _, _, (name, model, base), *_ in PROTOCOLS.values())
    path = directory / "bench.toml"
    path.write_text(f'[server]\nport = {port}\nstate_dir = "{directory / "state"}"\n'
                    f'log_level = "WARNING"\n[memory]\nbackend = "{memory}"\n{models}')
    return path


async def one(http: aiohttp.ClientSession, url: str, body: bytes, stream: bool,
              headers: dict) -> tuple[float, float | None]:
    started = time.perf_counter()
    async with http.post(url, data=body, headers=headers) as resp:
        if stream:
            await resp.content.readuntil(b"\n\n")   # the first whole event
            first = time.perf_counter() - started
            await resp.read()
            return first, None
        await resp.read()
        overhead = resp.headers.get("x-memproxy-overhead-ms")
        return time.perf_counter() - started, float(overhead) if overhead else None


async def measure(url: str, protocol: str, requests: int, concurrency: int,
                  stream: bool) -> tuple[list[float], list[float]]:
    _, _, _, _, make_body, extra_headers = PROTOCOLS[protocol]
    body = json.dumps(make_body(stream)).encode()
    headers = {"content-type": "application/json", "x-memory-user-id": "bench", **extra_headers}
    latencies: list[float] = []
    reported: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
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


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def run(args, protocols: list[str]) -> None:
    for protocol in protocols:
        path = PROTOCOLS[protocol][0]
        for concurrency in (1, 32):
            for stream in (False, True):
                direct, _ = await measure(args.upstream + path, protocol, args.requests,
                                          concurrency, stream)
                via, reported = await measure(args.gateway + path, protocol, args.requests,
                                              concurrency, stream)
                kind = "first event" if stream else "non-stream"
                d50, g50 = statistics.median(direct), statistics.median(via)
                print(f"{path:<21} c={concurrency:<3} {kind:<12} direct p50 {d50:7.3f} ms p99 "
                      f"{pct(direct, 99):7.3f} | memproxyd p50 {g50:7.3f} ms p99 "
                      f"{pct(via, 99):7.3f} | overhead p50 {g50 - d50:6.3f} ms"
                      + (f" (self-reported p50 {statistics.median(reported):.3f} ms)"
                         if reported else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--memory", default="off", choices=("off", "sqlite"))
    parser.add_argument("--protocol", default="both", choices=("openai", "anthropic", "both"))
    parser.add_argument("--serve-fake", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        serve_fake(args.serve_fake)
        return 0
    protocols = list(PROTOCOLS) if args.protocol == "both" else [args.protocol]
    fake_port, gateway_port = free_port(), free_port()
    args.upstream = f"http://127.0.0.1:{fake_port}"
    args.gateway = f"http://127.0.0.1:{gateway_port}"
    procs = [subprocess.Popen([sys.executable, __file__, "--serve-fake", str(fake_port)])]
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), gateway_port, args.upstream, args.memory)
        try:
            wait_http(args.upstream + "/health")
            spawned = time.perf_counter()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "memproxyd", "--config", str(config)],
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}))
            wait_http(args.gateway + "/health")
            print(f"time to ready: {time.perf_counter() - spawned:.3f} s (spawn to /health)")
            print(f"memory backend: {args.memory}; {args.requests} requests per cell")
            asyncio.run(run(args, protocols))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
