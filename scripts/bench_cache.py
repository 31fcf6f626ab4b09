#!/usr/bin/env python3
"""What memory costs in prompt cache: multi-turn sessions replayed direct and through memproxyd.

    .venv/bin/python scripts/bench_cache.py [--turns 11] [--out bench]

Starts the caching fake (``tests/fakes/caching_upstream.py``: prompt caching billed as
Anthropic and OpenAI document it) in this process and memproxyd from a temporary config
(memory on, SQLite) with one project whose memory holds a few facts the sessions ask about.
Each session (``bench_cache_sessions.py``: Claude Code, Codex, an SDK chat loop) runs once
straight to the fake and once through the project's port, each on a cold cache. From what
the fake received and billed: input tokens uncached / written to the cache / read from it,
output tokens, their cost at the model's published prices (litellm's map, through
``memproxyd/observe/prices.py``), the memory blocks' own tokens, and

    ratio = cost through memproxyd / (direct cost + each distinct block written once)

(1.0: memory costs nothing beyond its own tokens). Also whether each turn's prompt, as the
fake received it, extends the previous turn's (``cache_control`` markers ignored).
Writes ``<out>/cache.json`` and ``<out>/cache.md``. Token counts are the fake's estimates
(4 characters of canonical JSON a token): compare the paths, not the absolute numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_procs as procs  # noqa: E402
import bench_report  # noqa: E402
from bench_cache_sessions import FACTS, SESSIONS  # noqa: E402

from memproxyd.observe.prices import PriceBook  # noqa: E402
from tests.fakes import caching_upstream  # noqa: E402
from tests.fakes.prompt_cache import (anthropic_blocks, chat_prompt, estimate_tokens,  # noqa: E402
                                      responses_prompt)
from tests.fakes.threaded import ThreadedServer  # noqa: E402

PROJECT = "cachebench"
BLOCK_START, BLOCK_END = "<memproxy-memory>", "</memproxy-memory>"


def daemon_config(directory: Path, upstream: str) -> Path:
    port = procs.free_port()
    models = (("claude-sonnet-4-5", "anthropic/claude-sonnet-4-5", upstream),
              ("gpt-5-codex", "openai/gpt-5-codex", upstream + "/v1"),
              ("gpt-4.1", "openai/gpt-4.1", upstream + "/v1"))
    path = directory / "memproxyd.toml"
    path.write_text(
        f'[server]\nport = {port}\nstate_dir = "{directory / "state"}"\n'
        'log_level = "WARNING"\n[memory]\nbackend = "sqlite"\nrecall_timeout_ms = 2000\n'
        + "".join(f'[[model_list]]\nmodel_name = "{name}"\n[model_list.litellm_params]\n'
                  f'model = "{model}"\napi_base = "{base}"\napi_key = "sk-bench"\n'
                  for name, model, base in models))
    return path


def call(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def add_project(gateway: str) -> str:
    """The project's port, its memory holding ``FACTS``."""
    port = procs.free_port()
    call(gateway + "/admin/projects", {"name": PROJECT, "port": port})
    call(gateway + "/v1/memories", {"user_id": PROJECT,
                                    "memories": [{"content": fact} for fact in FACTS]})
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):              # the listener opens as the registry is reconciled
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            return url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"project port {port} did not answer")


# -- what the fake received ------------------------------------------------------------

def prompt_text(record: dict) -> str:
    """The prompt as the cache sees it (markers removed), for the extends-check."""
    body = record["json"]
    if record["path"] == "/v1/messages":
        return "".join(text for text, _ in anthropic_blocks(body))
    return responses_prompt(body) if record["path"] == "/v1/responses" else chat_prompt(body)


def blocks_in(value: object) -> list[str]:
    """Every memory block in a request body, whatever field memproxyd put it in."""
    if isinstance(value, str):
        found, start = [], value.find(BLOCK_START)
        while start >= 0:
            end = value.find(BLOCK_END, start)
            end = len(value) if end < 0 else end + len(BLOCK_END)
            found.append(value[start:end])
            start = value.find(BLOCK_START, end)
        return found
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [block for item in items for block in blocks_in(item)]


def block_tokens(block: str) -> int:
    """A block's tokens as the fake counts them: inside a JSON string (escapes included)."""
    return estimate_tokens(json.dumps(block, ensure_ascii=False)[1:-1])


def billed(usage: dict) -> dict[str, int]:
    """Input tokens at each rate and output tokens, from any of the three usage shapes."""
    if "cache_read_input_tokens" in usage:
        return {"uncached": usage["input_tokens"], "write": usage["cache_creation_input_tokens"],
                "read": usage["cache_read_input_tokens"], "output": usage["output_tokens"]}
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    cached = details.get("cached_tokens", 0)
    return {"uncached": prompt - cached, "write": 0, "read": cached,
            "output": usage.get("completion_tokens", usage.get("output_tokens", 0))}


