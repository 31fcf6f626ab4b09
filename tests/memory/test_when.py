"""Time in a question (memory/when.py): "when" questions prefer memories that say a time;
the days a question names, resolved against the time of the call, prefer the memories stored
then."""
from datetime import datetime, timezone

import pytest

from memproxyd.memory import terms, when
from memproxyd.memory.base import NewMemory
from memproxyd.memory.sqlite import lexical
from memproxyd.memory.sqlite.store import SqliteStore

NOW = datetime(2026, 12, 4, 15, 30, tzinfo=timezone.utc).timestamp()   # a Friday


def day(*ymd: int) -> float:
    return datetime(*ymd, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("question, span", [
    ("what did we decide yesterday?", (day(2026, 12, 3), day(2026, 12, 4))),
    ("what did we decide last week?", (day(2026, 11, 23), day(2026, 11, 30))),
    ("what changed this month?", (day(2026, 12, 1), day(2026, 12, 5))),
    ("what did we ship last month?", (day(2026, 11, 1), day(2026, 12, 1))),
    ("what did we ship last year?", (day(2025, 1, 1), day(2026, 1, 1))),
    ("which host did we pick in May?", (day(2026, 5, 1), day(2026, 6, 1))),
    ("what broke in December 2025?", (day(2025, 12, 1), day(2026, 1, 1))),
    ("what did we deploy in 2024?", (day(2024, 1, 1), day(2025, 1, 1))),
    ("what did Ann say on Monday?", (day(2026, 11, 30), day(2026, 12, 1))),
    ("what did Ann say last Friday?", (day(2026, 11, 27), day(2026, 11, 28))),
    ("what did we fix 3 days ago?", (day(2026, 11, 30), day(2026, 12, 3))),
    # a day with its year, give or take a day (time zones)
    ("what did Ann show on October 13, 2023?", (day(2023, 10, 12), day(2023, 10, 15))),
    ("what did Maria start, as mentioned on 3 June, 2023?", (day(2023, 6, 2), day(2023, 6, 5))),
    ("what did we decide on the 3rd of June 2023?", (day(2023, 6, 2), day(2023, 6, 5))),
    ("what broke on 2025-02-28?", (day(2025, 2, 27), day(2025, 3, 2))),
    ("what did we plan for May 8, 2023?", (day(2023, 5, 7), day(2023, 5, 10))),
    ("what happened on February 30, 2023?", (day(2026, 2, 1), day(2026, 3, 1))),  # no such day
    ("may I ask what the codename is?", None),
    ("what is the deploy target?", None),
])
def test_the_days_a_question_names_are_resolved_against_the_call(question, span):
    assert when.named_span(question, NOW) == span


def test_questions_that_ask_when():
    assert when.Question.of("When did we move the cron job?").asks_when
    assert when.Question.of("what year did Ann start pottery?").asks_when
    assert not when.Question.of("Where is the cron job?").timed


def stored(seq: int, content: str, created_at: float) -> tuple:
    return (seq, content, (f"m{seq}", content, "{}", created_at))


def hits(index, question: str) -> list[str]:
    stems = terms.stems(terms.query_terms(question))
    return [s[0] for _, _, s in index.hits(stems, 2, question=when.Question.of(question, NOW))]


def test_a_question_naming_days_prefers_the_memories_stored_then():
    index = lexical.UserIndex()
    index.add_batch([stored(1, "we moved the cron job to the new host", day(2026, 11, 25))])
    index.add_batch([stored(2, "we moved the cron job to the old host", day(2026, 10, 2))])
    assert hits(index, "where did we move the cron job last week?") == ["m1", "m2"]
    assert hits(index, "where did we move the cron job in October?") == ["m2", "m1"]
    assert hits(index, "where did we move the cron job on October 2, 2026?") == ["m2", "m1"]
    assert hits(index, "where did we move the cron job on 25 November, 2026?") == ["m1", "m2"]
    # the date only reorders what the words found: it never makes a hit by itself
    assert hits(index, "what did we eat last week?") == []


async def test_a_when_question_prefers_the_memory_that_says_a_time(tmp_path):
    store = SqliteStore(tmp_path / "memory.db")
    await store.open()
    try:
        await store.add("alice", "the cron job moved to the backup host")
        await store.add("alice", "the cron job moved to the backup host yesterday")
        await store.add_many("alice", [NewMemory(f"unrelated note {i}") for i in range(5)])
        assert (await store.search("alice", "where is the cron job", 1))[0].content == \
            "the cron job moved to the backup host"
        assert (await store.search("alice", "when did the cron job move?", 1))[0].content == \
            "the cron job moved to the backup host yesterday"
    finally:
        await store.close()
