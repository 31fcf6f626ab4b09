"""Auth, identity and error rendering, in one middleware every route passes through.

* Auth: ``Authorization: Bearer <key>`` or ``x-api-key: <key>`` against ``[auth] keys``,
  compared in constant time. No keys configured: no auth (the daemon then refuses to bind a
  non-loopback host). ``/health*`` needs no auth; ``/admin/*`` has its own rule (loopback peer
  or ``x-admin-key``) and exists on the gateway port only.
* Identity: resolved once per request (``identity.py``) and echoed as ``x-memproxy-user-id``.
* Errors: ``ApiError`` and aiohttp's HTTP exceptions become the protocol's own error shape.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import time

from aiohttp import web

from memproxyd import appkeys
from memproxyd.config import resolve_secret
from memproxyd.errors import ApiError, error_response, protocol_of

log = logging.getLogger(__name__)

USER_ID = web.RequestKey("user_id", str)
STARTED = web.RequestKey("started", float)   # perf_counter when the request reached us
PROJECT = web.RequestKey("project", object)   # str | None
PUBLIC_PREFIXES = ("/health",)


def local_port(request: web.Request) -> int | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return sockname[1] if sockname else None


def is_loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


GATEWAY_KEY_HEADER = "x-memproxy-api-key"


def presented_keys(request: web.Request) -> list[str]:
    """Every place a client may put the gateway key. ``x-memproxy-api-key`` exists for
    deployments with ``forward_client_credentials``: the client's own Authorization or
    x-api-key then goes upstream while this header authenticates it to memproxyd."""
    found = []
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        found.append(auth[7:].strip())
    for name in (GATEWAY_KEY_HEADER, "x-api-key"):
        if name in request.headers:
            found.append(request.headers[name].strip())
    return found


def key_matches(presented: str | None, keys: tuple[bytes, ...]) -> bool:
    if presented is None:
        return False
    candidate = presented.encode()
    # compare against every key so timing does not reveal which one (or whether any) matched
    return sum(hmac.compare_digest(candidate, k) for k in keys) > 0


class Guard:
    """The resolved gateway and admin keys (``os.environ/`` read once, at start or reload)."""

    def __init__(self, keys: tuple[str, ...], admin_key: str):
        self.keys = tuple(k.encode() for k in (resolve_secret(k) for k in keys) if k)
        admin = resolve_secret(admin_key) if admin_key else None
        self.admin_keys = (admin.encode(),) if admin else ()

    def check_gateway(self, request: web.Request) -> None:
        if self.keys and not any(key_matches(k, self.keys) for k in presented_keys(request)):
            raise ApiError(401, "invalid or missing API key: send Authorization: Bearer <key>",
                           "invalid_api_key")

    def is_gateway_credential(self, header_value: str) -> bool:
        """True when a credential header carries a gateway key (never sent upstream)."""
        value = header_value[7:].strip() if header_value[:7].lower() == "bearer " else header_value
        return key_matches(value.strip(), self.keys)

    def check_admin(self, request: web.Request, on_gateway_port: bool) -> None:
        if not on_gateway_port:
            raise web.HTTPNotFound()
        if is_loopback(request):
            return
        if not key_matches(request.headers.get("x-admin-key"), self.admin_keys):
            raise ApiError(403, "the admin API is served to loopback peers or with x-admin-key",
                           "admin_forbidden")


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
        if path.startswith("/admin"):
            state.guard.check_admin(request, port in state.gateway_ports)
        elif not path.startswith(PUBLIC_PREFIXES):
            state.guard.check_gateway(request)
            user_id = state.identity.resolve(request.headers, project)
        request[USER_ID] = user_id
        response = await handler(request)
    except ApiError as exc:
        response = error_response(protocol_of(request.path), exc.status, exc.message, exc.code)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(protocol_of(request.path), exc.status, _reason(exc))
    except ConnectionResetError:
        raise   # the client went away mid-response; nothing left to tell it
    except Exception:
        log.exception("request failed path=%s user_id=%s", request.path, user_id)
        response = error_response(protocol_of(request.path), 500, "internal error in memproxyd")
    if not response.prepared:
        response.headers.setdefault("x-memproxy-user-id", user_id)
    return response


def _reason(exc: web.HTTPException) -> str:
    if exc.status == 413:
        return "request body too large"
    if exc.status == 404:
        return "not found"
    return exc.text or exc.reason
