"""memproxyctl: manage projects and memories of a memproxyd daemon.

    memproxyctl add-project alpha            # prints the base URLs to paste into clients
    memproxyctl ide-config alpha --client claude-code
    memproxyctl memory search alpha "deploy steps" --limit 3

Talks to the running daemon's admin and memory APIs (stdlib urllib: starts fast, never imports
server internals). When the daemon is not running, project commands edit the registry file
directly; the daemon picks the change up at its next start.
Exit codes: 0 ok, 1 usage or refused, 2 bad config/registry, 3 daemon unreachable.
"""
from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from memproxyd import registry
from memproxyd.config import Config, ConfigError, find_config_path, load_config, resolve_secret

EXIT_OK, EXIT_REFUSED, EXIT_CONFIG, EXIT_DOWN = 0, 1, 2, 3
HTTP_TIMEOUT = 30.0  # seconds
PAGE_SIZE = 100
IMPORT_BATCH = 100
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
            raise CtlError(_http_error_message(exc, method, path)) from None
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


def _http_error_message(exc: urllib.error.HTTPError, method: str, path: str) -> str:
    try:
        error = json.loads(exc.read()).get("error") or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError, OSError):
        message = None
    return f"{method} {path}: HTTP {exc.code}: {message or exc.reason}"


# -- context: config, URL, credentials ----------------------------------------------------

class Context:
    def __init__(self, args: argparse.Namespace):
        path = find_config_path(args.config)
        self.config: Config = load_config(path)
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


def _notice(message: str) -> None:
    print(message, file=sys.stderr)


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _offline(ctx: Context, exc: DaemonDown, change: bool = True) -> None:
    """Re-raise unless nothing listens on this machine; then use the registry file directly.

    A daemon elsewhere (``--url`` to another host) has its own registry: never edit ours.
    """
    if not exc.refused or not _is_loopback(ctx.host):
        raise exc
    effect = "; the change applies at its next start" if change else ""
    _notice(f"memproxyd is not running at {ctx.url}: using {ctx.config.registry_path} "
            f"directly{effect}")


# -- project commands ---------------------------------------------------------------------

def cmd_add_project(ctx: Context, args) -> int:
    registry.validate_name(args.name)
    if args.port is not None:
        registry.validate_port(args.port)
    body = {"name": args.name, "description": args.description}
    if args.port is not None:
        body["port"] = args.port
    try:
        project = ctx.client.call("POST", "/admin/projects", body, admin=True)["project"]
    except DaemonDown as exc:
        _offline(ctx, exc)
        project = registry.add_project(
            ctx.config.registry_path, args.name, args.port, description=args.description,
            port_range=tuple(ctx.config.server.project_ports),
            reserved=(ctx.config.server.port,)).to_json()
    openai_url, anthropic_url = ctx.base_urls(project["port"])
    print(f"project {project['name']}: port {project['port']}\n"
          f"  OpenAI base URL:    {openai_url}\n  Anthropic base URL: {anthropic_url}")
    return EXIT_OK


def cmd_remove_project(ctx: Context, args) -> int:
    name = urllib.parse.quote(args.name, safe="")
    try:
        project = ctx.client.call("DELETE", f"/admin/projects/{name}", admin=True)["project"]
    except DaemonDown as exc:
        _offline(ctx, exc)
        project = registry.remove_project(ctx.config.registry_path, args.name).to_json()
    print(f"removed project {project['name']} (port {project['port']})")
    return EXIT_OK


def _projects(ctx: Context) -> list[dict]:
    try:
        return ctx.client.call("GET", "/admin/projects", admin=True)["projects"]
    except DaemonDown as exc:
        _offline(ctx, exc, change=False)
        projects = registry.read_registry(ctx.config.registry_path).values()
        return [{**p.to_json(), "state": "stopped", "error": None} for p in projects]


def cmd_list_projects(ctx: Context, args) -> int:
    projects = _projects(ctx)
    if args.json:
        print(json.dumps({"projects": projects}, indent=2))
        return EXIT_OK
    if not projects:
        print("no projects (add one with: memproxyctl add-project NAME)")
    for p in projects:
        error = f"  error: {p['error']}" if p.get("error") else ""
        print(f"{p['name']:<24} {p['port']:>5}  {p.get('state', ''):<8} "
              f"{p.get('description', '')}{error}".rstrip())
    return EXIT_OK


