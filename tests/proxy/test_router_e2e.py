"""Retries and fallbacks through the real daemon, on a fake upstream that fails on purpose:
``num_retries`` per deployment, ``[router] fallbacks`` in LiteLLM's vocabulary, used on
connection errors, 429 and 5xx, never on other 4xx, and for streams only before the first
byte; ``x-memproxy-deployment`` names the deployment that answered."""
from __future__ import annotations

import json

import aiohttp
import anthropic
import openai
import pytest

from tests.conftest import GATEWAY_KEY, Daemon, free_port, write_config
from tests.fakes import faulty_upstream
from tests.fakes.threaded import ThreadedServer

ROUTER = """
[router]
retry_backoff = 0.01
fallbacks = [{"r-down" = ["r-missing-key", "r-backup"]}, {"r-refused" = ["r-backup"]},
             {"r-400" = ["r-backup"]}, {"r-mid" = ["r-backup"]}, {"ra-down" = ["ra-backup"]},
             {"r-all-down" = ["r-down-too"]}]
"""


@pytest.fixture(scope="module")
def faulty():
    server = ThreadedServer(faulty_upstream.create_app()).start()
    yield server
    server.stop()


def router_models(url: str) -> str:
    dead = f"http://127.0.0.1:{free_port()}"
    entries = [("r-flaky", "openai/flaky-2", url, "num_retries = 2"),
               ("r-down", "openai/fail-503", url, "num_retries = 1"),
               ("r-missing-key", "openai/ok", url, 'api_key = "os.environ/MEMPROXY_NO_KEY"'),
               ("r-backup", "openai/backup", url, ""),
               ("r-refused", "openai/ok", dead, ""),
               ("r-400", "openai/fail-400", url, "num_retries = 3"),
               ("r-mid", "openai/midstream", url, "num_retries = 3"),
               ("r-all-down", "openai/fail-500", url, ""),
               ("r-down-too", "openai/fail-502", url, ""),
               ("ra-down", "anthropic/fail-529", url, ""),
               ("ra-backup", "anthropic/backup-claude", url, "")]
    out = []
    for name, model, base, extra in entries:
        key = "" if "api_key" in extra else 'api_key = "k"\n'
        out.append(f'[[model_list]]\nmodel_name = "{name}"\n[model_list.litellm_params]\n'
                   f'model = "{model}"\napi_base = "{base}/v1"\n{key}{extra}\n')
    return "".join(out)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, openai_fake, faulty):
    config = write_config(tmp_path_factory.mktemp("router"), openai_fake.url,
                          auth=f'keys = ["{GATEWAY_KEY}"]',
                          extra=ROUTER + router_models(faulty.url))
    with Daemon(config) as daemon:
        yield daemon


def counts(server) -> dict:
    return server.call(lambda: dict(server.app[faulty_upstream.COUNTS]))


def api(daemon) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=daemon.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)


def user(text: str = "hi") -> list[dict]:
    return [{"role": "user", "content": text}]


async def test_num_retries_retries_a_5xx_on_the_same_deployment(gateway, faulty):
    raw = await api(gateway).chat.completions.with_raw_response.create(
        model="r-flaky", messages=user())
    assert raw.parse().choices[0].message.content == "answered by flaky-2"
    assert raw.headers["x-memproxy-deployment"] == "r-flaky"
    assert counts(faulty)["flaky-2"] == 3          # two 503s, then the answer


@pytest.mark.parametrize("model, tries", [("r-down", ("fail-503", 2)),
                                          ("r-refused", None)])
async def test_a_failing_deployment_falls_back_in_order(gateway, faulty, model, tries):
    before = counts(faulty)
    raw = await api(gateway).chat.completions.with_raw_response.create(
        model=model, messages=user())
    assert raw.parse().choices[0].message.content == "answered by backup"
    assert raw.headers["x-memproxy-deployment"] == "r-backup"
    after = counts(faulty)
    if tries:   # num_retries = 1: two tries before falling back; the keyless one skipped
        assert after[tries[0]] - before.get(tries[0], 0) == tries[1]
    assert after["backup"] - before.get("backup", 0) == 1


async def test_a_streaming_call_falls_back_before_its_first_byte(gateway, faulty):
    stream = await api(gateway).chat.completions.create(model="r-down", messages=user(),
                                                        stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "answered by backup"


async def test_a_client_error_is_never_retried_nor_fallen_back(gateway, faulty):
    before = counts(faulty)
    with pytest.raises(openai.BadRequestError):
        await api(gateway).chat.completions.create(model="r-400", messages=user())
    after = counts(faulty)
    assert after["fail-400"] - before.get("fail-400", 0) == 1
    assert after.get("backup", 0) == before.get("backup", 0)


async def test_a_stream_that_failed_after_its_first_byte_is_not_retried(gateway, faulty):
    before = counts(faulty)
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/chat/completions",
                             json={"model": "r-mid", "stream": True, "messages": user()},
                             headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as resp:
            assert resp.status == 200
            assert resp.headers["x-memproxy-deployment"] == "r-mid"
            events = [e for e in (await resp.read()).decode().split("\n\n") if e.strip()]
    assert "upstream stream failed" in json.loads(events[-1][6:])["error"]["message"]
    after = counts(faulty)
    assert after["midstream"] - before.get("midstream", 0) == 1
    assert after.get("backup", 0) == before.get("backup", 0)


async def test_when_every_deployment_fails_the_last_failure_is_answered(gateway):
    with pytest.raises(openai.APIStatusError) as info:
        await api(gateway).chat.completions.create(model="r-all-down", messages=user())
    assert info.value.status_code == 502
    assert info.value.response.headers["x-memproxy-deployment"] == "r-down-too"


async def test_anthropic_clients_fall_back_too(gateway, faulty):
    claude = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=GATEWAY_KEY, max_retries=0)
    raw = await claude.messages.with_raw_response.create(model="ra-down", max_tokens=5,
                                                         messages=user())
    assert (await raw.parse()).content[0].text == "answered by backup-claude"
    assert raw.headers["x-memproxy-deployment"] == "ra-backup"
