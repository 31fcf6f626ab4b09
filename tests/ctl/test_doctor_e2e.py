"""``memproxyctl doctor`` against the real daemon: every step passes for a working project
(on each client's protocol, leaving no memory behind), and a broken setup says what to fix."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def doctor_config(tmp_path: Path, memory: str = 'backend = "sqlite"') -> Path:
    config = tmp_path / "memproxyd.toml"
    config.write_text(textwrap.dedent(f"""\
        [server]
        port = {free_port()}
        state_dir = "{tmp_path / 'state'}"
        [memory]
        {memory}
        [[model_list]]
        model_name = "demo"
        [model_list.litellm_params]
        model = "openai/demo"
        mock_response = "Hello from memproxyd's offline demo model."
        """))
    return config


def ctl(config: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memproxyd.ctl", "--config", str(config),
                           *argv], cwd=REPO, capture_output=True, text=True, timeout=120)


def memories(daemon, user: str) -> list:
    url = f"{daemon.url}/v1/memories?user_id={user}&limit=100"
    return json.loads(urllib.request.urlopen(url).read())["data"]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    from tests.conftest import Daemon
    config = doctor_config(tmp_path_factory.mktemp("doctor"))
    with Daemon(config) as daemon:
        assert ctl(config, "add-project", "alpha", "--port", str(free_port())).returncode == 0
        yield daemon


@pytest.mark.parametrize("client", ["claude-code", "codex", "opencode", "env"])
def test_doctor_passes_every_step_on_each_clients_protocol(healthy, client):
    done = ctl(healthy.config, "doctor", "alpha", "--client", client)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok    daemon", "ok    listener", "ok    model call", "ok    memory recalls",
        "ok    memory remembers", "ok    MCP command"]
    path = {"claude-code": "/v1/messages", "codex": "/v1/responses"}.get(
        client, "/v1/chat/completions")
    assert f"demo answered on {path}" in done.stdout
    assert "memory_search" in lines[-1]
    assert memories(healthy, "alpha") == []        # the markers are cleaned up


def test_doctor_says_a_project_whose_port_is_taken_is_not_listening(tmp_path, start_daemon):
    config, port = doctor_config(tmp_path), free_port()
    # registered while the daemon is stopped; another process takes the port before it starts
    assert ctl(config, "add-project", "beta", "--port", str(port)).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        start_daemon(config)
        done = ctl(config, "doctor", "beta")
    assert done.returncode == 1
    assert "ok    daemon" in done.stdout
    assert f"FAIL  listener: port {port} is failed" in done.stdout, done.stdout
    assert "fix: free the port" in done.stdout
    assert "not checked: model call, memory recalls, memory remembers, MCP command" \
        in done.stdout


def test_doctor_names_an_unknown_model_and_how_to_pick_one(healthy):
    done = ctl(healthy.config, "doctor", "alpha", "--model", "no-such-model")
    assert done.returncode == 1
    assert "FAIL  model call: no-such-model on /v1/chat/completions answered 404" in done.stdout
    assert "fix: name a model_name of model_list: --model NAME" in done.stdout


def test_doctor_with_the_daemon_down_says_how_to_start_it(tmp_path):
    config = doctor_config(tmp_path)
    done = ctl(config, "doctor", "alpha")
    assert done.returncode == 1
    assert done.stdout.startswith("FAIL  daemon: memproxyd is not running at")
    assert "fix: start it" in done.stdout


def test_doctor_with_memory_off_fails_the_memory_steps_only(tmp_path, start_daemon):
    config = doctor_config(tmp_path, memory='backend = "off"')
    start_daemon(config)
    assert ctl(config, "add-project", "alpha", "--port", str(free_port())).returncode == 0
    done = ctl(config, "doctor", "alpha", "--client", "codex")
    assert done.returncode == 1, done.stdout
    assert "ok    model call" in done.stdout and "ok    MCP command" in done.stdout
    assert "FAIL  memory recalls" in done.stdout and "FAIL  memory remembers" in done.stdout
