"""Configuration errors no retry can fix (a provider key not set, a model not allowed) answer
a 400 that the official SDKs and the real Codex CLI give up on at once: one request each,
counted in the usage ledger (every refused call gets a row), in each protocol's own shape,
with the fix in the message. ``--check`` and ``/health/readiness`` name the unset keys."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests import agents
from tests.conftest import clis_or_skip, write_config

ACCESS = '[access]\ndefault_models = ["gpt-*", "needs-key"]\n'


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, openai_fake):
    from tests.conftest import Daemon
    tmp = tmp_path_factory.mktemp("config-errors")
    with Daemon(write_config(tmp, openai_fake.url, extra=ACCESS)) as daemon:
        yield daemon


def rows(daemon, user: str) -> list[tuple[str, int]]:
    with urllib.request.urlopen(f"{daemon.url}/v1/usage?project={user}&rows=50") as answer:
        return [(r["model"], r["status"]) for r in json.loads(answer.read())["rows"]]


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# default max_retries (2): a 503 would have been sent three times
def test_openai_sdk_sends_an_unset_key_once_and_reads_the_fix(gateway):
    api = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x",
                        default_headers={"x-memory-user-id": "oai-key"})
    with pytest.raises(openai.BadRequestError) as chat:
        api.chat.completions.create(model="needs-key", messages=ask("x"))
    assert chat.value.body["code"] == "model_unavailable"
    assert "MEMPROXY_TEST_UNSET_KEY is not set" in chat.value.message
    assert "restart" in chat.value.message
    assert chat.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.BadRequestError) as responses:
        api.responses.create(model="needs-key", input="x")
    assert responses.value.body["code"] == "model_unavailable"
    assert rows(gateway, "oai-key") == [("needs-key", 400), ("needs-key", 400)]


def test_openai_sdk_sends_a_model_not_allowed_once_and_reads_what_is(gateway):
    api = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x",
                        default_headers={"x-memory-user-id": "oai-deny"})
    with pytest.raises(openai.BadRequestError) as denied:
        api.chat.completions.create(model="demo", messages=ask("x"))
    assert denied.value.body["code"] == "model_not_allowed"
    assert "it may use gpt-*, needs-key ([access]" in denied.value.message
    assert rows(gateway, "oai-deny") == [("demo", 400)]


def test_anthropic_sdk_sends_both_once_in_anthropics_shape(gateway):
    claude = anthropic.Anthropic(base_url=gateway.url, api_key="x",
                                 default_headers={"x-memory-user-id": "ant"})
    for model, fix in (("needs-key", "MEMPROXY_TEST_UNSET_KEY is not set"),
                       ("demo", "it may use gpt-*")):
        with pytest.raises(anthropic.BadRequestError) as info:
            claude.messages.create(model=model, max_tokens=8, messages=ask("x"))
        assert info.value.body["type"] == "error"
        assert info.value.body["error"]["type"] == "invalid_request_error"
        assert fix in info.value.body["error"]["message"]
    assert rows(gateway, "ant") == [("demo", 400), ("needs-key", 400)]


def test_google_genai_sdk_gets_failed_precondition(gateway):
    client = genai.Client(api_key="x", http_options=types.HttpOptions(
        base_url=gateway.url, headers={"x-memory-user-id": "gem"}))
    with pytest.raises(genai_errors.ClientError) as info:
        client.models.generate_content(model="needs-key", contents="x")
    assert info.value.code == 400 and info.value.status == "FAILED_PRECONDITION"
    assert "MEMPROXY_TEST_UNSET_KEY is not set" in info.value.message
    assert rows(gateway, "gem") == [("needs-key", 400)]


@pytest.mark.e2e
def test_codex_cli_sends_one_request_for_an_unset_key(gateway, tmp_path):
    clis = clis_or_skip(("codex",))
    home = agents.write_codex_home(tmp_path / "codex-home", f"{gateway.url}/v1")
    config = home / "config.toml"
    config.write_text(config.read_text().replace('model = "gpt-5-codex"', 'model = "needs-key"')
                      + 'http_headers = { "x-memory-user-id" = "codex-key" }\n')
    (tmp_path / "work").mkdir()
    run = agents.run_codex(clis, home, tmp_path / "work", "hello")
    assert run.returncode != 0
    assert "MEMPROXY_TEST_UNSET_KEY is not set" in run.stdout + run.stderr
    assert rows(gateway, "codex-key") == [("needs-key", 400)]     # was 30 with a 503


@pytest.mark.e2e
def test_claude_code_sends_one_request_for_an_unset_key(gateway, tmp_path):
    clis = clis_or_skip(("claude",))
    (tmp_path / "work").mkdir()
    run = agents.run_claude(clis, gateway.url, tmp_path / "work", "hello", model="needs-key",
                            headers={"x-memory-user-id": "claude-key"})
    assert run.returncode != 0
    assert "MEMPROXY_TEST_UNSET_KEY is not set" in run.stdout + run.stderr
    # Claude Code 2.1.332 sends a 400 again up to five times at once, each without one more
    # of its beta headers (it guesses a gateway refused a beta); a 503 is retried with
    # backoff, 8 times in the first 100 s and on (2.1.197 sent the 400 once)
    refused = [row for row in rows(gateway, "claude-key") if row[0] == "needs-key"]
    assert 1 <= len(refused) <= 6 and set(refused) == {("needs-key", 400)}


def test_readiness_and_check_name_the_models_whose_key_is_unset(gateway):
    deadline = time.monotonic() + 10
    while True:   # 503 "starting" until the memory index is built
        try:
            with urllib.request.urlopen(f"{gateway.url}/health/readiness") as answer:
                ready = json.loads(answer.read())
            break
        except urllib.error.HTTPError as exc:
            assert exc.code == 503 and time.monotonic() < deadline
            time.sleep(0.1)
    assert ready["models_unavailable"] == ["needs-key"]     # the variable: --check says
    check = subprocess.run([sys.executable, "-m", "memproxyd", "--check", "--config",
                            str(gateway.config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "model 'needs-key' is unavailable: MEMPROXY_TEST_UNSET_KEY is not set" in check.stdout


def test_check_refuses_what_the_daemon_refuses(tmp_path):
    config = tmp_path / "open.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\n')
    check = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "memproxyd",
                            "--check", "--config", str(config)], capture_output=True, text=True)
    assert check.returncode == 2
    assert "refusing to bind 0.0.0.0: no [auth] keys" in check.stderr
    config.write_text(f'[server]\nhost = "0.0.0.0"\nstate_dir = "{tmp_path / "state"}"\n')
    start = subprocess.run([sys.executable, "-X", "dev", "-m", "memproxyd", "--config",
                            str(config)], capture_output=True, text=True, timeout=30)
    assert start.returncode == 2
    assert "never awaited" not in start.stderr
