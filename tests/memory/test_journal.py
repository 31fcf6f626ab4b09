"""The injection journal (memory/journal.py) and its SQLite table: bounds, repeated human
texts, edited and compacted histories, restarts, forgetting; and the adapters placing each
turn's block with its turn on the three protocols."""
from __future__ import annotations

import json
import time

import pytest

from memproxyd.memory.journal import Injection, Journal, conversation_key, turn_key
from memproxyd.memory.sqlite.journal import SqliteJournal
from memproxyd.memory.wire import anthropic, openai, responses


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def entry(ordinal: int, words: str, block: str = "", ids=(), created=None) -> Injection:
    return Injection(ordinal, turn_key(words), block, tuple(ids), tuple(1.0 for _ in ids),
                     "trace", time.time() if created is None else created)


async def test_a_repeated_human_text_is_a_turn_of_its_own():
    journal = Journal()
    first, again = entry(1, "yes", "<b1>"), entry(3, "yes", "<b3>")
    await journal.record("u", "c", first)
    await journal.record("u", "c", again)
    wanted = [(1, turn_key("yes")), (3, turn_key("yes"))]
    known = await journal.turns("u", "c", wanted)
    assert [known[w].block for w in wanted] == ["<b1>", "<b3>"]


async def test_an_edited_or_compacted_history_finds_no_block_where_it_changed():
    journal = Journal()
    await journal.record("u", "c", entry(0, "first question", "<b0>"))
    await journal.record("u", "c", entry(1, "second question", "<b1>"))
    edited = await journal.turns("u", "c", [(0, turn_key("first question")),
                                            (1, turn_key("second question, edited"))])
    assert [i.block for i in edited.values() if i.fingerprint == turn_key(
        "second question, edited")] == []
    compacted = await journal.turns("u", "c", [(0, turn_key("second question"))])
    assert (0, turn_key("second question")) not in compacted   # it moved: a new prefix


async def test_conversations_are_bounded_and_expire(tmp_path):
    clock = Clock()
    journal = Journal(size=2, ttl=60, clock=clock)
    for name in ("a", "b", "c"):
        await journal.record("u", name, entry(0, name, f"<{name}>", created=clock.now))
    assert await journal.turns("u", "a", [(0, turn_key("a"))]) == {}      # evicted (LRU)
    assert await journal.turns("u", "c", [(0, turn_key("c"))])
    clock.now += 61
    assert await journal.turns("u", "c", [(0, turn_key("c"))]) == {}      # idle too long


async def test_sqlite_journal_survives_a_restart_and_expires_idle_conversations(tmp_path):
    store = SqliteJournal(tmp_path / "journal.db")
    await store.open()
    clock = Clock()
    journal = Journal(store, clock=clock)
    await journal.record("u", "c", entry(0, "q0", "<b0>", ("m1",), created=clock.now))
    await journal.record("u", "c", entry(1, "q1", "", created=clock.now))
    await journal.record("u", "old", entry(0, "q", "<x>", created=clock.now - 2 * 86400))
    await store.close()

    store = SqliteJournal(tmp_path / "journal.db")
    await store.open()
    restarted = Journal(store, clock=clock)
    wanted = [(0, turn_key("q0")), (1, turn_key("q1")), (2, turn_key("q2"))]
    known = await restarted.turns("u", "c", wanted)
    assert known[wanted[0]].block == "<b0>" and known[wanted[0]].ids == ("m1",)
    # a turn without a block is not written: unknown after a restart, so again no block
    assert wanted[1] not in known and wanted[2] not in known
    assert await store.expire(clock.now - 86400) == 1             # "old" only
    assert [c for c, _ in await store.find("u")] == ["c"]
    await store.close()


async def test_a_first_turn_never_seen_costs_no_store_read(tmp_path):
    class Counting(SqliteJournal):
        reads = 0

        async def load(self, user_id, conversation):
            Counting.reads += 1
            return await super().load(user_id, conversation)

    store = Counting(tmp_path / "journal.db")
    await store.open()
    journal = Journal(store)
    await journal.turns("u", "new", [(0, turn_key("hello"))])
    await journal.record("u", "new", entry(0, "hello", "<b>"))
    await journal.turns("u", "new", [(0, turn_key("hello")), (1, turn_key("next"))])
    assert Counting.reads == 0                   # warm: memory is the truth for its own store
    await journal.turns("u", "cold", [(0, turn_key("a")), (1, turn_key("b"))])
    assert Counting.reads == 1                   # earlier turns, not in memory: after a restart
    await store.close()


