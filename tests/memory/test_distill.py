"""Distilled memories (``[memory] extract_model``): facts instead of turns, merged with what is
stored; never a lost turn."""
from __future__ import annotations

import json
import time
import urllib.request

import openai
import pytest

from memproxyd.memory.base import NewMemory, RetryLater
from memproxyd.memory.distill import DistillingStore, parse_facts
from memproxyd.memory.sqlite.store import SqliteStore
from tests.conftest import write_config

TURN = NewMemory("User: the deploy target codename is now BLUEFIN\nAssistant: Noted.",
                 {"source": "exchange"}, "turn-1")


@pytest.fixture
async def store(tmp_path):
    store = SqliteStore(tmp_path / "memory.db")
    await store.open()
    yield store
    await store.close()


def replying(text: str, seen: list | None = None):
    async def complete(user_id, messages, system, session):
        if seen is not None:
            seen.append(json.loads(messages[0]["content"]))
        return text
    return complete


def test_parse_facts_turns_unknown_update_targets_into_adds_and_refuses_non_json():
    reply = ('Sure: {"facts": [{"text": " A  fact ", "action": "update", "id": "nope"},'
             ' {"text": "Known", "action": "skip", "id": "m1"}, {"oops": 1},'
             ' {"text": "Also known", "action": "skip", "id": "gone"}]}')
    assert parse_facts(reply, {"m1"}) == [("A fact", "add", ""), ("Known", "skip", "m1"),
                                          ("Also known", "skip", "")]
    assert parse_facts("no json here", set()) is None
    assert parse_facts('{"facts": "x"}', set()) is None


async def test_update_replaces_the_offered_memory_and_skip_stores_nothing(store):
    old = await store.add("u1", "Deploy target codename: OLDFISH")
    seen: list = []
    reply = json.dumps({"facts": [
        {"text": "Deploy target codename is BLUEFIN.", "action": "update", "id": old.id},
        {"text": "Deploy target codename: OLDFISH", "action": "skip", "id": old.id}]})
    stored = await DistillingStore(store, replying(reply, seen)).add_many("u1", [TURN])
    assert [m.content for m in stored] == ["Deploy target codename is BLUEFIN."]
    assert seen[0]["existing"] == [{"id": old.id, "text": "Deploy target codename: OLDFISH"}]
    page, _ = await store.list("u1", 10)
    assert [m.content for m in page] == ["Deploy target codename is BLUEFIN."]
    # redelivered after a crash: the fact's key is the turn's, nothing is stored twice
    await DistillingStore(store, replying(reply)).add_many("u1", [TURN])
    assert len((await store.list("u1", 10))[0]) == 1


async def test_an_unreadable_extraction_stores_the_turn_as_it_is(store):
    await DistillingStore(store, replying("I cannot do that")).add_many("u1", [TURN])
    assert [m.content for m in (await store.list("u1", 10))[0]] == [TURN.content]


async def test_an_unreachable_model_leaves_the_turn_to_the_outbox(store):
    async def down(user_id, messages, system, session):
        raise RetryLater("model unreachable")
    with pytest.raises(RetryLater):
        await DistillingStore(store, down).add_many("u1", [TURN])
    assert (await store.list("u1", 10))[0] == []


def test_daemon_distils_a_turn_through_the_extract_model(tmp_path, openai_fake, start_daemon):
    extra = ('[[model_list]]\nmodel_name = "extractor"\n[model_list.litellm_params]\n'
             f'model = "openai/extract-fixed"\napi_base = "{openai_fake.url}/v1"\n')
    daemon = start_daemon(write_config(tmp_path, openai_fake.url, extra=extra, memory=(
        'backend = "sqlite"\nextract_model = "extractor"')))
    add = urllib.request.Request(f"{daemon.url}/v1/memories", data=json.dumps(
        {"user_id": "alpha", "content": "Deploy target codename: OLDFISH"}).encode(),
        headers={"content-type": "application/json"})
    urllib.request.urlopen(add).read()
    client = openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="unused",
                           default_headers={"x-memory-user-id": "alpha"})
    client.chat.completions.create(model="gpt-ok", messages=[
        {"role": "user", "content": "The codename changed to BLUEFIN; and we indent with tabs."}])
    expected = ["The deploy target codename is BLUEFIN.", "The team indents with tabs."]
    deadline, contents = time.monotonic() + 10, []
    while time.monotonic() < deadline and contents != expected:   # facts land one by one
        url = f"{daemon.url}/v1/memories?user_id=alpha"
        contents = sorted(m["content"] for m in json.loads(urllib.request.urlopen(url).read())
                          ["data"])
        time.sleep(0.05)
    assert contents == expected
