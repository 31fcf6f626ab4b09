"""``Scopes`` on the real stores (SQLite, its search process, PostgreSQL): pins and the
personal scope as recall reads them, the pins' cache, promotion, and a project's memories
never read for another."""
from __future__ import annotations

import types

import pytest

from memproxyd.memory.base import NewMemory
from memproxyd.memory.scopes import PIN_TTL, NoPersonalScope, Scopes
from tests.memory.test_store_contract import Backend


@pytest.fixture(params=["sqlite", "sqlite-process", "postgres"])
async def store(request, tmp_path):
    backend = Backend(request.param, request, tmp_path)
    yield await backend.open()
    await backend.close()


def state(personal: str = "me", projects: tuple[str, ...] = ()):
    return types.SimpleNamespace(
        config=types.SimpleNamespace(memory=types.SimpleNamespace(personal=personal)),
        project_ports={8800 + i: name for i, name in enumerate(projects)})


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_recall_reads_the_users_and_the_personal_scopes_memories_only(store):
    for user, text, pinned in (("alpha", "alpha glazes pots blue", True),
                               ("alpha", "alpha kiln runs hot", False),
                               ("beta", "beta kiln is secret", True),
                               ("me", "I fire my kiln at night", False),
                               ("me", "answer briefly", True)):   # each a batch of its own
        await store.add_many(user, [NewMemory(text, pinned=pinned)])
    scopes = Scopes(state(), store)
    pinned, found = await scopes.recall("alpha", "kiln", 5)
    assert [m.content for m in pinned] == ["alpha glazes pots blue", "answer briefly"]
    assert {m.content for m in found} == {"alpha kiln runs hot", "I fire my kiln at night"}
    pinned, found = await scopes.recall("me", "kiln", 5)            # the personal id alone
    assert [m.content for m in pinned] == ["answer briefly"]
    assert [m.content for m in found] == ["I fire my kiln at night"]
    off = Scopes(state(projects=("me",)), store)      # a project of that name: no sharing
    assert off.personal() is None
    pinned, found = await off.recall("alpha", "kiln", 5)
    assert [m.content for m in found] == ["alpha kiln runs hot"]
    assert [m.content for m in pinned] == ["alpha glazes pots blue"]


async def test_a_pin_shows_at_once_after_a_change_here_and_within_the_ttl_otherwise(store):
    clock = Clock()
    scopes = Scopes(state(), store, clock=clock)
    m = await store.add("alpha", "use tabs")
    assert await scopes.pins("alpha") == []
    await store.update("alpha", m.id, pinned=True)           # as another gateway would
    if store.pinned_now("alpha") is None:                    # a shared store: cached a while
        assert await scopes.pins("alpha") == []
        clock.now += PIN_TTL + 0.1
    assert [p.id for p in await scopes.pins("alpha")] == [m.id]
    await store.update("alpha", m.id, pinned=False)
    scopes.changed("alpha")                                  # a change made through us
    assert await scopes.pins("alpha") == []


async def test_promote_moves_to_the_personal_scope_or_says_why_not(store):
    m = await store.add("alpha", "I prefer metric units")
    with pytest.raises(NoPersonalScope):
        await Scopes(state(personal=""), store).promote("alpha", m.id)
    scopes = Scopes(state(), store)
    assert await scopes.promote("beta", m.id) is None
    moved = await scopes.promote("alpha", m.id)
    assert (moved.id, moved.user_id) == (m.id, "me")
    with pytest.raises(NoPersonalScope):
        await scopes.promote("me", m.id)
    pinned, found = await scopes.recall("beta", "metric units", 5)
    assert [h.id for h in found] == [m.id]
