"""memproxyctl's connection to the daemon: config lookup, URL, credentials, JSON over HTTP.

stdlib urllib only, so memproxyctl starts fast and never imports server internals.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from memproxyd.config import Config, config_source, load_config, resolve_secret

EXIT_OK, EXIT_REFUSED, EXIT_CONFIG, EXIT_DOWN = 0, 1, 2, 3
HTTP_TIMEOUT = 30.0  # seconds
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


class CtlError(Exception):
    def __init__(self, message: str, code: int = EXIT_REFUSED):
        super().__init__(message)
        self.code = code


class DaemonDown(CtlError):
    def __init__(self, message: str, refused: bool):
        super().__init__(message, EXIT_DOWN)
        self.refused = refused  # nothing listens: safe to fall back to the registry file


class Client:
    """JSON over HTTP to the daemon. Proxies from the environment are ignored: it is local."""

    def __init__(self, url: str, key: str | None, admin_key: str | None):
        self.url, self.key, self.admin_key = url.rstrip("/"), key, admin_key
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body=None, query: dict | None = None, admin=False):
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"accept": "application/json"}
        if self.key:
            headers["authorization"] = f"Bearer {self.key}"
        if admin and self.admin_key:
            headers["x-admin-key"] = self.admin_key
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["content-type"] = "application/json"
        try:
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            with self._opener.open(request, timeout=HTTP_TIMEOUT) as response:
                return _decode(response.read(), url)
        except urllib.error.HTTPError as exc:
            message, code = _http_error(exc, method, path)
            raise CtlError(message, EXIT_CONFIG if code in CONFIG_ERROR_CODES else EXIT_REFUSED
                           ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (ConnectionRefusedError, FileNotFoundError)):
                raise DaemonDown(f"memproxyd is not running at {self.url} (connection refused)",
                                 refused=True) from None
            raise DaemonDown(f"memproxyd not reachable at {self.url}: {reason}", False) from None
        except (ValueError, http.client.HTTPException) as exc:
            raise CtlError(f"cannot talk to {self.url}: {exc}") from None


def _decode(raw: bytes, url: str):
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        raise CtlError(f"{url} answered with something that is not JSON") from None


# daemon error codes that mean a bad config or registry: exit 2, as when the daemon is down
CONFIG_ERROR_CODES = frozenset({"registry_corrupt", "config_invalid"})


def _http_error(exc: urllib.error.HTTPError, method: str, path: str) -> tuple[str, str | None]:
    """The daemon's one-line error message and its machine code."""
    try:
        error = json.loads(exc.read()).get("error") or {}
    except (ValueError, AttributeError, OSError):
        error = {}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    return f"{method} {path}: HTTP {exc.code}: {error.get('message') or exc.reason}", \
        error.get("code")


# -- context: config, URL, credentials ----------------------------------------------------

class Context:
    def __init__(self, args: argparse.Namespace):
        self.config_path, self.config_why = config_source(args.config)
        self.config: Config = load_config(self.config_path)
        # named by the user rather than found: others starting memproxyctl must name them too
        self.config_explicit = bool(args.config or os.environ.get("MEMPROXYD_CONFIG"))
        self.url_explicit = bool(args.url)
        self.url = args.url or _daemon_url(self.config.server.host, self.config.server.port)
        self.host = urllib.parse.urlsplit(self.url).hostname or "127.0.0.1"
        self.key = os.environ.get("MEMPROXY_API_KEY") or _first_key(self.config)
        admin = self.config.server.admin_key
        self.client = Client(self.url, self.key, resolve_secret(admin) if admin else None)

    def base_urls(self, port: int) -> tuple[str, str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}/v1", f"http://{host}:{port}"

    def has_gateway_key(self) -> bool:
        return bool(self.config.auth.keys or os.environ.get("MEMPROXY_API_KEY"))


def _daemon_url(host: str, port: int) -> str:
    host = "127.0.0.1" if host in _WILDCARD_HOSTS else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _first_key(config: Config) -> str | None:
    return resolve_secret(config.auth.keys[0]) if config.auth.keys else None


def notice(message: str) -> None:
    print(message, file=sys.stderr)


def confirm(question: str) -> bool:
    """``question`` answered y on a terminal; without one (a script), no: the caller's
    ``--yes`` is the way to say it there."""
    if not sys.stdin.isatty():
        notice(f"{question}\nnot confirmed: no terminal to ask on; pass --yes")
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False
