"""Faults injected around the real daemon: upstreams that rate-limit, send malformed JSON or
event streams, hang mid-stream; clients that disconnect mid-stream; a ``kill -9`` during a
burst of remembered exchanges; a config edited into something invalid while running.

Covered elsewhere: refused connections (502) and a hanging upstream (504 within the timeout)
in ``test_gateway_e2e.test_failures_have_the_right_status_and_openai_shape``; an upstream
closing mid-stream in ``test_stream_failing_midway_ends_with_an_error_event`` (both
protocols); a slow or down memory backend in ``test_supermemory_e2e``.
"""
from __future__ import annotations

import asyncio
import os
import json
import signal
import time
import uuid

import aiohttp
import pytest

from tests.conftest import GATEWAY_KEY, Daemon, write_config
from tests.fakes import faulty_upstream
from tests.fakes.threaded import ThreadedServer

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}


@pytest.fixture(scope="module")
def faulty():
    server = ThreadedServer(faulty_upstream.create_app()).start()
    yield server
    server.stop()


def faulty_models(url: str) -> str:
    entries = [("f-hang", "openai/hang-stream"), ("f-bad-json", "openai/bad-json"),
               ("f-bad-sse", "openai/bad-sse"), ("f-limited", "openai/limited"),
               ("fa-limited", "anthropic/limited"), ("fa-bad-sse", "anthropic/bad-sse")]
    litellm = (f'[[model_list]]\nmodel_name = "f-hang-litellm"\nwire = "litellm"\n'
               f'[model_list.litellm_params]\nmodel = "openai/hang-stream"\n'
               f'api_base = "{url}/v1"\napi_key = "k"\n')
    return litellm + "".join(
        f'[[model_list]]\nmodel_name = "{name}"\n[model_list.litellm_params]\n'
        f'model = "{model}"\napi_base = "{url}/v1"\napi_key = "k"\n' for name, model in entries)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, openai_fake, faulty):
    config = write_config(tmp_path_factory.mktemp("faults"), openai_fake.url,
                          auth=f'keys = ["{GATEWAY_KEY}"]', memory='backend = "sqlite"',
                          extra=faulty_models(faulty.url))
    with Daemon(config) as daemon:
        yield daemon


def faulty_records(server, model: str) -> list[dict]:
    return server.call(lambda: [r for r in server.app[faulty_upstream.RECORDS]
                                if r["model"] == model])


def chat(model: str, text: str = "hi", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def anthropic(model: str, text: str = "hi", **extra) -> dict:
    return {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": text}],
            **extra}


@pytest.mark.parametrize("path, body, shape", [
    ("/v1/chat/completions", chat("f-limited"), "openai"),
    ("/v1/messages", anthropic("fa-limited"), "anthropic"),
])
async def test_429_is_passed_through_with_retry_after(gateway, path, body, shape):
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.post(gateway.url + path, json=body) as resp:
            assert resp.status == 429
            assert resp.headers["retry-after"] == "7"
            assert (await resp.json())["error"]["message"] == "fake failure 429"


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", chat("f-bad-json")),
    ("/v1/chat/completions", chat("f-bad-sse", stream=True)),
    ("/v1/messages", anthropic("fa-bad-sse", stream=True)),
])
async def test_malformed_upstream_replies_are_a_502_with_a_clear_message(gateway, path, body):
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.post(gateway.url + path, json=body,
                             timeout=aiohttp.ClientTimeout(total=10)) as resp:
            assert resp.status == 502
            reply = await resp.json()
    assert "malformed" in reply["error"]["message"] or "not valid JSON" in reply["error"]["message"]


@pytest.mark.parametrize("model", ["f-hang", "f-hang-litellm"])
async def test_client_disconnect_mid_stream_cancels_the_upstream_call_and_stores_nothing(
        gateway, faulty, model):
    user = f"gone-{uuid.uuid4().hex[:8]}"
    tasks_before = await _tasks(gateway)
    for _ in range(3):
        before = len(faulty_records(faulty, "hang-stream"))
        async with aiohttp.ClientSession(headers={**AUTH, "x-memory-user-id": user}) as http:
            resp = await http.post(gateway.url + "/v1/chat/completions",
                                   json=chat(model, "remember nothing", stream=True),
                                   timeout=aiohttp.ClientTimeout(total=20))
            assert resp.status == 200
            assert (await resp.content.readany()).startswith(b"data: ")
            resp.close()       # the client goes away with the stream half done
        await _until(lambda: (faulty_records(faulty, "hang-stream")[before:] or [{}])[-1]
                     .get("closed"), "the upstream call was left running")
    # No task of the three calls is left. The outbox worker's own wait task comes and goes
    # (one task), so one more than before is the bound; three leaked handlers would exceed it.
    await _until_async(lambda: _tasks(gateway), tasks_before + 1,
                       "a task of a cancelled call is left running")
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(gateway.url + "/v1/memories", params={"user_id": user}) as resp:
            assert (await resp.json())["data"] == []
        async with http.post(gateway.url + "/v1/chat/completions", json=chat("gpt-ok")) as resp:
            assert resp.status == 200        # and the daemon serves on


