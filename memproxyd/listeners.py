"""Project listeners, reconciled against the registry (mitmproxy's proxyserver pattern).

Each project in the registry gets a ``TCPSite`` on the daemon's own ``AppRunner``: the same
app, the same handlers, in-process; the middleware maps the bound port to the project name,
which becomes the request's identity. ``reconcile`` runs under a lock: listeners whose spec is
gone or changed stop first (their ports free up), then new ones start. A listener that fails
to bind records its error (shown in ``status``) and the others, and the gateway, keep serving.

Reconcile runs at start, when the registry file's mtime changes (polled every second), on
SIGHUP / ``memproxyctl reload``, and after each admin API change.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import attrs
from aiohttp import web

from memproxyd.registry import RegistryError, read_registry
from memproxyd.state import RuntimeState

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0


@attrs.frozen
class ListenerSpec:
    name: str
    host: str
    port: int


@attrs.define
class Listener:
    spec: ListenerSpec
    site: web.TCPSite | None = None
    bound_port: int | None = None
    error: str = ""

    @property
    def state(self) -> str:
        return "listening" if self.site is not None else "failed"

    def to_json(self) -> dict:
        return {"name": self.spec.name, "port": self.spec.port, "state": self.state,
                "error": self.error or None}


class Listeners:
    def __init__(self, state: RuntimeState):
        self._state = state
        self._runner: web.AppRunner | None = None
        self._listeners: dict[str, Listener] = {}
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task | None = None
        self._mtime: float | None = None
        self.registry_error = ""
        self._closing: set[asyncio.Task] = set()     # removed projects' connections

    @property
    def registry_path(self) -> Path:
        return self._state.config.registry_path

    async def start(self, runner: web.AppRunner) -> None:
        self._runner = runner
        await self.reconcile()
        self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        async with self._lock:
            for name in list(self._listeners):
                await self._stop(name)

    def status(self) -> list[dict]:
        return [listener.to_json() for listener in self._listeners.values()]

    def get(self, name: str) -> Listener | None:
        return self._listeners.get(name)

    async def reconcile(self) -> None:
        if self._runner is None:
            return
        async with self._lock:
            self._mtime = self._registry_mtime()
            try:
                projects = await asyncio.to_thread(read_registry, self.registry_path)
            except RegistryError as exc:
                self.registry_error = str(exc)
                log.error("registry unusable, listeners unchanged: %s", exc)
                return
            self.registry_error = ""
            host = self._state.config.server.host
            wanted = {p.name: ListenerSpec(p.name, host, p.port) for p in projects.values()}
            self._state.project_models = {p.name: p.models for p in projects.values()
                                          if p.models}   # [access]: applies at once
            for name, listener in list(self._listeners.items()):
                if wanted.get(name) != listener.spec or listener.site is None:
                    await self._stop(name)
            for name, spec in wanted.items():
                if name not in self._listeners:
                    await self._start(spec)

    async def _start(self, spec: ListenerSpec) -> None:
        listener = Listener(spec)
        self._listeners[spec.name] = listener
        site = web.TCPSite(self._runner, spec.host, spec.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            listener.error = f"cannot listen on {spec.host}:{spec.port}: {exc.strerror or exc}"
            log.error("project listener failed project=%s port=%s error=%s",
                      spec.name, spec.port, exc.strerror or exc)
            with contextlib.suppress(Exception):
                await site.stop()
            return
        listener.site = site
        listener.bound_port = site._server.sockets[0].getsockname()[1]
        self._state.project_ports[listener.bound_port] = spec.name
        log.info("project listener started project=%s port=%s", spec.name, listener.bound_port)

    async def _stop(self, name: str) -> None:
        listener = self._listeners.pop(name)
        if listener.bound_port is not None:
            self._state.project_ports.pop(listener.bound_port, None)
        if listener.site is not None:
            await listener.site.stop()
            self._close_connections(listener.bound_port)
            log.info("project listener stopped project=%s port=%s", name, listener.bound_port)

    def _close_connections(self, port: int | None) -> None:
        """End the project's open connections: stopping the site only stops accepting, and a
        kept-alive connection would otherwise be served as whichever project gets the port
        next. Idle ones close at once; a request in progress gets ``shutdown_timeout`` to
        finish (aiohttp's own graceful ``shutdown``), in the background."""
        timeout = self._state.config.server.shutdown_timeout
        for handler in list(self._runner.server.connections if self._runner.server else ()):
            transport = handler.transport
            sockname = transport.get_extra_info("sockname") if transport else None
            if sockname and sockname[1] == port:
                handler.close()         # wakes an idle one (a busy one ends after its reply)
                task = asyncio.create_task(handler.shutdown(timeout))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def _registry_mtime(self) -> float | None:
        try:
            return os.stat(self.registry_path).st_mtime_ns
        except OSError:
            return None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            if self._registry_mtime() != self._mtime:
                log.info("registry changed, reconciling path=%s", self.registry_path)
                await self.reconcile()
