"""``memproxyctl memory import-history`` end to end: the real daemon (embedded SQLite), the
command in process, and transcripts written by the real Claude Code and Codex CLIs, either
just now (through the daemon to the fake model) or recorded (``tests/fixtures/history/``,
``scripts/record_history.py``). Also ``created_at`` and ``key`` on ``POST /v1/memories`` and
``memory import``, which the command stands on."""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from memproxyd.ctl import cli
from memproxyd.memory.history import Rules, parse_time, read_session
from tests import agents
from tests.conftest import clis_or_skip, free_port, write_config
from tests.memory.test_agent_cli_e2e import agent_models

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "history"
SECRET = "sk-ant-api03-HISTORYfixture0123456789abcdef"     # scripts/record_history.py


@pytest.fixture
def daemon(tmp_path, openai_fake, agent_fake, start_daemon):
    """Memory on, every agent model on the fake; no gateway key (loopback)."""
    gemini = (f'[[model_list]]\nmodel_name = "gemini-*"\n[model_list.litellm_params]\n'
              f'model = "gemini/*"\napi_base = "{agent_fake.url}"\napi_key = "sk-up"\n')
    return start_daemon(write_config(tmp_path, openai_fake.url,
                                     extra=agent_models(agent_fake.url) + gemini,
                                     memory='backend = "sqlite"\nrecall_timeout_ms = 2000'))


@pytest.fixture
def ctl(daemon, capsys):
    def run(*argv: str) -> tuple[int, str]:
        code = cli.main(["--config", str(daemon.config), "memory", *argv])
        out, err = capsys.readouterr()
        return code, out + err
    return run


