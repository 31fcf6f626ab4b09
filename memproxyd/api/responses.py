"""OpenAI Responses API routes (Codex CLI's protocol), on the gateway and project ports.

``POST /v1/responses`` runs the same pipeline as chat completions (``gateway.proxy``):
identity, the user's session, memory (recall injected into ``instructions``, the exchange
remembered, see ``memory/wire/responses.py``), then

* native forwarding to OpenAI-wire deployments: the body as the client sent it apart from
  ``model`` and the memory block (tools, ``previous_response_id``, unknown fields kept), every
  SSE event relayed byte for byte as it arrives, unknown event types included;
* otherwise ``litellm.aresponses`` (``translate.responses``), answering OpenAI's JSON or events.

Two side calls carry a ``model`` but are no conversation turn, and are passed through to
OpenAI-wire deployments without memory (``skipped``), 501 elsewhere:
``POST /v1/responses/compact``, Codex's remote compaction (the history in, a compacted
history out; made when Codex's provider is OpenAI, as with ``OPENAI_BASE_URL`` pointing
here), and ``POST /v1/responses/input_tokens`` (a count without the per-call memory block is
what the client's own context accounting expects).

The stored-response routes carry no ``model``: ``GET`` and ``DELETE /v1/responses/{id}``,
``POST /v1/responses/{id}/cancel``, ``GET /v1/responses/{id}/input_items``. They are passed
through (query string kept, ``?stream=true`` relayed as events) to

1. the deployment named by a ``model`` query parameter (removed before the call goes on),
   which must be OpenAI-wire, else 501: litellm's stored responses are not served here;
2. else the first OpenAI-wire deployment of ``model_list`` with an exact name, in config
   order; with none configured, 404.

Errors are OpenAI's JSON; a stream failing midway ends with OpenAI's ``error`` event.
"""
from __future__ import annotations

import re
from urllib.parse import quote, urlencode

from aiohttp import web

from memproxyd import appkeys
from memproxyd.api import validate as checks
from memproxyd.appkeys import STARTED, USER_ID
from memproxyd.call import Call
from memproxyd.deployments import Deployment
from memproxyd.errors import RESPONSES, ApiError
from memproxyd.proxy import translate, upstream
from memproxyd.proxy.pipeline import native_forwarder, new_call, proxy

# OpenAI's ids are ``resp_<hex>``. No dots, no slashes: an id of ".." would walk the upstream
# URL up a segment, with the deployment's credentials.
RESPONSE_ID = re.compile(r"[A-Za-z0-9_=+-]{1,256}")
forward_create = native_forwarder("/responses")
SIDE_CALLS = ("compact", "input_tokens")


def validate(body: dict) -> None:
    """400s for what the memory layer reads or litellm needs, before any other work."""
    checks.responses(body)


async def create(request: web.Request) -> web.StreamResponse:
    body = await checks.read_model_call(request)
    validate(body)
    return await proxy(new_call(request, body, RESPONSES), "openai", forward_create,
                       translate.responses)


async def side_call(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses/compact`` and ``/v1/responses/input_tokens``."""
    body = await checks.read_model_call(request)
    validate(body)
    call = new_call(request, body, RESPONSES)
    action = request.match_info["action"]
    if call.deployment.wire != "openai":
        raise ApiError(501, f"/responses/{action} is passed through to OpenAI-wire deployments "
                            f"only; {call.deployment.name!r} is not one", "not_implemented")
    call.memory_status = "skipped"   # no turn: nothing to recall for, nothing to remember
    forward = native_forwarder(f"/responses/{action}")
    async with request.app[appkeys.SESSIONS].lease(call.user_id) as session:
        return await forward(call, session, call.body)


def stored_deployment(request: web.Request) -> Deployment:
    """The deployment a stored-response route goes to (see the module docstring)."""
    deployments = request.app[appkeys.STATE].deployments
    name = request.query.get("model")
    dep = deployments.lookup(name) if name is not None else deployments.first("openai")
    if dep is None:
        raise ApiError(404, "no OpenAI-wire deployment is configured to serve stored "
                            "responses", "model_not_found")
    if dep.wire != "openai":
        raise ApiError(501, f"stored responses are passed through to OpenAI-wire deployments "
                            f"only; {dep.name!r} is not one", "not_implemented")
    dep.api_key()  # an unavailable model fails here, before any work
    return dep


async def stored(request: web.Request) -> web.StreamResponse:
    """``GET``/``DELETE /v1/responses/{id}``, ``POST .../cancel``, ``GET .../input_items``."""
    response_id = request.match_info["id"]
    if not RESPONSE_ID.fullmatch(response_id):
        raise ApiError(400, "invalid response id", "invalid_response_id")
    dep = stored_deployment(request)
    # no request body here: the call's body only says whether events are asked for, which
    # picks the deployment's stream_timeout
    call = Call(request=request, protocol=RESPONSES, user_id=request[USER_ID], deployment=dep,
                body={"stream": request.query.get("stream") == "true"},
                started=request[STARTED])
    tail = request.match_info.get("action", "")
    url = f"{dep.api_base}/responses/{quote(response_id)}{tail and '/' + tail}"
    query = [(k, v) for k, v in request.query.items() if k != "model"]
    if query:
        url += "?" + urlencode(query)
    async with request.app[appkeys.SESSIONS].lease(call.user_id) as session:
        return await upstream.forward(call, session, url, upstream.upstream_headers(call), None,
                                      method=request.method)


def add_routes(app: web.Application) -> None:
    for prefix in ("/v1/responses", "/responses"):
        app.router.add_post(prefix, create)
        app.router.add_post(prefix + "/{action:" + "|".join(SIDE_CALLS) + "}", side_call)
        app.router.add_get(prefix + "/{id}", stored)
        app.router.add_delete(prefix + "/{id}", stored)
        app.router.add_post(prefix + "/{id}/{action:cancel}", stored)
        app.router.add_get(prefix + "/{id}/{action:input_items}", stored)
