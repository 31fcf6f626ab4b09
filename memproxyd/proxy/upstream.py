"""Native passthrough: the client's protocol equals the deployment's wire protocol.

The body goes upstream as the client sent it (re-encoded JSON, ``model`` and the memory block
being the only changes), over the caller's own aiohttp session. The reply is relayed as it
arrives: SSE chunk by chunk, status passed through, hop-by-hop, length, encoding and
``set-cookie`` headers dropped (upstream cookies belong to the user's session, not the client).

A ``tap`` (see ``memory.service``) sees every byte of a successful reply and is finished
before the response ends, which is where the exchange is durably remembered.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Protocol

import aiohttp
from aiohttp import web

from memproxyd import appkeys, tracing
from memproxyd.call import Call
from memproxyd.errors import ApiError, sse_error_event
from memproxyd.sessions import UserSession

log = logging.getLogger(__name__)

DROP_RESPONSE_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade", "content-length",
    "content-encoding", "set-cookie", "server", "date",
})


# Client headers that are protocol options, never credentials, and so may go upstream.
FORWARDED_HEADERS = ("accept", "openai-beta", "anthropic-version", "anthropic-beta",
                     "idempotency-key")
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")
# how each wire protocol takes the deployment's key
KEY_HEADERS = {"anthropic": ("x-api-key", "{}"), "gemini": ("x-goog-api-key", "{}")}

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
            name, value = KEY_HEADERS.get(dep.wire, ("authorization", "Bearer {}"))
            headers[name] = value.format(key)
    if dep.wire == "anthropic":
        headers.setdefault("anthropic-version", "2023-06-01")
    headers.update(dep.params.extra_headers)
    headers.update(call.router_headers())
    headers.update(tracing.headers())   # W3C traceparent: the request's trace continues
    return headers


class Tap(Protocol):
    def feed(self, chunk: bytes) -> bytes | None: ...   # bytes: relay these instead
    async def finish(self, call: Call, ok: bool) -> None: ...


def relay_headers(upstream: aiohttp.ClientResponse, call: Call) -> dict[str, str]:
    headers = {k: v for k, v in upstream.headers.items()
               if k.lower() not in DROP_RESPONSE_HEADERS}
    headers.update(call.headers())
    return headers


async def forward(call: Call, session: UserSession, url: str, headers: dict[str, str],
                  payload: dict | None, tap: Tap | None = None,
                  method: str = "POST") -> web.StreamResponse:
    """Send ``payload`` (None: no body, for GET and DELETE) to ``url`` and relay the reply to
    the client of ``call``."""
    timeout = call.deployment.timeout(call.stream)
    data = json.dumps(payload).encode() if payload is not None else None
    sent = time.perf_counter()
    try:
        upstream = await session.http.request(
            method, url, data=data, headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(timeout, 30.0),
                                          sock_read=timeout))
    except asyncio.TimeoutError:
        raise ApiError(504, f"upstream timed out after {timeout:g}s", "upstream_timeout") from None
    except aiohttp.ClientError as exc:
        raise ApiError(502, f"upstream unreachable: {type(exc).__name__}",
                       "upstream_unreachable") from None
    call.upstream_s += time.perf_counter() - sent
    try:
        ctype = upstream.headers.get("content-type", "")
        if upstream.status == 200 and ctype.startswith("text/event-stream"):
            return await _relay_stream(call, upstream, tap)
        return await _relay_body(call, upstream, tap)
    finally:
        upstream.release()


async def _relay_body(call: Call, upstream: aiohttp.ClientResponse,
                      tap: Tap | None) -> web.Response:
    waited = time.perf_counter()
    try:
        body = await upstream.read()
    except asyncio.TimeoutError:
        raise ApiError(504, "upstream timed out while sending its reply", "upstream_timeout") from None
    except aiohttp.ClientError as exc:
        raise ApiError(502, f"upstream failed while sending its reply: {type(exc).__name__}",
                       "upstream_unreachable") from None
    call.upstream_s += time.perf_counter() - waited
    if upstream.status == 200 and not _is_json(upstream, body):
        raise ApiError(502, "upstream sent a reply that is not valid JSON", "upstream_malformed")
    if tap is not None and upstream.status == 200:
        tap.feed(body)
        await tap.finish(call, True)
    return web.Response(body=body, status=upstream.status, headers=relay_headers(upstream, call))


def _is_json(upstream: aiohttp.ClientResponse, body: bytes) -> bool:
    """False only for a reply that says it is JSON and is not."""
    if "json" not in upstream.headers.get("content-type", ""):
        return True
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


# What an event stream starts with (after optional blank lines): a field or a comment.
_SSE_START = (b"data:", b"event:", b"id:", b"retry:", b":")


async def _first_events(upstream: aiohttp.ClientResponse) -> bytes:
    """The stream's first bytes, read before the client's headers go out: an upstream that
    fails or sends no event stream at all is then still a clean 502 (or 504)."""
    first = b""
    try:
        while piece := await upstream.content.readany():
            first += piece
            head = _head(first)
            if len(head) >= 6 or not any(start.startswith(head) for start in _SSE_START):
                break
    except asyncio.TimeoutError:
        raise ApiError(504, "upstream timed out before its first event",
                       "upstream_timeout") from None
    except aiohttp.ClientError as exc:
        raise ApiError(502, f"upstream failed before its first event: {type(exc).__name__}",
                       "upstream_unreachable") from None
    if not first:
        raise ApiError(502, "upstream ended the stream before its first event",
                       "upstream_unreachable")
    if not _head(first).startswith(_SSE_START):
        raise ApiError(502, "upstream sent a malformed event stream", "upstream_malformed")
    return first


def _head(data: bytes) -> bytes:
    return data.removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n")


def _tapped(tap: Tap | None, chunk: bytes) -> bytes:
    """What goes to the client: ``chunk``, unless the tap replaces it (the usage meter drops
    the usage event it asked for and the client did not)."""
    replaced = tap.feed(chunk) if tap is not None else None
    return chunk if replaced is None else replaced


async def _relay_stream(call: Call, upstream: aiohttp.ClientResponse,
                        tap: Tap | None) -> web.StreamResponse:
    waited = time.perf_counter()
    first = await _first_events(upstream)
    call.upstream_s += time.perf_counter() - waited
    response = web.StreamResponse(status=upstream.status, headers=relay_headers(upstream, call))
    await response.prepare(call.request)
    ok, chunk = True, first
    try:
        await response.write(_tapped(tap, first))
        async for chunk in upstream.content.iter_any():
            await response.write(_tapped(tap, chunk))
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        ok = False
        log.warning("upstream stream failed user_id=%s model=%s error=%s",
                    call.user_id, call.deployment.name, type(exc).__name__)
        await response.write(sse_error_event(
            call.protocol, 502, f"upstream stream failed: {type(exc).__name__}", chunk))
    if ok:
        call.relayed = response
    if tap is not None:
        await tap.finish(call, ok)
    await response.write_eof()
    return response
