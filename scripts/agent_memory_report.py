"""What memory makes of real agent traffic: replays the recorded CLI requests
(``tests/fixtures/agents/``) through a memproxyd daemon to the loopback fake model and reports
the stored memories' sizes, the memory block injected into the last session's question, and
whether the cache-relevant prefix (``tools`` + ``system``, or ``instructions``) stays
byte-identical across the calls of one turn.

    .venv/bin/python scripts/agent_memory_report.py [--src DIR] [--client claude-code|codex]

``--src`` runs the daemon from another checkout (e.g. an older commit in a git worktree), to
compare before and after on the same traffic.
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes import agent_upstream  # noqa: E402
from tests.fakes.threaded import ThreadedServer  # noqa: E402

PATHS = {"claude-code": "/v1/messages", "codex": "/v1/responses"}
TURN_CALLS = {"claude-code": (2, 3), "codex": (1, 2)}    # one human turn and its tool loop


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_daemon(src: Path, tmp: Path, fake_url: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = tmp / "memproxyd.toml"
    config.write_text(
        f'[server]\nport = {port}\nstate_dir = "{tmp}/state"\nlog_format = "text"\n'
        '[memory]\nbackend = "sqlite"\nrecall_timeout_ms = 2000\n'
        '[[model_list]]\nmodel_name = "claude-*"\n[model_list.litellm_params]\n'
        f'model = "anthropic/*"\napi_base = "{fake_url}"\napi_key = "sk-fake"\n'
        '[[model_list]]\nmodel_name = "gpt-5-codex"\n[model_list.litellm_params]\n'
        f'model = "openai/gpt-5-codex"\napi_base = "{fake_url}/v1"\napi_key = "sk-fake"\n')
    return boot_daemon(src, config, port)


def boot_daemon(src: Path, config: Path, port: int) -> tuple[subprocess.Popen, str]:
    """The daemon of the checkout ``src`` on ``config``, once its /health answers."""
    # the editable install's import hook would win over PYTHONPATH: drop it, run ``src``'s
    boot = ("import runpy, sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' "
            f"not in repr(f)]; sys.path.insert(0, {str(src)!r}); "
            "runpy.run_module('memproxyd', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", boot, "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.05)
    raise SystemExit("daemon did not start")


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={
        "content-type": "application/json", "x-memory-user-id": "report"})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        return {k.lower(): v for k, v in response.headers.items()}


def memories(url: str) -> list[str]:
    time.sleep(1.0)   # the outbox worker delivers in the background
    page = urllib.request.urlopen(f"{url}/v1/memories?user_id=report&limit=100").read()
    return [m["content"] for m in json.loads(page)["data"]]


def prefix(body: dict) -> str:
    if "instructions" in body or "input" in body:
        return json.dumps([body.get("tools"), body.get("instructions")])
    return json.dumps([body.get("tools"), body.get("system")])


def block_of(body: dict) -> str:
    text = json.dumps(body.get("system") or body.get("instructions") or "")
    start = text.find("<memproxy-memory>")
    return "" if start < 0 else text[start:text.find("</memproxy-memory>") + 18]


def report(client: str, src: Path) -> dict:
    calls = [json.loads(line)["json"]
             for line in (ROOT / "tests/fixtures/agents" / f"{client}.jsonl").open()]
    fake = ThreadedServer(agent_upstream.create_app()).start()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_daemon(src, Path(tmp), fake.url)
        try:
            statuses = [post(url + PATHS[client], body).get("x-memproxy-memory")
                        for body in calls]
            stored = memories(url)
        finally:
            proc.terminate()
            proc.wait(10)
    sent = fake.call(lambda: [r["json"] for r in fake.app[agent_upstream.RECORDS]])
    fake.stop()
    a, b = TURN_CALLS[client]
    return {"client": client, "requests": len(calls), "memory_status": statuses,
            "stored": len(stored), "stored_chars": [len(m) for m in stored],
            "scaffolding_in_store": sum("system-reminder" in m or "environment_context" in m
                                        for m in stored),
            "last_block_chars": len(block_of(sent[-1])),
            "last_block_has_fact": "BLUEFIN" in block_of(sent[-1]),
            "turn_prefix_identical": prefix(sent[a]) == prefix(sent[b]),
            "turn_prefix_bytes": len(prefix(sent[a]))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT)
    parser.add_argument("--client", choices=sorted(PATHS), action="append")
    args = parser.parse_args()
    for client in args.client or sorted(PATHS):
        print(json.dumps(report(client, args.src.resolve())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
