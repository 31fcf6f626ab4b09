"""Soak test: the real daemon under sustained load on loopback, watched for growth.

    .venv/bin/python scripts/soak.py [--seconds 180] [--concurrency 64] [--projects 20]

Starts the fake OpenAI and Anthropic upstreams (tests/fakes, in a process of their own) and
the daemon (memory on, SQLite) with one project port per project, then runs ``concurrency``
clients for ``seconds``: streaming and non-streaming calls on both protocols, spread over the
projects. Every few seconds it samples the daemon's RSS, open file descriptors and threads
(its search process's included), asyncio tasks and HTTP sessions. After a warm-up (a fifth of the run) nothing may grow beyond
a bound; any error fails the run. Prints p50/p99 per kind and the samples at start and end.
Exit code 0 when clean, 1 otherwise. Bounded in time and requests; loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_procs import _tree  # noqa: E402
from memproxyd.registry import add_project  # noqa: E402
from tests.conftest import free_port, write_config  # noqa: E402

KINDS = ("openai", "openai-stream", "anthropic", "anthropic-stream")
# Growth allowed between the first and the second half of the run after warm-up (peak to
# peak: connection pools and caches fill during warm-up, a leak keeps growing): RSS in MB,
# counts of the rest; ``outbox`` is the backlog of exchanges not yet in the store.
BOUNDS = {"rss_mb": 32.0, "fds": 32, "tasks": 64, "threads": 4, "sessions": 2,
          "outbox": 2000}


def serve_fakes(port_file: str) -> None:
    """Child mode: both fake upstreams on loopback until killed; their URLs in ``port_file``."""
    from tests.fakes import anthropic_upstream, openai_upstream
    from tests.fakes.threaded import ThreadedServer
    servers = [ThreadedServer(openai_upstream.create_app()).start(),
               ThreadedServer(anthropic_upstream.create_app()).start()]
    Path(port_file).write_text(json.dumps([s.url for s in servers]))
    while True:
        time.sleep(3600)


def start_fakes(tmp: Path) -> tuple[subprocess.Popen, list[str]]:
    port_file = tmp / "fakes.json"
    proc = subprocess.Popen([sys.executable, __file__, "--serve-fakes", str(port_file)],
                            cwd=ROOT)
    deadline = time.monotonic() + 20
    while not port_file.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("fake upstreams did not start")
        time.sleep(0.05)
    time.sleep(0.1)
    return proc, json.loads(port_file.read_text())


def start_daemon(tmp: Path, openai_url: str, anthropic_url: str, projects: int,
                 upstream_ms: int) -> tuple[subprocess.Popen, str, list[int]]:
    # the fakes answer after upstream_ms (their "slow-<ms>" models), as a fast model would
    models = "".join(
        f'[[model_list]]\nmodel_name = "{name}"\n[model_list.litellm_params]\n'
        f'model = "{model}{upstream_ms}"\napi_base = "{base}"\napi_key = "k"\n'
        for name, model, base in (("soak-gpt", "openai/slow-", f"{openai_url}/v1"),
                                  ("soak-claude", "anthropic/slow-", anthropic_url)))
    config = write_config(tmp, openai_url, memory='backend = "sqlite"', extra=models,
                          server_extra="max_sessions = 64")
    ports = [free_port() for _ in range(projects)]
    for i, port in enumerate(ports):
        add_project(tmp / "state" / "projects.json", f"soak-{i:02d}", port)
    log = (tmp / "daemon.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "memproxyd", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{config.read_text().split('port = ', 1)[1].split()[0]}"
    deadline = time.monotonic() + 30
    while True:
        try:
            status = _get(url + "/admin/status")
            if sum(1 for l in status["listeners"] if l["state"] == "listening") == projects:
                return proc, url, ports
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"daemon did not start: {(tmp / 'daemon.log').read_text()[-2000:]}")
        time.sleep(0.1)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def sample(pid: int, url: str) -> dict:
    rss = fds = threads = 0
    for process in _tree(pid):       # the daemon and its search process
        status = Path(f"/proc/{process}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss += int(fields["VmRSS"].split()[0])
        fds += len(os.listdir(f"/proc/{process}/fd"))
        threads += int(fields["Threads"])
    admin = _get(url + "/admin/status")
    return {"rss_mb": rss / 1024, "fds": fds, "threads": threads,
            "tasks": admin.get("tasks", -1), "sessions": admin["sessions"]["count"],
            "outbox": admin["memory"].get("outbox", {}).get("pending", -1)}


def request_for(kind: str, n: int) -> tuple[str, dict]:
    words = f"soak fact {n} about topic {n % 97} and detail {random.random():.6f}"
    stream = kind.endswith("stream")
    if kind.startswith("openai"):
        return "/v1/chat/completions", {"model": "soak-gpt", "stream": stream,
                                        "messages": [{"role": "user", "content": words}]}
    return "/v1/messages", {"model": "soak-claude", "max_tokens": 32, "stream": stream,
                            "messages": [{"role": "user", "content": words}]}


async def client(http: aiohttp.ClientSession, ports: list[int], stop: float, results: dict,
                 counter: list[int], max_requests: int) -> None:
    while time.monotonic() < stop and counter[0] < max_requests:
        counter[0] += 1
        n = counter[0]
        kind = KINDS[n % len(KINDS)]
        path, body = request_for(kind, n)
        started = time.perf_counter()
        try:
            async with http.post(f"http://127.0.0.1:{random.choice(ports)}{path}",
                                 json=body) as resp:
                data = await resp.read()
                # a stream that failed midway still says 200: its last event says error
                ok = resp.status == 200 and b'"error"' not in data
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            ok, data = False, repr(exc).encode()
        results.setdefault(kind, []).append(time.perf_counter() - started)
        if not ok:
            results.setdefault("errors", []).append(data[:200])


async def watch(pid: int, url: str, stop: float, samples: list) -> None:
    while time.monotonic() < stop:
        samples.append((time.monotonic(), await asyncio.to_thread(sample, pid, url)))
        await asyncio.sleep(5)


async def load(args, pid: int, url: str, ports: list[int]) -> tuple[dict, list]:
    results: dict = {}
    samples: list = [(time.monotonic(), sample(pid, url))]
    stop = time.monotonic() + args.seconds
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        counter = [0]
        await asyncio.gather(watch(pid, url, stop, samples), *(
            client(http, ports, stop, results, counter, args.max_requests)
            for _ in range(args.concurrency)))
    await asyncio.sleep(2)   # let the outbox settle before the last sample
    samples.append((time.monotonic(), sample(pid, url)))
    return results, samples


def report(args, results: dict, samples: list, seconds: float) -> int:
    errors = results.pop("errors", [])
    total = sum(len(v) for v in results.values())
    print(f"soak: {seconds:.0f} s, concurrency {args.concurrency}, {args.projects} projects, "
          f"{total} requests ({total / seconds:.0f}/s), {len(errors)} errors")
    for kind, times in sorted(results.items()):
        times = sorted(times)
        print(f"  {kind:<17} n={len(times):<6} p50={statistics.median(times) * 1000:7.1f} ms"
              f"  p99={times[int(len(times) * 0.99) - 1] * 1000:7.1f} ms")
    after = [s for t, s in samples if t >= samples[0][0] + seconds / 5]   # warm-up done
    first, second = after[:len(after) // 2], after[len(after) // 2:]
    peak1 = {k: max(s[k] for s in first) for k in BOUNDS}
    peak2 = {k: max(s[k] for s in second) for k in BOUNDS}
    for label, values in (("start", samples[0][1]), ("peak1", peak1), ("peak2", peak2),
                          ("end", samples[-1][1])):
        print(f"  {label:<5} " + "  ".join(f"{k}={v:.1f}" if isinstance(v, float) else
                                           f"{k}={v}" for k, v in values.items()))
    grown = [f"{k} grew {peak1[k]} -> {peak2[k]} (bound +{b})" for k, b in BOUNDS.items()
             if peak2[k] - peak1[k] > b]
    for problem in grown + [f"error: {e!r}" for e in errors[:5]]:
        print("  FAIL " + problem)
    return 1 if grown or errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument("--upstream-ms", type=int, default=500,
                        help="how long the fake upstreams take to answer")
    parser.add_argument("--serve-fakes", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_fakes:
        serve_fakes(args.serve_fakes)
    with tempfile.TemporaryDirectory(prefix="memproxyd-soak-") as name:
        tmp = Path(name)
        fakes, (openai_url, anthropic_url) = start_fakes(tmp)
        daemon = None
        try:
            daemon, url, ports = start_daemon(tmp, openai_url, anthropic_url, args.projects,
                                              args.upstream_ms)
            started = time.monotonic()
            results, samples = asyncio.run(load(args, daemon.pid, url, ports))
            return report(args, results, samples, time.monotonic() - started)
        finally:
            for proc in (daemon, fakes):
                if proc is not None:
                    proc.terminate()
                    proc.wait(20)


if __name__ == "__main__":
    sys.exit(main())
