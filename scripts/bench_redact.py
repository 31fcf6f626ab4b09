"""What secret redaction costs per stored exchange: ``redact`` over every text the recorded
agent fixtures send (tests/fixtures/agents: Claude Code, Codex, Gemini CLI, opencode, cn),
and over one 10 KB text with no secret and one with a few.

    .venv/bin/python scripts/bench_redact.py [--module path/to/other/redact.py]

``--module`` times another version of the module (e.g. ``git show REV:memproxyd/memory/
redact.py > /tmp/old.py``) on the same texts, for a before/after figure.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "agents"


def strings(value, out: list[str]) -> list[str]:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            strings(item, out)
    elif isinstance(value, list):
        for item in value:
            strings(item, out)
    return out


def fixture_texts() -> list[str]:
    texts: list[str] = []
    for path in sorted(FIXTURES.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            body = json.loads(line).get("json") or {}
            for key in ("messages", "input", "contents", "system", "instructions"):
                strings(body.get(key), texts)
    return [t for t in texts if len(t) >= 20]


def per_call(redact, texts: list[str], rounds: int) -> float:
    """Median over rounds of the mean µs per text."""
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for text in texts:
            redact(text)
        results.append((time.perf_counter() - started) / len(texts) * 1e6)
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--module", help="another redact.py to time on the same texts")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.module:
        spec = importlib.util.spec_from_file_location("other_redact", args.module)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        from memproxyd.memory import redact as module
    texts = fixture_texts()
    prose = ("We moved the nightly cron job to 02:00 UTC after the backup window changed; "
             "see deploy/cron.yaml and the runbook in docs/ops.md for the details. ") * 70
    secrets = prose[:5000] + " export DB_PASSWORD=hunter2-horse sk-proj-Q3vLx9TmZ0aB7cD2eF4 " \
        + prose[:5000]
    total = sum(map(len, texts))
    print(f"{len(texts)} fixture texts, {total / 1024:.0f} KB, mean {total / len(texts):.0f} chars")
    print(f"fixture texts:        {per_call(module.redact, texts, args.rounds):8.1f} µs per text")
    short = [t for t in texts if len(t) <= 2000]     # turns and answers, not system prompts
    print(f"  the {len(short)} up to 2 KB: {per_call(module.redact, short, args.rounds):6.1f} µs "
          f"per text (mean {sum(map(len, short)) / len(short):.0f} chars)")
    for name, text in (("10 KB, no secret:", prose[:10_240]), ("10 KB, two secrets:", secrets)):
        print(f"{name:21} {per_call(module.redact, [text] * 50, args.rounds):8.1f} µs")


if __name__ == "__main__":
    main()
