"""Auth, identity and error rendering, in one middleware every route passes through.

* Auth (``auth.Guard``): gateway keys, the admin rule, and the browser checks.
  ``/health*`` and ``/openapi.json`` need no auth; ``/admin/*`` exists on the gateway port only.
* Identity: resolved once per request (``identity.py``) and echoed as ``x-memproxy-user-id``.
* Errors: ``ApiError`` and aiohttp's HTTP exceptions become the protocol's own error shape,
  with ``x-memproxy-overhead-ms`` like every other answer. An error raised after a stream's
  headers went out ends that stream with the protocol's error event and closes the
  connection: a second response written into the stream would be garbage to the client.
"""
from __future__ import annotations

import contextlib
import logging
import time

from aiohttp import web

from memproxyd import appkeys
from memproxyd.appkeys import PREPARED, PROJECT, STARTED, USER_ID
from memproxyd.errors import ApiError, error_response, protocol_of, sse_error_event

log = logging.getLogger(__name__)

PUBLIC_PREFIXES = ("/health", "/openapi.json")
ADMIN_PREFIXES = ("/admin", "/ui")   # /ui: the web page (ui.py) has the admin API's rules


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """``app.on_response_prepare``: which response of a request has started."""
    request[PREPARED] = response


def local_port(request: web.Request) -> int | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return sockname[1] if sockname else None


@web.middleware
async def gateway_middleware(request: web.Request, handler):
    request[STARTED] = time.perf_counter()
    state = request.app[appkeys.STATE]
    port = local_port(request)
    project = state.project_for_port(port)
    request[PROJECT] = project
    user_id = project or state.identity.default
    try:
        path = request.path
        if project is None and state.gateway_ports and port not in state.gateway_ports:
            # a keep-alive connection on a project listener that has since been removed
            raise ApiError(404, "this project listener has been removed", "project_removed")
        if path.startswith(ADMIN_PREFIXES):
            state.guard.check_admin(request, port in state.gateway_ports)
        elif not path.startswith(PUBLIC_PREFIXES):
            state.guard.check_gateway(request)
            user_id = state.identity.resolve(request.headers, project)
        request[USER_ID] = user_id
        response = await handler(request)
    except ApiError as exc:
        failure = exc
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        failure = ApiError(exc.status, _reason(exc))
    except ConnectionResetError:
        raise   # the client went away mid-response; nothing left to tell it
    except Exception:
        log.exception("request failed path=%s user_id=%s", request.path, user_id)
        failure = ApiError(500, "internal error in memproxyd")
    else:
        failure = None
    if failure is not None:
        if failure.status < 500:
            # the field's path and the code, never the message: it may quote the body
            log.info("request refused status=%d path=%s user_id=%s code=%s field=%s",
                     failure.status, request.path, user_id, failure.code,
                     getattr(failure, "path", "-"))
        started = request.get(PREPARED)
        if started is not None:
            return await _end_started(request, started, failure)
        response = error_response(protocol_of(request.path), failure.status, failure.message,
                                  failure.code)
    if not response.prepared:
        response.headers.setdefault("x-memproxy-user-id", user_id)
        response.headers.setdefault(
            "x-memproxy-overhead-ms", f"{(time.perf_counter() - request[STARTED]) * 1000:.3f}")
    if getattr(failure, "close", False):
        # e.g. a stalled body: answer, then close at once (aiohttp would otherwise linger,
        # reading what is left of the body for another 10 s)
        response.force_close()
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            await response.write_eof()
        request.protocol.force_close()
    return response


async def _end_started(request: web.Request, started: web.StreamResponse,
                       failure: ApiError) -> web.StreamResponse:
    """``failure`` arrived after ``started`` went out: the protocol's error event ends it,
    then the connection closes (a stream in an unknown state is never reused)."""
    started.force_close()
    try:
        await started.write(sse_error_event(protocol_of(request.path), failure.status,
                                            failure.message))
        await started.write_eof()
    except (ConnectionError, RuntimeError):
        pass   # the client is gone, or the stream had already ended
    return started


def _reason(exc: web.HTTPException) -> str:
    if exc.status == 413:
        return "request body too large"
    if exc.status == 404:
        return "not found"
    return exc.text or exc.reason