async def test_forgetting_a_memory_drops_the_turns_that_showed_it(tmp_path):
    store = SqliteJournal(tmp_path / "journal.db")
    await store.open()
    journal = Journal(store)
    await journal.record("u", "c", entry(0, "q0", "<b0>", ("m1", "m2")))
    await journal.record("u", "c", entry(1, "q1", "<b1>", ("m3",)))
    await journal.forget("u", "m2")
    wanted = [(0, turn_key("q0")), (1, turn_key("q1"))]
    assert list(await journal.turns("u", "c", wanted)) == [wanted[1]]
    assert [i.ordinal for _, i in await store.find("u")] == [1]
    await journal.forget("u")
    assert await store.find("u") == []
    await store.close()


def test_conversation_keys_prefer_the_clients_id():
    assert conversation_key("session-1", "system A", "hi") == conversation_key(
        "session-1", "system B", "bye")
    assert conversation_key("", "sys", "hi") != conversation_key("", "sys", "hello")


# -- the adapters: each block with its turn, the client's objects untouched -----------------

TWO_TURNS = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
             {"role": "user", "content": [{"type": "text", "text": "second",
                                           "cache_control": {"type": "ephemeral"}}]}]


def test_anthropic_blocks_are_the_first_part_of_their_human_messages():
    body = {"system": "sys", "messages": TWO_TURNS}
    before = json.dumps(body)
    out = anthropic.inject_at(body, {0: "<B0>", 2: "<B2>"})
    assert json.dumps(body) == before and out["system"] == "sys"
    assert out["messages"][0]["content"] == [{"type": "text", "text": "<B0>"},
                                             {"type": "text", "text": "first"}]
    assert out["messages"][2]["content"][0] == {"type": "text", "text": "<B2>"}
    assert out["messages"][2]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert anthropic.conversation_of({"metadata": {"user_id": json.dumps(
        {"device_id": "d", "session_id": "s-1"})}})[0] == "s-1"


def test_openai_blocks_are_system_messages_just_before_their_turns():
    body = {"messages": [{"role": "system", "content": "sys"}, *TWO_TURNS]}
    out = openai.inject_at(body, {1: "<B1>", 3: "<B3>"})
    assert [m["role"] for m in out["messages"]] == ["system", "system", "user", "assistant",
                                                    "system", "user"]
    assert out["messages"][1]["content"] == "<B1>" and out["messages"][4]["content"] == "<B3>"
    assert len(body["messages"]) == 4


def test_responses_blocks_are_developer_items_just_before_their_turns():
    out = responses.inject_at({"instructions": "sys", "input": "hello"}, {0: "<B>"})
    assert out["instructions"] == "sys"
    assert out["input"] == [{"type": "message", "role": "developer",
                             "content": [{"type": "input_text", "text": "<B>"}]},
                            {"type": "message", "role": "user", "content": "hello"}]
    assert responses.conversation_of({"prompt_cache_key": "k", "input": "x"})[0] == "k"


@pytest.mark.parametrize("adapter", [anthropic, openai, responses])
def test_no_blocks_is_the_body_itself(adapter):
    body = {"messages": TWO_TURNS, "input": "x"}
    assert adapter.inject_at(body, {}) is body


async def test_an_answer_is_checked_against_every_block_its_prompt_carried_even_after_a_restart(
        tmp_path):
    """``blocks_of``: the turn's own block and every earlier turn's (what ``echo.py`` cuts
    an answer against), none of a later turn; after a restart, once the request's turns are
    read back from the store."""
    store = SqliteJournal(tmp_path / "journal.db")
    await store.open()
    journal = Journal(store)
    for ordinal, words, block in ((0, "q0", "<b0>"), (1, "q1", ""), (2, "q2", "<b2>")):
        await journal.record("u", "c", entry(ordinal, words, block))
    assert journal.blocks_of("u", "c", turn_key("q1")) == "<b0>"
    assert journal.blocks_of("u", "c", turn_key("q2")) == "<b0>\n<b2>"
    assert journal.blocks_of("u", "c", turn_key("unknown")) == ""
    assert journal.blocks_of("u", None, turn_key("q2")) == ""
    await store.close()

    store = SqliteJournal(tmp_path / "journal.db")
    await store.open()
    restarted = Journal(store)
    assert restarted.blocks_of("u", "c", turn_key("q2")) == ""        # nothing read yet
    await restarted.turns("u", "c", [(i, turn_key(f"q{i}")) for i in range(3)])
    assert restarted.blocks_of("u", "c", turn_key("q2")) == "<b0>\n<b2>"
    await store.close()
