"""The memory side failing under a call, in process (``create_app``) against the fake OpenAI
upstream: a disk that is full or a state dir gone read-only when the exchange is written, a
store that fails on recall. The call is still served; the headers say what happened."""
from __future__ import annotations

import errno
import uuid

import pytest

from memproxyd import appkeys
from memproxyd.app import create_app
from memproxyd.config import load_config
from tests.conftest import write_config


@pytest.fixture
async def client(tmp_path, openai_fake, aiohttp_client):
    config = load_config(write_config(tmp_path, openai_fake.url, memory='backend = "sqlite"\n'
                                      "recall_timeout_ms = 2000"))
    return await aiohttp_client(create_app(config))


def chat(text: str, stream: bool = False) -> dict:
    return {"model": "gpt-ok", "stream": stream, "messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
async def test_a_full_or_read_only_disk_still_serves_the_call_and_says_so(client, error):
    memory = client.app[appkeys.MEMORY]

    async def enqueue(user_id, items):
        raise OSError(error, "cannot write")
    memory.outbox.enqueue = enqueue
    marker = uuid.uuid4().hex
    async with client.post("/v1/chat/completions", json=chat(f"hello {marker}"),
                           headers={"x-memory-user-id": "disk"}) as resp:
        assert resp.status == 200
        assert resp.headers["x-memproxy-memory"] == "error"
        assert (await resp.json())["choices"][0]["message"]["content"] == f"echo: hello {marker}"
    async with client.post("/v1/chat/completions", json=chat(f"again {marker}", stream=True),
                           headers={"x-memory-user-id": "disk"}) as resp:
        assert resp.status == 200 and (await resp.read()).endswith(b"data: [DONE]\n\n")


async def test_a_failing_store_on_recall_still_serves_the_call_and_says_so(client):
    memory = client.app[appkeys.MEMORY]

    async def search(*args, **kwargs):
        raise OSError(errno.EIO, "disk I/O error")

    def search_now(*args, **kwargs):
        raise OSError(errno.EIO, "disk I/O error")
    memory.store.search = search
    memory.store.search_now = search_now
    async with client.post("/v1/chat/completions", json=chat("what do you recall?"),
                           headers={"x-memory-user-id": "io"}) as resp:
        assert resp.status == 200
        assert resp.headers["x-memproxy-memory"] == "error"
