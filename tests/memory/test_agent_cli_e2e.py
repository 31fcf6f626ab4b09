"""The real CLIs through a project port of the real daemon to the fake model: twice each (the
first run states a fact, the second asks about it), and three turns of one session each, whose
prompts must each extend the last (the provider's prompt cache), with a daemon restart between
turns 2 and 3. Skipped (saying why) where the CLIs cannot be installed from the npm
registry."""
from __future__ import annotations

import json
import shutil
import urllib.request

import pytest

from tests import agents
from tests.conftest import clis_or_skip, free_port, write_config
from tests.fakes import agent_upstream
from tests.memory.test_agent_memory_e2e import stored
from tests.memory.test_agent_traffic import FACT, QUESTION
from tests.prompts import extends_as_the_client_does

pytestmark = pytest.mark.e2e   # real agent CLIs (npm) or Chromium: make test-e2e


@pytest.fixture(scope="module")
def clis():
    return clis_or_skip()



def agent_models(fake_url: str) -> str:
    return ('[[model_list]]\nmodel_name = "claude-*"\n[model_list.litellm_params]\n'
            f'model = "anthropic/*"\napi_base = "{fake_url}"\napi_key = "sk-up"\n'
            '[[model_list]]\nmodel_name = "gpt-5-codex"\n[model_list.litellm_params]\n'
            f'model = "openai/gpt-5-codex"\napi_base = "{fake_url}/v1"\n'
            'api_key = "sk-up"\n')


def add_alpha(daemon) -> str:
    """Project alpha on a port of its own; its base URL."""
    port = free_port()
    request = urllib.request.Request(f"{daemon.url}/admin/projects", method="POST",
                                     data=json.dumps({"name": "alpha", "port": port}).encode(),
                                     headers={"content-type": "application/json"})
    assert urllib.request.urlopen(request).status == 201
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def project(tmp_path, openai_fake, agent_fake, start_daemon):
    """A daemon with memory on, every model on the fake, and project alpha on its own port."""
    daemon = start_daemon(write_config(tmp_path, openai_fake.url,
                                       extra=agent_models(agent_fake.url),
                                       memory='backend = "sqlite"\nrecall_timeout_ms = 2000'))
    (tmp_path / "work").mkdir()
    return daemon, add_alpha(daemon), tmp_path / "work"


def last_turn_request(fake, path: str) -> dict:
    records = fake.call(lambda: list(fake.app[agent_upstream.RECORDS]))
    return [r["json"] for r in records if r["path"] == path
            and QUESTION in json.dumps(r["json"]) and "<session>" not in json.dumps(r["json"])][-1]


def check_remembered_and_recalled(daemon, first_reply: str, recalled_in: str) -> None:
    fact = stored(daemon, 1)[-1]                     # newest first: the fact is the oldest
    assert fact == f"User: {FACT}\nAssistant: {first_reply}" and len(fact) < 2000
    assert "BLUEFIN" in recalled_in and "<memproxy-memory>" in recalled_in


# None: the CLI's default model, which sends system-role messages inside ``messages``
@pytest.mark.parametrize("model", [None, "claude-sonnet-4-5"], ids=["default-model", "sonnet"])
def test_claude_code_remembers_the_fact_and_recalls_it_next_session(clis, project, agent_fake,
                                                                      model):
    daemon, base_url, workdir = project
    first = agents.run_claude(clis, base_url, workdir, FACT, model=model)
    assert first.returncode == 0, first.stderr[-2000:]
    check_remembered_and_recalled(daemon, first.stdout.strip(), "BLUEFIN <memproxy-memory>")
    second = agents.run_claude(clis, base_url, workdir, QUESTION, model=model)
    assert second.returncode == 0, second.stderr[-2000:]
    sent = last_turn_request(agent_fake, "/v1/messages")
    check_remembered_and_recalled(daemon, first.stdout.strip(), json.dumps(sent["messages"]))
    assert "memproxy-memory" not in json.dumps(sent["system"])     # the client's, untouched
    assert "From memory: " in second.stdout and "BLUEFIN" in second.stdout


