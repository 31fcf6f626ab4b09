"""The daemon on the supermemory backend, against the Cloudflare-like fake Supermemory."""
from __future__ import annotations

import json
import signal
import time
import uuid

import openai

from tests.conftest import upstream_records, write_config
from tests.fakes.supermemory import FakeState


def config_for(tmp_path, openai_fake, sm_url: str, timeout_ms: int = 2000):
    extra = (f'[supermemory]\napi_key = "sm-test-key"\nbase_url = "{sm_url}"\n'
             'timeout = 5.0\n')
    return write_config(tmp_path, openai_fake.url, extra=extra,
                        memory=f'backend = "supermemory"\nrecall_timeout_ms = {timeout_ms}\n'
                               'outbox_retry_max_seconds = 1.0')


def chat(daemon, user: str, text: str):
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0,
                           default_headers={"x-memory-user-id": user})
    return client.chat.completions.with_raw_response.create(
        model="gpt-ok", messages=[{"role": "user", "content": text}])


def documents(state: FakeState) -> list[dict]:
    return [doc for docs in list(state.documents.values()) for doc in list(docs.values())]


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_remembered_on_supermemory_and_recalled_from_the_same_namespace(
        tmp_path, openai_fake, supermemory, start_daemon):
    server, state = supermemory
    daemon = start_daemon(config_for(tmp_path, openai_fake, server.url))
    chat(daemon, "sm-alice", "My build server is called thunderbadger.")
    wait_for(lambda: any("thunderbadger" in json.dumps(d) for d in documents(state)))
    marker = uuid.uuid4().hex
    raw = chat(daemon, "sm-alice", f"What is my build server called thunderbadger? {marker}")
    assert raw.headers["x-memproxy-memory"] == "injected"
    record = [r for r in upstream_records(openai_fake) if marker in json.dumps(r["json"])][0]
    assert "thunderbadger" in json.dumps(record["json"]["messages"][0])
    written = {p.split("/")[2] for p in state.paths("/ns/") if "/document" in p}
    searched = {p.split("/")[2] for p in state.paths("/ns/") if p.endswith("/search")}
    assert written == searched and len(written) == 1
    assert not state.challenged()


def test_a_slow_backend_is_skipped_within_the_time_budget(
        tmp_path, openai_fake, supermemory, start_daemon):
    server, state = supermemory
    daemon = start_daemon(config_for(tmp_path, openai_fake, server.url, timeout_ms=200))
    state.delay = 2.0
    started = time.monotonic()
    raw = chat(daemon, "sm-slow", "anything to recall?")
    elapsed = time.monotonic() - started
    assert raw.headers["x-memproxy-memory"] == "error"
    assert raw.parse().choices[0].message.content == "echo: anything to recall?"
    assert elapsed < 1.5


def test_outage_then_kill_9_loses_nothing_and_delivers_once(
        tmp_path, openai_fake, supermemory, start_daemon):
    server, state = supermemory
    config = config_for(tmp_path, openai_fake, server.url)
    state.down = True
    daemon = start_daemon(config)
    raw = chat(daemon, "sm-bob", "Remember that the deploy key rotates monthly.")
    assert raw.headers["x-memproxy-memory"] == "error"      # recall failed, call did not
    time.sleep(0.5)                                           # delivery attempted and refused
    assert documents(state) == []
    daemon.signal(signal.SIGKILL)
    daemon.proc.wait(5)
    state.down = False
    start_daemon(config)
    wait_for(lambda: len(documents(state)) == 1)
    time.sleep(1.0)
    docs = documents(state)
    assert len(docs) == 1 and "rotates monthly" in json.dumps(docs[0])


def test_memory_api_and_status_on_the_supermemory_backend(
        tmp_path, openai_fake, supermemory, start_daemon):
    import urllib.request

    server, state = supermemory
    daemon = start_daemon(config_for(tmp_path, openai_fake, server.url))

    def call(method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            daemon.url + path, method=method, headers={"content-type": "application/json"},
            data=json.dumps(body).encode() if body is not None else None)
        return json.loads(urllib.request.urlopen(request, timeout=10).read())

    created = call("POST", "/v1/memories", {"user_id": "sm-carol", "memories": [
        {"content": "Carol's laptop is a ThinkPad"}, {"content": "Carol drinks oolong"}]})
    assert len(created["data"]) == 2
    found = call("POST", "/v1/memories/search", {"user_id": "sm-carol", "query": "oolong"})
    assert "oolong" in found["results"][0]["content"]
    listed = call("GET", "/v1/memories?user_id=sm-carol")
    assert len(listed["data"]) == 2
    assert call("DELETE", f"/v1/memories/{created['data'][0]['id']}?user_id=sm-carol") == \
        {"deleted": True}
    assert call("GET", "/v1/memories?user_id=sm-dave")["data"] == []
    status = call("GET", "/admin/status")
    assert status["memory"]["backend"] == "supermemory"
    assert "cf_clearance" in status["sessions"]["users"]["sm-carol"]
    assert "sm-carol" in status["sessions"]["users"] and not state.challenged()
    assert all("=" not in name for name in status["sessions"]["users"]["sm-carol"])
