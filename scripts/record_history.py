"""Record the transcripts the real Claude Code, Codex and Gemini CLIs keep, as test fixtures
for ``memproxyctl memory import-history`` (``tests/fixtures/history/``).

Installs the pinned CLIs (``tests/agents.py``) and runs them, each with its own HOME /
CODEX_HOME in a temporary directory, against the loopback fake model
(``tests/fakes/agent_upstream.py``; no memproxyd in between: the transcripts are what the CLI
writes, whatever it talks to). The story, in two working directories:

* ``alpha-repo``: a session stating a fact with a secret in it, continued (``--continue`` /
  ``resume --last`` / ``--resume latest``) with a request that makes the model use a tool (an
  agent loop);
* ``beta-repo``: a session stating another fact.

The files are copied, scrubbed of this machine's paths (``/home/dev/alpha-repo`` ...) and
with long strings the readers never look at (instructions, skill listings) cut to 200
characters, to ``tests/fixtures/history/claude-code/<cwd-slug>/<session>.jsonl`` and
``tests/fixtures/history/codex/YYYY/MM/DD/rollout-*.jsonl`` and
``tests/fixtures/history/gemini-cli/<project>/chats/session-*.jsonl`` (with the
``.project_root`` file that names the working directory).

    PYTHONPATH=. .venv/bin/python scripts/record_history.py [--out tests/fixtures/history]

``tests/fixtures/history/claude-code/`` is Claude Code 2.1.197's; ``claude-code-2.1.332/`` is
2.1.332's (recorded with ``--out`` elsewhere, its ``claude-code/`` moved there), both kept:
an import reads whatever version wrote the transcripts.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import agents  # noqa: E402
from tests.fakes import agent_upstream  # noqa: E402
from tests.fakes.threaded import ThreadedServer  # noqa: E402

SECRET = "sk-ant-api03-HISTORYfixture0123456789abcdef"
STORY = {"alpha-repo": (f"Remember this: the staging deploy key is {SECRET}, never commit it.",
                        "Please read the notes in {notes} and tell me the indentation rule."),
         "beta-repo": ("Remember this: our deploy target codename is BLUEFIN.",)}
NOTES = {"claude-code": "CLAUDE.md", "codex": "AGENTS.md", "gemini-cli": "GEMINI.md"}
CLIENTS = ("claude-code", "codex", "gemini-cli")
LONG = 2000          # a string longer than this is cut to its first 200 characters


def run_story(client: str, url: str, root: Path) -> Path:
    """Run the story with ``client`` against ``url`` (the model's base URL) in working
    directories under ``root``; the directory that holds its transcripts."""
    home = root / f"{client}-home"
    codex_home = agents.write_codex_home(home / ".codex", f"{url}/v1") if client == "codex" \
        else None
    if client == "gemini-cli":
        agents.write_gemini_home(home)
    bin_dir = agents.install_clis(commands=("claude", "codex", "gemini"))
    for name, prompts in STORY.items():
        workdir = root / name
        workdir.mkdir(exist_ok=True)
        notes = NOTES[client]
        (workdir / notes).write_text("# Project notes\nUse tabs for indentation.\n")
        for i, prompt in enumerate(prompts):
            prompt = prompt.format(notes=notes)
            if client == "codex":
                run = agents.run_codex(bin_dir, codex_home, workdir, prompt, resume=i > 0)
            elif client == "gemini-cli":
                run = agents.run_gemini(bin_dir, url, workdir, home, prompt, resume=i > 0)
            else:
                run = agents.run_claude(bin_dir, url, workdir, prompt, resume=i > 0, home=home)
            if run.returncode != 0:
                raise RuntimeError(f"{client} failed ({run.returncode}): {run.stderr[-800:]}")
    return {"codex": home / ".codex" / "sessions", "gemini-cli": home / ".gemini" / "tmp",
            "claude-code": home / ".claude" / "projects"}[client]


def _cut(value):
    if isinstance(value, str):
        return value[:200] + "…" if len(value) > LONG else value
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v) for v in value]
    return value


def scrub(text: str, root: Path) -> str:
    """One transcript without this machine's paths, long strings cut."""
    paths = {str(root): "/home/dev", str(root).replace("/", "-"): "-home-dev"}
    lines = []
    for line in text.splitlines():
        if line.startswith(("{", "[")):
            line = json.dumps(_cut(json.loads(line)), ensure_ascii=False)
        for real, fake in paths.items():
            line = line.replace(real, fake)
        lines.append(line)
    return "\n".join(lines) + "\n"


def record(out: Path) -> list[Path]:
    written = []
    server = ThreadedServer(agent_upstream.create_app()).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp).resolve()
            for client in CLIENTS:
                found = run_story(client, server.url, root)
                target = out / client
                shutil.rmtree(target, ignore_errors=True)
                for path in sorted([*found.rglob("*.jsonl"), *found.rglob(".project_root")]):
                    relative = Path(str(path.relative_to(found)).replace(
                        str(root).replace("/", "-"), "-home-dev"))
                    (target / relative).parent.mkdir(parents=True, exist_ok=True)
                    (target / relative).write_text(scrub(path.read_text(), root))
                    written.append(target / relative)
    finally:
        server.stop()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/history"))
    args = parser.parse_args()
    for path in record(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
