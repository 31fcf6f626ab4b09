"""How fast ``memproxyctl memory import-history`` imports a long history.

    PYTHONPATH=. .venv/bin/python scripts/bench_history.py [--sessions 100] [--turns 100]
        [--client claude-code codex]

Makes a history of ``sessions x turns`` turns per client from the transcripts recorded from
the real CLIs (``tests/fixtures/history/``, ``scripts/record_history.py``): the recorded
turns (a plain one and an agent loop with a tool call) repeated, each copy with ids of its
own, its own time and its own words, in files laid out as the CLI lays them out. Then, per
client, it times

* reading: every transcript through the readers (``memory/history/``), in this process;
* the first import: ``memproxyctl memory import-history`` (a process of its own, as a user
  runs it) into a real daemon on the embedded SQLite store, which ends with every turn stored;
* the second import of the same files, which stores nothing (each turn is there already),

and checks that the store holds exactly one memory per kept turn.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_procs as procs  # noqa: E402
from memproxyd.memory.history import Rules, find_sessions, read_session  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "history"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STAMP = re.compile(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z")
WORDS = ("deploy", "cluster", "cron", "schema", "index", "retry", "budget", "queue", "cache",
         "token", "review", "branch", "release", "alert", "backup", "quota")


def _template(client: str) -> tuple[list[str], list[list[str]], list[str]]:
    """(the recorded session's lines before its first turn, each turn's lines, each turn's
    human words) of the recorded ``alpha-repo`` session."""
    path = next(p for p in find_sessions(client, FIXTURES / client)
                if "alpha-repo" in read_session(client, p, Rules()).cwd)
    lines = path.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if _starts_turn(client, json.loads(line))]
    turns = [lines[a:b] for a, b in zip(starts, [*starts[1:], len(lines)])]
    humans = []
    for turn in turns:
        record = next(json.loads(x) for x in turn if _human(client, json.loads(x)))
        humans.append(_human(client, record))
    return lines[:starts[0]], turns, humans


def _starts_turn(client: str, record: dict) -> bool:
    if client == "codex":
        return (record.get("payload") or {}).get("type") == "task_started"
    return bool(_human(client, record))


def _human(client: str, record: dict) -> str:
    if client == "codex":
        payload = record.get("payload") or {}
        text = payload.get("content", [{}])[0].get("text", "") if payload.get(
            "role") == "user" else ""
        return text if text.startswith(("Remember", "Please")) else ""
    message = record.get("message") or {}
    content = message.get("content") if record.get("type") == "user" else None
    return content if isinstance(content, str) else ""


def make_history(client: str, target: Path, sessions: int, turns: int, start: float) -> None:
    head, recorded, humans = _template(client)
    at = start
    for s in range(sessions):
        session = str(uuid.uuid4())
        ids = {UUID.findall(" ".join(head + recorded[0]))[0]: session}
        out = [_renew(line, ids, {}, at, "") for line in head]
        for t in range(turns):
            i = t % len(recorded)
            words = " ".join(WORDS[(s * 7 + t * 3 + k) % len(WORDS)] for k in range(4))
            human = f"{humans[i]} Note {s}.{t}: {words}."
            fresh: dict[str, str] = {}
            out += [_renew(line, ids, fresh, at, human, humans[i]) for line in recorded[i]]
            at += 37.0
        day = time.strftime("%Y/%m/%d", time.gmtime(at))
        if client == "codex":
            stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(at))
            path = target / day / f"rollout-{stamp}-{session}.jsonl"
        else:
            path = target / "-home-dev-alpha-repo" / f"{session}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(out) + "\n")


def _renew(line: str, ids: dict, fresh: dict, at: float, human: str, old: str = "") -> str:
    """``line`` with the session's id, new ids for the turn's own, the turn's time and
    words."""
    def new_id(match: re.Match) -> str:
        value = match.group(0)
        if value in ids:
            return ids[value]
        return fresh.setdefault(value, str(uuid.uuid4()))
    if old:
        line = line.replace(json.dumps(old)[1:-1], json.dumps(human)[1:-1])
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"
    return STAMP.sub(stamp, UUID.sub(new_id, line))


def _count(url: str, user: str) -> int:
    total, cursor = 0, None
    while True:
        query = f"?user_id={user}&limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = json.loads(urllib.request.urlopen(url + "/v1/memories" + query).read())
        total += len(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return total


def _import(config: Path, user: str, client: str, directory: Path) -> tuple[float, str]:
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "memproxyd.ctl", "--config", str(config),
                          "memory", "import-history", user, "--from", client, str(directory)],
                         capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise SystemExit(f"import-history failed: {run.stderr[-800:]}")
    return time.perf_counter() - started, run.stdout


def bench(client: str, tmp: Path, config: Path, url: str, sessions: int, turns: int) -> None:
    directory = tmp / client
    make_history(client, directory, sessions, turns, time.time() - 90 * 86400)
    started = time.perf_counter()
    read = [read_session(client, p, Rules()) for p in find_sessions(client, directory)]
    reading = time.perf_counter() - started
    kept = sum(1 for s in read for t in s.turns if not t.skipped)
    size = sum(p.stat().st_size for p in directory.rglob("*.jsonl")) / 1e6
    first, out = _import(config, client, client, directory)
    second, again = _import(config, client, client, directory)
    stored = _count(url, client)
    print(f"{client}: {sessions} sessions x {turns} turns ({size:.1f} MB of transcripts), "
          f"{kept} turns kept")
    print(f"  reading + extraction, in process: {reading:6.2f} s  "
          f"{kept / reading:8.0f} turns/s")
    print(f"  first import (memproxyctl -> daemon, SQLite): {first:6.2f} s  "
          f"{kept / first:8.0f} turns/s")
    print(f"  second import (nothing new):      {second:6.2f} s  {kept / second:8.0f} turns/s")
    print(f"  stored: {stored} memories; second run said: "
          f"{[x for x in again.splitlines() if 'already' in x]}")
    if stored != kept:
        raise SystemExit(f"expected {kept} memories, found {stored}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--client", nargs="*", default=["claude-code", "codex"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        port = procs.free_port()
        config = tmp / "memproxyd.toml"
        config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
                          f'state_dir = "{tmp / "state"}"\n[memory]\nbackend = "sqlite"\n')
        url = f"http://127.0.0.1:{port}"
        daemon = procs.start("memproxyd", [sys.executable, "-m", "memproxyd", "--config",
                                           str(config)], url, "/health", log=tmp / "daemon.log")
        try:
            for client in args.client:
                bench(client, tmp, config, url, args.sessions, args.turns)
        finally:
            daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
