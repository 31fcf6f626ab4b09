"""The real Gemini CLI, twice, through a project port of the real daemon to the fake model,
configured only by what ``memproxyctl ide-config alpha --client gemini`` printed (the
settings.json and the two exports): the first run states a fact, the second, a new session,
asks about it. Skipped (saying why) where the CLI cannot be installed from the npm
registry."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from tests import agents
from tests.conftest import clis_or_skip, free_port, write_config
from tests.fakes import agent_upstream
from tests.memory.test_agent_memory_e2e import stored
from tests.memory.test_agent_traffic import FACT, QUESTION

pytestmark = pytest.mark.e2e   # real agent CLIs (npm) or Chromium: make test-e2e


@pytest.fixture(scope="module")
def clis():
    return clis_or_skip(("gemini",))



@pytest.fixture
def project(tmp_path, openai_fake, agent_fake, start_daemon):
    """A daemon with memory on, Gemini models on the fake, project alpha on its own port."""
    extra = "".join(
        f'[[model_list]]\nmodel_name = "{name}"\n[model_list.litellm_params]\n'
        f'model = "{model}"\napi_base = "{agent_fake.url}"\napi_key = "sk-up"\n'
        for name, model in (("gemini-2.5-flash", "gemini/gemini-2.5-flash"),
                            ("gemini-*", "gemini/*")))
    config = write_config(tmp_path, openai_fake.url, extra=extra,
                          memory='backend = "sqlite"\nrecall_timeout_ms = 2000')
    daemon = start_daemon(config)
    port = free_port()
    request = urllib.request.Request(f"{daemon.url}/admin/projects", method="POST",
                                     data=json.dumps({"name": "alpha", "port": port}).encode(),
                                     headers={"content-type": "application/json"})
    assert urllib.request.urlopen(request).status == 201
    (tmp_path / "work").mkdir()
    return daemon, config, tmp_path / "work"


def ide_config(config) -> tuple[dict, dict[str, str]]:
    """What ``memproxyctl ide-config alpha --client gemini`` printed: (settings.json, the
    exported variables)."""
    out = subprocess.run([sys.executable, "-m", "memproxyd.ctl", "--config", str(config),
                          "ide-config", "alpha", "--client", "gemini"],
                         capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    settings = json.loads("\n".join(lines[lines.index("{"):lines.index("}") + 1]))
    exports = dict(line.removeprefix("export ").split("=", 1) for line in lines
                   if line.startswith("export "))
    return settings, exports


def test_gemini_cli_remembers_the_fact_and_recalls_it_next_session(clis, project, agent_fake):
    daemon, config, workdir = project
    settings, exports = ide_config(config)
    home = agents.write_gemini_home(workdir.parent / "gemini-home", settings)

    def run(prompt: str) -> subprocess.CompletedProcess:
        done = agents.run_gemini(clis, exports["GOOGLE_GEMINI_BASE_URL"], workdir, home,
                                 prompt, key=exports["GEMINI_API_KEY"], model=None)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    first = run(FACT)
    reply = first.stdout.strip()
    assert reply == f"Understood: {FACT}"
    assert stored(daemon, 1)[-1] == f"User: {FACT}\nAssistant: {reply}"
    second = run(QUESTION)
    assert "From memory: " in second.stdout and "BLUEFIN" in second.stdout
    records = agent_fake.call(lambda: list(agent_fake.app[agent_upstream.RECORDS]))
    asked = [r for r in records if QUESTION in json.dumps(r["json"])][-1]
    assert asked["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    parts = asked["json"]["contents"][-1]["parts"]
    assert parts[0]["text"].startswith("<memproxy-memory>") and "BLUEFIN" in parts[0]["text"]
    assert parts[-1] == {"text": QUESTION}
    assert "memproxy-memory" not in json.dumps(asked["json"]["systemInstruction"])
    assert asked["headers"]["x-goog-api-key"] == "sk-up"     # the deployment's, not the CLI's
