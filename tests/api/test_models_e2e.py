"""``GET /v1/models`` for model pickers, with the official SDKs against the real daemon:
wildcard entries listed as the models their upstream serves (asked once, cached, in bounded
time), and Anthropic's shape for ``anthropic-version`` requests (Claude Code's gateway model
discovery)."""
from __future__ import annotations

import socket
import time

import anthropic
import openai
import pytest

from tests.conftest import write_config
from tests.fakes import agent_upstream
from tests.fakes.threaded import ThreadedServer


@pytest.fixture(scope="module")
def agent_fake():
    server = ThreadedServer(agent_upstream.create_app()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def silent_port():
    """A port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, openai_fake, agent_fake, silent_port):
    from tests.conftest import Daemon
    extra = ('[[model_list]]\nmodel_name = "claude-*"\n[model_list.litellm_params]\n'
             f'model = "anthropic/*"\napi_base = "{agent_fake.url}"\napi_key = "sk-up"\n'
             '[[model_list]]\nmodel_name = "gpt-*"\n[model_list.litellm_params]\n'
             f'model = "openai/gpt-*"\napi_base = "{agent_fake.url}/v1"\napi_key = "sk-up"\n'
             '[[model_list]]\nmodel_name = "silent-*"\n[model_list.litellm_params]\n'
             f'model = "openai/*"\napi_base = "http://127.0.0.1:{silent_port}/v1"\n')
    with Daemon(write_config(tmp_path_factory.mktemp("models"), openai_fake.url,
                             extra=extra)) as running:
        yield running


def listed(fake) -> list[dict]:
    return [r for r in fake.call(lambda: list(fake.app[agent_upstream.RECORDS]))
            if r["path"] == "/v1/models"]


def test_openai_sdk_lists_what_wildcards_serve_and_never_a_pattern(daemon, agent_fake):
    started = time.monotonic()
    ids = [m.id for m in openai.OpenAI(base_url=daemon.url + "/v1", api_key="x").models.list()]
    assert time.monotonic() - started < 6        # the silent upstream is given 3 s, not more
    assert {"claude-sonnet-4-5", "claude-haiku-4-5", "gpt-5-codex", "demo", "gpt-ok"} <= set(ids)
    assert not any("*" in i for i in ids)
    assert "fake-chat" not in ids                  # served by no entry
    assert len(ids) == len(set(ids))
    # each upstream was asked in its own protocol, with the deployment's key
    asked = listed(agent_fake)
    assert {r["headers"].get("anthropic-version") for r in asked} == {"2023-06-01", None}


def test_listings_are_cached_and_a_silent_upstream_is_not_waited_on_twice(daemon, agent_fake):
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x")
    client.models.list()
    before = len(listed(agent_fake))
    started = time.monotonic()
    for _ in range(3):
        client.models.list()
    assert time.monotonic() - started < 1.5
    assert len(listed(agent_fake)) == before


def test_anthropic_sdk_gets_anthropics_shape(daemon):
    page = anthropic.Anthropic(base_url=daemon.url, api_key="x").models.list()
    ids = [m.id for m in page.data]
    assert {"claude-sonnet-4-5", "demo"} <= set(ids)
    sonnet = next(m for m in page.data if m.id == "claude-sonnet-4-5")
    assert sonnet.type == "model" and sonnet.display_name == "Claude Sonnet 4 5"
    assert sonnet.created_at.year == 2025
    assert page.has_more is False and page.first_id == ids[0] and page.last_id == ids[-1]
    assert "needs-key" not in ids                  # unavailable: no picker should offer it
