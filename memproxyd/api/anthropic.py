"""Anthropic Messages routes: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Same pipeline as the OpenAI routes (``proxy/pipeline.py``): parse, build a ``Call``, let memory
prepare the outgoing body, then

* forward natively when the deployment speaks Anthropic (``anthropic/...``): the body as the
  client sent it apart from ``model`` and the memory block, the client's query string
  (Claude Code's ``?beta=true``) and ``anthropic-version`` / ``anthropic-beta`` kept, every SSE
  event relayed byte for byte as it arrives;
* otherwise translate through litellm's Anthropic-messages adapter (``translate.messages``).

Errors leave as ``{"type": "error", "error": {...}}`` (the middleware picks the shape by path).
"""
from __future__ import annotations

from aiohttp import web

from memproxyd import appkeys
from memproxyd.api import validate as checks
from memproxyd.call import Call
from memproxyd.errors import ANTHROPIC
from memproxyd.proxy import translate, upstream
from memproxyd.proxy.pipeline import new_call, proxy
from memproxyd.sessions import UserSession

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


def validate(body: dict, *, needs_max_tokens: bool) -> None:
    """Anthropic's own 400s, raised before any deployment or memory work."""
    checks.messages(body, needs_max_tokens=needs_max_tokens)


def upstream_url(api_base: str, path: str, query_string: str) -> str:
    """``{api_base}{path}?{query}``; an ``api_base`` ending in ``/v1`` is accepted too, as
    LiteLLM users write both ``https://api.anthropic.com`` and ``.../v1``."""
    if api_base.endswith("/v1"):
        api_base = api_base[:-3]
    return f"{api_base}{path}?{query_string}" if query_string else f"{api_base}{path}"


async def forward_anthropic(call: Call, session: UserSession, path: str, body: dict,
                            tap=None) -> web.StreamResponse:
    dep = call.deployment
    payload = {**body, "model": dep.upstream_model}
    headers = upstream.upstream_headers(call)
    url = upstream_url(dep.api_base, path, call.request.query_string)
    return await upstream.forward(call, session, url, headers, payload, tap)


async def messages(request: web.Request) -> web.StreamResponse:
    body = await checks.read_model_call(request)
    validate(body, needs_max_tokens=True)
    return await proxy(new_call(request, body, ANTHROPIC), "anthropic", forward_messages,
                       translate.messages)


async def forward_messages(call: Call, session: UserSession, body: dict,
                           tap=None) -> web.StreamResponse:
    return await forward_anthropic(call, session, MESSAGES_PATH, body, tap)


async def count_tokens(request: web.Request) -> web.StreamResponse:
    """No recall here: Claude Code counts often, and a count without the (small, per-call)
    memory block is what the client's own context accounting expects."""
    body = await checks.read_model_call(request)
    validate(body, needs_max_tokens=False)
    call = new_call(request, body, ANTHROPIC)
    if call.deployment.wire == "anthropic":
        async with request.app[appkeys.SESSIONS].lease(call.user_id) as session:
            return await forward_anthropic(call, session, COUNT_TOKENS_PATH, call.body)
    tokens = await translate.count_tokens(call.deployment, request_texts(call.body))
    return web.json_response({"input_tokens": tokens}, headers=call.headers())


def request_texts(body: dict) -> list[str]:
    """Everything in a request that costs input tokens, as text."""
    texts = [flat_text(body.get("system"))]
    texts += [flat_text(m.get("content")) for m in body["messages"] if isinstance(m, dict)]
    if body.get("tools"):
        texts.append(str(body["tools"]))
    return texts


def flat_text(content: object) -> str:
    """Every piece of text in Anthropic content: text, thinking, tool input, tool results."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            parts.append(str(block.get("text", "")))
        elif kind == "thinking":
            parts.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            parts.append(f"{block.get('name', '')} {block.get('input')}")
        elif kind == "tool_result":
            parts.append(flat_text(block.get("content")))
    return "\n".join(parts)


def add_routes(app: web.Application) -> None:
    app.router.add_post(MESSAGES_PATH, messages)
    app.router.add_post(COUNT_TOKENS_PATH, count_tokens)