def cost(tokens: dict[str, int], rates: dict[str, float]) -> float:
    return (tokens["uncached"] * rates["input"] + tokens["write"] * rates["cache_write"]
            + tokens["read"] * rates["cache_read"] + tokens["output"] * rates["output"])


def measure(records: list[dict], rates: dict[str, float], statuses: list[str]) -> dict:
    turns = [billed(r["usage"]) for r in records]
    tokens = {k: sum(t[k] for t in turns) for k in ("uncached", "write", "read", "output")}
    prompts = [prompt_text(r) for r in records]
    blocks = list(dict.fromkeys(b for r in records for b in blocks_in(r["json"])))
    return {"turns": len(records), "tokens": tokens, "per_turn": turns,
            "cost_usd": cost(tokens, rates), "memory": statuses,
            "turns_with_block": sum(bool(blocks_in(r["json"])) for r in records),
            "distinct_blocks": len(blocks),
            "block_tokens": sum(block_tokens(b) for b in blocks),
            "extends": [b.startswith(a) for a, b in zip(prompts, prompts[1:])]}


def run_session(name: str, fake: ThreadedServer, base: str, turns: int,
                rates: dict[str, float]) -> dict:
    fake.call(caching_upstream.reset, fake.app)                   # a cold cache per path
    replay, _ = SESSIONS[name]
    statuses = replay(base, turns)
    records = fake.call(lambda: list(fake.app[caching_upstream.RECORDS]))
    return measure(records, rates, statuses)


def compare(direct: dict, through: dict, rates: dict[str, float]) -> dict:
    """The blocks' allowance (each written once: the cache-write price, else the input price
    where a provider bills no writes) and the ratio against it."""
    allowance = through["block_tokens"] * rates["cache_write"]
    return {"allowance_usd": allowance,
            "ratio": through["cost_usd"] / (direct["cost_usd"] + allowance)}


def bench(args, fake: ThreadedServer, tmp: Path, log: Path) -> dict:
    daemon = procs.start_memproxyd(daemon_config(tmp, fake.url), log)
    try:
        project = add_project(daemon.url)
        prices = PriceBook.bundled()
        sessions = {}
        for name, (_, model) in SESSIONS.items():
            rates = prices.rates(None, model)
            direct = run_session(name, fake, fake.url, args.turns, rates)
            through = run_session(name, fake, project, args.turns, rates)
            sessions[name] = {"model": model, "rates": rates, "direct": direct,
                              "memproxyd": through, **compare(direct, through, rates)}
    finally:
        daemon.stop()
    return {"sessions": sessions, "turns": args.turns, **bench_report.machine()}


# -- report ------------------------------------------------------------------------------

def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, Python {m['python']}; "
             f"{report['turns']} human turns per session, each path on a cold cache; tokens "
             "are the caching fake's estimates (4 characters of canonical JSON a token).", "",
             "| session | path | uncached in | cache write | cache read | out | cost USD "
             "| blocks (tokens) | turns with block | prompt extends previous | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in report["sessions"].items():
        for path in ("direct", "memproxyd"):
            lines.append(_row(f"{name} ({s['model']})", path, s[path],
                              s["ratio"] if path == "memproxyd" else None))
    lines += ["", "ratio = cost through memproxyd / (direct cost + each distinct block's tokens "
              "written once, at the cache-write price; OpenAI bills no writes: its input "
              "price). Prices per token from litellm's map: " + "; ".join(
                  f"{s['model']} in {s['rates']['input']:.3g}, write "
                  f"{s['rates']['cache_write']:.3g}, read {s['rates']['cache_read']:.3g}, "
                  f"out {s['rates']['output']:.3g}" for s in {
                      s["model"]: s for s in report["sessions"].values()}.values()) + "."]
    return "\n".join(lines) + "\n"


def _row(session: str, path: str, p: dict, ratio: float | None) -> str:
    t = p["tokens"]
    through = ratio is not None
    cells = [session, path, f"{t['uncached']:,}", f"{t['write']:,}", f"{t['read']:,}",
             f"{t['output']:,}", f"{p['cost_usd']:.4f}",
             f"{p['distinct_blocks']} ({p['block_tokens']:,})" if through else "",
             str(p["turns_with_block"]) if through else "",
             f"{sum(p['extends'])}/{len(p['extends'])}", f"{ratio:.2f}" if through else ""]
    return "| " + " | ".join(cells) + " |"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=11, help="human turns per session")
    parser.add_argument("--out", type=Path, default=procs.ROOT / "bench")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "processes.log"
    fake = ThreadedServer(caching_upstream.create_app()).start()
    try:
        with tempfile.TemporaryDirectory(prefix="memproxyd-cachebench-") as tmp:
            report = bench(args, fake, Path(tmp), log)
    finally:
        fake.stop()
    (args.out / "cache.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "cache.md").write_text(markdown(report))
    print((args.out / "cache.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
