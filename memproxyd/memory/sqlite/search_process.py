"""The daemon's side of the search process (``search_worker.py``): the sqlite store sends it
each committed write and asks it each search, over the process's stdin and stdout.

    searcher = SearchProcess(db_path)
    await searcher.start()
    searcher.send(("add", "alice", [[(seq, None, stored)]]))  # after the commit
    hits = await searcher.search("alice", "kiln?", 5)         # [(seq, score, stored), ...]

Messages sent within one turn of the event loop go as one frame (one write), after the turn;
replies are read in the protocol's callback (no reader task, no thread). If the process
dies, the searches waiting on it fail (``SearchUnavailable``), writes meanwhile are not
queued (the next process reads the file), and a new one is started, at most every
``RESTART_SECONDS``.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
import sys
import time
from pathlib import Path

from memproxyd.memory.base import MemoryError_, RetryLater
from memproxyd.memory.sqlite import search_worker
from memproxyd.memory.sqlite.search_worker import frame

log = logging.getLogger(__name__)

RESTART_SECONDS = 1.0


class SearchUnavailable(RetryLater):
    """The search process is not running (it is being restarted): HTTP 503 at the API."""

    def __init__(self, message: str):
        super().__init__(message, retry_after=RESTART_SECONDS)


class SearchProcess:
    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin = None
        self._outgoing: list[tuple] = []
        self._pending: dict[int, asyncio.Future] = {}
        self._requests = itertools.count()
        self._closed = False
        self._started_at = 0.0
        self._restart: asyncio.TimerHandle | None = None

    @property
    def pid(self) -> int | None:
        return self._transport.get_pid() if self._transport is not None else None

    async def start(self) -> None:
        self._started_at = time.monotonic()
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.subprocess_exec(
            lambda: _Protocol(self), sys.executable, "-m", search_worker.__name__,
            str(self.db_path), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=None)
        self._stdin = self._transport.get_pipe_transport(0)

    async def close(self) -> None:
        self._closed = True
        if self._restart is not None:
            self._restart.cancel()
        if self._transport is not None:
            self._stdin.close()                   # EOF: the worker exits
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._transport.get_protocol().exited),
                                       2.0)
            self._transport.close()               # kills it if it has not exited
            self._transport = None
        self._fail_pending()

    def send(self, message: tuple) -> None:
        """Queue a message for the end of this loop turn (dropped while no process runs:
        the next one reads the file)."""
        if self._stdin is None or self._stdin.is_closing():
            return
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append(message)

    def _flush(self) -> None:
        messages, self._outgoing = self._outgoing, []
        if messages and self._stdin is not None and not self._stdin.is_closing():
            self._stdin.write(frame(messages))

    async def search(self, user_id: str, query: str, limit: int, distinct: bool = False,
                     qvec=None, weight: float = 0.0) -> list[tuple]:
        """(seq, score, stored) best first, from the worker's index of the user (fused with
        the query's vector ``qvec`` at ``weight`` when given)."""
        if self._stdin is None or self._stdin.is_closing():
            raise SearchUnavailable("the search process is restarting")
        request = next(self._requests)
        future = self._pending[request] = asyncio.get_running_loop().create_future()
        fused = () if qvec is None else ([float(x) for x in qvec], weight)
        self.send(("search", request, user_id, query, limit, distinct, *fused))
        try:
            return await future
        finally:
            self._pending.pop(request, None)

    # -- the protocol's callbacks ---------------------------------------------------------

    def _replied(self, replies: list[tuple]) -> None:
        for request, result in replies:
            future = self._pending.get(request)
            if future is not None and not future.done():
                if isinstance(result, str):
                    future.set_exception(MemoryError_(f"search failed: {result}"))
                else:
                    future.set_result(result)

    def _exited(self) -> None:
        self._stdin = None
        self._fail_pending()
        if self._closed:
            return
        log.warning("memory search process exited code=%s; restarting",
                    self._transport.get_returncode() if self._transport else None)
        self._transport.close()
        self._transport = None
        delay = max(0.0, self._started_at + RESTART_SECONDS - time.monotonic())
        self._restart = asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.ensure_future(self._restarted()))

    async def _restarted(self) -> None:
        if self._closed:
            return
        try:
            await self.start()
        except OSError:
            log.exception("memory search process did not start")

    def _fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SearchUnavailable("the search process exited"))


class _Protocol(asyncio.SubprocessProtocol):
    """Frames off the worker's stdout, as they arrive."""

    def __init__(self, owner: SearchProcess):
        self.owner = owner
        self.buffer = bytearray()
        self.exited = asyncio.get_running_loop().create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4:
            size = int.from_bytes(self.buffer[:4], "big")
            if len(self.buffer) < 4 + size:
                return
            try:
                replies = pickle.loads(self.buffer[4:4 + size])
            except Exception:     # not our frames: replace the process (searches fail over)
                log.exception("memory search process sent an unreadable frame")
                self.buffer.clear()
                self.owner._transport.kill()
                return
            del self.buffer[:4 + size]
            self.owner._replied(replies)

    def process_exited(self) -> None:
        self.exited.set_result(None)
        self.owner._exited()
