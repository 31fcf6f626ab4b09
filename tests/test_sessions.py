from __future__ import annotations

import time

from memproxyd.sessions import SessionManager


async def test_least_recently_used_session_is_evicted_and_closed():
    manager = SessionManager(max_sessions=2, idle_ttl=60)
    a = manager.get("a")
    manager.get("b")
    manager.get("a")            # a is now more recent than b
    b_session = manager._sessions["b"]
    manager.get("c")
    assert set(manager._sessions) == {"a", "c"}
    await manager.close()
    assert b_session.http.closed and a.http.closed


async def test_idle_sessions_expire_but_leased_ones_stay():
    manager = SessionManager(max_sessions=10, idle_ttl=5)
    idle = manager.get("idle")
    async with manager.lease("busy") as busy:
        assert manager.sweep(now=time.monotonic() + 10) == 1
        assert "busy" in manager._sessions and "idle" not in manager._sessions
        assert not busy.http.closed
    await manager.close()
    assert idle.http.closed


async def test_an_evicted_session_in_use_closes_when_its_lease_ends():
    manager = SessionManager(max_sessions=1, idle_ttl=60)
    async with manager.lease("a") as a:
        manager.get("b")        # evicts a while its request is still running
        assert not a.http.closed
    await manager.close()
    assert a.http.closed


async def test_same_user_gets_the_same_session_and_users_get_separate_jars():
    manager = SessionManager()
    assert manager.get("a") is manager.get("a")
    assert manager.get("a").cookie_jar is not manager.get("b").cookie_jar
    await manager.close()
