"""Project listeners, the admin API and memproxyctl against the real daemon."""
from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request

import openai
import pytest

from memproxyd.ctl import cli
from memproxyd.registry import add_project, read_registry
from tests.conftest import free_port, write_config


def wait_for(predicate, timeout: float = 10.0, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def chat_on(port: int, text: str = "hi"):
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0,
                        default_headers={"x-memory-user-id": "someone-else"})
    return api.chat.completions.with_raw_response.create(
        model="gpt-ok", messages=[{"role": "user", "content": text}])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def gateway(tmp_path, openai_fake, start_daemon):
    config = write_config(tmp_path, openai_fake.url)
    return start_daemon(config)


def run_ctl(daemon, *argv: str) -> int:
    return cli.main(["--config", str(daemon.config), *argv])


def test_add_project_at_runtime_serves_with_the_projects_identity(gateway, capsys):
    port = free_port()
    assert run_ctl(gateway, "add-project", "alpha", "--port", str(port)) == 0
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:{port}/v1" in out and f"http://127.0.0.1:{port}" in out
    raw = chat_on(port, "from the IDE")
    assert raw.headers["x-memproxy-user-id"] == "alpha"   # the port beats the header
    assert raw.parse().choices[0].message.content == "echo: from the IDE"
    assert run_ctl(gateway, "remove-project", "alpha") == 0
    wait_for(lambda: not port_open(port), message="listener still open after removal")
    assert "alpha" not in read_registry(gateway.config.parent / "state" / "projects.json")


def test_status_lists_listeners_and_admin_is_gateway_only(gateway, capsys):
    port = free_port()
    assert run_ctl(gateway, "add-project", "beta", "--port", str(port)) == 0
    capsys.readouterr()
    assert run_ctl(gateway, "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert {"name": "beta", "port": port, "state": "listening", "error": None} in status["listeners"]
    assert status["gateway"]["port"] == gateway.port
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/status", timeout=5)
    assert info.value.code == 404


def test_a_project_port_shows_nothing_of_the_other_projects(gateway, capsys):
    alpha, beta = free_port(), free_port()
    assert run_ctl(gateway, "add-project", "alpha", "--port", str(alpha)) == 0
    assert run_ctl(gateway, "add-project", "beta", "--port", str(beta)) == 0
    chat_on(beta, "beta's secret roadmap")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{alpha}/metrics", timeout=5)
    assert info.value.code == 404
    with urllib.request.urlopen(f"http://127.0.0.1:{alpha}/health/readiness", timeout=5) as r:
        ready = r.read().decode()
    assert "beta" not in ready and str(gateway.config.parent) not in ready
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=5) as response:
        assert 'project="beta"' in response.read().decode()     # the operator's view


def test_a_removed_projects_open_connections_never_reach_the_next_project_on_its_port(
        gateway):
    port = free_port()
    assert run_ctl(gateway, "add-project", "alpha", "--port", str(port)) == 0
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)    # keep-alive
    body = json.dumps({"model": "gpt-ok", "messages": [{"role": "user", "content": "hi"}]})
    kept.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    first = kept.getresponse()
    first.read()
    assert first.getheader("x-memproxy-user-id") == "alpha"
    assert run_ctl(gateway, "remove-project", "alpha") == 0
    assert run_ctl(gateway, "add-project", "beta", "--port", str(port)) == 0
    try:
        kept.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        answer = kept.getresponse()
        answer.read()
        served_as = answer.getheader("x-memproxy-user-id")
    except (ConnectionError, http.client.HTTPException):
        served_as = None                                    # closed: what should happen
    assert served_as != "beta"
    assert chat_on(port).headers["x-memproxy-user-id"] == "beta"   # new connections are beta's
    assert "Traceback" not in gateway.log()


def test_one_taken_port_does_not_stop_the_daemon_or_other_projects(
        tmp_path, openai_fake, start_daemon):
    config = write_config(tmp_path, openai_fake.url)
    registry = tmp_path / "state" / "projects.json"
    good = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        add_project(registry, "good", good)
        registry.write_text(registry.read_text().replace(
            "}\n  }", f'}},\n    "blocked": {{"port": {taken}, "created": "2026-01-01T00:00:00Z", '
            '"description": ""}\n  }'))
        assert set(read_registry(registry)) == {"good", "blocked"}
        daemon = start_daemon(config)
        assert chat_on(good).headers["x-memproxy-user-id"] == "good"
        status = json.loads(urllib.request.urlopen(daemon.url + "/admin/status").read())
        states = {item["name"]: item for item in status["listeners"]}
        assert states["good"]["state"] == "listening"
        assert states["blocked"]["state"] == "failed"
        assert str(taken) in states["blocked"]["error"]
        assert urllib.request.urlopen(daemon.url + "/health").status == 200


def test_registry_edited_while_running_is_picked_up(gateway):
    port = free_port()
    add_project(gateway.config.parent / "state" / "projects.json", "gamma", port)
    wait_for(lambda: port_open(port), message="registry change not reconciled")
    assert chat_on(port).headers["x-memproxy-user-id"] == "gamma"


def test_ctl_exit_codes_against_running_and_stopped_daemon(gateway, capsys):
    port = free_port()
    assert run_ctl(gateway, "add-project", "delta", "--port", str(port)) == 0
    assert run_ctl(gateway, "add-project", "delta") == 1            # duplicate
    assert run_ctl(gateway, "add-project", "bad name") == 1         # invalid
    assert run_ctl(gateway, "remove-project", "nope") == 1
    assert run_ctl(gateway, "reload") == 0
    assert run_ctl(gateway, "ide-config", "delta", "--client", "claude-code") == 0
    assert f"ANTHROPIC_BASE_URL=http://127.0.0.1:{port}" in capsys.readouterr().out
    assert gateway.stop() == 0
    assert run_ctl(gateway, "status") == 3
    assert run_ctl(gateway, "add-project", "epsilon", "--port", str(free_port())) == 0
    assert "epsilon" in read_registry(gateway.config.parent / "state" / "projects.json")
