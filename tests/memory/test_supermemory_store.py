"""The supermemory backend against a fake Supermemory behind a fake Cloudflare.

The store talks through the official SDK and each user's own ``UserSession.httpx``; the fake
(tests/fakes/supermemory.py) tells users apart by the ``x-fake-client`` header set on each
session's httpx client, the way Cloudflare tells apart two machines.
"""
from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from memproxyd.config import SupermemoryConfig
from memproxyd.memory.base import InvalidCursor, MemoryError_, NewMemory, RetryLater
from memproxyd.memory.supermemory import SupermemoryStore, document_id, namespace_for
from memproxyd.sessions import SessionManager
from tests.fakes.supermemory import CLIENT_HEADER, serve_fake_supermemory


@pytest.fixture
async def fake():
    async with serve_fake_supermemory() as server:
        yield server


@pytest.fixture
async def store(fake):
    store = SupermemoryStore(SupermemoryConfig(api_key=fake.api_key, base_url=fake.url,
                                               timeout=5.0))
    await store.open()
    yield store
    await store.close()


def session_of(manager: SessionManager, user_id: str, mark: bool = True):
    session = manager.get(user_id)
    if mark:
        session.httpx.headers[CLIENT_HEADER] = user_id
    return session


def remember(content: str, key: str | None = None, **metadata) -> list[NewMemory]:
    return [NewMemory(content, metadata, key)]


@pytest.mark.parametrize("by_header", [True, False], ids=["client-header", "namespace"])
async def test_concurrent_users_never_challenged_never_share_cookies(
        fake, store, sessions, by_header):
    alice, bob = (session_of(sessions, u, by_header) for u in ("alice", "bob"))
    client_of = {"alice": "alice", "bob": "bob"} if by_header else {
        u: "ns:" + store.namespace(u) for u in ("alice", "bob")}

    async def work(session, n):
        user = session.user_id
        await store.add_many(user, remember(f"{user} fact {n}", f"{user}-{n}"), session)
        await store.search(user, f"{user} fact", 5, session)

    await asyncio.gather(*(work(s, n) for n in range(8) for s in (alice, bob)))

    assert fake.state.challenged() == []
    for record in fake.state.requests:
        assert record.cookie in (None, fake.state.clearance[record.client])
    assert {r.client for r in fake.state.requests} == set(client_of.values())
    # Each user's jar holds that user's clearance and nobody else's.
    for session in (alice, bob):
        values = [c.value for c in session.httpx.cookies.jar if c.name == "cf_clearance"]
        assert values == [fake.state.clearance[client_of[session.user_id]]]


async def test_namespace_written_is_the_namespace_searched(fake, store, sessions):
    user = "Bob@Example.com"
    session = session_of(sessions, user)
    await store.add_many(user, remember("bob likes green tea", "k1"), session)
    hits = await store.search(user, "green tea", 5, session)

    namespace = store.namespace(user)
    assert fake.state.paths() == [f"/ns/{namespace}/document", f"/ns/{namespace}/search"]
    assert [h.content for h in hits] == ["bob likes green tea"]
    assert hits[0].score > 0 and hits[0].user_id == user


async def test_search_returns_best_first_and_only_own_memories(store, sessions):
    alice, bob = session_of(sessions, "alice"), session_of(sessions, "bob")
    await store.add_many("alice", remember("alice uses vim keybindings", "a1")
                         + remember("alice uses dark mode and vim", "a2"), alice)
    await store.add_many("bob", remember("bob uses vim too", "b1"), bob)

    hits = await store.search("alice", "dark mode vim", 5, alice)

    assert [h.content for h in hits] == ["alice uses dark mode and vim",
                                         "alice uses vim keybindings"]
    assert hits[0].score > hits[1].score


async def test_same_key_delivered_twice_is_one_document(fake, store, sessions):
    session = session_of(sessions, "alice")
    batch = remember("first exchange", "outbox-1") + remember("second exchange", "outbox-2")
    for _ in range(2):
        await store.add_many("alice", remember("an exchange", "outbox-0"), session)
        await store.add_many("alice", batch, session)

    docs = fake.state.documents[store.namespace("alice")]
    assert sorted(docs) == ["outbox-0", "outbox-1", "outbox-2"]
    assert docs["outbox-0"]["content"] == "an exchange"


async def test_unsafe_key_maps_to_a_stable_document_id(fake, store, sessions):
    session = session_of(sessions, "alice")
    for _ in range(2):
        added = await store.add_many("alice", remember("x", "exchange/42?"), session)
    assert added[0].id == document_id("exchange/42?") != "exchange/42?"
    assert list(fake.state.documents[store.namespace("alice")]) == [added[0].id]


async def test_nested_metadata_is_flattened_to_json(fake, store, sessions):
    session = session_of(sessions, "alice")
    await store.add_many("alice", remember("x", "k", model="gpt", turn=3,
                                           tags=["a"], usage={"in": 1}, none=None), session)
    [doc] = fake.state.documents[store.namespace("alice")].values()
    assert doc["metadata"] == {"model": "gpt", "turn": 3, "tags": ["a"], "usage": '{"in": 1}'}


@pytest.mark.parametrize("fault", ["down", "rate_limited"])
async def test_outage_is_retry_later_with_retry_after(fake, store, sessions, fault):
    session = session_of(sessions, "alice")
    setattr(fake.state, fault, True)
    with pytest.raises(RetryLater) as caught:
        await store.add_many("alice", remember("x", "k"), session)
    assert caught.value.retry_after == 7

    setattr(fake.state, fault, False)
    await store.add_many("alice", remember("x", "k"), session)
    assert list(fake.state.documents[store.namespace("alice")]) == ["k"]


