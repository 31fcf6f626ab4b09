"""OpenAI-compatible routes: chat completions, legacy completions, models, embeddings, health.

Handlers are thin: parse, build a ``Call``, let memory prepare the outgoing body, forward
natively (OpenAI-wire deployments) or through litellm (everything else). Legacy completions
(``/v1/completions``, autocomplete and fill-in-the-middle) get memory only with ``[memory]
completions = true``.
"""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from memproxyd.proxy import access, translate as llm, failover as router, upstream
from memproxyd import appkeys, tracing
from memproxyd.observe import meter as usage
from memproxyd.api import validate
from memproxyd.errors import COMPLETIONS, OPENAI
from memproxyd.api.middleware import STARTED, USER_ID
from memproxyd.call import Call
from memproxyd.sessions import UserSession

# Client headers that are protocol options, never credentials, and so may go upstream.
FORWARDED_HEADERS = ("accept", "openai-beta", "anthropic-version", "anthropic-beta",
                     "idempotency-key")
CREDENTIAL_HEADERS = ("authorization", "x-api-key")
# Body fields that would name a provider, endpoint or credential: dropped on every path, so a
# client can never redirect a deployment or smuggle a key (litellm would honour them).
CREDENTIAL_FIELDS = frozenset({
    "api_key", "api_base", "base_url", "api_version", "extra_headers", "headers",
    "organization", "custom_llm_provider", "litellm_params", "aws_access_key_id",
    "aws_secret_access_key", "aws_session_token", "vertex_credentials", "vertex_project",
})


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body of a model call. From here on a refusal (a malformed field, an unknown model)
    gets its usage ledger row, under the model the client asked for."""
    request[usage.REQUESTED] = ""
    body = validate.parse_json(await request.read())
    request[usage.REQUESTED] = str(body.get("model"))[:200]
    return body


def upstream_headers(call: Call) -> dict[str, str]:
    """Headers for a native call: protocol options from the client, credentials and extra
    headers from the deployment only (or the client's own, where the deployment says so)."""
    request, dep = call.request, call.deployment
    headers = {"content-type": "application/json"}
    for name in FORWARDED_HEADERS:
        value = request.headers.get(name)
        if value is not None:
            headers[name] = value
    if dep.entry.forward_client_credentials:
        guard = request.app[appkeys.STATE].guard
        for name in CREDENTIAL_HEADERS:
            value = request.headers.get(name)
            if value is not None and not guard.is_gateway_credential(value):
                headers[name] = value
    else:
        key = dep.api_key()
        if key:
            if dep.wire == "anthropic":
                headers["x-api-key"] = key
            else:
                headers["authorization"] = f"Bearer {key}"
    if dep.wire == "anthropic":
        headers.setdefault("anthropic-version", "2023-06-01")
    headers.update(dep.params.extra_headers)
    headers.update(call.router_headers())
    headers.update(tracing.headers())   # W3C traceparent: the request's trace continues
    return headers


def new_call(request: web.Request, body: dict, protocol: str) -> Call:
    dep = request.app[appkeys.STATE].deployments.lookup(body.get("model"))
    access.check(request, request[USER_ID], dep.name)   # [access] rules: 403
    dep.api_key()  # an unavailable model fails here, before any work
    if not CREDENTIAL_FIELDS.isdisjoint(body):
        body = {k: v for k, v in body.items() if k not in CREDENTIAL_FIELDS}
    call = Call(request=request, protocol=protocol, user_id=request[USER_ID],
                deployment=dep, body=body, started=request[STARTED])
    request[usage.CALL] = call   # usage ledger and metrics (observe.py)
    return call


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    validate.chat(body)
    return await proxy(new_call(request, body, OPENAI), "openai", forward_openai, llm.chat)


async def completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    validate.completions(body)
    return await proxy(new_call(request, body, COMPLETIONS), "openai",
                       native_forwarder("/completions"), llm.text_completion)


async def proxy(call: Call, native_wire: str, native, translate) -> web.StreamResponse:
    """The shared pipeline of a model call: the user's session, memory's recall and tap, then
    native forwarding when the deployment speaks the client's protocol, else translation,
    with the deployment's retries and fallbacks (``router.py``)."""
    app = call.request.app
    async with app[appkeys.SESSIONS].lease(call.user_id) as session:
        outgoing, tap = await app[appkeys.MEMORY].prepare(call, session)
        tap = usage.meter(call, tap)   # usage ledger: first byte, usage events
        return await router.forward(call, session, outgoing, tap, lambda dep: (
            native if dep.wire == native_wire else translate))


# OpenAI endpoints whose streams report usage only when asked (stream_options)
USAGE_PATHS = ("/chat/completions", "/completions")


def native_forwarder(path: str):
    """The native forwarder of one OpenAI-wire endpoint (``/chat/completions``, ...): the
    body as prepared, ``model`` replaced by the deployment's upstream name."""
    async def forward(call: Call, session: UserSession, body: dict,
                      tap=None) -> web.StreamResponse:
        dep = call.deployment
        payload = {**body, "model": dep.upstream_model}
        if path in USAGE_PATHS:
            payload = usage.ask_for_usage(call, payload)
        return await upstream.forward(call, session, f"{dep.api_base}{path}",
                                      upstream_headers(call), payload, tap)
    return forward


forward_openai = native_forwarder("/chat/completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    validate.embeddings(body)
    call = new_call(request, body, OPENAI)
    dep = call.deployment
    meter = usage.meter(call)   # usage ledger: the reply's token count
    async with request.app[appkeys.SESSIONS].lease(call.user_id) as session:
        if dep.wire == "openai":
            headers = upstream_headers(call)
            return await upstream.forward(call, session, f"{dep.api_base}/embeddings", headers,
                                          {**call.body, "model": dep.upstream_model}, meter)
        result = await llm.embed(dep, session, call.body)
    meter.feed(json.dumps({"usage": result.get("usage")}).encode())
    return web.json_response(result, headers=call.headers())


async def models(request: web.Request) -> web.Response:
    listing = request.app[appkeys.STATE].deployments.listing()
    return web.json_response({"object": "list",
                              "data": access.visible(request, request[USER_ID], listing)})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readiness(request: web.Request) -> web.Response:
    memory = await request.app[appkeys.MEMORY].health()
    return web.json_response({"status": "ready", "memory": memory})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/models", models)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/embeddings", embeddings)
    app.router.add_get("/health", health)
    app.router.add_get("/health/readiness", readiness)
