"""One model call through the gateway, whatever the route: the ``Call`` built from a request
(``new_call``: deployment, ``[access]`` rules, credential fields dropped) and the pipeline it
goes through (``proxy``: the user's session, memory's recall and tap, then native forwarding
or translation, with retries and fallbacks).

    call = new_call(request, body, OPENAI)
    return await proxy(call, "openai", forward_openai, translate.chat)
"""
from __future__ import annotations

from aiohttp import web

from memproxyd import appkeys
from memproxyd.appkeys import STARTED, USER_ID
from memproxyd.call import Call
from memproxyd.observe import meter
from memproxyd.proxy import access, failover, upstream
from memproxyd.sessions import UserSession

# Body fields that would name a provider, endpoint or credential: dropped on every path, so a
# client can never redirect a deployment or smuggle a key (litellm would honour them).
CREDENTIAL_FIELDS = frozenset({
    "api_key", "api_base", "base_url", "api_version", "extra_headers", "headers",
    "organization", "custom_llm_provider", "litellm_params", "aws_access_key_id",
    "aws_secret_access_key", "aws_session_token", "vertex_credentials", "vertex_project",
})


def new_call(request: web.Request, body: dict, protocol: str, *, model: str | None = None,
             stream: bool | None = None) -> Call:
    """``model`` and ``stream``: for a protocol that names them outside the body (the
    Gemini API, in its URL); else the body's ``model`` and ``stream``."""
    dep = request.app[appkeys.STATE].deployments.lookup(body.get("model") if model is None
                                                        else model)
    access.check(request, request[USER_ID], dep.name)   # [access] rules: 403
    dep.api_key()  # an unavailable model fails here, before any work
    if not CREDENTIAL_FIELDS.isdisjoint(body):
        body = {k: v for k, v in body.items() if k not in CREDENTIAL_FIELDS}
    call = Call(request=request, protocol=protocol, user_id=request[USER_ID],
                deployment=dep, body=body, started=request[STARTED], streaming=stream)
    request[meter.CALL] = call   # usage ledger and metrics (observe/record.py)
    return call


async def proxy(call: Call, native_wire: str, native, translate) -> web.StreamResponse:
    """The shared pipeline of a model call: the user's session, memory's recall and tap, then
    native forwarding when the deployment speaks the client's protocol, else translation,
    with the deployment's retries and fallbacks (``failover.py``)."""
    app = call.request.app
    async with app[appkeys.SESSIONS].lease(call.user_id) as session:
        outgoing, tap = await app[appkeys.MEMORY].prepare(call, session)
        tap = meter.meter(call, tap)   # usage ledger: first byte, usage events
        return await failover.forward(call, session, outgoing, tap, lambda dep: (
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
            payload = meter.ask_for_usage(call, payload)
        return await upstream.forward(call, session, f"{dep.api_base}{path}",
                                      upstream.upstream_headers(call), payload, tap)
    return forward
