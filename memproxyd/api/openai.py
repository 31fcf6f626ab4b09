"""OpenAI-compatible routes: chat completions, legacy completions, models, embeddings.

Handlers are thin: parse, build a ``Call``, let memory prepare the outgoing body, forward
natively (OpenAI-wire deployments) or through litellm (everything else). Legacy completions
(``/v1/completions``, autocomplete and fill-in-the-middle) get memory only with ``[memory]
completions = true``.
"""
from __future__ import annotations

import json
from aiohttp import web

from memproxyd import appkeys
from memproxyd.api import validate
from memproxyd.appkeys import USER_ID
from memproxyd.errors import COMPLETIONS, OPENAI
from memproxyd.observe import meter
from memproxyd.proxy import access, catalog, translate, upstream
from memproxyd.proxy.pipeline import native_forwarder, new_call, proxy


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await validate.read_model_call(request)
    validate.chat(body)
    return await proxy(new_call(request, body, OPENAI), "openai", forward_openai, translate.chat)


async def completions(request: web.Request) -> web.StreamResponse:
    body = await validate.read_model_call(request)
    validate.completions(body)
    return await proxy(new_call(request, body, COMPLETIONS), "openai",
                       native_forwarder("/completions"), translate.text_completion)


forward_openai = native_forwarder("/chat/completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    body = await validate.read_model_call(request)
    validate.embeddings(body)
    call = new_call(request, body, OPENAI)
    dep = call.deployment
    metered = meter.meter(call)   # usage ledger: the reply's token count
    async with request.app[appkeys.SESSIONS].lease(call.user_id) as session:
        if dep.wire == "openai":
            headers = upstream.upstream_headers(call)
            return await upstream.forward(call, session, f"{dep.api_base}/embeddings", headers,
                                          {**call.body, "model": dep.upstream_model}, metered)
        result = await translate.embed(dep, session, call.body)
    metered.feed(json.dumps({"usage": result.get("usage")}).encode())
    return web.json_response(result, headers=call.headers())


async def models(request: web.Request) -> web.Response:
    """Every model a client may send: exact names, and what wildcard entries serve (asked of
    the upstream, cached). With ``anthropic-version`` (Claude Code's gateway model
    discovery): Anthropic's shape, available models only."""
    deployments = request.app[appkeys.STATE].deployments
    async with request.app[appkeys.SESSIONS].lease(request[USER_ID]) as session:
        found = await request.app[appkeys.CATALOG].models(deployments, session.http)
    allowed = {item["id"] for item in access.visible(
        request, request[USER_ID], [{"id": m.id} for m in found])}
    found = [m for m in found if m.id in allowed]
    if "anthropic-version" in request.headers:
        return web.json_response(catalog.anthropic_page(found))
    return web.json_response({"object": "list", "data": [m.openai() for m in found]})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/models", models)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/embeddings", embeddings)