async def test_unreachable_and_slow_backend_is_retry_later(fake, sessions):
    session = session_of(sessions, "alice")
    closed = SupermemoryStore(SupermemoryConfig(api_key="k", base_url="http://127.0.0.1:1"))
    with pytest.raises(RetryLater) as caught:
        await closed.search("alice", "q", 5, session)
    assert caught.value.retry_after is None

    fake.state.delay = 1.0
    slow = SupermemoryStore(SupermemoryConfig(api_key=fake.api_key, base_url=fake.url,
                                              timeout=0.2))
    with pytest.raises(RetryLater):
        await slow.search("alice", "q", 5, session)


async def test_cloudflare_challenge_page_is_retry_later(fake, store, sessions):
    session = session_of(sessions, "alice")
    await store.search("alice", "q", 5, session)
    await store.search("alice", "q", 5, session)        # the cookie went back once
    session.httpx.cookies.clear()
    with pytest.raises(RetryLater):
        await store.search("alice", "q", 5, session)
    assert len(fake.state.challenged()) == 1


async def test_rejected_requests_are_memory_errors_not_retries(fake, sessions):
    session = session_of(sessions, "alice")
    wrong_key = SupermemoryStore(SupermemoryConfig(api_key="sm-wrong", base_url=fake.url))
    with pytest.raises(MemoryError_) as caught:
        await wrong_key.search("alice", "q", 5, session)
    assert not isinstance(caught.value, RetryLater)
    assert "401" in str(caught.value)


async def test_empty_content_is_a_memory_error(store, sessions):
    session = session_of(sessions, "alice")
    with pytest.raises(MemoryError_) as caught:
        await store.add_many("alice", remember("", "k"), session)
    assert not isinstance(caught.value, RetryLater)


async def test_missing_api_key_is_a_memory_error(monkeypatch, fake, sessions):
    monkeypatch.delenv("SUPERMEMORY_API_KEY", raising=False)
    store = SupermemoryStore(SupermemoryConfig(base_url=fake.url))
    with pytest.raises(MemoryError_, match="api_key"):
        await store.search("alice", "q", 5, session_of(sessions, "alice"))
    assert fake.state.requests == []


async def test_list_pages_newest_first(store, sessions):
    session = session_of(sessions, "alice")
    for n in range(3):
        await store.add_many("alice", remember(f"note {n}", f"k{n}"), session)

    first, cursor = await store.list("alice", 2, session=session)
    second, end = await store.list("alice", 2, cursor, session=session)

    assert [m.content for m in first] == ["note 2", "note 1"] and cursor == "2"
    assert [m.content for m in second] == ["note 0"] and end is None
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(InvalidCursor):
            await store.list("alice", 2, bad, session=session)


async def test_get_delete_and_forget_all(store, sessions):
    session = session_of(sessions, "alice")
    [kept] = await store.add_many("alice", remember("keep me", "k1"), session)
    [gone] = await store.add_many("alice", remember("delete me", "k2"), session)
    await store.add_many("alice", remember("forget me by search", "k3"), session)

    assert (await store.get("alice", kept.id, session)).content == "keep me"
    assert await store.get("alice", "no-such-id", session) is None
    assert await store.delete("alice", gone.id, session) is True
    assert await store.delete("alice", gone.id, session) is False
    [hit] = await store.search("alice", "forget", 5, session)
    assert await store.delete("alice", hit.id, session) is True     # a memory id
    assert await store.forget_all("alice", session) == 1
    assert await store.list("alice", 10, session=session) == ([], None)


async def test_users_cannot_reach_each_others_documents(store, sessions):
    alice, bob = session_of(sessions, "alice"), session_of(sessions, "bob")
    [doc] = await store.add_many("alice", remember("alice secret", "shared-key"), alice)
    assert await store.get("bob", doc.id, bob) is None
    assert await store.delete("bob", doc.id, bob) is False
    assert await store.search("bob", "alice secret", 5, bob) == []


def test_namespace_mapping_is_safe_and_collision_free():
    assert namespace_for("alice") == "memproxyd-alice"
    assert namespace_for("alice", "") == "alice"
    ids = ["a b", "a_b", "a/b", "A_B", "../etc", "x" * 300, "x" * 301, "ü",
           "a_b-" + namespace_for("a b").rsplit("-", 1)[1], "", "-"]
    spaces = [namespace_for(u) for u in ids]
    assert len(set(spaces)) == len(ids)
    for space in spaces:
        assert len(space) <= 100 and all(c.isalnum() and c.isascii() or c in "-_"
                                         for c in space)
    assert namespace_for("a b") == namespace_for("a b")


async def test_a_rejection_is_raised_and_logged_with_its_status_never_the_body(
        sessions, caplog):
    """Supermemory's error bodies can quote the refused content; none of it leaves the store."""
    async def refuse(request: web.Request) -> web.Response:
        content = (await request.json())["content"]
        return web.json_response({"error": f"cannot store {content!r}"}, status=422)

    app = web.Application()
    app.router.add_post("/ns/{namespace}/document", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    store = SupermemoryStore(SupermemoryConfig(api_key="sm-key", base_url=url))
    try:
        with caplog.at_level(logging.DEBUG, logger="memproxyd"):
            with pytest.raises(MemoryError_) as caught:
                await store.add_many("alice", remember("the vault code is 4711", "k1"),
                                     session_of(sessions, "alice"))
    finally:
        await store.close()
        await runner.cleanup()
    assert "422" in str(caught.value)
    assert "vault" not in str(caught.value) and "vault" not in caplog.text
    assert "422" in caplog.text
