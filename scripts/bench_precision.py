#!/usr/bin/env python3
"""Recall precision on real agent traffic: how many injected memory blocks are irrelevant.

    .venv/bin/python scripts/bench_precision.py [--src DIR] [--min-score X]

Replays every recorded CLI story (``tests/fixtures/agents/*.jsonl``: Claude Code twice, Codex,
Gemini CLI, opencode, Continue) through one memproxyd daemon to the loopback fake model, all
as one user, in order, so later stories recall what earlier ones stored (six tellings of one
fact, "our deploy target codename is BLUEFIN", and their answers). The store first holds a few exchanges on other topics (``SEEDS``). Each story asks three
things: the fact to remember, "Please read the notes in <file> and tell me the indentation
rule" (nothing stored is about notes or indentation: any block there is irrelevant) and
"What is our deploy target codename?". A memory line of a block is on topic when it shows
BLUEFIN to the fact or the question, or the indentation rule (``tabs``) to the notes turn; a
block is irrelevant when none of its lines is. Every call with ``x-memproxy-memory: injected``
is counted under the human turn it carries (the tool-loop call repeats its turn's block:
counted too).

``--src`` runs the daemon from another checkout (e.g. ``main`` in a git worktree), to compare
before and after on the same traffic.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import agent_memory_report as report  # noqa: E402
from tests.fakes import agent_upstream  # noqa: E402
from tests.fakes.threaded import ThreadedServer  # noqa: E402

STORIES = ["claude-code", "codex", "gemini-cli", "opencode", "continue-cli",
           "claude-code-default-model"]
TOPIC = {"fact": ("BLUEFIN",), "question": ("BLUEFIN",), "read": ("tabs", "indentation")}
MARKERS = {"fact": "Remember this: our deploy target", "read": "Please read the notes",
           "question": "What is our deploy target codename?"}
# What a developer's store holds besides the stories (stored first, through the memory API):
# exchanges on other topics that share only request words ("please", "tell", "read",
# "remember") or one word ("deploy") with the stories' turns. None is on a story's topic.
SEEDS = [
    "User: Please deploy the api cluster to staging tonight.\nAssistant: Deployed; the cluster"
    " is healthy.",
    "User: Can you tell me why the nightly build failed?\nAssistant: The linker ran out of"
    " memory; I raised the limit.",
    "User: Read the error log and fix the flaky login test.\nAssistant: Fixed: the test waited"
    " on a real clock.",
    "User: Please rename the billing module to invoices.\nAssistant: Renamed, imports updated.",
    "User: Remember that Dana owns the on-call rota this month.\nAssistant: Noted.",
    "User: Our deploy window is Tuesday mornings.\nAssistant: Noted, Tuesday mornings.",
]
MODELS = ('[[model_list]]\nmodel_name = "fake-chat"\n[model_list.litellm_params]\n'
          'model = "openai/fake-chat"\napi_base = "{url}/v1"\napi_key = "sk-fake"\n'
          '[[model_list]]\nmodel_name = "gemini-*"\n[model_list.litellm_params]\n'
          'model = "gemini/*"\napi_base = "{url}"\napi_key = "sk-fake"\n')


def turn_of(body: dict) -> str:
    """Which of the story's human turns the call carries: the marker said last."""
    text = json.dumps(body)
    return max(MARKERS, key=lambda name: text.rfind(MARKERS[name].replace('"', '\\"')))


def block_of(body: dict) -> str:
    text = json.dumps(body)
    start = text.rfind("<memproxy-memory>")
    return "" if start < 0 else text[start:text.find("</memproxy-memory>", start)]


def run(src: Path, min_score: float | None) -> dict:
    fake = ThreadedServer(agent_upstream.create_app()).start()
    counts = {name: {"calls": 0, "injected": 0, "relevant": 0, "lines": 0, "off_topic_lines": 0}
              for name in MARKERS}
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = _daemon(src, Path(tmp), fake.url, min_score)
        try:
            seeded = urllib.request.Request(url + "/v1/memories", method="POST", data=json.dumps(
                {"user_id": "report", "memories": [{"content": c} for c in SEEDS]}).encode(),
                headers={"content-type": "application/json"})
            urllib.request.urlopen(seeded).read()
            for story in STORIES:
                for line in (ROOT / "tests/fixtures/agents" / f"{story}.jsonl").open():
                    call = json.loads(line)
                    path = call["path"] + ("?alt=sse" if "streamGenerate" in call["path"] else "")
                    status = report.post(url + path, call["json"]).get("x-memproxy-memory")
                    sent = fake.call(lambda: fake.app[agent_upstream.RECORDS][-1]["json"])
                    if status not in ("injected", "none"):
                        continue
                    turn = turn_of(call["json"])
                    counts[turn]["calls"] += 1
                    if status == "injected":
                        counts[turn]["injected"] += 1
                        lines = [line for line in block_of(sent).split("\\n- [")[1:]]
                        on_topic = [any(w in line for w in TOPIC[turn]) for line in lines]
                        counts[turn]["relevant"] += any(on_topic)
                        counts[turn]["lines"] += len(lines)
                        counts[turn]["off_topic_lines"] += on_topic.count(False)
                report.memories(url)      # the outbox delivers before the next story
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:    # a loaded machine: do not leave it behind
                proc.kill()
                proc.wait()
    fake.stop()
    injected = sum(c["injected"] for c in counts.values())
    relevant = sum(c["relevant"] for c in counts.values())
    return {"turns": counts, "injected": injected, "irrelevant": injected - relevant,
            "lines": sum(c["lines"] for c in counts.values()),
            "off_topic_lines": sum(c["off_topic_lines"] for c in counts.values()),
            "questions_answered": counts["question"]["relevant"],
            "questions": counts["question"]["calls"]}


def _daemon(src: Path, tmp: Path, fake_url: str, min_score: float | None):
    """A daemon of ``src`` with memory on and every story's model on the fake."""
    port = report.free_port()
    memory = f"min_score = {min_score}\n" if min_score is not None else ""
    config = tmp / "memproxyd.toml"
    config.write_text(
        f'[server]\nport = {port}\nstate_dir = "{tmp}/state"\nlog_format = "text"\n'
        f'[memory]\nbackend = "sqlite"\nrecall_timeout_ms = 2000\n{memory}'
        '[[model_list]]\nmodel_name = "claude-*"\n[model_list.litellm_params]\n'
        f'model = "anthropic/*"\napi_base = "{fake_url}"\napi_key = "sk-fake"\n'
        '[[model_list]]\nmodel_name = "gpt-5-codex"\n[model_list.litellm_params]\n'
        f'model = "openai/gpt-5-codex"\napi_base = "{fake_url}/v1"\napi_key = "sk-fake"\n'
        + MODELS.format(url=fake_url))
    return report.boot_daemon(src, config, port)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT)
    parser.add_argument("--min-score", type=float, help="[memory] min_score (default: the src's)")
    args = parser.parse_args()
    print(json.dumps(run(args.src.resolve(), args.min_score)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