def call(daemon, method: str, path: str, body=None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(daemon.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def memories(daemon, user: str) -> list[dict]:
    status, page = call(daemon, "GET", f"/v1/memories?user_id={user}&limit=1000")
    assert status == 200, page
    return page["data"]


def human_times(path: Path) -> dict[str, str]:
    """The human's words → the time the CLI first wrote them, straight from a transcript."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        message = record.get("message") or {}
        payload = record.get("payload") or {}
        if record.get("type") == "user" and isinstance(message.get("content"), str):
            text = message["content"]                                    # Claude Code
        elif record.get("type") == "response_item" and payload.get("role") == "user":
            text = payload["content"][0]["text"]                         # Codex
        elif record.get("type") == "user" and isinstance(record.get("content"), list):
            text = record["content"][0].get("text", "")                  # Gemini CLI
        else:
            continue
        if text.startswith(("Remember", "Please", "What")):
            out.setdefault(text, record["timestamp"])
    return out


def iso_second(timestamp: str) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(parse_time(timestamp))))


# -- the real CLIs, through the daemon ------------------------------------------------------

@pytest.mark.e2e   # real agent CLIs (npm): make test-e2e
def test_real_cli_sessions_are_imported_once_at_their_own_time_with_secrets_redacted(
        daemon, ctl, tmp_path):
    bin_dir = clis_or_skip()
    workdir = tmp_path / "repo"
    workdir.mkdir()
    (workdir / "CLAUDE.md").write_text("# notes\nUse tabs for indentation.\n")
    (workdir / "AGENTS.md").write_text("# notes\nUse tabs for indentation.\n")
    fact = f"Remember this: the staging deploy key is {SECRET}, never commit it."
    notes = "Please read the notes in {} and tell me the indentation rule."
    claude_home = tmp_path / "claude-home"
    codex_home = agents.write_codex_home(tmp_path / "codex-home", f"{daemon.url}/v1")
    for run in (agents.run_claude(bin_dir, daemon.url, workdir, fact, home=claude_home),
                agents.run_claude(bin_dir, daemon.url, workdir, notes.format("CLAUDE.md"),
                                  resume=True, home=claude_home),
                agents.run_codex(bin_dir, codex_home, workdir, fact),
                agents.run_codex(bin_dir, codex_home, workdir, notes.format("AGENTS.md"),
                                 resume=True)):
        assert run.returncode == 0, run.stderr[-2000:]

    sources = (("claude-code", claude_home / ".claude" / "projects"),
               ("codex", codex_home / "sessions"))
    for client, directory in sources:
        code, out = ctl("import-history", "alpha", "--from", client, str(directory))
        assert code == 0, out
        assert "sessions read: 1" in out and "turns stored: 2 (alpha: 2)" in out
    stored = memories(daemon, "alpha")
    assert len(stored) == 4
    assert not any(SECRET in m["content"] for m in stored)
    assert sum("deploy key is [REDACTED], never commit" in m["content"] for m in stored) == 2
    # the human's words, a line per tool call, the final answer; no tool output, no AGENTS.md
    loops = sorted(m["content"] for m in stored if "indentation rule" in m["content"])
    assert loops[0].startswith("User: Please read the notes in AGENTS.md and tell me")
    assert "\nAssistant: [exec_command: " in loops[0] and "# notes" not in loops[0]
    assert "\nAssistant: [Read: " in loops[1] and loops[1].endswith("use tabs. Done.")
    # each turn at the time the CLI wrote the human's words
    times: dict[str, list[str]] = {}     # a second may hold two turns (of two sessions)
    for path in [*sources[0][1].rglob("*.jsonl"), *sources[1][1].rglob("rollout-*.jsonl")]:
        for words, t in human_times(path).items():
            times.setdefault(iso_second(t), []).append(words)
    for memory in stored:
        assert memory["created_at"] in times
        assert any(memory["content"].startswith("User: " + words.replace(SECRET, "[REDACTED]"))
                   for words in times[memory["created_at"]]), memory
        assert memory["metadata"]["source"] == "history"

    # twice: nothing doubled, and the summary says why
    for client, directory in sources:
        code, out = ctl("import-history", "alpha", "--from", client, str(directory))
        assert code == 0 and "turns stored: 0" in out and "already imported: 2" in out, out
    assert len(memories(daemon, "alpha")) == 4

    # the daemon remembered these sessions live for "default" (no project named): importing
    # them there stores nothing twice either
    # (a live answer that only repeats its memory block is not remembered: echo.py; the
    # fake model's "From memory: ..." answers do, so 3 or 4 were)
    live = memories(daemon, "default")
    assert 3 <= len(live) <= 4
    for client, directory in sources:
        code, out = ctl("import-history", "default", "--from", client, str(directory))
        assert code == 0 and "already remembered live: " in out, out
    assert len(memories(daemon, "default")) == 4      # each turn once: live or imported


@pytest.mark.e2e   # real agent CLIs (npm): make test-e2e
def test_real_gemini_cli_sessions_are_imported_once_at_their_own_time(daemon, ctl, tmp_path):
    bin_dir = clis_or_skip(("gemini",))
    workdir = tmp_path / "repo"
    workdir.mkdir()
    (workdir / "GEMINI.md").write_text("# notes\nUse tabs for indentation.\n")
    home = agents.write_gemini_home(tmp_path / "gemini-home")
    fact = f"Remember this: the staging deploy key is {SECRET}, never commit it."
    for i, prompt in enumerate((fact, "Please read the notes in GEMINI.md and tell me the "
                                      "indentation rule.")):
        run = agents.run_gemini(bin_dir, daemon.url, workdir, home, prompt, resume=i > 0)
        assert run.returncode == 0, run.stderr[-2000:]
    chats = home / ".gemini" / "tmp"
    for _ in range(2):
        code, out = ctl("import-history", "alpha", "--from", "gemini-cli", str(chats),
                        "--map", f"{workdir}=alpha")
        # (a resume in another minute starts a second file for the same session)
        assert code == 0 and "sessions read: 1" in out and "no --map named" not in out, out
    assert "already imported: 2" in out
    stored = memories(daemon, "alpha")
    assert len(stored) == 2 and not any(SECRET in m["content"] for m in stored)
    [path] = chats.rglob("session-*.jsonl")
    times = {iso_second(t): words for words, t in human_times(path).items()}
    for memory in stored:
        assert memory["content"].startswith("User: " + times[memory["created_at"]]
                                            .replace(SECRET, "[REDACTED]"))
    assert "[read_file: " in next(m["content"] for m in stored if "GEMINI.md" in m["content"])


# -- recorded transcripts ------------------------------------------------------------------

@pytest.fixture
def transcripts(tmp_path) -> Path:
    """A copy of the recorded transcripts (their files written just now)."""
    target = tmp_path / "history"
    shutil.copytree(FIXTURES, target)
    return target


CLIENTS = ["claude-code", "codex", "gemini-cli"]


@pytest.mark.parametrize("client", CLIENTS)
def test_map_sends_each_repository_to_its_project_and_the_rest_to_the_default(
        daemon, ctl, transcripts, client):
    code, out = ctl("import-history", "alpha", "--from", client, str(transcripts / client),
                    "--map", "/home/dev/beta-repo=beta")
    assert code == 0, out
    assert "turns stored: 3 (alpha: 2, beta: 1)" in out
    assert "no --map named (imported into the default project): /home/dev/alpha-repo" in out
    [beta] = memories(daemon, "beta")
    assert "BLUEFIN" in beta["content"] and beta["metadata"]["cwd"] == "/home/dev/beta-repo"
    assert not any("BLUEFIN" in m["content"] for m in memories(daemon, "alpha"))


@pytest.mark.parametrize("client", CLIENTS)
def test_since_keeps_only_the_later_turns(daemon, ctl, transcripts, client):
    alpha = next(p for p in (transcripts / client).rglob("*.jsonl") if "deploy key" in
                 p.read_text())
    [_, second] = human_times(alpha).values()
    code, out = ctl("import-history", "alpha", "--from", client, str(transcripts / client),
                    "--since", second)
    assert code == 0, out
    assert "turns stored: 2 (alpha: 2)" in out and "older than --since: 1" in out
    assert not any("deploy key" in m["content"] for m in memories(daemon, "alpha"))
    assert all(m["created_at"] >= iso_second(second) for m in memories(daemon, "alpha"))


def test_since_a_span_back_from_now_leaves_out_files_written_before_it(daemon, ctl,
                                                                       transcripts):
    for path in transcripts.rglob("*.jsonl"):
        os.utime(path, (1_600_000_000, 1_600_000_000))        # written in 2020
    code, out = ctl("import-history", "alpha", "--from", "codex", str(transcripts / "codex"),
                    "--since", "30d")
    assert code == 0 and "sessions read: 0 (2 more files not opened" in out, out
    assert memories(daemon, "alpha") == []


def test_dry_run_prints_what_it_would_store_and_stores_nothing(daemon, ctl, transcripts):
    code, out = ctl("import-history", "alpha", "--from", "claude-code",
                    str(transcripts / "claude-code"), "--dry-run")
    assert code == 0, out
    heads = [line for line in out.splitlines() if line.startswith("alpha  ")]
    assert len(heads) == 3 and "turns that would be stored: 3 (alpha: 3)" in out
    # each memory whole, as it would be stored
    expected = [t.content for p in sorted((transcripts / "claude-code").rglob("*.jsonl"))
                for t in read_session("claude-code", p, Rules()).turns]
    for content in expected:
        assert "\n    " + content.replace("\n", "\n    ") + "\n" in out
    assert any("deploy key is [REDACTED]" in c for c in expected) and SECRET not in out
    assert memories(daemon, "alpha") == []


def test_dry_run_needs_no_daemon_and_an_import_does(daemon, transcripts, capsys):
    nowhere = f"http://127.0.0.1:{free_port()}"
    argv = ["--config", str(daemon.config), "--url", nowhere, "memory", "import-history",
            "alpha", "--from", "codex", str(transcripts / "codex")]
    assert cli.main([*argv, "--dry-run"]) == 0
    assert "turns that would be stored: 3 (alpha: 3)" in capsys.readouterr().out
    assert cli.main(argv) == 3                      # the daemon is down: exit 3, said so
    assert "not running" in capsys.readouterr().err


def test_bad_arguments_are_refused_with_what_was_expected(ctl, transcripts):
    for argv, expected in ((["--from", "gemini", str(transcripts)], "expected one of"),
                           (["--from", "codex", str(transcripts / "nowhere")],
                            "not a directory"),
                           (["--from", "codex", str(transcripts), "--since", "soon"],
                            "expected a span"),
                           (["--from", "codex", str(transcripts), "--map", "/x"],
                            "expected /path/to/repo=PROJECT")):
        code, out = ctl("import-history", "alpha", *argv)
        assert code == 1 and expected in out, out


# -- created_at and key, through the API and memory import ---------------------------------

def test_created_at_is_kept_and_a_key_stores_an_item_once(daemon):
    item = {"content": "We moved the cron job to Fridays", "created_at": "2025-05-02T09:30:00Z",
            "key": "import-1"}
    status, added = call(daemon, "POST", "/v1/memories", {"user_id": "u", "memories": [item]})
    assert status == 201 and added["data"][0]["created_at"] == "2025-05-02T09:30:00Z"
    status, again = call(daemon, "POST", "/v1/memories",
                         {"user_id": "u", **item, "created_at": "2025-06-01T00:00:00+02:00"})
    assert status == 201 and again["data"][0]["id"] == added["data"][0]["id"]
    [stored] = memories(daemon, "u")
    assert stored["created_at"] == "2025-05-02T09:30:00Z"
    status, offset = call(daemon, "POST", "/v1/memories",
                          {"user_id": "u", "content": "x", "created_at": "2025-06-01T02:00+02:00"})
    assert offset["data"][0]["created_at"] == "2025-06-01T00:00:00Z"


@pytest.mark.parametrize("bad", ["yesterday", "2025-13-01T00:00:00Z", 1746178200, "",
                                 "2999-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
                                 "0001-01-01T00:00:00+01:00"])
def test_a_bad_created_at_is_a_400_and_nothing_is_stored(daemon, bad):
    good = {"content": "first"}
    status, body = call(daemon, "POST", "/v1/memories", {
        "user_id": "u", "memories": [good, {"content": "second", "created_at": bad}]})
    assert status == 400 and body["error"]["code"] == "invalid_created_at", body
    assert "ISO 8601" in body["error"]["message"] or "1970" in body["error"]["message"]
    assert memories(daemon, "u") == []


@pytest.mark.parametrize("bad", ["", 7, "k" * 201])
def test_a_bad_key_is_a_400_and_nothing_is_stored(daemon, bad):
    status, body = call(daemon, "POST", "/v1/memories", {"user_id": "u", "content": "x",
                                                         "key": bad})
    assert status == 400 and body["error"]["code"] == "invalid_key", body
    assert memories(daemon, "u") == []


def test_export_then_import_keeps_each_memorys_time(daemon, ctl, tmp_path):
    items = [{"content": f"fact {i}", "created_at": f"2025-0{i}-01T08:00:00Z"}
             for i in range(1, 4)]
    assert call(daemon, "POST", "/v1/memories", {"user_id": "u", "memories": items})[0] == 201
    code, out = ctl("export", "u")
    assert code == 0
    exported = tmp_path / "u.jsonl"
    exported.write_text(out)
    assert ctl("import", "v", str(exported))[0] == 0
    times = {m["content"]: m["created_at"] for m in memories(daemon, "v")}
    assert times == {f"fact {i}": f"2025-0{i}-01T08:00:00Z" for i in range(1, 4)}
    exported.write_text(json.dumps({"content": "x", "created_at": "last tuesday"}) + "\n")
    code, out = ctl("import", "w", str(exported))
    assert code == 1 and ":1: 'created_at' must be an ISO 8601 time" in out, out
    assert memories(daemon, "w") == []