async def _until(predicate, message: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.05)


async def _until_async(measure, bound: int, message: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (value := await measure()) > bound:
        assert time.monotonic() < deadline, f"{message}: {value} > {bound}"
        await asyncio.sleep(0.05)


async def _tasks(daemon) -> int:
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(daemon.url + "/admin/status") as resp:
            return (await resp.json())["tasks"]


async def _remember(http, url: str, marker: str, acked: list[str]) -> None:
    body = chat("gpt-ok", f"burst fact {marker}", stream=marker[0] in "01234567")
    try:
        async with http.post(url + "/v1/chat/completions", json=body) as resp:
            if resp.status == 200 and (await resp.read()).strip():
                acked.append(marker)
    except aiohttp.ClientError:
        pass   # killed under it: not acknowledged, may or may not be stored


def test_kill_9_during_a_burst_keeps_every_acknowledged_exchange_exactly_once(
        tmp_path, openai_fake, start_daemon):
    config = write_config(tmp_path, openai_fake.url, memory='backend = "sqlite"')
    daemon = start_daemon(config)
    acked: list[str] = []

    async def burst() -> None:
        headers = {"x-memory-user-id": "burst"}
        async with aiohttp.ClientSession(headers=headers) as http:
            tasks = [asyncio.create_task(_remember(http, daemon.url, uuid.uuid4().hex, acked))
                     for _ in range(80)]
            while len(acked) < 20:
                await asyncio.sleep(0.005)
            searcher.extend(_children(daemon.proc.pid))
            daemon.proc.send_signal(signal.SIGKILL)   # mid-burst, without warning
            await asyncio.wait(tasks, timeout=10)

    searcher: list[int] = []
    asyncio.run(burst())
    daemon.proc.wait(5)
    assert len(acked) >= 20
    assert len(searcher) == 1          # the search process: it ends at the pipe's EOF
    asyncio.run(_until(lambda: not os.path.exists(f"/proc/{searcher[0]}")
                       or "Z" in open(f"/proc/{searcher[0]}/stat").read().split()[2],
                       "the search process outlived its daemon"))
    restarted = start_daemon(config)
    deadline = time.monotonic() + 15
    while True:
        stored = _memories(restarted, "burst")
        counts = {m: sum(m in s for s in stored) for m in acked}
        if all(counts.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(counts.values()) == {1}, counts
    assert len(stored) == len(set(stored))


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(child) for child in f.read().split()]
    return found


def _memories(daemon: Daemon, user: str) -> list[str]:
    import urllib.request
    with urllib.request.urlopen(f"{daemon.url}/v1/memories?user_id={user}&limit=1000") as resp:
        return [m["content"] for m in json.loads(resp.read())["data"]]


def test_a_registry_edited_into_garbage_keeps_the_last_good_listeners(
        tmp_path, openai_fake, start_daemon):
    from memproxyd.registry import add_project
    from tests.conftest import free_port
    import urllib.request
    daemon = start_daemon(write_config(tmp_path, openai_fake.url))
    registry, port = tmp_path / "state" / "projects.json", free_port()
    add_project(registry, "kept", port)
    project_url = f"http://127.0.0.1:{port}/v1/models"
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(project_url, timeout=1).read()
            break
        except OSError:
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.05)
    registry.write_text('{"projects": [{"name": "kept", "port": "not a port"')
    deadline = time.monotonic() + 10
    while "registry unusable" not in daemon.log():
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    assert urllib.request.urlopen(project_url, timeout=2).status == 200   # still serving
    with urllib.request.urlopen(daemon.url + "/admin/status") as resp:
        status = json.loads(resp.read())
    assert status["registry"]["error"]
    assert [(l["name"], l["state"]) for l in status["listeners"]] == [("kept", "listening")]