def test_codex_remembers_the_fact_and_recalls_it_next_session(clis, project, agent_fake):
    daemon, base_url, workdir = project
    home = agents.write_codex_home(workdir.parent / "codex-home", f"{base_url}/v1")
    first = agents.run_codex(clis, home, workdir, FACT)
    assert first.returncode == 0, first.stderr[-2000:]
    reply = first.stdout.strip().splitlines()[-1]
    check_remembered_and_recalled(daemon, reply, "BLUEFIN <memproxy-memory>")
    second = agents.run_codex(clis, home, workdir, QUESTION)
    assert second.returncode == 0, second.stderr[-2000:]
    sent = last_turn_request(agent_fake, "/v1/responses")
    check_remembered_and_recalled(daemon, reply, json.dumps(sent["input"]))
    assert "memproxy-memory" not in sent.get("instructions", "")   # the client's, untouched
    assert "From memory: " in second.stdout and "BLUEFIN" in second.stdout


# -- three turns of one session: each prompt extends the last --------------------------------

SESSION = ("What is our deploy target codename?",
           "Remember this: the staging cluster is named KESTREL.",
           "What is the staging cluster named, and our deploy target codename?")


def turn_requests(fake, path: str, session: str) -> list[dict]:
    """The session's turn calls as the fake received them (side calls, which offer no
    tools, left out), oldest first."""
    records = fake.call(lambda: list(fake.app[agent_upstream.RECORDS]))
    return [r["json"] for r in records if r["path"] == path and r["json"].get("tools")
            and session in json.dumps(r["json"].get("metadata", r["json"].get(
                "prompt_cache_key", "")))]


def session_of(request: dict) -> str:
    if "prompt_cache_key" in request:
        return request["prompt_cache_key"]
    return json.loads(request["metadata"]["user_id"])["session_id"]


def blocks(request: dict) -> list[str]:
    found = []
    for item in request.get("messages") or request.get("input"):
        content = item.get("content")
        texts = [content] if isinstance(content, str) else [p.get("text", "") for p in content]
        found += [t for t in texts if t.startswith("<memproxy-memory>")]
    return found


def check_session(requests: list[dict], earlier_fact: str) -> None:
    """Each turn's whole prompt extends the one before; the earlier session's fact reached the
    session; no block carries an exchange of this session."""
    assert len(requests) >= 3, [blocks(r) for r in requests]
    for before, after in zip(requests, requests[1:]):
        assert extends_as_the_client_does(before, after) is None, \
            extends_as_the_client_does(before, after)
    shown = "\n".join(b for r in requests for b in blocks(r))
    assert earlier_fact in shown
    assert "KESTREL" not in shown and SESSION[0] not in shown


def restart(daemon, start_daemon):
    daemon.stop()
    return start_daemon(daemon.config)


@pytest.mark.parametrize("model", [None, "claude-sonnet-4-5"], ids=["default-model", "sonnet"])
def test_claude_code_turns_extend_each_other_across_a_restart(clis, project, agent_fake,
                                                              start_daemon, model):
    daemon, base_url, workdir = project
    assert agents.run_claude(clis, base_url, workdir, FACT, model=model).returncode == 0
    stored(daemon, 1)
    runs = [agents.run_claude(clis, base_url, workdir, SESSION[0], model=model),
            agents.run_claude(clis, base_url, workdir, SESSION[1], model=model, resume=True)]
    stored(daemon, 3)
    restart(daemon, start_daemon)
    runs.append(agents.run_claude(clis, base_url, workdir, SESSION[2], model=model,
                                  resume=True))
    assert all(r.returncode == 0 for r in runs), [r.stdout + r.stderr for r in runs]
    records = agent_fake.call(lambda: list(agent_fake.app[agent_upstream.RECORDS]))
    session = session_of([r["json"] for r in records if SESSION[0] in json.dumps(r["json"])
                          and r["json"].get("tools")][-1])
    check_session(turn_requests(agent_fake, "/v1/messages", session), "BLUEFIN")


