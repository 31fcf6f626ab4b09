"""Who may use the daemon.

* **Gateway keys** (``[auth] keys``): ``Authorization: Bearer <key>``, ``x-api-key`` or
  ``x-memproxy-api-key`` or ``x-goog-api-key`` (Gemini clients), and on the Gemini API's
  routes the ``?key=`` query parameter; compared in constant time. With no keys there is no key check, and
  the daemon refuses to bind a non-loopback host.
* **Admin API**: loopback peers, or any peer with ``x-admin-key``; gateway port only.
* **Browsers**: a web page may send requests to 127.0.0.1 too. The only pages served are the
  daemon's own (``/ui``), so a request that carries a browser's marks (``Origin``,
  ``Sec-Fetch-Site``) passes only when it comes from a loopback page of this very listener
  (same origin: a loopback host and this socket's port) or from an editor webview
  (``vscode-webview://``, ``vscode-file://``: schemes no web page can send). Everything else
  is refused (``cross_origin``): other sites, ``Origin: null`` (sandboxed iframes, ``file:``
  pages, redirects), and other loopback ports (a local dev server is loopback but is not
  us). Clients that are not browsers send none of these headers.
* **Admin from a browser**: "a loopback peer" says only which machine the request came from,
  and every page in every browser on this machine is a loopback peer. So without
  ``x-admin-key`` a browser context may use the admin API only from the daemon's own page
  (same origin, which only ``/ui`` has); an editor webview needs the key like a remote peer.
* **DNS rebinding**: a request served without a key (no gateway keys; admin by loopback) must
  name a loopback ``Host`` (a page whose own name resolves to 127.0.0.1 is still refused).
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


# schemes only an editor's own webviews send; no web page can claim them
EDITOR_SCHEMES = ("vscode-webview", "vscode-file")
# Sec-Fetch-Site values of a page calling its own origin, or of the user typing the address
OWN_FETCH_SITES = ("same-origin", "none")


def _same_origin(request: web.Request, origin: str) -> bool:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not is_loopback(parts.hostname):
        return False
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return bool(sockname) and port == sockname[1]


def browser_context(request: web.Request) -> str | None:
    """What kind of browser page sent this: None (not a browser, or the user typing an
    address), "own" (a loopback page of this listener: /ui), "editor" (an editor webview).
    Any other page is refused here with a 403 ``cross_origin``."""
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    if origin is None:
        if site is None or site in OWN_FETCH_SITES:
            return "own" if site == "same-origin" else None
        raise ApiError(403, f"cross-site browser requests are refused (Sec-Fetch-Site {site})",
                       "cross_origin")
    if urlsplit(origin).scheme in EDITOR_SCHEMES:
        return "editor"
    if _same_origin(request, origin):
        return "own"
    raise ApiError(403, f"browser requests from other pages are refused (Origin {origin[:200]}): "
                        "only this daemon's own /ui may call it from a browser", "cross_origin")


def check_browser(request: web.Request, keyless: bool) -> str | None:
    context = browser_context(request)
    if keyless and not is_loopback(urlsplit("//" + request.host).hostname):
        raise ApiError(403, "requests without a key must address a loopback host "
                            "(DNS rebinding protection)", "host_not_allowed")
    return context


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
        context = check_browser(request, keyless=not by_key)
        if not by_key and not is_loopback(request.remote):
            raise ApiError(403, "the admin API is served to loopback peers or with x-admin-key",
                           "admin_forbidden")
        if not by_key and context == "editor":
            raise ApiError(403, "an editor webview needs x-admin-key for the admin API "
                                "(a loopback peer alone authorises only this daemon's /ui)",
                           "admin_forbidden")
