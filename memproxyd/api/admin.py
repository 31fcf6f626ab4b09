"""The admin API for memproxyctl, on the gateway port only (loopback peers or ``x-admin-key``).

    GET    /admin/projects          {"projects": [{name, port, created, description, state, error}]}
    POST   /admin/projects          {"name", "port"?, "description"?, "models"?}
                                    → 201 {"project": {...}}
    DELETE /admin/projects/{name}   {"project": {...}}
    GET    /admin/status            version, uptime, listeners, sessions, memory
    POST   /admin/reload            re-read config and registry (same as SIGHUP)
    POST   /admin/outbox/retry      dead letters back in the outbox queue → {"retried": N}
"""
from __future__ import annotations

import asyncio
import time

from aiohttp import web

from memproxyd import __version__, appkeys
from memproxyd.api.validate import read_json
from memproxyd.errors import ApiError
from memproxyd.registry import (ProjectNotFound, RegistryCorruptError, RegistryError, add_project,
                                read_registry, remove_project, validate_description,
                                validate_models, validate_name, validate_port)


def _project_json(request: web.Request, project) -> dict:
    listener = request.app[appkeys.LISTENERS].get(project.name)
    info = listener.to_json() if listener else {"state": "pending", "error": None}
    # the listener's state, why it failed and when it is tried again (shown by /ui)
    return {**project.to_json(), **{k: v for k, v in info.items()
                                    if k in ("state", "error", "failures", "retry_in")}}


async def _registry(request: web.Request, fn, *args, **kwargs):
    try:
        return await asyncio.to_thread(fn, request.app[appkeys.STATE].config.registry_path,
                                       *args, **kwargs)
    except ProjectNotFound as exc:
        raise ApiError(404, str(exc), "project_not_found") from None
    except RegistryCorruptError as exc:
        raise ApiError(500, str(exc), "registry_corrupt") from None
    except RegistryError as exc:
        raise ApiError(409, str(exc), "registry_refused") from None


async def list_projects(request: web.Request) -> web.Response:
    projects = await _registry(request, read_registry)
    return web.json_response({"projects": [_project_json(request, p) for p in projects.values()]})


async def create_project(request: web.Request) -> web.Response:
    body = await read_json(request)
    try:
        validate_name(body.get("name"))
        if body.get("port") is not None:
            validate_port(body["port"])
        validate_models(body.get("models") or ())
        validate_description(body.get("description", ""))
    except RegistryError as exc:
        raise ApiError(400, str(exc), "invalid_project") from None
    config = request.app[appkeys.STATE].config
    reserved = request.app[appkeys.STATE].gateway_ports | {config.server.port}
    project = await _registry(request, add_project, body.get("name"), body.get("port"),
                              port_range=tuple(config.server.project_ports),
                              description=body.get("description", ""), reserved=reserved,
                              host=config.server.host, models=body.get("models") or ())
    listeners = request.app[appkeys.LISTENERS]
    await listeners.reconcile()
    listener = listeners.get(project.name)
    if listener is not None and listener.error:
        # the port was free when checked but could not be bound: undo, change nothing
        await _registry(request, remove_project, project.name)
        await listeners.reconcile()
        raise ApiError(409, listener.error, "port_unavailable")
    return web.json_response({"project": _project_json(request, project)}, status=201)


async def delete_project(request: web.Request) -> web.Response:
    project = await _registry(request, remove_project, request.match_info["name"])
    await request.app[appkeys.LISTENERS].reconcile()
    return web.json_response({"project": {**project.to_json(), "state": "removed",
                                          "error": None}})


async def status(request: web.Request) -> web.Response:
    state = request.app[appkeys.STATE]
    listeners = request.app[appkeys.LISTENERS]
    sessions = request.app[appkeys.SESSIONS]
    users = sessions.summary()
    return web.json_response({
        "version": __version__,
        "uptime_s": round(time.time() - state.started, 3),
        "config": state.config.path,
        "gateway": {"host": state.config.server.host, "port": min(state.gateway_ports)},
        "listeners": listeners.status(),
        "registry": {"path": str(state.config.registry_path),
                     "error": listeners.registry_error or None},
        "sessions": {"count": len(users), "users": users},
        "tasks": len(asyncio.all_tasks()),   # a leak shows here first (scripts/soak.py)
        "memory": await request.app[appkeys.MEMORY].health(),
    })


async def retry_dead(request: web.Request) -> web.Response:
    return web.json_response({"retried": await request.app[appkeys.MEMORY].retry_dead()})


async def reload(request: web.Request) -> web.Response:
    reloader = request.app[appkeys.STATE].reload
    if reloader is None:
        raise ApiError(503, "reload is not available in this process", "reload_unavailable")
    return web.json_response(await reloader())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/projects", list_projects)
    app.router.add_post("/admin/projects", create_project)
    app.router.add_delete("/admin/projects/{name}", delete_project)
    app.router.add_get("/admin/status", status)
    app.router.add_post("/admin/reload", reload)
    app.router.add_post("/admin/outbox/retry", retry_dead)
