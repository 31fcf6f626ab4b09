"""The tap that sees a reply as it is relayed and, once it is complete, has the memory
service remember the exchange (``MemoryService.prepare`` hands it to the gateway).

    tap = RememberTap(call, adapter, turn, remember=service.remember, link=service.link,
                      store_thinking=False, cancel_safe=False)
    tap.feed(chunk)                      # every relayed chunk; never raises
    await tap.finish(call, ok=True)      # after the last byte
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from memproxyd.call import Call
from memproxyd.memory.turn import Turn

log = logging.getLogger(__name__)


class RememberTap:
    """Sees the reply bytes as they are relayed; ``finish`` enqueues the exchange.

    Whatever the collector makes of a chunk, ``feed`` never raises: the first failure turns
    the tap off for this call (logged once, without content) and the exchange is not
    remembered; the client's stream is not touched either way.
    """

    def __init__(self, call: Call, adapter, turn: Turn, *,
                 remember: Callable[[Call, Turn, str], Awaitable[None]],
                 link: Callable[[Call, Turn, list[str], object], None],
                 store_thinking: bool, cancel_safe: bool):
        """``remember(call, turn, answer)`` queues the turn's memory; ``link(call, turn,
        tool_calls, collector)`` keeps a turn that continues by response id; ``cancel_safe``:
        ``remember`` commits whether or not its caller stays (no shield needed)."""
        self.remember = remember
        self.link = link
        self.cancel_safe = cancel_safe
        self.adapter = adapter
        self.turn = turn
        self.user_id = call.user_id
        self.collector = adapter.ReplyCollector(call.stream, store_thinking)
        self.broken = False

    def feed(self, chunk: bytes) -> None:
        if self.broken:
            return
        try:
            self.collector.feed(chunk)
        except Exception as exc:  # a reply we cannot read is relayed all the same
            self.broken = True
            log.warning("reply not readable, exchange not remembered user_id=%s error=%s",
                        self.user_id, type(exc).__name__)

    async def finish(self, call: Call, ok: bool) -> None:
        """Remember the exchange once the whole reply was relayed. Shielded: a client that
        hangs up right after the last byte (Codex does) cancels its handler, and the reply it
        received must still be remembered."""
        if ok and not self.broken:
            if self.cancel_safe:
                await self._finish(call)     # registered for its commit before any await
            else:
                await asyncio.shield(self._finish(call))

    async def _finish(self, call: Call) -> None:
        try:
            calls = self.collector.tool_calls()
            if calls:    # a step of the loop: the turn is remembered with its answer
                self.link(call, self.turn, calls, self.collector)
                return
            await self.remember(call, self.turn, self.collector.answer())
        except Exception:  # memory never fails the call; the reason is in the log
            log.exception("remember failed user_id=%s", call.user_id)
            call.memory_status = "error"
