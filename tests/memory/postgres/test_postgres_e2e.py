"""Several real daemons on one PostgreSQL database: the official openai SDK as the client, the
fake OpenAI upstream, a throwaway PostgreSQL server (skipped where none is installed)."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

import openai
import pytest

from tests.conftest import GATEWAY_KEY, free_port, write_config
from tests.memory.test_memory_e2e import http_json, vector_recall_works

MEMORY = ('backend = "postgres"\nrecall_timeout_ms = 2000\noutbox_retry_max_seconds = 2\n')


def pg_toml(dsn: str) -> str:
    return (f'[postgres]\ndsn = "{dsn}"\npool_size = 4\nconnect_timeout = 1.0\n'
            'outbox_lease_seconds = 2.0\n')


@pytest.fixture
def pg_daemons(tmp_path, openai_fake, start_daemon, pg_dsn):
    """``start(name, dsn=pg_dsn)``: a daemon with its own state_dir on the shared database."""
    def start(name: str, dsn: str = pg_dsn):
        folder = tmp_path / name
        folder.mkdir()
        config = write_config(folder, openai_fake.url, memory=MEMORY, extra=pg_toml(dsn),
                              auth=f'keys = ["{GATEWAY_KEY}"]')
        return start_daemon(config)
    return start


def client(daemon, user: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=daemon.url + "/v1", api_key=GATEWAY_KEY, max_retries=0,
                              timeout=20, default_headers={"x-memory-user-id": user})


async def say(daemon, user: str, text: str):
    """One remembered call; returns the raw response (headers) once the reply is complete."""
    return await client(daemon, user).chat.completions.with_raw_response.create(
        model="gpt-ok", messages=[{"role": "user", "content": text}])


async def burst(daemon, user: str, facts: list[str], parallel: int = 4,
                done: list[str] | None = None) -> list[str]:
    """Say every fact, ``parallel`` at a time; returns (and appends to ``done``) the facts
    whose reply came back."""
    gate = asyncio.Semaphore(parallel)
    done = [] if done is None else done

    async def one(fact: str):
        async with gate:
            try:
                raw = await say(daemon, user, f"Remember that {fact}.")
            except (openai.APIConnectionError, openai.APIStatusError):
                return
            assert raw.http_response.status_code == 200
            done.append(fact)
    await asyncio.gather(*(one(f) for f in facts))
    return done


async def stored_facts(daemon, user: str) -> Counter | None:
    """The facts stored for ``user``, each with how often; None while the backend fails."""
    status, body = await http_json("GET", f"{daemon.url}/v1/memories",
                                   params={"user_id": user, "limit": "1000"})
    if status == 502:                  # the database is not reachable (yet)
        return None
    assert status == 200, body
    return Counter(m["content"].split("Remember that ")[1].split(".")[0] for m in body["data"])


async def wait_stored(daemon, user: str, facts: list[str], timeout: float = 20.0) -> Counter:
    deadline = time.monotonic() + timeout
    while True:
        found = await stored_facts(daemon, user)
        if found is not None and set(facts) <= set(found):
            return found
        assert time.monotonic() < deadline, f"not all stored in time: {found}"
        await asyncio.sleep(0.1)


def fact_list(tag: str, n: int) -> list[str]:
    return [f"{tag}{i}x{uuid.uuid4().hex[:6]} is fact {i}" for i in range(n)]


async def test_two_daemons_store_each_exchange_once_and_both_recall_all(pg_daemons):
    a, b = pg_daemons("a"), pg_daemons("b")
    user = f"team-{uuid.uuid4().hex[:6]}"
    facts_a, facts_b = fact_list("alpha", 12), fact_list("beta", 12)
    done = await asyncio.gather(burst(a, user, facts_a), burst(b, user, facts_b))
    assert done[0] + done[1] and sorted(done[0] + done[1]) == sorted(facts_a + facts_b)
    for daemon in (a, b):
        found = await wait_stored(daemon, user, facts_a + facts_b)
        assert found == Counter(facts_a + facts_b)         # every exchange once, on both
    marker = facts_a[3].split(" ")[0]                       # remembered through a
    raw = await say(b, user, f"What do you know about {marker}?")
    assert raw.headers["x-memproxy-memory"] == "injected"
    other = await say(b, f"other-{uuid.uuid4().hex[:6]}", f"What about {marker}?")
    assert other.headers["x-memproxy-memory"] == "none"     # another project sees nothing


async def test_kill_9_of_one_daemon_mid_burst_loses_no_acknowledged_exchange(pg_daemons):
    a, b = pg_daemons("a"), pg_daemons("b")
    user = f"team-{uuid.uuid4().hex[:6]}"
    facts_a, facts_b = fact_list("kilo", 40), fact_list("bravo", 10)
    done_a: list[str] = []

    async def kill_mid_burst():
        while len(done_a) < 8:
            await asyncio.sleep(0.005)
        a.proc.send_signal(signal.SIGKILL)
    _, done_b, _ = await asyncio.gather(burst(a, user, facts_a, done=done_a),
                                        burst(b, user, facts_b), kill_mid_burst())
    assert a.proc.wait(5) == -signal.SIGKILL
    assert 0 < len(done_a) < len(facts_a), "the kill should land mid-burst"
    try:
        found = await wait_stored(b, user, done_a + done_b)
    except AssertionError as exc:      # say whether a spilled them to its own file
        spills = [line for line in a.log().splitlines() if "spill" in line or "postgres" in line]
        raise AssertionError(f"{exc}\ndaemon a said: {spills[-10:]}") from None
    assert set(done_a + done_b) <= set(found)                 # every acknowledged one
    assert max(found.values()) == 1                           # none twice


async def test_database_stopped_and_restarted_under_load(pg_daemons, pg_cluster):
    a = pg_daemons("a")
    user = f"team-{uuid.uuid4().hex[:6]}"
    facts = fact_list("delta", 24)
    statuses: list[str] = []

    async def load():
        for i in range(0, len(facts), 2):
            for fact in facts[i:i + 2]:
                raw = await say(a, user, f"Remember that {fact}.")
                assert raw.http_response.status_code == 200     # served throughout
                statuses.append(raw.headers["x-memproxy-memory"])
            await asyncio.sleep(0.1)

    async def outage():
        await asyncio.sleep(0.4)
        await asyncio.to_thread(pg_cluster.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(pg_cluster.start)
    await asyncio.gather(load(), outage())
    assert "error" in statuses                    # recall failed while the database was down
    found = await wait_stored(a, user, facts)
    assert found == Counter(facts)                # the outbox drained after, each once
    _, ready = await http_json("GET", f"{a.url}/health/readiness")
    assert ready["memory"]["reachable"] is True and ready["memory"]["outbox"]["depth"] == 0


async def test_unreachable_database_reports_error_while_calls_are_served(pg_daemons, tmp_path):
    down = pg_daemons("down", dsn=f"postgresql://memproxyd:s3cret-pw@127.0.0.1:{free_port()}/x")
    raw = await say(down, "alice", "Remember that the gate code is 4711.")
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content.startswith("echo:")
    assert raw.headers["x-memproxy-memory"] == "error"
    status, ready = await http_json("GET", f"{down.url}/health/readiness")
    memory = ready["memory"]
    assert status == 200 and memory["backend"] == "postgres"
    assert memory["reachable"] is False and memory["pool"]["max"] == 4
    assert memory["outbox"]["depth"] == 1          # spilled locally, delivered when it is back
    ctl = subprocess.run([sys.executable, "-m", "memproxyd.ctl", "--config",
                          str(down.config), "status", "--json"], capture_output=True, text=True,
                         timeout=30)
    shown = json.loads(ctl.stdout)["memory"]
    assert shown["backend"] == "postgres" and shown["database"].endswith("/x")
    assert "s3cret-pw" not in ctl.stdout + down.log()


async def test_status_shows_backend_pool_and_outbox_depth(pg_daemons):
    a = pg_daemons("a")
    await say(a, "alice", "Remember that the deploy window is friday.")
    _, status = await http_json("GET", f"{a.url}/admin/status")
    memory = status["memory"]
    assert memory["backend"] == "postgres" and memory["reachable"] is True
    assert memory["schema_versions"] == {"memories": 2, "outbox": 2, "journal": 1}
    assert memory["pool"]["size"] >= 1 and memory["outbox"]["depth"] in (0, 1)


async def test_embedding_model_adds_vector_recall(tmp_path, openai_fake, start_daemon, pg_dsn):
    daemon = start_daemon(write_config(
        tmp_path, openai_fake.url, extra=pg_toml(pg_dsn),
        memory='backend = "postgres"\nembedding_model = "embed-ok"\nrecall_timeout_ms = 20000'))
    await vector_recall_works(daemon, openai_fake)
    _, ready = await http_json("GET", f"{daemon.url}/health/readiness")
    assert ready["memory"]["vectors"] is True and ready["memory"]["pgvector"] in (True, False)
