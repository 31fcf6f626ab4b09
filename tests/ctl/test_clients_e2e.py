"""Every client that installs here, configured ONLY by what ``memproxyctl ide-config`` printed
(plus the fake model's address in the daemon's config), run twice through a project port of
the real daemon: a fact stated, then asked for in a new session. Skipped (saying why) where
the CLIs cannot be installed from the npm registry."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from tests import agents
from tests.conftest import clis_or_skip, free_port, write_config
from tests.fakes import agent_upstream
from tests.memory.test_agent_memory_e2e import stored
from tests.memory.test_agent_traffic import FACT, QUESTION

pytestmark = pytest.mark.e2e   # real agent CLIs (npm) or Chromium: make test-e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clis():
    return clis_or_skip(tuple(agents.PACKAGES))



def add_alpha(daemon) -> int:
    port = free_port()
    request = urllib.request.Request(f"{daemon.url}/admin/projects", method="POST",
                                     data=json.dumps({"name": "alpha", "port": port}).encode(),
                                     headers={"content-type": "application/json"})
    assert urllib.request.urlopen(request).status == 201
    return port


@pytest.fixture
def project(tmp_path, openai_fake, agent_fake, start_daemon):
    """A daemon with memory on, its first exact model (what ide-config prints) and every
    claude-* model on the fake, and project alpha on its own port."""
    extra = ('[[model_list]]\nmodel_name = "claude-*"\n[model_list.litellm_params]\n'
             f'model = "anthropic/*"\napi_base = "{agent_fake.url}"\napi_key = "sk-up"\n'
             '[[model_list]]\nmodel_name = "gpt-5-codex"\n[model_list.litellm_params]\n'
             f'model = "openai/gpt-5-codex"\napi_base = "{agent_fake.url}/v1"\n'
             'api_key = "sk-up"\n')
    daemon = start_daemon(write_config(tmp_path, openai_fake.url, extra=extra,
                                       memory='backend = "sqlite"\nrecall_timeout_ms = 2000'))
    add_alpha(daemon)
    (tmp_path / "work").mkdir()
    return daemon, tmp_path / "work"


def ide_config(daemon, client: str) -> str:
    """What ``memproxyctl --config CONFIG ide-config alpha --client CLIENT`` prints."""
    done = subprocess.run([sys.executable, "-m", "memproxyd.ctl", "--config", str(daemon.config),
                           "ide-config", "alpha", "--client", client],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def exported(printed: str) -> dict[str, str]:
    """The variables the printed ``export`` lines set, evaluated by a shell."""
    exports = [line for line in printed.splitlines() if line.startswith("export ")]
    names = {line.split()[1].split("=", 1)[0] for line in exports}
    done = subprocess.run(["bash", "-c", "\n".join(exports) + "\nenv -0"], env={},
                          capture_output=True, text=True, check=True)
    pairs = (item.split("=", 1) for item in done.stdout.split("\0") if "=" in item)
    return {name: value for name, value in pairs if name in names}


def requests_with(fake, text: str) -> list[dict]:
    records = fake.call(lambda: list(fake.app[agent_upstream.RECORDS]))
    return [r["json"] for r in records if text in json.dumps(r["json"])]


def check_fact_remembered(daemon) -> None:
    [fact] = stored(daemon, 1)
    assert fact.startswith(f"User: {FACT}\nAssistant: Understood: ") and len(fact) < 2000


def check_fact_recalled(daemon, fake, output: str) -> None:
    """The second session's turn carried the first session's memory, and said so."""
    asked = [body for body in requests_with(fake, QUESTION) if body.get("tools")]
    assert asked and "<memproxy-memory>" in json.dumps(asked[-1])
    assert "BLUEFIN" in json.dumps(asked[-1]).split("<memproxy-memory>", 1)[1]
    assert "From memory: " in output and "BLUEFIN" in output
    # the answer only quoted the memory: not remembered again; no side call is either
    assert len(stored(daemon, 1)) == 1


@pytest.mark.parametrize("model", [None, "claude-sonnet-4-5"], ids=["default-model", "sonnet"])
def test_claude_code_as_ide_config_prints_it(clis, project, agent_fake, model):
    daemon, workdir = project
    settings = exported(ide_config(daemon, "claude-code"))
    assert set(settings) == {"ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"}
    first = agents.run_claude(clis, "", workdir, FACT, model=model, settings=settings)
    assert first.returncode == 0, first.stdout + first.stderr[-2000:]
    check_fact_remembered(daemon)
    second = agents.run_claude(clis, "", workdir, QUESTION, model=model, settings=settings)
    assert second.returncode == 0, second.stderr[-2000:]
    check_fact_recalled(daemon, agent_fake, second.stdout)


def test_codex_as_ide_config_prints_it(clis, project, agent_fake, tmp_path):
    daemon, workdir = project
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(ide_config(daemon, "codex"))
    first = agents.run_codex(clis, home, workdir, FACT)
    assert first.returncode == 0, first.stderr[-2000:]
    check_fact_remembered(daemon)
    second = agents.run_codex(clis, home, workdir, QUESTION)
    assert second.returncode == 0, second.stderr[-2000:]
    check_fact_recalled(daemon, agent_fake, second.stdout)


def test_opencode_as_ide_config_prints_it(clis, project, agent_fake):
    daemon, workdir = project
    (workdir / "opencode.json").write_text(ide_config(daemon, "opencode"))
    first = agents.run_opencode(clis, workdir, FACT)
    assert first.returncode == 0 and "Understood" in first.stdout, first.stderr[-2000:]
    check_fact_remembered(daemon)
    # opencode's title call went through the port too, and is no memory
    assert requests_with(agent_fake, "You are a title generator")
    second = agents.run_opencode(clis, workdir, QUESTION)
    assert second.returncode == 0, second.stderr[-2000:]
    check_fact_recalled(daemon, agent_fake, second.stdout)


def test_continue_cli_as_ide_config_prints_it(clis, project, agent_fake, tmp_path):
    daemon, workdir = project
    config = tmp_path / "continue.yaml"
    config.write_text(ide_config(daemon, "continue"))
    first = agents.run_cn(clis, config, workdir, FACT)
    assert first.returncode == 0 and "Understood" in first.stdout, \
        first.stdout + first.stderr[-2000:]
    check_fact_remembered(daemon)
    # Continue's openai provider sends gpt-5 models to the Responses API
    assert requests_with(agent_fake, FACT)[0].get("input")
    second = agents.run_cn(clis, config, workdir, QUESTION)
    assert second.returncode == 0, second.stderr[-2000:]
    check_fact_recalled(daemon, agent_fake, second.stdout)


def demo_daemon(tmp_path, start_daemon):
    """A daemon whose only model is the default config's offline ``demo``, with alpha."""
    config = tmp_path / "memproxyd.toml"
    config.write_text(textwrap.dedent(f"""\
        [server]
        port = {free_port()}
        state_dir = "{tmp_path / 'state'}"
        [memory]
        backend = "sqlite"
        [[model_list]]
        model_name = "demo"
        [model_list.litellm_params]
        model = "openai/demo"
        mock_response = "Hello from memproxyd's offline demo model."
        """))
    daemon = start_daemon(config)
    add_alpha(daemon)
    return daemon


