"""Prompt-cache reads and writes in the usage ledger, end to end: the real daemon, the official
anthropic SDK, and a loopback upstream that bills caching as Anthropic does."""
from __future__ import annotations

import json
import uuid

import anthropic
import pytest

from memproxyd.ctl import cli
from memproxyd.observe.prices import bundled_price_file
from tests.conftest import UPSTREAM_KEY, Daemon, write_config
from tests.fakes import caching_upstream
from tests.fakes.threaded import ThreadedServer
from tests.observe.test_usage_e2e import get_json, rows_of

SYSTEM = [{"type": "text", "text": "The house rules, at length. " * 300,
           "cache_control": {"type": "ephemeral"}}]


@pytest.fixture(scope="module")
def caching_fake():
    server = ThreadedServer(caching_upstream.create_app()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, openai_fake, caching_fake):
    extra = (f'[[model_list]]\nmodel_name = "claude-sonnet-4-5"\n[model_list.litellm_params]\n'
             f'model = "anthropic/claude-sonnet-4-5"\napi_base = "{caching_fake.url}"\n'
             f'api_key = "{UPSTREAM_KEY}"\n')
    config = write_config(tmp_path_factory.mktemp("usage-cache"), openai_fake.url, extra=extra)
    with Daemon(config) as started:
        yield started


def conversation(turns: list[str]) -> list[dict]:
    """Claude Code's placement: a breakpoint on the last block of the last message only."""
    messages = [{"role": "user" if i % 2 == 0 else "assistant",
                 "content": [{"type": "text", "text": t}]} for i, t in enumerate(turns)]
    messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return messages


def billed(fake: ThreadedServer, user_text: str) -> dict:
    """The usage the fake reported for the call whose last user text is ``user_text``."""
    records = fake.call(lambda: list(fake.app[caching_upstream.RECORDS]))
    return next(r["usage"] for r in records
                if r["json"]["messages"][-1]["content"][-1]["text"] == user_text)


def test_cache_reads_and_writes_are_counted_and_priced_at_their_own_rates(
        daemon, caching_fake, capsys):
    user = f"u-{uuid.uuid4().hex[:8]}"
    client = anthropic.Anthropic(base_url=daemon.url, api_key="x", max_retries=0,
                                 default_headers={"x-memory-user-id": user})
    first_q, second_q = f"first {user}", f"second {user}"
    first = client.messages.create(model="claude-sonnet-4-5", max_tokens=64, system=SYSTEM,
                                   messages=conversation([first_q]))
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64, system=SYSTEM,
                                messages=conversation([first_q, first.content[0].text,
                                                       second_q])) as stream:
        stream.get_final_message()
    one, two = rows_of(daemon, user)
    for row, question in ((one, first_q), (two, second_q)):
        usage = billed(caching_fake, question)
        assert row["cached_tokens"] == usage["cache_read_input_tokens"]
        assert row["cache_write_tokens"] == usage["cache_creation_input_tokens"]
        assert row["prompt_tokens"] == (usage["input_tokens"] + usage["cache_read_input_tokens"]
                                        + usage["cache_creation_input_tokens"])
        prices = json.loads(bundled_price_file().read_text())["claude-sonnet-4-5"]
        assert row["cost_usd"] == pytest.approx(
            usage["input_tokens"] * prices["input_cost_per_token"]
            + usage["cache_read_input_tokens"] * prices["cache_read_input_token_cost"]
            + usage["cache_creation_input_tokens"] * prices["cache_creation_input_token_cost"]
            + usage["output_tokens"] * prices["output_cost_per_token"])
    # the second turn read what the first wrote, and wrote only its own new blocks
    assert one["cache_write_tokens"] > 1024 and one["cached_tokens"] == 0
    assert two["cached_tokens"] == one["cache_write_tokens"]
    assert 0 < two["cache_write_tokens"] < 100

    group, = get_json(f"{daemon.url}/v1/usage?project={user}")["groups"]
    assert (group["cached_tokens"], group["cache_write_tokens"]) == (
        two["cached_tokens"], one["cache_write_tokens"] + two["cache_write_tokens"])
    assert group["cost_usd"] == pytest.approx(one["cost_usd"] + two["cost_usd"])

    argv = ["--config", str(daemon.config), "usage", "--project", user, "--since", "1h"]
    assert cli.main(argv) == 0
    head, line = capsys.readouterr().out.splitlines()[:2]
    assert "cache write" in head
    assert line.split()[5:7] == [str(group["cached_tokens"]), str(group["cache_write_tokens"])]