def cmd_status(ctx: Context, args) -> int:
    status = ctx.client.call("GET", "/admin/status", admin=True)
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    gateway = status.get("gateway", {})
    sessions = status.get("sessions", {})
    print(f"memproxyd {status.get('version', '?')} up {status.get('uptime_s', 0):.0f}s, "
          f"gateway {gateway.get('host')}:{gateway.get('port')}")
    for listener in status.get("listeners", []):
        error = f" ({listener['error']})" if listener.get("error") else ""
        print(f"  listener {listener['name']} :{listener['port']} {listener['state']}{error}")
    print(f"  sessions: {sessions.get('count', 0)}")
    print(f"  memory: {json.dumps(status.get('memory', {}), sort_keys=True)}")
    return EXIT_OK


def cmd_reload(ctx: Context, args) -> int:
    ctx.client.call("POST", "/admin/reload", {}, admin=True)
    print("reloaded")
    return EXIT_OK


# Lines mentioning {key} are dropped when no gateway key is configured.
_IDE_TEMPLATES = {
    "claude-code": "ANTHROPIC_BASE_URL={anthropic}\nANTHROPIC_AUTH_TOKEN={key}",
    "pycharm": ("PyCharm AI Assistant > Settings > Tools > AI Assistant > Models > "
                "Third-party AI providers\n  Provider: OpenAI-compatible\n  URL: {openai}\n"
                "  API key: {key}"),
    "continue": ("# ~/.continue/config.yaml\nmodels:\n  - name: {model} ({project} via memproxyd)\n"
                 "    provider: openai\n    model: {model}\n    apiBase: {openai}\n"
                 "    apiKey: {key}"),
    "cursor": ("Cursor > Settings > Models > API Keys > OpenAI API Key\n"
               "  Override OpenAI Base URL: {openai}\n  OpenAI API Key: {key}"),
    "env": "OPENAI_BASE_URL={openai}\nANTHROPIC_BASE_URL={anthropic}",
}
KEY_PLACEHOLDER = "<your memproxyd API key>"


def cmd_ide_config(ctx: Context, args) -> int:
    project = next((p for p in _projects(ctx) if p["name"] == args.name), None)
    if project is None:
        raise CtlError(f"no project named {args.name!r} (see: memproxyctl list-projects)")
    openai_url, anthropic_url = ctx.base_urls(project["port"])
    models = ctx.config.model_list
    lines = _IDE_TEMPLATES[args.client].splitlines()
    if not ctx.has_gateway_key():
        lines = [line for line in lines if "{key}" not in line]
    print("\n".join(lines).format(
        openai=openai_url, anthropic=anthropic_url, key=KEY_PLACEHOLDER, project=args.name,
        model=models[0].model_name if models else "<model_name from model_list>"))
    return EXIT_OK


# -- memory commands ----------------------------------------------------------------------

def _pages(ctx: Context, user: str):
    cursor = None
    while True:
        query = {"user_id": user, "limit": PAGE_SIZE, **({"cursor": cursor} if cursor else {})}
        page = ctx.client.call("GET", "/v1/memories", query=query)
        yield from page.get("data", [])
        cursor = page.get("next_cursor")
        if not cursor:
            return


