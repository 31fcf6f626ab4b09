"""Gemini API routes, as Gemini CLI and the google-genai SDK call them:
``POST /v1beta/models/{model}:generateContent``, ``:streamGenerateContent`` (``?alt=sse``),
``:countTokens``, and ``GET /v1beta/models[/{model}]``; the same under ``/v1/models/{model}``
(the google-genai SDK's default version; ``GET /v1/models`` stays OpenAI's list). The colon
may arrive URL-encoded (``%3A``); the key in ``x-goog-api-key`` or ``?key=`` (``auth.py``).

Same pipeline as the other model routes (``proxy/pipeline.py``), with the model and the
stream flag taken from the URL instead of the body:

* a ``gemini/<model>`` deployment gets the body natively, as the client sent it apart from
  the memory block, at ``{api_base}/v1beta/models/{upstream model}:{action}`` with the
  client's query string minus ``key`` and the deployment's key in ``x-goog-api-key``; every
  SSE event is relayed byte for byte as it arrives;
* any other deployment goes through litellm's Google GenAI adapter (``translate.py``).

Errors leave in Google's shape, ``{"error": {"code", "message", "status"}}`` (the
middleware picks it by path).
"""
from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from memproxyd import appkeys
from memproxyd.appkeys import USER_ID
from memproxyd.api import validate as checks
from memproxyd.call import Call
from memproxyd.errors import GEMINI, ApiError
from memproxyd.observe.meter import REQUESTED
from memproxyd.proxy import access, translate, upstream
from memproxyd.proxy.pipeline import new_call, proxy
from memproxyd.sessions import UserSession

PREFIX = "/v1beta/models"
VERSIONS = ("v1beta", "v1")
GENERATE, STREAM, COUNT = "generateContent", "streamGenerateContent", "countTokens"
METHODS = (GENERATE, STREAM, COUNT)


def split_target(target: str) -> tuple[str, str]:
    """``gemini-2.5-flash:streamGenerateContent`` → (model, method); a 404 for a method
    memproxyd does not serve (Google's own answer to an unknown one)."""
    model, _, method = target.rpartition(":")
    if not model or method not in METHODS:
        raise ApiError(404, f"method {method or target!r} is not served here (memproxyd serves "
                            f"{', '.join(METHODS)})", "not_found")
    return model, method


def upstream_url(api_base: str, version: str, model: str, method: str, query: dict) -> str:
    """``{api_base}/{version}/models/{model}:{method}?{query}``, the client's API version; an
    ``api_base`` ending in ``/v1beta`` or ``/v1`` is accepted too. ``key`` never goes on: the
    deployment's key is a header."""
    for suffix in VERSIONS:
        if api_base.endswith("/" + suffix):
            api_base = api_base[:-len(suffix) - 1]
    params = [(k, v) for k, v in query.items() if k != "key"]
    url = f"{api_base}/{version}/models/{model}:{method}"
    return f"{url}?{urlencode(params)}" if params else url


async def forward_native(call: Call, session: UserSession, body: dict,
                         tap=None) -> web.StreamResponse:
    dep, request = call.deployment, call.request
    _, method = split_target(request.match_info["target"])
    version = request.path.split("/", 2)[1]
    url = upstream_url(dep.api_base, version, dep.upstream_model, method, request.query)
    return await upstream.forward(call, session, url, upstream.upstream_headers(call), body,
                                  tap)


async def model_method(request: web.Request) -> web.StreamResponse:
    model, method = split_target(request.match_info["target"])
    request[REQUESTED] = model[:200]   # a refusal from here on gets its usage row
    body = await checks.read_json(request)
    checks.gemini(body)
    if method == COUNT:
        return await count_tokens(request, body, model)
    stream = method == STREAM and request.query.get("alt") == "sse"
    call = new_call(request, body, GEMINI, model=model, stream=stream)
    return await proxy(call, "gemini", forward_native, translate.generate_content)


async def count_tokens(request: web.Request, body: dict, model: str) -> web.StreamResponse:
    """No recall: a count is no turn, and the client counts what it will send."""
    call = new_call(request, body, GEMINI, model=model, stream=False)
    if call.deployment.wire == "gemini":
        async with request.app[appkeys.SESSIONS].lease(call.user_id) as session:
            return await forward_native(call, session, call.body)
    inner = body.get("generateContentRequest")
    texts = [str(c) for c in (inner if isinstance(inner, dict) else body).get("contents") or ()]
    tokens = await translate.count_tokens(call.deployment, texts)
    return web.json_response({"totalTokens": tokens}, headers=call.headers())


def _model(name: str) -> dict:
    return {"name": f"models/{name}", "baseModelId": name, "version": "memproxyd",
            "displayName": name, "supportedGenerationMethods": list(METHODS)}


async def list_models(request: web.Request) -> web.Response:
    listing = access.visible(request, request[USER_ID],
                             request.app[appkeys.STATE].deployments.listing())
    return web.json_response({"models": [_model(m["id"]) for m in listing if m["available"]]})


async def get_model(request: web.Request) -> web.Response:
    name = request.match_info["target"].removeprefix("models/")
    request.app[appkeys.STATE].deployments.lookup(name)   # 404 for an unknown model
    return web.json_response(_model(name))


def add_routes(app: web.Application) -> None:
    app.router.add_get(PREFIX, list_models)
    for version in VERSIONS:
        app.router.add_get(f"/{version}/models/{{target}}", get_model)
        app.router.add_post(f"/{version}/models/{{target}}", model_method)
