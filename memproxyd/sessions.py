"""One persistent HTTP client per user id: cookie jar + connection pool.

Every upstream and memory call made on a user's behalf uses that user's ``UserSession``, so a
cookie a provider sets for user A (say Cloudflare's ``cf_clearance``) goes back on A's later
calls and never on B's. ``litellm.aclient_session`` is never assigned: it is one process-wide
global and would mix users.

    async with manager.lease("alice") as session:
        async with session.http.post(url, json=body) as resp: ...

Sessions are LRU-bounded (``max_sessions``) and dropped after ``idle_ttl`` seconds unused; an
evicted session still leased by a request is closed when its last lease ends. With a
``cookie_dir`` the jars outlive the process (``cookies.CookieStore``): loaded when a user's
session is created, saved on eviction, at ``close()`` and by the sweeper for sessions used
since their last save.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import httpx

from memproxyd import tracing
from memproxyd.cookies import CookieStore

log = logging.getLogger(__name__)


class UserSession:
    """The HTTP clients of one user id. ``http`` (aiohttp) serves native passthrough;
    ``httpx`` (created on first use) serves SDKs that take an httpx client (litellm's OpenAI
    client, the Supermemory SDK). Each keeps its own cookie jar for this user only."""

    def __init__(self, user_id: str, *, connector_limit: int = 100):
        self.user_id = user_id
        # unsafe=True: keep cookies set by IP-address hosts (127.0.0.1, self-hosted backends).
        self.cookie_jar = aiohttp.CookieJar(unsafe=True)
        self.http = aiohttp.ClientSession(
            cookie_jar=self.cookie_jar,
            connector=aiohttp.TCPConnector(limit=connector_limit, ttl_dns_cache=300),
            skip_auto_headers=("User-Agent",),
        )
        self._httpx: httpx.AsyncClient | None = None
        # SDK clients built on this user's transports (e.g. litellm's handler), made once
        self.clients: dict[str, object] = {}
        self.last_used = time.monotonic()
        self.leases = 0
        self.evicted = False
        self.cookies_saved_at = 0.0     # monotonic; 0 = never

    @property
    def httpx(self) -> httpx.AsyncClient:
        if self._httpx is None:
            self._httpx = httpx.AsyncClient(
                timeout=httpx.Timeout(600.0, connect=10.0),
                event_hooks={"request": [tracing.httpx_request_hook]})  # traceparent
        return self._httpx

    def cookie_names(self) -> list[str]:
        names = {c.key for c in self.cookie_jar}
        if self._httpx is not None:
            names.update(c.name for c in self._httpx.cookies.jar)
        return sorted(names)

    async def close(self) -> None:
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        await self.http.close()
        if self._httpx is not None:
            await self._httpx.aclose()


class SessionManager:
    def __init__(self, max_sessions: int = 256, idle_ttl: float = 900.0,
                 cookie_dir: Path | None = None):
        self.max_sessions = max_sessions
        self.idle_ttl = idle_ttl
        self._cookies = CookieStore(cookie_dir) if cookie_dir is not None else None
        self._sessions: OrderedDict[str, UserSession] = OrderedDict()
        self._sweeper: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, user_id: str) -> UserSession:
        """The user's session, created on first use; marks it most recently used."""
        session = self._sessions.get(user_id)
        if session is None:
            session = UserSession(user_id)
            self._load_cookies(session)
            self._sessions[user_id] = session
            log.debug("session opened user_id=%s", user_id)
            while len(self._sessions) > self.max_sessions:
                _, oldest = self._sessions.popitem(last=False)
                self._evict(oldest, "lru")
        else:
            self._sessions.move_to_end(user_id)
        session.last_used = time.monotonic()
        return session

    @contextlib.asynccontextmanager
    async def lease(self, user_id: str) -> AsyncIterator[UserSession]:
        session = self.get(user_id)
        session.leases += 1
        try:
            yield session
        finally:
            session.leases -= 1
            session.last_used = time.monotonic()
            if session.evicted and session.leases == 0:
                self._save_cookies(session)     # what the last lease received
                self._close_later(session)

    def sweep(self, now: float | None = None) -> int:
        """Evict sessions idle longer than ``idle_ttl``; returns how many."""
        now = time.monotonic() if now is None else now
        stale = [uid for uid, s in self._sessions.items()
                 if s.leases == 0 and now - s.last_used > self.idle_ttl]
        for uid in stale:
            self._evict(self._sessions.pop(uid), "idle")
        return len(stale)

    def summary(self) -> dict[str, list[str]]:
        """user id → cookie names (never values), for status."""
        return {uid: s.cookie_names() for uid, s in self._sessions.items()}

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            self._save_cookies(session)
        await asyncio.gather(*(s.close() for s in sessions), *self._closing,
                             return_exceptions=True)

    def _evict(self, session: UserSession, why: str) -> None:
        session.evicted = True
        log.debug("session evicted user_id=%s reason=%s", session.user_id, why)
        self._save_cookies(session)
        if session.leases == 0:
            self._close_later(session)

    def _close_later(self, session: UserSession) -> None:
        task = asyncio.get_running_loop().create_task(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _sweep_forever(self) -> None:
        interval = max(1.0, min(60.0, self.idle_ttl / 4))
        while True:
            await asyncio.sleep(interval)
            self.sweep()
            self.save_cookies()

    def save_cookies(self) -> int:
        """Save the jars of sessions used since their last save; returns how many."""
        dirty = [s for s in self._sessions.values() if s.last_used > s.cookies_saved_at]
        for session in dirty:
            self._save_cookies(session)
        return len(dirty)

    def _load_cookies(self, session: UserSession) -> None:
        if self._cookies is None:
            return
        # Only a user whose file holds httpx cookies gets the httpx client created here.
        self._cookies.load(session.user_id, session.cookie_jar, lambda: session.httpx.cookies.jar)
        session.cookies_saved_at = time.monotonic()

    def _save_cookies(self, session: UserSession) -> None:
        if self._cookies is None:
            return
        httpx_jar = session._httpx.cookies.jar if session._httpx is not None else None
        try:
            self._cookies.save(session.user_id, session.cookie_jar, httpx_jar)
        except Exception as exc:    # noqa: BLE001 - eviction, close and the sweeper go on
            log.warning("cookies not saved user_id=%s error=%s", session.user_id,
                        type(exc).__name__)
        session.cookies_saved_at = time.monotonic()
