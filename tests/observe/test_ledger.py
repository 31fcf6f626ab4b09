"""The ledger's writer, retention and summaries; usage shapes; prices."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time

from memproxyd.config import LitellmParams, ModelEntry, ModelInfo
from memproxyd.observe.ledger import Ledger
from memproxyd.observe.meter import Row, usage_of
from memproxyd.observe.prices import PriceBook


def row(ts: float, user: str = "alpha", model: str = "m", latency: float = 10.0,
        documents: list[bytes] | None = None, entry=None) -> Row:
    return Row(ts=ts, user_id=user, project="", protocol="openai", endpoint="/v1/chat/completions",
               model=model, deployment="openai/" + model, status=200, overhead_ms=0.1,
               upstream_ms=latency - 0.1, latency_ms=latency, ttft_ms=None, memory="off",
               memories=0, trace_id="t" * 32, documents=documents or [], entry=entry)


def committed(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM usage").fetchone()[0]


async def test_rows_wait_in_memory_and_are_committed_in_one_batch(tmp_path):
    ledger = Ledger(tmp_path / "usage.db", flush_seconds=3600)
    await ledger.open()
    try:
        for _ in range(3):
            ledger.add(row(time.time()))
        assert committed(tmp_path / "usage.db") == 0     # no commit on the request path
        assert await ledger.flush() == 3
        assert committed(tmp_path / "usage.db") == 3
    finally:
        await ledger.close()


async def test_close_commits_what_is_pending(tmp_path):
    ledger = Ledger(tmp_path / "usage.db", flush_seconds=3600)
    await ledger.open()
    ledger.add(row(time.time()))
    await ledger.close()
    assert committed(tmp_path / "usage.db") == 1


async def test_rows_older_than_retention_are_deleted(tmp_path):
    ledger = Ledger(tmp_path / "usage.db", retention_days=1, flush_seconds=0.05)
    await ledger.open()
    try:
        ledger.add(row(time.time() - 2 * 86400, model="old"))
        ledger.add(row(time.time(), model="new"))
        await ledger.flush()
        for _ in range(100):
            if committed(tmp_path / "usage.db") == 1:
                break
            await asyncio.sleep(0.02)
        rows = await ledger.rows(since=0)
        assert [r["model"] for r in rows] == ["new"]
    finally:
        await ledger.close()


async def test_summary_by_model_with_percentiles_and_tokens(tmp_path):
    ledger = Ledger(tmp_path / "usage.db")
    await ledger.open()
    usage = json.dumps({"usage": {"prompt_tokens": 10, "completion_tokens": 4}}).encode()
    try:
        for latency in range(1, 21):
            ledger.add(row(time.time(), model="a", latency=float(latency), documents=[usage]))
        ledger.add(row(time.time(), model="b", user="beta"))
        groups = await ledger.summary(since=time.time() - 60, by="model")
        assert [g["model"] for g in groups] == ["a", "b"]
        a = groups[0]
        assert (a["calls"], a["prompt_tokens"], a["completion_tokens"]) == (20, 200, 80)
        assert a["latency_p50_ms"] == 10.5 and a["latency_p95_ms"] == 20.0
        today = time.strftime("%Y-%m-%d", time.gmtime())
        both = await ledger.summary(since=0, by=("day", "model"))
        assert [(g["day"], g["model"], g["calls"]) for g in both] == [(today, "a", 20),
                                                                      (today, "b", 1)]
        only_beta = await ledger.summary(since=0, by="project", user_id="beta")
        assert [(g["project"], g["calls"]) for g in only_beta] == [("beta", 1)]
    finally:
        await ledger.close()


def test_usage_of_each_protocols_shape():
    openai_stream = [b'{"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4,'
                     b' "prompt_tokens_details": {"cached_tokens": 6}}}']
    assert usage_of(openai_stream) == (9, 4, 6)
    anthropic_stream = [
        b'{"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens":'
        b' 1, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}}}',
        b'{"type": "message_delta", "usage": {"output_tokens": 42}}']
    assert usage_of(anthropic_stream) == (125, 42, 100)
    responses = [b'{"type": "response.completed", "response": {"usage": {"input_tokens": 7,'
                 b' "output_tokens": 3, "total_tokens": 10, "input_tokens_details":'
                 b' {"cached_tokens": 2}}}}']
    assert usage_of(responses) == (7, 3, 2)
    assert usage_of([b"not json", b'{"choices": []}']) is None


def entry(model: str, **info) -> ModelEntry:
    return ModelEntry("x", LitellmParams(model=model), model_info=ModelInfo(**info))


def test_prices_from_the_map_from_model_info_and_unknown():
    book = PriceBook({"gpt-x": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                                "cache_read_input_token_cost": 1e-7}})
    assert book.cost(entry("openai/gpt-x"), "openai/gpt-x", 100, 10, 40) == \
        60 * 1e-6 + 40 * 1e-7 + 10 * 2e-6
    own = entry("openai/gpt-x", output_cost_per_token=1.0)
    assert book.cost(own, "openai/gpt-x", 100, 10, 0) == 100 * 1e-6 + 10 * 1.0
    aliased = entry("openai/local-name", base_model="gpt-x")
    assert book.cost(aliased, "openai/local-name", 1, 1, 0) == 1e-6 + 2e-6
    assert book.cost(entry("openai/nobody"), "openai/nobody", 1, 1, 0) is None
