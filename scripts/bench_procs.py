"""The processes ``bench.py`` measures: the fake upstream, memproxyd, the LiteLLM proxy.

Each is a subprocess on a free loopback port; ``start`` returns once it answers its health
URL, with the seconds that took (spawn to ready).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import attrs

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
PEER_KEY = "sk-bench-master"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@attrs.define
class Proc:
    name: str
    url: str
    popen: subprocess.Popen
    ready_s: float = 0.0

    def rss_mb(self) -> float:
        """Resident memory of the process and its children (the peer forks workers)."""
        return sum(_rss_kb(pid) for pid in _tree(self.popen.pid)) / 1024

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start(name: str, argv: list[str], url: str, health: str, timeout: float = 120.0,
          log: Path | None = None, env: dict | None = None) -> Proc:
    out = open(log, "ab") if log else subprocess.DEVNULL
    spawned = time.perf_counter()
    popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})})
    proc = Proc(name, url, popen)
    while time.perf_counter() - spawned < timeout:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {popen.returncode} before it was ready"
                               + (f" (see {log})" if log else ""))
        try:
            urllib.request.urlopen(url + health, timeout=2).read()
            proc.ready_s = time.perf_counter() - spawned
            return proc
        except OSError:
            time.sleep(0.005)
    proc.stop()
    raise RuntimeError(f"{name} did not answer {health} within {timeout:.0f} s")


def start_fake() -> Proc:
    port = free_port()
    return start("fake upstream", [sys.executable, str(SCRIPTS / "bench_fake.py"), str(port)],
                 f"http://127.0.0.1:{port}", "/health")


def memproxyd_config(directory: Path, upstream: str) -> Path:
    port = free_port()
    path = directory / "memproxyd.toml"
    path.write_text(
        f'[server]\nport = {port}\nstate_dir = "{directory / "state"}"\n'
        'log_level = "WARNING"\n[memory]\nbackend = "sqlite"\n'
        '[[model_list]]\nmodel_name = "bench"\n[model_list.litellm_params]\n'
        f'model = "openai/m"\napi_base = "{upstream}/v1"\napi_key = "sk-bench"\n'
        '[[model_list]]\nmodel_name = "claude-bench"\n[model_list.litellm_params]\n'
        f'model = "anthropic/m"\napi_base = "{upstream}"\napi_key = "sk-bench"\n')
    return path


def start_memproxyd(config: Path, log: Path) -> Proc:
    port = int(config.read_text().split("port = ")[1].split("\n")[0])
    return start("memproxyd", [sys.executable, "-m", "memproxyd", "--config", str(config)],
                 f"http://127.0.0.1:{port}", "/health", log=log,
                 env={"PYTHONDONTWRITEBYTECODE": "1"})


def peer_config(directory: Path, upstream: str) -> Path:
    """LiteLLM's YAML config (JSON is YAML): the same two models on the same fake upstream."""
    models = [{"model_name": "bench", "litellm_params": {
                  "model": "openai/m", "api_base": f"{upstream}/v1", "api_key": "sk-bench"}},
              {"model_name": "claude-bench", "litellm_params": {
                  "model": "anthropic/m", "api_base": upstream, "api_key": "sk-bench"}}]
    path = directory / "litellm.yaml"
    path.write_text(json.dumps({"model_list": models,
                                "general_settings": {"master_key": PEER_KEY}}))
    return path


def start_peer(config: Path, log: Path) -> Proc | str:
    """The LiteLLM proxy, or the reason it could not be installed or started."""
    script = str(SCRIPTS / "bench_peer.sh")
    installed = subprocess.run([script, "install"], stdout=subprocess.DEVNULL,
                               stderr=open(log, "ab"))
    if installed.returncode != 0:
        return f"peer not installed (scripts/bench_peer.sh install failed, see {log})"
    port = free_port()
    try:
        return start("LiteLLM proxy", [script, "run", str(config), str(port)],
                     f"http://127.0.0.1:{port}", "/health/liveliness", timeout=180, log=log)
    except RuntimeError as exc:
        return str(exc)


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
