"""Cookie jars that survive a daemon restart, one file per user id.

A provider behind Cloudflare (Supermemory) challenges a client that comes back without its
``cf_clearance`` cookie; saving each user's jars means a restart does not set off a new wave of
challenges. One JSON file per user holds both of that user's jars (the aiohttp one, in
aiohttp's own ``CookieJar.save`` format, and the httpx one) and nothing else:

    <state_dir>/sessions/                        0700
        alice-2bd806c97f0e00af.json              0600, written atomically
        bob_example.com-5ff860bf1190ab12.json

The file name is the user id with unsafe characters replaced, plus a sha256 prefix of the
exact user id, so distinct ids never share a file (also on case-insensitive file systems).
Expired cookies are dropped when a file is loaded. Cookie values are never logged.

    store = CookieStore(session_dir(config.state_dir))
    store.load("alice", session.cookie_jar, lambda: session.httpx.cookies.jar)
    store.save("alice", session.cookie_jar, session.httpx.cookies.jar)
"""
from __future__ import annotations

import contextlib
import hashlib
import http.cookiejar
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_HTTPX_FIELDS = ("version", "name", "value", "port", "port_specified", "domain",
                 "domain_specified", "domain_initial_dot", "path", "path_specified", "secure",
                 "expires", "discard", "comment", "comment_url", "rfc2109")


def session_dir(state_dir: Path) -> Path:
    """Where cookie files live: ``<state_dir>/sessions``."""
    return Path(state_dir) / "sessions"


def file_name(user_id: str) -> str:
    safe = _UNSAFE.sub("_", user_id)[:64].lstrip(".") or "_"
    return f"{safe}-{hashlib.sha256(user_id.encode('utf-8')).hexdigest()[:16]}.json"


# -- the two jar kinds --------------------------------------------------------------------

def _dump_aiohttp(jar: aiohttp.CookieJar, scratch: Path) -> dict[str, Any]:
    # CookieJar.save is the only public way to get absolute expiry times out of the jar.
    path = scratch / "aiohttp.json"
    jar.save(path)
    return json.loads(path.read_text(encoding="utf-8"))


def _load_aiohttp(jar: aiohttp.CookieJar, data: dict[str, Any], scratch: Path) -> None:
    path = scratch / "aiohttp.json"
    _write_private(path, json.dumps(data))
    jar.load(path)


def _live_aiohttp(data: dict[str, Any], now: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for place, cookies in data.items():
        live = {name: c for name, c in cookies.items()
                if c.get("expires_timestamp") is None or float(c["expires_timestamp"]) > now}
        if live:
            out[place] = live
    return out


def _dump_httpx(jar: http.cookiejar.CookieJar) -> list[dict[str, Any]]:
    # Cookie keeps its non-standard attributes (HttpOnly, SameSite) only in ``_rest``.
    return [{**{f: getattr(c, f) for f in _HTTPX_FIELDS}, "rest": dict(c._rest)} for c in jar]


def _load_httpx(jar: http.cookiejar.CookieJar, cookies: list[dict[str, Any]]) -> None:
    for c in cookies:
        jar.set_cookie(http.cookiejar.Cookie(**{f: c.get(f) for f in _HTTPX_FIELDS},
                                             rest=c.get("rest") or {}))


def _live_httpx(cookies: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    return [c for c in cookies if c.get("expires") is None or c["expires"] > now]


# -- files --------------------------------------------------------------------------------

def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _write_atomic(path: Path, text: str) -> None:
    """Temp file (0600) in the same directory, fsync, rename over the old file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class CookieStore:
    """Saves and loads per-user cookie jars under one private directory."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._written: dict[str, str] = {}      # user id → digest of the cookies on disk

    def path_for(self, user_id: str) -> Path:
        return self.directory / file_name(user_id)

    def _ensure_dir(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def save(self, user_id: str, aiohttp_jar: aiohttp.CookieJar,
             httpx_jar: http.cookiejar.CookieJar | None = None) -> int:
        """Write the user's jars (a user without cookies has no file); returns the count."""
        self._ensure_dir()
        with tempfile.TemporaryDirectory(dir=self.directory) as scratch:
            now = time.time()
            jars = _live_aiohttp(_dump_aiohttp(aiohttp_jar, Path(scratch)), now)
            httpx_cookies = _live_httpx(_dump_httpx(httpx_jar), now) if httpx_jar else []
        count = sum(map(len, jars.values())) + len(httpx_cookies)
        path = self.path_for(user_id)
        digest = hashlib.sha256(json.dumps([jars, httpx_cookies], sort_keys=True).encode())
        if self._written.get(user_id) == digest.hexdigest() and path.exists():
            return count                        # unchanged: no rewrite, no fsync
        if not count:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            doc = {"version": FORMAT_VERSION, "user_id": user_id, "saved_at": now,
                   "aiohttp": jars, "httpx": httpx_cookies}
            _write_atomic(path, json.dumps(doc, indent=1))
        self._written[user_id] = digest.hexdigest()
        log.debug("cookies saved user_id=%s count=%d", user_id, count)
        return count

    def load(self, user_id: str, aiohttp_jar: aiohttp.CookieJar,
             httpx_jar: Callable[[], http.cookiejar.CookieJar]) -> int:
        """Fill the user's jars from their file, unexpired cookies only; returns the count.

        ``httpx_jar`` is called only when there are httpx cookies to restore (it may create
        the user's httpx client). A missing or unreadable file loads nothing.
        """
        doc = self._read(user_id)
        if doc is None:
            return 0
        try:
            now = time.time()
            jars = _live_aiohttp(doc.get("aiohttp") or {}, now)
            httpx_cookies = _live_httpx(doc.get("httpx") or [], now)
            if jars:
                with tempfile.TemporaryDirectory(dir=self.directory) as scratch:
                    _load_aiohttp(aiohttp_jar, jars, Path(scratch))
            if httpx_cookies:
                _load_httpx(httpx_jar(), httpx_cookies)
        except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
            log.warning("cookies not loaded user_id=%s file=%s error=%s",
                        user_id, self.path_for(user_id), type(exc).__name__)
            return 0
        count = sum(map(len, jars.values())) + len(httpx_cookies)
        log.debug("cookies loaded user_id=%s count=%d", user_id, count)
        return count

    def _read(self, user_id: str) -> dict[str, Any] | None:
        path = self.path_for(user_id)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("cookie file unreadable file=%s error=%s", path, type(exc).__name__)
            return None
        if not isinstance(doc, dict) or doc.get("user_id") != user_id:
            log.warning("cookie file ignored (not this user's) file=%s", path)
            return None
        return doc
