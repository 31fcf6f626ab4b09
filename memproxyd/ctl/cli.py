"""memproxyctl: manage projects and memories of a memproxyd daemon.

    memproxyctl add-project alpha            # prints the base URLs to paste into clients
    memproxyctl ide-config alpha --client claude-code   # or codex, gemini, ...
    memproxyctl memory search alpha "deploy steps" --limit 3
    memproxyctl mcp alpha                    # alpha's memory as MCP tools, on stdio
    memproxyctl doctor alpha --client codex  # does it all work? each step ok/FAIL + fix

Talks to the running daemon's admin and memory APIs (stdlib urllib: starts fast, never imports
server internals). When the daemon is not running, project commands edit the registry file
directly; the daemon picks the change up at its next start.
Exit codes: 0 ok, 1 usage or refused, 2 bad config/registry, 3 daemon unreachable.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse

from memproxyd import __version__, registry
from memproxyd.addresses import is_loopback
from memproxyd.config import DEFAULT_SYSTEM_CONFIG, PACKAGED_CONFIG, ConfigError, user_config_path
from memproxyd.ctl.client import (EXIT_CONFIG, EXIT_OK, EXIT_REFUSED, Context, CtlError,
                                  DaemonDown, confirm, notice)
from memproxyd.ctl import ideconfig
from memproxyd.ctl.doctor import add_doctor_parser
from memproxyd.ctl.memory import add_memory_parsers
from memproxyd.ctl.usage import add_usage_parser


def _offline(ctx: Context, exc: DaemonDown, change: bool = True) -> None:
    """Re-raise unless nothing listens on this machine; then use the registry file directly.

    A daemon elsewhere (``--url`` to another host) has its own registry: never edit ours.
    """
    if not exc.refused or not is_loopback(ctx.host):
        raise exc
    effect = "; the change applies at its next start" if change else ""
    notice(f"memproxyd is not running at {ctx.url}: using {ctx.config.registry_path} "
            f"directly{effect}")


# -- project commands ---------------------------------------------------------------------

def cmd_add_project(ctx: Context, args) -> int:
    registry.validate_name(args.name)
    if args.port is not None:
        registry.validate_port(args.port)
    body = {"name": args.name, "description": args.description}
    models = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    if models:
        body["models"] = models   # [access]: the only models this project may use
    if args.port is not None:
        body["port"] = args.port
    try:
        project = ctx.client.call("POST", "/admin/projects", body, admin=True)["project"]
    except DaemonDown as exc:
        _offline(ctx, exc)
        project = registry.add_project(
            ctx.config.registry_path, args.name, args.port, description=args.description,
            port_range=tuple(ctx.config.server.project_ports),
            reserved=(ctx.config.server.port,), host=ctx.config.server.host,
            models=models).to_json()
    openai_url, anthropic_url = ctx.base_urls(project["port"])
    if project.get("models"):
        print(f"project {project['name']} may use: {', '.join(project['models'])}")
    print(f"project {project['name']}: port {project['port']}\n"
          f"  OpenAI base URL:    {openai_url}\n  Anthropic base URL: {anthropic_url}")
    return EXIT_OK


def cmd_remove_project(ctx: Context, args) -> int:
    if not args.yes and not confirm(
            f"remove project {args.name!r} and stop its listener? Its memories stay (under "
            f"user id {args.name!r}; `memproxyctl memory forget {args.name} --all` deletes "
            "them)"):
        return EXIT_REFUSED
    name = urllib.parse.quote(args.name, safe="")
    try:
        project = ctx.client.call("DELETE", f"/admin/projects/{name}", admin=True)["project"]
    except DaemonDown as exc:
        _offline(ctx, exc)
        project = registry.remove_project(ctx.config.registry_path, args.name).to_json()
    print(f"removed project {project['name']} (port {project['port']}); its memories stay "
          f"under user id {project['name']!r}")
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


def _listener_error(listener: dict) -> str:
    """`` (reason; failed N times, next try in S s)`` for a failed listener, else ``""``."""
    if not listener.get("error"):
        return ""
    retry = listener.get("retry_in")
    tries = f"; failed {listener.get('failures', 1)} times, next try in {retry:.0f} s" \
        if retry is not None else ""
    return f" ({listener['error']}{tries})"


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
        print(f"  listener {listener['name']} :{listener['port']} {listener['state']}"
              f"{_listener_error(listener)}")
    print(f"  sessions: {sessions.get('count', 0)}")
    print(f"  memory: {json.dumps(status.get('memory', {}), sort_keys=True)}")
    return EXIT_OK


def cmd_reload(ctx: Context, args) -> int:
    ctx.client.call("POST", "/admin/reload", {}, admin=True)
    print("reloaded")
    return EXIT_OK


def cmd_ide_config(ctx: Context, args) -> int:
    project = next((p for p in _projects(ctx) if p["name"] == args.name), None)
    if project is None:
        raise CtlError(f"no project named {args.name!r} (see: memproxyctl list-projects)")
    print(ideconfig.render(ctx, project, args.client))
    return EXIT_OK


def cmd_config(ctx: Context, args) -> int:
    """``config path``: the file in use (stdout) and why (stderr). ``config show``: that,
    the lookup order, what memproxyctl derives from it, then the file itself."""
    if args.what == "path":
        print(ctx.config_path)
        notice(f"# {ctx.config_why}")
        return EXIT_OK
    print(f"# config: {ctx.config_path} ({ctx.config_why})")
    print("# lookup order: --config, $MEMPROXYD_CONFIG, " + ", ".join(
        f"{path} ({'exists' if path.exists() else 'missing'})"
        for path in (user_config_path(), DEFAULT_SYSTEM_CONFIG)) + ", the packaged default")
    print(f"# daemon URL: {ctx.url}{'' if ctx.url_explicit else ' (from [server] host, port)'}"
          f"; state_dir: {ctx.config.state_dir}; registry: {ctx.config.registry_path}")
    print("# memproxyd --host/--port/--state-dir override the file; memproxyctl does not see "
          "them (use --url)")
    if ctx.config_path.resolve() == PACKAGED_CONFIG.resolve():
        print(f"# to change it: copy it to {user_config_path()} and edit that")
    for line in ctx.config_path.read_text().splitlines():
        print(_hide_secret(line))
    return EXIT_OK


_SECRET_LINE = re.compile(r"^(\s*(?:api_key|admin_key|keys|dsn|aws_secret_access_key|"
                          r"aws_session_token)\s*=\s*)(.+)$")


def _hide_secret(line: str) -> str:
    """A secret written into the file itself is shown as ``"<hidden>"``; an
    ``os.environ/NAME`` reference (or an empty value) is shown as it is."""
    match = _SECRET_LINE.match(line)
    if not match or "os.environ/" in match.group(2) or match.group(2).split("#")[0].strip() \
            in ('""', "[]"):
        return line
    return f'{match.group(1)}"<hidden>"   # written in the file; config show never prints it'


def cmd_mcp(ctx: Context, args) -> int:
    from memproxyd.ctl import mcp as ctl_mcp  # the MCP SDK is heavy: imported only by this command
    return ctl_mcp.cmd_mcp(ctx, args)


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
    p.add_argument("name", help="project name: letters, digits, . _ - (its memories' user id)")
    p.add_argument("--port", type=_port, help="default: first free port of [server] project_ports")
    p.add_argument("--description", default="")
    p.add_argument("--models", help="comma-separated model names (wildcards allowed) the "
                                    "project may use; default: the [access] rules")
    p.set_defaults(func=cmd_add_project)
    p = sub.add_parser("remove-project", help="remove a project and stop its listener (its "
                                             "memories stay)")
    p.add_argument("name", help="the project to remove")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
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
    p.add_argument("name", help="the project whose port the client should use")
    p.add_argument("--client", required=True, choices=sorted(ideconfig.TARGETS))
    p.set_defaults(func=cmd_ide_config)
    p = sub.add_parser("mcp", help="serve a project's memory as MCP tools on stdio")
    p.add_argument("project", nargs="?",
                   help="registered project whose memory to serve; default: "
                        "[identity] default_user_id")
    p.add_argument("--user-id", action="store_true",
                   help="PROJECT is a user id that is no registered project (on purpose)")
    p.set_defaults(func=cmd_mcp)
    p = sub.add_parser("config", help="which config file is in use, and why")
    p.add_argument("what", choices=("path", "show"),
                   help="path: the file (stdout) and why (stderr); show: also the lookup "
                        "order, the daemon URL and state dir, and the file")
    p.set_defaults(func=cmd_config)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="memproxyctl", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="config file (default: $MEMPROXYD_CONFIG, "
                        "$XDG_CONFIG_HOME/memproxyd/memproxyd.toml (~/.config/...), "
                        "/etc/memproxyd/memproxyd.toml, the packaged default)")
    parser.add_argument("--url", help="daemon URL (default: from [server] host and port)")
    parser.add_argument("--version", action="version", version=f"memproxyctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_project_parsers(sub)
    add_memory_parsers(sub)
    add_usage_parser(sub)
    add_doctor_parser(sub)
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
