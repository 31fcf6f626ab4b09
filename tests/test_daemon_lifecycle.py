"""The daemon process: ready, graceful stop, reload, refusals with exit code 2."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import openai
import pytest

from tests.conftest import GATEWAY_KEY, UPSTREAM_KEY, write_config


def get_json(url: str) -> dict:
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {GATEWAY_KEY}"})
    return json.loads(urllib.request.urlopen(request, timeout=5).read())


def test_sigterm_drains_an_in_flight_request_then_exits_0(tmp_path, openai_fake, start_daemon):
    daemon = start_daemon(write_config(tmp_path, openai_fake.url))
    result = {}

    def slow_call():
        api = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)
        result["reply"] = api.chat.completions.create(
            model="gpt-slowish", messages=[{"role": "user", "content": "drain me"}])

    thread = threading.Thread(target=slow_call)
    thread.start()
    time.sleep(0.3)
    daemon.signal(signal.SIGTERM)
    thread.join(10)
    assert result["reply"].choices[0].message.content == "echo: drain me"
    assert daemon.proc.wait(10) == 0
    assert "memproxyd stopped" in daemon.log()


def test_port_taken_exits_2_with_a_clear_error(tmp_path, openai_fake, start_daemon):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = start_daemon(write_config(tmp_path, openai_fake.url, port=port), wait=False)
        assert daemon.proc.wait(15) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in daemon.log()


def test_non_loopback_bind_without_keys_is_refused(tmp_path, openai_fake, start_daemon):
    config = write_config(tmp_path, openai_fake.url)
    config.write_text(config.read_text().replace('host = "127.0.0.1"', 'host = "0.0.0.0"', 1))
    daemon = start_daemon(config, wait=False)
    assert daemon.proc.wait(15) == 2
    assert "no [auth] keys" in daemon.log()


def test_invalid_config_exits_2_naming_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[identity]\nheadr = \"x\"\n")
    run = subprocess.run([sys.executable, "-m", "memproxyd", "--config", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert "unknown key 'identity.headr'" in run.stderr


def test_sighup_reloads_models_and_a_broken_config_changes_nothing(
        tmp_path, openai_fake, start_daemon):
    config = write_config(tmp_path, openai_fake.url, auth=f'keys = ["{GATEWAY_KEY}"]')
    daemon = start_daemon(config)
    assert "added-later" not in {m["id"] for m in get_json(daemon.url + "/v1/models")["data"]}
    original = config.read_text()
    config.write_text(original + '\n[[model_list]]\nmodel_name = "added-later"\n'
                      '[model_list.litellm_params]\nmodel = "openai/ok"\n'
                      f'api_base = "{openai_fake.url}/v1"\n')
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "added-later" not in {m["id"] for m in get_json(daemon.url + "/v1/models")["data"]}:
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    config.write_text(original + "\n[server]\nbogus = 1\n")
    daemon.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert "added-later" in {m["id"] for m in get_json(daemon.url + "/v1/models")["data"]}
    assert "reload refused" in daemon.log()


def test_json_logs_never_contain_keys_or_prompts(tmp_path, openai_fake, start_daemon):
    config = write_config(tmp_path, openai_fake.url, auth=f'keys = ["{GATEWAY_KEY}"]')
    config.write_text(config.read_text().replace('log_format = "text"', 'log_format = "json"'))
    daemon = start_daemon(config)
    api = openai.OpenAI(base_url=daemon.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
    api.chat.completions.create(model="gpt-ok",
                                messages=[{"role": "user", "content": "secret prompt body"}])
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert daemon.stop() == 0
    lines = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    assert any(line["message"].startswith("memproxyd ready") for line in lines)
    text = daemon.log()
    for secret in (GATEWAY_KEY, UPSTREAM_KEY, "secret prompt body", "Bearer"):
        assert secret not in text


def test_systemd_notify_ready_then_stopping(tmp_path, openai_fake, start_daemon):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        notify.settimeout(15)
        daemon = start_daemon(write_config(tmp_path, openai_fake.url),
                              env={"NOTIFY_SOCKET": str(path)})
        assert notify.recv(256) == b"READY=1"
        daemon.signal(signal.SIGTERM)
        assert notify.recv(256) == b"STOPPING=1"
        assert daemon.proc.wait(10) == 0


def test_litellm_is_imported_in_the_background_once_ready(tmp_path, openai_fake,
                                                         start_daemon):
    daemon = start_daemon(write_config(tmp_path, openai_fake.url))   # has the demo model
    deadline = time.monotonic() + 60
    while "litellm imported" not in daemon.log():      # without any call asking for it
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.2)
    api = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)
    reply = api.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "offline hello"
    assert daemon.log().count("litellm imported") == 1


def test_the_daemon_runs_with_its_garbage_collector_thresholds(tmp_path, monkeypatch):
    """``GC_THRESHOLDS`` are in force when the loop starts (restored after this test)."""
    import gc

    from memproxyd import daemon
    seen = {}

    def run(coro):
        seen["thresholds"] = gc.get_threshold()
        coro.close()
        return 0
    import os
    before, umask = gc.get_threshold(), os.umask(0o022)
    monkeypatch.setattr(daemon.asyncio, "run", run)
    monkeypatch.setattr(daemon.logs, "configure", lambda *a: None)
    try:
        assert daemon.main(["--config", str(write_config(tmp_path, "http://127.0.0.1:9"))]) == 0
    finally:
        gc.set_threshold(*before)
        os.umask(umask)          # main() sets the daemon's
    assert seen["thresholds"] == daemon.GC_THRESHOLDS != before


def test_port_host_and_state_dir_flags_override_the_file_across_reloads(tmp_path, openai_fake):
    from tests.conftest import free_port
    config = write_config(tmp_path, openai_fake.url)       # its own port and state dir
    port, state = free_port(), tmp_path / "elsewhere"
    proc = subprocess.Popen([sys.executable, "-m", "memproxyd", "--config", str(config),
                             "--port", str(port), "--host", "127.0.0.1",
                             "--state-dir", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        request = urllib.request.Request(url + "/admin/projects", method="POST",
                                         data=json.dumps({"name": "flagged"}).encode(),
                                         headers={"content-type": "application/json"})
        urllib.request.urlopen(request, timeout=5).read()
        assert "flagged" in (state / "projects.json").read_text()
        assert not (tmp_path / "state" / "projects.json").exists()
        reload = urllib.request.Request(url + "/admin/reload", method="POST", data=b"{}")
        answer = json.loads(urllib.request.urlopen(reload, timeout=5).read())
        assert answer["needs_restart"] == []          # the flags still hold after a reload
        assert "flagged" in urllib.request.urlopen(url + "/admin/projects").read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert "overrides=host,port,state_dir" in out


def test_bad_flag_values_exit_2_naming_the_flag(tmp_path, openai_fake):
    config = write_config(tmp_path, openai_fake.url)
    bad = subprocess.run([sys.executable, "-m", "memproxyd", "--config", str(config),
                          "--port", "70000", "--check"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "the command line: 'server.port' expected 0-65535" in bad.stderr
