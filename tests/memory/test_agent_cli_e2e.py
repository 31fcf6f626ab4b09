"""The real CLIs, twice each, through a project port of the real daemon to the fake model: the
first run states a fact, the second asks about it. Skipped (saying why) where the CLIs cannot
be installed from the npm registry."""
from __future__ import annotations

import json
import urllib.request

import pytest

from tests import agents
from tests.conftest import free_port, write_config
from tests.fakes import agent_upstream
from tests.fakes.threaded import ThreadedServer
from tests.memory.test_agent_memory_e2e import stored
from tests.memory.test_agent_traffic import FACT, QUESTION


@pytest.fixture(scope="module")
def clis():
    try:
        return agents.install_clis()
    except (agents.Unavailable, OSError) as exc:
        pytest.skip(f"real agent CLIs unavailable: {exc}")


@pytest.fixture
def agent_fake():
    server = ThreadedServer(agent_upstream.create_app()).start()
    yield server
    server.stop()


@pytest.fixture
def project(tmp_path, openai_fake, agent_fake, start_daemon):
    """A daemon with memory on, every model on the fake, and project alpha on its own port."""
    extra = ('[[model_list]]\nmodel_name = "claude-*"\n[model_list.litellm_params]\n'
             f'model = "anthropic/*"\napi_base = "{agent_fake.url}"\napi_key = "sk-up"\n'
             '[[model_list]]\nmodel_name = "gpt-5-codex"\n[model_list.litellm_params]\n'
             f'model = "openai/gpt-5-codex"\napi_base = "{agent_fake.url}/v1"\n'
             'api_key = "sk-up"\n')
    daemon = start_daemon(write_config(tmp_path, openai_fake.url, extra=extra,
                                       memory='backend = "sqlite"\nrecall_timeout_ms = 2000'))
    port = free_port()
    request = urllib.request.Request(f"{daemon.url}/admin/projects", method="POST",
                                     data=json.dumps({"name": "alpha", "port": port}).encode(),
                                     headers={"content-type": "application/json"})
    assert urllib.request.urlopen(request).status == 201
    (tmp_path / "work").mkdir()
    return daemon, f"http://127.0.0.1:{port}", tmp_path / "work"


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
    system = json.dumps(last_turn_request(agent_fake, "/v1/messages")["system"])
    check_remembered_and_recalled(daemon, first.stdout.strip(), system)
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
    instructions = last_turn_request(agent_fake, "/v1/responses")["instructions"]
    check_remembered_and_recalled(daemon, reply, instructions)
    assert "From memory: " in second.stdout and "BLUEFIN" in second.stdout