def test_codex_answers_with_the_offline_demo_model_of_the_default_config(clis, tmp_path,
                                                                         start_daemon):
    """The default config's first model is ``demo``: ide-config prints it for Codex, and
    Codex accepts its replies (it rejected them: missing ``reasoning_tokens``)."""
    daemon = demo_daemon(tmp_path, start_daemon)
    printed = ide_config(daemon, "codex")
    assert 'model = "demo"' in printed
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(printed)
    (tmp_path / "work").mkdir()
    done = agents.run_codex(clis, home, tmp_path / "work", FACT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Hello from memproxyd's offline demo model." in done.stdout
    assert "reasoning_tokens" not in done.stderr


def test_claude_code_answers_with_the_offline_demo_model_of_the_default_config(
        clis, tmp_path, start_daemon):
    """With no claude-* model, ide-config points Claude Code at ``demo``: its Messages call
    (2.1.332: ``thinking.display``, ``context_management``, deferred tools) goes through
    litellm's translation to the OpenAI-shaped mock and back."""
    daemon = demo_daemon(tmp_path, start_daemon)
    settings = exported(ide_config(daemon, "claude-code"))
    assert settings["ANTHROPIC_MODEL"] == "demo"
    (tmp_path / "work").mkdir()
    done = agents.run_claude(clis, "", tmp_path / "work", FACT, model=None, settings=settings)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "Hello from memproxyd's offline demo model." in done.stdout


def test_claude_code_gateway_model_discovery_lists_what_claude_star_serves(clis, project,
                                                                          agent_fake):
    """With discovery on, Claude Code asks the port's /v1/models (Anthropic's shape); the
    claude-* entry answers with what its upstream lists."""
    daemon, workdir = project
    settings = {**exported(ide_config(daemon, "claude-code")),
                "CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1"}
    done = agents.run_claude(clis, "", workdir, FACT, settings=settings)
    assert done.returncode == 0, done.stderr[-2000:]
    records = agent_fake.call(lambda: list(agent_fake.app[agent_upstream.RECORDS]))
    asked = [r for r in records if r["path"] == "/v1/models"]
    assert asked and asked[0]["headers"]["anthropic-version"] == "2023-06-01"
    assert records.index(asked[0]) < next(i for i, r in enumerate(records)
                                          if r["path"] == "/v1/messages")
