"""``GET /ui``: the page a developer opens. Projects and their base URLs, usage charts and a
memory browser, drawn by one hand-written script (``static/ui.js``, plain SVG; no build step,
no third-party code) from the admin API.

Like ``/admin``, it is served on the gateway port only, to loopback peers or with
``x-admin-key``; the page reads only ``/admin/...`` routes, so it also works when the gateway
requires keys (a browser has no way to send them):

    GET    /admin/usage                 ``/v1/usage`` for the page (every project)
    GET    /admin/memories?user_id=     ``/v1/memories`` (list, add), search, edit, promote
    POST   /admin/memories              and delete alike (``scope`` included)
    POST   /admin/memories/search
    PATCH  /admin/memories/{id}
    POST   /admin/memories/{id}/promote
    DELETE /admin/memories/{id}?user_id=
    GET    /admin/memories/injections?user_id=&trace_id=   why a block was injected
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from memproxyd.api import memories, usage

STATIC = Path(__file__).with_name("static")
FILES = {"ui.js": "text/javascript", "ui.css": "text/css"}
# the page loads its own script and style only, and talks to its own origin only
HEADERS = {"content-security-policy": "default-src 'none'; script-src 'self'; "
                                      "style-src 'self'; connect-src 'self'; img-src 'self'",
           "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
           "cache-control": "no-store"}


async def page(request: web.Request) -> web.Response:
    return web.Response(body=(STATIC / "ui.html").read_bytes(), content_type="text/html",
                        charset="utf-8", headers=HEADERS)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound()
    return web.Response(body=(STATIC / name).read_bytes(), content_type=FILES[name],
                        charset="utf-8", headers=HEADERS)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui", page)
    app.router.add_get("/ui/{name}", asset)
    app.router.add_get("/admin/usage", usage.get_usage)
    app.router.add_get("/admin/memories", memories.list_memories)
    app.router.add_post("/admin/memories", memories.add)
    app.router.add_post("/admin/memories/search", memories.search)
    app.router.add_patch("/admin/memories/{id}", memories.edit)
    app.router.add_post("/admin/memories/{id}/promote", memories.promote)
    app.router.add_delete("/admin/memories/{id}", memories.delete)
    app.router.add_get("/admin/memories/injections", memories.injections)
