"""Record what the real Claude Code, Codex, Gemini and opencode CLIs send, as test fixtures.

Installs the pinned CLIs (``tests/agents.py``), points them straight at the loopback fake model
(``tests/fakes/agent_upstream.py``, no memproxyd in between) and runs the same short story
with each: a first session that states a fact, the same session continued with a request that
makes the model use a tool (an agent loop: two calls for one human turn), and a second session
that asks about the fact. Every request is written, scrubbed of this machine's paths and ids,
to ``tests/fixtures/agents/<client>.jsonl``, one line per request in the order sent.

    .venv/bin/python scripts/record_agents.py [--out tests/fixtures/agents]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import agents  # noqa: E402
from tests.fakes import agent_upstream  # noqa: E402
from tests.fakes.threaded import ThreadedServer  # noqa: E402

STORY = ("Remember this: our deploy target codename is BLUEFIN.",
         "Please read the notes in {notes} and tell me the indentation rule.",
         "What is our deploy target codename?")
IDS = re.compile(r'(device_id\\?":\\?"|installation_id\\?":\\?")[0-9a-f-]+')


# fixture name → (client, Claude Code's --model; None: the CLI's default model). Claude
# Code's files are named by version: ``claude-code.jsonl`` and
# ``claude-code-default-model.jsonl`` are 2.1.197's (the pin until 2026-12-04), kept as the
# older CLI's traffic; recording writes the pinned version's.
CLAUDE = agents.CLAUDE_CODE.rsplit("@", 1)[1]
FIXTURES = {f"claude-code-{CLAUDE}": ("claude-code", "claude-sonnet-4-5"),
            f"claude-code-{CLAUDE}-default-model": ("claude-code", None),
            "codex": ("codex", None),
            "gemini-cli": ("gemini-cli", None),
            "opencode": ("opencode", None),
            "continue-cli": ("continue-cli", None)}
NOTES = {"claude-code": "CLAUDE.md", "codex": "AGENTS.md", "gemini-cli": "GEMINI.md",
         "opencode": "AGENTS.md", "continue-cli": "AGENTS.md"}


def record(name: str, out: Path) -> int:
    client, model = FIXTURES[name]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        workdir = root / "project"
        workdir.mkdir()
        notes = NOTES[client]
        (workdir / notes).write_text("# Project notes\nUse tabs for indentation.\n")
        server = ThreadedServer(agent_upstream.create_app()).start()
        try:
            bin_dir = agents.install_clis(commands=("claude", "codex", "gemini", "opencode", "cn"))
            _story(client, bin_dir, server.url, workdir, notes, model)
            records = server.call(lambda: list(server.app[agent_upstream.RECORDS]))
        finally:
            server.stop()
        paths = {str(workdir): "/home/dev/project", str(root): "/home/dev",
                 str(workdir).replace("/", "-"): "-home-dev-project", "/root/": "/home/dev/"}
        lines = [IDS.sub(lambda m: m.group(1) + "0" * 16, json.dumps(agents.scrub(r, paths)))
                 for r in records]
    (out / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return len(lines)


def _story(client: str, bin_dir: Path, url: str, workdir: Path, notes: str,
           model: str | None) -> None:
    first, second, third = STORY
    second = second.format(notes=notes)
    if client == "claude-code":
        runs = [agents.run_claude(bin_dir, url, workdir, first, model=model),
                agents.run_claude(bin_dir, url, workdir, second, resume=True, model=model),
                agents.run_claude(bin_dir, url, workdir, third, model=model)]
    elif client == "gemini-cli":
        home = agents.write_gemini_home(workdir.parent / "gemini-home")
        runs = [agents.run_gemini(bin_dir, url, workdir, home, first),
                agents.run_gemini(bin_dir, url, workdir, home, second, resume=True),
                agents.run_gemini(bin_dir, url, workdir, home, third)]
    elif client == "continue-cli":
        config = workdir.parent / "continue.yaml"
        config.write_text("name: record\nversion: 1.0.0\nschema: v1\nmodels:\n"
                          "  - name: fake\n    provider: openai\n    model: fake-chat\n"
                          f"    apiBase: {url}/v1\n    apiKey: sk-test-fake\n"
                          "    roles: [chat, edit, apply]\n")
        runs = [agents.run_cn(bin_dir, config, workdir, first),
                agents.run_cn(bin_dir, config, workdir, second, resume=True),
                agents.run_cn(bin_dir, config, workdir, third)]
    elif client == "opencode":
        agents.write_opencode_config(workdir, f"{url}/v1")
        runs = [agents.run_opencode(bin_dir, workdir, first),
                agents.run_opencode(bin_dir, workdir, second, resume=True),
                agents.run_opencode(bin_dir, workdir, third)]
    else:
        home = agents.write_codex_home(workdir.parent / "codex-home", f"{url}/v1")
        runs = [agents.run_codex(bin_dir, home, workdir, first),
                agents.run_codex(bin_dir, home, workdir, second, resume=True),
                agents.run_codex(bin_dir, home, workdir, third)]
    for run in runs:
        if run.returncode != 0:
            raise SystemExit(f"{client} failed ({run.returncode}): {run.stderr[-800:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/agents"))
    parser.add_argument("fixtures", nargs="*", default=list(FIXTURES),
                        help=f"which to record (default: all of {', '.join(FIXTURES)})")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.fixtures:
        print(f"{name}: {record(name, args.out)} requests recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
