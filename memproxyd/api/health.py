"""Liveness and readiness: ``GET /health`` (no auth; the daemon answers) and
``GET /health/readiness`` (the memory backend and its outbox, ``MemoryService.health``, and
the models that answer ``model_unavailable`` because their key variable is not set: ready
all the same, since every other model works)."""
from __future__ import annotations

from aiohttp import web

from memproxyd import appkeys


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readiness(request: web.Request) -> web.Response:
    memory = await request.app[appkeys.MEMORY].health()
    unset = request.app[appkeys.STATE].deployments.unavailable()
    return web.json_response({"status": "ready", "memory": memory, "models_unavailable": {
        name: f"{variable} is not set" for name, variable in unset.items()}})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/health/readiness", readiness)
