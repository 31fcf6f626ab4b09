"""Outbox dead letters: an exchange the backend rejects for good stops being retried after a
bounded number of tries, is kept and counted, and is delivered once a command requeues it."""
from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.error
import urllib.request

import pytest

from memproxyd.ctl import cli
from memproxyd.memory.base import MemoryError_, NewMemory, RetryLater
from memproxyd.memory.outbox import Outbox, OutboxWorker
from memproxyd.memory.sqlite.store import SqliteStore
from memproxyd.sessions import SessionManager
from tests.conftest import write_config


class RejectingStore(SqliteStore):
    """A real store that raises ``error`` while ``error`` is set."""

    def __init__(self, path, error):
        super().__init__(path)
        self.error, self.calls = error, 0

    async def add_batches(self, user_id, batches, session=None):   # what the worker calls
        self.calls += 1
        if self.error is not None:
            raise self.error
        return await super().add_batches(user_id, batches, session)


@pytest.fixture
async def parts(tmp_path):
    outbox, sessions = Outbox(tmp_path / "memory.db"), SessionManager()
    await outbox.open()
    yield outbox, sessions
    await sessions.close()
    await outbox.close()


async def run(tmp_path, parts, error, tries: int):
    outbox, sessions = parts
    store = RejectingStore(tmp_path / "memory.db", error)
    await store.open()
    worker = OutboxWorker(outbox, lambda: store, sessions, max_attempts=3)
    await outbox.enqueue("alice", [NewMemory("user: a fact", {}, key="k1")])
    for _ in range(tries):
        await worker.drain(now=math.inf)     # every entry due: no waiting on backoff
    return outbox, store, worker


async def test_a_permanent_failure_becomes_a_dead_letter_after_max_attempts(tmp_path, parts):
    outbox, store, worker = await run(tmp_path, parts, MemoryError_("HTTP 400"), tries=6)
    assert store.calls == 3                  # then no more tries
    assert await outbox.dead() == 1 and await outbox.count() == 1
    assert await outbox.next_due() is None   # the worker sleeps; nothing live is due
    store.error = None
    assert await outbox.retry_dead() == 1
    assert await worker.drain() == 1
    assert await outbox.count() == 0
    page, _ = await store.list("alice", 10)
    assert [m.content for m in page] == ["user: a fact"]
    await store.close()


async def test_a_backend_that_is_down_is_waited_for_never_dead_lettered(tmp_path, parts):
    outbox, store, _ = await run(tmp_path, parts, RetryLater("HTTP 503"), tries=6)
    assert store.calls == 6
    assert await outbox.dead() == 0 and await outbox.count() == 1
    await store.close()


def test_dead_letters_show_in_readiness_and_status_and_retry_dead_delivers_them(
        tmp_path, openai_fake, start_daemon, capsys):
    config = write_config(tmp_path, openai_fake.url, memory='backend = "sqlite"')

    async def prepare() -> None:       # a dead letter left by an earlier run
        outbox = Outbox(tmp_path / "state" / "memory.db")
        await outbox.open()
        await outbox.enqueue("dl-user", [NewMemory("user: rejected once", {}, key="dl-1")])
        [entry] = await outbox.pending(10)
        await outbox.failed(entry.id, 0, "MemoryError_: HTTP 400", dead=True)
        await outbox.close()

    asyncio.run(prepare())
    daemon = start_daemon(config)

    def readiness() -> dict:
        try:
            with urllib.request.urlopen(daemon.url + "/health/readiness") as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:      # 503 "starting": the index is being built
            assert exc.code == 503
            body = exc.read()
        outbox = json.loads(body)["memory"]["outbox"]
        return {"pending": outbox["pending"], "dead": outbox["dead"]}

    assert readiness() == {"pending": 0, "dead": 1}
    assert cli.main(["--config", str(config), "status"]) == 0
    assert '"dead": 1' in capsys.readouterr().out
    assert cli.main(["--config", str(config), "memory", "retry-dead"]) == 0
    assert "1 dead letter back in the outbox queue" in capsys.readouterr().out
    deadline = time.monotonic() + 5
    while readiness() != {"pending": 0, "dead": 0}:
        assert time.monotonic() < deadline, readiness()
        time.sleep(0.05)
    with urllib.request.urlopen(f"{daemon.url}/v1/memories?user_id=dl-user") as resp:
        assert [m["content"] for m in json.loads(resp.read())["data"]] == ["user: rejected once"]
