"""Cookie jars survive a restart: saved per user under <state_dir>/sessions, 0600."""
from __future__ import annotations

import http.cookiejar
import json
import logging
import stat
import time
from http.cookies import SimpleCookie

import aiohttp
import pytest
from yarl import URL

from memproxyd.config import SupermemoryConfig
from memproxyd.cookies import CookieStore, file_name, session_dir
from memproxyd.memory.base import RetryLater
from memproxyd.memory.supermemory import SupermemoryStore
from memproxyd.sessions import SessionManager
from tests.fakes.supermemory import CLIENT_HEADER, serve_fake_supermemory


@pytest.fixture
async def fake():
    async with serve_fake_supermemory() as server:
        yield server


@pytest.fixture
def store(fake):
    return SupermemoryStore(SupermemoryConfig(api_key=fake.api_key, base_url=fake.url))


@pytest.fixture
def cookie_dir(tmp_path):
    return session_dir(tmp_path / "state")


def session_of(manager: SessionManager, user_id: str):
    session = manager.get(user_id)
    session.httpx.headers[CLIENT_HEADER] = user_id
    return session


async def warm_up(store, manager, *users):
    """Two calls per user: the fake's cookie is set, then presented (Cloudflare now expects
    it on every later call from that client)."""
    for user in users:
        for _ in range(2):
            await store.search(user, "anything", 3, session_of(manager, user))


def http_cookie(name: str, value: str, expires: float | None) -> http.cookiejar.Cookie:
    return http.cookiejar.Cookie(0, name, value, None, False, "127.0.0.1", False, False, "/",
                                 True, False, int(expires) if expires else None,
                                 expires is None, None, None, {"HttpOnly": None})


async def test_restart_keeps_cookies_and_avoids_a_new_challenge(fake, store, cookie_dir):
    before = SessionManager(cookie_dir=cookie_dir)
    await warm_up(store, before, "alice")
    await before.close()

    after = SessionManager(cookie_dir=cookie_dir)
    try:
        await store.search("alice", "again", 3, session_of(after, "alice"))
    finally:
        await after.close()

    assert fake.state.challenged() == []
    assert fake.state.requests[-1].cookie == fake.state.clearance["alice"]


async def test_without_cookie_dir_a_restart_is_challenged(fake, store):
    # The control for the test above: the fake does notice a lost cookie.
    before = SessionManager()
    await warm_up(store, before, "alice")
    await before.close()
    after = SessionManager()
    try:
        with pytest.raises(RetryLater):
            await store.search("alice", "again", 3, session_of(after, "alice"))
    finally:
        await after.close()
    assert len(fake.state.challenged()) == 1


async def test_cookie_files_are_private_and_hold_only_their_users_cookies(
        fake, store, cookie_dir):
    manager = SessionManager(cookie_dir=cookie_dir)
    await warm_up(store, manager, "alice", "bob")
    await manager.close()

    assert stat.S_IMODE(cookie_dir.stat().st_mode) == 0o700
    alice, bob = fake.state.clearance["alice"], fake.state.clearance["bob"]
    for user, mine, theirs in (("alice", alice, bob), ("bob", bob, alice)):
        path = cookie_dir / file_name(user)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        text = path.read_text()
        assert mine in text and theirs not in text
    assert sorted(p.name for p in cookie_dir.iterdir()) == sorted(
        [file_name("alice"), file_name("bob")])        # no temp files left behind


async def test_evicted_session_saves_its_cookies(fake, store, cookie_dir):
    manager = SessionManager(max_sessions=1, cookie_dir=cookie_dir)
    await warm_up(store, manager, "alice")
    session_of(manager, "bob")                          # evicts alice
    try:
        assert fake.state.clearance["alice"] in (cookie_dir / file_name("alice")).read_text()
    finally:
        await manager.close()


async def test_both_jars_round_trip_and_expired_cookies_are_dropped(cookie_dir):
    now = time.time()
    jar = aiohttp.CookieJar(unsafe=True)
    jar.update_cookies(SimpleCookie("live=a1; Max-Age=3600; Path=/"), URL("http://127.0.0.1/"))
    jar.update_cookies(SimpleCookie("old=a2; Max-Age=3600; Path=/"), URL("http://127.0.0.1/"))
    hjar = http.cookiejar.CookieJar()
    hjar.set_cookie(http_cookie("cf_clearance", "h1", now + 3600))
    hjar.set_cookie(http_cookie("stale", "h2", now + 3600))
    hjar.set_cookie(http_cookie("session", "h3", None))
    cookies = CookieStore(cookie_dir)
    assert cookies.save("alice", jar, hjar) == 5

    # Time passes: two of them expire while the daemon is down.
    path = cookie_dir / file_name("alice")
    doc = json.loads(path.read_text())
    for place in doc["aiohttp"].values():
        place["old"]["expires_timestamp"] = now - 1
    for cookie in doc["httpx"]:
        cookie["expires"] = now - 1 if cookie["name"] == "stale" else cookie["expires"]
    path.write_text(json.dumps(doc))

    jar2, hjar2 = aiohttp.CookieJar(unsafe=True), http.cookiejar.CookieJar()
    assert cookies.load("alice", jar2, lambda: hjar2) == 3
    assert {m.key: m.value for m in jar2} == {"live": "a1"}
    assert sorted(c.name for c in hjar2) == ["cf_clearance", "session"]
    assert jar2.filter_cookies(URL("http://127.0.0.1/x"))["live"].value == "a1"


async def test_values_are_never_logged(caplog, cookie_dir):
    caplog.set_level(logging.DEBUG)
    jar = aiohttp.CookieJar(unsafe=True)
    jar.update_cookies(SimpleCookie("cf_clearance=SECRET-VALUE; Path=/"),
                       URL("http://127.0.0.1/"))
    cookies = CookieStore(cookie_dir)
    cookies.save("alice", jar)
    cookies.load("alice", aiohttp.CookieJar(unsafe=True), http.cookiejar.CookieJar)
    (cookie_dir / file_name("bob")).write_text("{not json")
    assert cookies.load("bob", aiohttp.CookieJar(), http.cookiejar.CookieJar) == 0
    assert "alice" in caplog.text and "SECRET-VALUE" not in caplog.text


async def test_another_users_file_is_never_loaded(cookie_dir):
    jar = aiohttp.CookieJar(unsafe=True)
    jar.update_cookies({"cf_clearance": "alices"}, URL("http://127.0.0.1/"))
    cookies = CookieStore(cookie_dir)
    cookies.save("alice", jar)
    (cookie_dir / file_name("alice")).rename(cookie_dir / file_name("mallory"))
    loaded = aiohttp.CookieJar(unsafe=True)
    assert cookies.load("mallory", loaded, http.cookiejar.CookieJar) == 0
    assert len(loaded) == 0


def test_file_names_are_distinct_and_stay_in_the_directory():
    ids = ["alice", "Alice", "a/b", "a_b", "../../etc/passwd", ".hidden", "", "x" * 500]
    names = [file_name(u) for u in ids]
    assert len(set(n.lower() for n in names)) == len(ids)
    for name in names:
        assert "/" not in name and not name.startswith(".") and len(name) < 100


async def test_sweeper_save_writes_only_sessions_used_since_last_save(fake, store, cookie_dir):
    manager = SessionManager(cookie_dir=cookie_dir)
    try:
        await warm_up(store, manager, "alice")
        assert manager.save_cookies() == 1
        assert (cookie_dir / file_name("alice")).exists()
        assert manager.save_cookies() == 0
    finally:
        await manager.close()