def _one_line(text: str, width: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_memory_add(ctx: Context, args) -> int:
    data = ctx.client.call("POST", "/v1/memories", {"user_id": args.user, "content": args.text})
    for memory in data.get("data", []):
        print(f"added {memory['id']}")
    return EXIT_OK


def cmd_memory_search(ctx: Context, args) -> int:
    body = {"user_id": args.user, "query": args.query}
    if args.limit is not None:
        body["limit"] = args.limit
    results = ctx.client.call("POST", "/v1/memories/search", body).get("results", [])
    if args.json:
        print(json.dumps(results, indent=2))
    for r in [] if args.json else results:
        print(f"{r.get('score', 0):7.3f}  {r['id']}  {_one_line(r['content'])}")
    return EXIT_OK


def cmd_memory_list(ctx: Context, args) -> int:
    memories = list(_pages(ctx, args.user))
    if args.json:
        print(json.dumps(memories, indent=2))
    for m in [] if args.json else memories:
        print(f"{m['id']}  {m.get('created_at', '')}  {_one_line(m['content'])}")
    return EXIT_OK


def cmd_memory_forget(ctx: Context, args) -> int:
    if args.all == bool(args.ids):
        raise CtlError("memory forget: give memory IDs or --all (not both)")
    if args.all:
        query = {"user_id": args.user, "all": "true"}
        data = ctx.client.call("DELETE", "/v1/memories", query=query)
        print(f"forgot {data.get('deleted', 0)} memories of {args.user}")
        return EXIT_OK
    failed = 0
    for memory_id in args.ids:
        path = "/v1/memories/" + urllib.parse.quote(memory_id, safe="")
        try:
            ctx.client.call("DELETE", path, query={"user_id": args.user})
            print(f"forgot {memory_id}")
        except DaemonDown:
            raise
        except CtlError as exc:
            failed += 1
            _notice(f"memproxyctl: {exc}")
    return EXIT_REFUSED if failed else EXIT_OK


def cmd_memory_export(ctx: Context, args) -> int:
    for memory in _pages(ctx, args.user):
        sys.stdout.write(json.dumps(memory, ensure_ascii=False) + "\n")
    return EXIT_OK


def _read_jsonl(path: str) -> list[dict]:
    try:
        lines = (sys.stdin.read() if path == "-" else Path(path).read_text("utf-8")).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CtlError(f"{path}: cannot read: {exc}") from None
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise CtlError(f"{path}:{number}: not valid JSON ({exc}); nothing imported") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("content"), str) \
                or not obj["content"].strip() or not isinstance(obj.get("metadata") or {}, dict):
            raise CtlError(f"{path}:{number}: expected an object with a non-empty 'content' "
                           "string and an optional 'metadata' object; nothing imported")
        items.append({"content": obj["content"], "metadata": obj.get("metadata") or {}})
    return items


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        filled = int(30 * done / max(total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
        sys.stderr.write("\n" if done >= total else "")
        sys.stderr.flush()


def cmd_memory_import(ctx: Context, args) -> int:
    items = _read_jsonl(args.file)
    for start in range(0, len(items), IMPORT_BATCH):
        batch = items[start:start + IMPORT_BATCH]
        ctx.client.call("POST", "/v1/memories", {"user_id": args.user, "memories": batch})
        _progress(start + len(batch), len(items))
    print(f"imported {len(items)} memories for {args.user}")
    return EXIT_OK


# -- parser -------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 1, not argparse's 2 (2 = bad config)
        self.print_usage(sys.stderr)
        self.exit(EXIT_REFUSED, f"{self.prog}: error: {message}\n")


def _port(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected an integer") from None


def _add_project_parsers(sub) -> None:
    p = sub.add_parser("add-project", help="map a project to its own listener port")
    p.add_argument("name")
    p.add_argument("--port", type=_port, help="default: first free port of [server] project_ports")
    p.add_argument("--description", default="")
    p.set_defaults(func=cmd_add_project)
    p = sub.add_parser("remove-project", help="remove a project and stop its listener")
    p.add_argument("name")
    p.set_defaults(func=cmd_remove_project)
    p = sub.add_parser("list-projects", help="projects, ports and listener states")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list_projects)
    p = sub.add_parser("status", help="daemon status (needs the daemon)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    sub.add_parser("reload", help="reload config and registry (like SIGHUP)").set_defaults(
        func=cmd_reload)
    p = sub.add_parser("ide-config", help="print the settings to paste into a client")
    p.add_argument("name")
    p.add_argument("--client", required=True, choices=sorted(_IDE_TEMPLATES))
    p.set_defaults(func=cmd_ide_config)


def _add_memory_parsers(sub) -> None:
    memory = sub.add_parser("memory", help="manage a user's memories (needs the daemon)")
    msub = memory.add_subparsers(dest="memory_command", metavar="SUBCOMMAND", required=True)
    specs = {  # name: (function, help, [(args, kwargs), ...])
        "add": (cmd_memory_add, "store one memory", [(("text",), {})]),
        "search": (cmd_memory_search, "search memories, best first", [
            (("query",), {}), (("--limit",), {"type": int}),
            (("--json",), {"action": "store_true"})]),
        "list": (cmd_memory_list, "list all memories", [(("--json",), {"action": "store_true"})]),
        "forget": (cmd_memory_forget, "delete memories by id, or all of them", [
            (("ids",), {"nargs": "*", "metavar": "ID"}), (("--all",), {"action": "store_true"})]),
        "export": (cmd_memory_export, "all memories as JSONL on stdout", []),
        "import": (cmd_memory_import, "add memories from a JSONL file ('-' = stdin)",
                   [(("file",), {})]),
    }
    for name, (func, help_text, arguments) in specs.items():
        p = msub.add_parser(name, help=help_text)
        p.add_argument("user", help="the memory owner (user id or project name)")
        for flags, kwargs in arguments:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="memproxyctl", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="config file (default: $MEMPROXYD_CONFIG, "
                        "/etc/memproxyd/memproxyd.toml, the packaged default)")
    parser.add_argument("--url", help="daemon URL (default: from [server] host and port)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_project_parsers(sub)
    _add_memory_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(Context(args), args)
    except SystemExit as exc:  # --help, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except registry.RegistryCorruptError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except registry.RegistryError as exc:
        return _fail(str(exc), EXIT_REFUSED)
    except CtlError as exc:
        return _fail(str(exc), exc.code)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_REFUSED)


def _fail(message: str, code: int) -> int:
    print(f"memproxyctl: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
