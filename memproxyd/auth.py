"""Who may use the daemon.

* **Gateway keys** (``[auth] keys``): ``Authorization: Bearer <key>``, ``x-api-key`` or
  ``x-memproxy-api-key`` or ``x-goog-api-key`` (Gemini clients), and on the Gemini API's
  routes the ``?key=`` query parameter; compared in constant time. With no keys there is no key check, and
  the daemon refuses to bind a non-loopback host.
* **Admin API**: loopback peers, or any peer with ``x-admin-key``; gateway port only.
* **Browsers**: a web page may send requests to 127.0.0.1 too. A request whose ``Origin`` is
  an http(s) page on another host is refused (cross-site requests), and a request served
  without a key (no gateway keys; admin by loopback) must name a loopback ``Host`` (DNS
  rebinding: a page whose own name resolves to 127.0.0.1). Clients that are not browsers send
  neither an ``Origin`` nor a foreign ``Host``; editor webviews (``vscode-webview://``) have
  non-http origins and pass.
"""
from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from aiohttp import web

from memproxyd.addresses import is_loopback
from memproxyd.config import resolve_secret
from memproxyd.errors import GEMINI, ApiError, protocol_of

GATEWAY_KEY_HEADER = "x-memproxy-api-key"
GOOGLE_KEY_HEADER = "x-goog-api-key"
ADMIN_KEY_HEADER = "x-admin-key"


def presented_keys(request: web.Request) -> list[str]:
    """Every place a client may put the gateway key. ``x-memproxy-api-key`` exists for
    deployments with ``forward_client_credentials``: the client's own Authorization or
    x-api-key then goes upstream while this header authenticates it to memproxyd."""
    found = []
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        found.append(auth[7:].strip())
    # x-goog-api-key: Gemini CLI and the google-genai SDK send their key there
    for name in (GATEWAY_KEY_HEADER, "x-api-key", GOOGLE_KEY_HEADER):
        if name in request.headers:
            found.append(request.headers[name].strip())
    if "key" in request.query and protocol_of(request.path) == GEMINI:
        found.append(request.query["key"].strip())
    return found


def key_matches(presented: str | None, keys: tuple[bytes, ...]) -> bool:
    if presented is None:
        return False
    # surrogateescape: bytes that are not UTF-8 in a header (aiohttp keeps them as lone
    # surrogates) are a wrong key, not an error
    candidate = presented.encode("utf-8", "surrogateescape")
    # compare against every key so timing does not reveal which one (or whether any) matched
    return sum(hmac.compare_digest(candidate, k) for k in keys) > 0


def check_browser(request: web.Request, keyless: bool) -> None:
    origin = request.headers.get("origin")
    if origin:
        parts = urlsplit(origin)
        if parts.scheme in ("http", "https") and not is_loopback(parts.hostname):
            raise ApiError(403, f"cross-origin browser requests are refused (Origin {origin})",
                           "cross_origin")
    if keyless and not is_loopback(urlsplit("//" + request.host).hostname):
        raise ApiError(403, "requests without a key must address a loopback host "
                            "(DNS rebinding protection)", "host_not_allowed")


class Guard:
    """The resolved gateway and admin keys (``os.environ/`` read at start and reload)."""

    def __init__(self, keys: tuple[str, ...], admin_key: str):
        self.keys = tuple(k.encode() for k in (resolve_secret(k) for k in keys) if k)
        admin = resolve_secret(admin_key) if admin_key else None
        self.admin_keys = (admin.encode(),) if admin else ()

    def check_gateway(self, request: web.Request) -> None:
        check_browser(request, keyless=not self.keys)
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
        by_key = key_matches(request.headers.get(ADMIN_KEY_HEADER), self.admin_keys)
        check_browser(request, keyless=not by_key)
        if not by_key and not is_loopback(request.remote):
            raise ApiError(403, "the admin API is served to loopback peers or with x-admin-key",
                           "admin_forbidden")
