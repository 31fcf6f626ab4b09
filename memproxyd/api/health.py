"""Liveness and readiness: ``GET /health`` (no auth; the daemon answers) and
``GET /health/readiness`` (no auth: the memory backend and its outbox,
``MemoryService.health``). Readiness is 503 ``starting`` until every user's index is built
after a start (a recall then answers at once), and it shows counts and states only: paths,
database names, URLs and process ids are for ``/admin/status``."""
from __future__ import annotations

from aiohttp import web

from memproxyd import appkeys


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


PUBLIC_FIELDS = ("backend", "vectors", "pgvector", "reachable", "pool", "schema_version",
                 "schema_versions")
PUBLIC_OUTBOX = ("depth", "pending", "dead", "error")


async def readiness(request: web.Request) -> web.Response:
    service = request.app[appkeys.MEMORY]
    health = await service.health()
    memory = {k: health[k] for k in PUBLIC_FIELDS if k in health}
    if "outbox" in health:
        memory["outbox"] = {k: health["outbox"][k] for k in PUBLIC_OUTBOX
                            if k in health["outbox"]}
    ready = service.ready
    memory["index"] = "ready" if ready else "building"
    return web.json_response({"status": "ready" if ready else "starting", "memory": memory},
                             status=200 if ready else 503)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/health/readiness", readiness)