def test_codex_turns_extend_each_other_across_a_restart(clis, project, agent_fake,
                                                        start_daemon):
    daemon, base_url, workdir = project
    home = agents.write_codex_home(workdir.parent / "codex-home", f"{base_url}/v1")
    assert agents.run_codex(clis, home, workdir, FACT).returncode == 0
    stored(daemon, 1)
    runs = [agents.run_codex(clis, home, workdir, SESSION[0]),
            agents.run_codex(clis, home, workdir, SESSION[1], resume=True)]
    stored(daemon, 3)
    restart(daemon, start_daemon)
    runs.append(agents.run_codex(clis, home, workdir, SESSION[2], resume=True))
    assert all(r.returncode == 0 for r in runs), [r.stdout + r.stderr for r in runs]
    records = agent_fake.call(lambda: list(agent_fake.app[agent_upstream.RECORDS]))
    session = session_of([r["json"] for r in records if SESSION[0] in json.dumps(r["json"])
                          and r["json"].get("tools")][-1])
    check_session(turn_requests(agent_fake, "/v1/responses", session), "BLUEFIN")


def two_gateways(tmp_path, openai_fake, agent_fake, start_daemon, pg_dsn) -> list[tuple]:
    """Gateways a and b on one database, each with project alpha: (daemon, base URL)."""
    gateways = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        config = write_config(folder, openai_fake.url, memory=(
            'backend = "postgres"\nrecall_timeout_ms = 2000'), extra=agent_models(
            agent_fake.url) + f'[postgres]\ndsn = "{pg_dsn}"\n')
        daemon = start_daemon(config)
        gateways.append((daemon, add_alpha(daemon)))
    (tmp_path / "work").mkdir()
    return gateways


def test_claude_code_turns_extend_each_other_on_two_gateways_sharing_postgres(
        clis, agent_fake, openai_fake, start_daemon, pg_dsn, tmp_path):
    """Gateways a and b on one database serve alternate turns of one session: the journal in
    PostgreSQL gives each the other's blocks."""
    (a, url_a), (_, url_b) = two_gateways(tmp_path, openai_fake, agent_fake, start_daemon,
                                          pg_dsn)
    workdir, model = tmp_path / "work", "claude-sonnet-4-5"
    assert agents.run_claude(clis, url_a, workdir, FACT, model=model).returncode == 0
    stored(a, 1)
    runs = [agents.run_claude(clis, url, workdir, text, model=model, resume=i > 0)
            for i, (url, text) in enumerate(zip((url_a, url_b, url_a), SESSION))]
    assert all(r.returncode == 0 for r in runs), [r.stdout + r.stderr for r in runs]
    records = agent_fake.call(lambda: list(agent_fake.app[agent_upstream.RECORDS]))
    session = session_of([r["json"] for r in records if SESSION[0] in json.dumps(r["json"])
                          and r["json"].get("tools")][-1])
    check_session(turn_requests(agent_fake, "/v1/messages", session), "BLUEFIN")


def test_codex_turns_extend_each_other_on_two_gateways_sharing_postgres(
        clis, agent_fake, openai_fake, start_daemon, pg_dsn, tmp_path):
    (a, url_a), (_, url_b) = two_gateways(tmp_path, openai_fake, agent_fake, start_daemon,
                                          pg_dsn)
    workdir = tmp_path / "work"
    homes = [agents.write_codex_home(tmp_path / f"codex-home-{n}", f"{url}/v1")
             for n, url in (("a", url_a), ("b", url_b))]
    assert agents.run_codex(clis, homes[0], workdir, FACT).returncode == 0
    stored(a, 1)
    runs = [agents.run_codex(clis, homes[0], workdir, SESSION[0])]
    # Codex resumes from its own sessions folder: b's home gets a's sessions
    shutil.copytree(homes[0] / "sessions", homes[1] / "sessions")
    runs.append(agents.run_codex(clis, homes[1], workdir, SESSION[1], resume=True))
    shutil.rmtree(homes[0] / "sessions")
    shutil.copytree(homes[1] / "sessions", homes[0] / "sessions")
    runs.append(agents.run_codex(clis, homes[0], workdir, SESSION[2], resume=True))
    assert all(r.returncode == 0 for r in runs), [r.stdout + r.stderr for r in runs]
    records = agent_fake.call(lambda: list(agent_fake.app[agent_upstream.RECORDS]))
    session = session_of([r["json"] for r in records if SESSION[0] in json.dumps(r["json"])
                          and r["json"].get("tools")][-1])
    check_session(turn_requests(agent_fake, "/v1/responses", session), "BLUEFIN")
