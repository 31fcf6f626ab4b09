"""scripts/bench_cache.py measures what it says: blocks found wherever memproxyd puts them,
usage read in each shape, the extends-check, and a short real run (daemon, fake, sessions)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_cache  # noqa: E402

BLOCK = "<memproxy-memory>\n- The codename is BLUEFIN.\n</memproxy-memory>"


def test_blocks_are_found_in_system_instructions_or_a_message():
    assert bench_cache.blocks_in({"system": [{"type": "text", "text": "own\n\n" + BLOCK}]}) \
        == [BLOCK]
    assert bench_cache.blocks_in({"instructions": BLOCK, "input": "q"}) == [BLOCK]
    assert bench_cache.blocks_in({"messages": [{"role": "system", "content": BLOCK},
                                               {"role": "user", "content": "q"}]}) == [BLOCK]
    assert bench_cache.blocks_in({"messages": [{"role": "user", "content": "q"}]}) == []


def test_usage_is_read_at_each_rate_in_every_shape():
    anthropic = {"input_tokens": 3, "cache_creation_input_tokens": 40,
                 "cache_read_input_tokens": 2000, "output_tokens": 9}
    assert bench_cache.billed(anthropic) == {"uncached": 3, "write": 40, "read": 2000,
                                             "output": 9}
    chat = {"prompt_tokens": 1500, "completion_tokens": 9,
            "prompt_tokens_details": {"cached_tokens": 1280}}
    assert bench_cache.billed(chat) == {"uncached": 220, "write": 0, "read": 1280, "output": 9}
    responses = {"input_tokens": 1500, "output_tokens": 9,
                 "input_tokens_details": {"cached_tokens": 1408}}
    assert bench_cache.billed(responses)["uncached"] == 92


def test_a_prompt_that_changes_before_the_new_turn_does_not_extend():
    def record(system: str, turns: list[str]) -> dict:
        return {"path": "/v1/messages", "usage": {"input_tokens": 1, "output_tokens": 1,
                                                  "cache_creation_input_tokens": 0,
                                                  "cache_read_input_tokens": 0},
                "json": {"system": system, "messages": [
                    {"role": "user", "content": [{"type": "text", "text": t,
                                                  "cache_control": {"type": "ephemeral"}}]}
                    for t in turns]}}
    rates = {"input": 1.0, "output": 1.0, "cache_read": 0.1, "cache_write": 1.25}
    grows = [record("s", ["a"]), record("s", ["a", "b"])]   # the marker moved: still extends
    assert bench_cache.measure(grows, rates, [])["extends"] == [True]
    changed = [record("s " + BLOCK, ["a"]), record("s " + BLOCK.replace("BLUE", "RED"),
                                                   ["a", "b"])]
    measured = bench_cache.measure(changed, rates, [])
    assert measured["extends"] == [False]
    assert measured["distinct_blocks"] == 2 and measured["turns_with_block"] == 2


def test_a_short_run_direct_extends_every_turn_and_memproxyd_injects(tmp_path):
    assert bench_cache.main(["--turns", "3", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "cache.json").read_text())
    for name, session in report["sessions"].items():
        direct, through = session["direct"], session["memproxyd"]
        assert direct["extends"] == [True, True], name
        assert direct["turns"] == through["turns"] == 3
        assert direct["tokens"]["read"] > 0, name        # the session's prefix was reused
        assert through["turns_with_block"] > 0 and through["block_tokens"] > 0, name
        assert session["ratio"] == pytest.approx(
            through["cost_usd"] / (direct["cost_usd"] + session["allowance_usd"]))
    assert "| claude-code (claude-sonnet-4-5) | memproxyd |" in (tmp_path / "cache.md").read_text()
