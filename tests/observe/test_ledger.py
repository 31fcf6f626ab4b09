"""The ledger's writer, retention and summaries; usage shapes; prices."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest

from memproxyd.config import LitellmParams, ModelEntry, ModelInfo
from memproxyd.observe.ledger import COLUMNS, SCHEMA, Ledger
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
    assert usage_of(openai_stream) == (9, 4, 6, 0)
    anthropic_stream = [
        b'{"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens":'
        b' 1, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}}}',
        b'{"type": "message_delta", "usage": {"output_tokens": 42}}']
    assert usage_of(anthropic_stream) == (125, 42, 100, 20)
    responses = [b'{"type": "response.completed", "response": {"usage": {"input_tokens": 7,'
                 b' "output_tokens": 3, "total_tokens": 10, "input_tokens_details":'
                 b' {"cached_tokens": 2}}}}']
    assert usage_of(responses) == (7, 3, 2, 0)
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


def test_cache_writes_at_the_write_price_reads_at_the_read_price():
    book = PriceBook({"claude-x": {"input_cost_per_token": 3e-6, "output_cost_per_token": 15e-6,
                                   "cache_read_input_token_cost": 3e-7,
                                   "cache_creation_input_token_cost": 3.75e-6}})
    # 125 prompt tokens: 100 read, 20 written, 5 neither
    assert book.cost(entry("anthropic/claude-x"), "anthropic/claude-x", 125, 42, 100, 20) == \
        pytest.approx(5 * 3e-6 + 100 * 3e-7 + 20 * 3.75e-6 + 42 * 15e-6)
    own = entry("anthropic/claude-x", cache_creation_input_token_cost=1.0)
    assert book.cost(own, "anthropic/claude-x", 20, 0, 0, 20) == 20.0
    # a map without a cache-write price (OpenAI's models): writes cost the input price
    plain = PriceBook({"gpt-x": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}})
    assert plain.cost(entry("openai/gpt-x"), "openai/gpt-x", 10, 0, 0, 10) == 10 * 1e-6


async def test_summary_and_rows_carry_cache_writes(tmp_path):
    ledger = Ledger(tmp_path / "usage.db")
    await ledger.open()
    usage = json.dumps({"usage": {"input_tokens": 5, "output_tokens": 2,
                                  "cache_read_input_tokens": 100,
                                  "cache_creation_input_tokens": 20}}).encode()
    try:
        for _ in range(2):
            ledger.add(row(time.time(), documents=[usage]))
        group, = await ledger.summary(since=0, by="model")
        assert (group["prompt_tokens"], group["cached_tokens"],
                group["cache_write_tokens"]) == (250, 200, 40)
        assert [r["cache_write_tokens"] for r in await ledger.rows(since=0)] == [20, 20]
    finally:
        await ledger.close()


async def test_a_usage_db_from_before_cache_writes_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "usage.db"
    old_schema = SCHEMA[0].replace(", cache_write_tokens INTEGER", "")
    assert old_schema != SCHEMA[0]
    old_columns = COLUMNS[:-1]
    with sqlite3.connect(path) as conn:
        conn.execute(old_schema)
        conn.execute(f"INSERT INTO usage({', '.join(old_columns)}) VALUES"
                     f" ({', '.join('?' * len(old_columns))})",
                     (1.0, "alpha", "", "openai", "/v1/chat/completions", "m", "openai/m", 200,
                      10, 4, 0, None, 0.1, 1.0, 1.1, None, "off", 0, "t" * 32))
    conn.close()
    ledger = Ledger(path)
    await ledger.open()
    try:
        ledger.add(row(time.time()))
        rows = await ledger.rows(since=0)
        assert [(r["prompt_tokens"], r["cache_write_tokens"]) for r in rows] == \
            [(None, None), (10, None)]
        group, = await ledger.summary(since=0, by="model")
        assert (group["calls"], group["cache_write_tokens"]) == (2, 0)
    finally:
        await ledger.close()
