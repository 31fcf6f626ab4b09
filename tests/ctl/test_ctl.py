"""memproxyctl: exit codes and output against a stopped daemon (registry file edited directly)
and against a fake daemon (a real aiohttp app on loopback implementing the admin and memory API
contract)."""
from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from memproxyd.ctl import cli, ideconfig
from memproxyd.registry import read_registry
from tests.fakes.threaded import ThreadedServer

REPO = Path(__file__).resolve().parents[2]
GATEWAY_KEY = "sk-ctl-gateway-secret"
ADMIN_KEY = "admin-ctl-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_range(size: int = 5) -> tuple[int, int]:
    base = free_port()
    return (base, base + size) if base + size <= 65535 else free_range(size)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("MEMPROXY_API_KEY", "MEMPROXYD_CONFIG", "CTL_TEST_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_config(tmp_path):
    def make(server: str = "", extra: str = "", port: int | None = None) -> Path:
        path = tmp_path / "memproxyd.toml"
        path.write_text(f'[server]\nport = {port or free_port()}\n'
                        f'state_dir = "{tmp_path / "state"}"\n{server}\n{extra}\n')
        return path
    return make


@pytest.fixture
def config(make_config) -> Path:
    return make_config()


@pytest.fixture
def registry_path(tmp_path) -> Path:
    return tmp_path / "state" / "projects.json"


@pytest.fixture
def run(config, capsys):
    """memproxyctl against a stopped daemon: --url points at a closed port."""
    def run_ctl(*argv: str, url: str | None = f"http://127.0.0.1:{free_port()}",
                config_path: Path | None = None):
        prefix = ["--config", str(config_path or config)] + (["--url", url] if url else [])
        code = cli.main(prefix + list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run_ctl


def snapshot(path: Path):
    return path.read_bytes() if path.exists() else None


# -- stopped daemon: the registry file -------------------------------------------------------

def test_add_project_offline_writes_registry_and_prints_base_urls(run, registry_path):
    port = free_port()
    code, out, err = run("add-project", "alpha", "--port", str(port), "--description", "repo")
    assert code == 0
    assert f"project alpha: port {port}" in out
    assert f"OpenAI base URL:    http://127.0.0.1:{port}/v1" in out
    assert f"Anthropic base URL: http://127.0.0.1:{port}\n" in out
    assert "not running" in err and "next start" in err
    assert read_registry(registry_path)["alpha"].description == "repo"


def test_add_project_without_port_picks_from_configured_range(make_config, run, registry_path):
    lo, hi = free_range()
    config = make_config(server=f"project_ports = [{lo}, {hi}]")
    code, out, _ = run("add-project", "alpha", config_path=config)
    assert code == 0
    assert lo <= read_registry(registry_path)["alpha"].port <= hi


@pytest.mark.parametrize("argv, message", [
    (["add-project", "has space"], "invalid project name"),
    (["add-project", "../etc"], "invalid project name"),
    (["add-project", "x" * 65], "longer than 64"),
    (["add-project", "beta", "--port", "80"], "privileged"),
    (["add-project", "beta", "--port", "70000"], "out of range"),
    (["add-project", "beta", "--port", "many"], "invalid port"),
    (["add-project", "alpha"], "already exists"),
    (["remove-project", "nope", "--yes"], "no project named 'nope'"),
    (["ide-config", "nope", "--client", "env"], "no project named 'nope'"),
    (["ide-config", "alpha", "--client", "vim"], "invalid choice"),
    ([], "required"),
    (["memory", "forget", "u"], "IDs or --all"),
    (["mcp", "has space"], "invalid project or user id 'has space'"),
])
def test_refusals_exit_1_with_one_line_and_change_nothing(run, registry_path, argv, message):
    assert run("add-project", "alpha", "--port", str(free_port()))[0] == 0
    before = snapshot(registry_path)
    code, out, err = run(*argv)
    assert code == 1
    assert message in err.strip().splitlines()[-1]
    assert snapshot(registry_path) == before


def test_port_mapped_or_in_use_is_refused(run, registry_path):
    port = free_port()
    run("add-project", "alpha", "--port", str(port))
    code, _, err = run("add-project", "beta", "--port", str(port))
    assert code == 1 and f"port {port} is already mapped to project 'alpha'" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        code, _, err = run("add-project", "beta", "--port", str(taken))
    assert code == 1 and f"port {taken} is in use" in err
    assert list(read_registry(registry_path)) == ["alpha"]


def test_remove_and_list_projects_offline(run, registry_path):
    ports = [free_port(), free_port()]
    run("add-project", "alpha", "--port", str(ports[0]))
    run("add-project", "beta", "--port", str(ports[1]), "--description", "second")
    code, out, _ = run("list-projects", "--json")
    assert code == 0
    listed = json.loads(out)["projects"]
    assert [(p["name"], p["port"], p["state"]) for p in listed] == [
        ("alpha", ports[0], "stopped"), ("beta", ports[1], "stopped")]
    code, out, _ = run("remove-project", "alpha", "--yes")
    assert code == 0 and f"removed project alpha (port {ports[0]})" in out
    code, out, _ = run("list-projects")
    assert code == 0 and "alpha" not in out and "beta" in out and "second" in out


@pytest.mark.parametrize("argv", [["list-projects"], ["add-project", "gamma"],
                                  ["remove-project", "alpha", "--yes"], ["ide-config", "alpha",
                                                                "--client", "env"]])
def test_corrupt_registry_exits_2_and_is_left_unchanged(run, registry_path, argv):
    registry_path.parent.mkdir(parents=True)
    registry_path.write_text('{"version": 1, "projects": {"alpha": {"port": "eighty"}}}')
    before = snapshot(registry_path)
    code, _, err = run(*argv)
    assert code == 2
    assert str(registry_path) in err and "corrupt registry" in err
    assert snapshot(registry_path) == before


@pytest.mark.parametrize("content, message", [(None, "file not found"),
                                              ("[server]\nprot = 1\n", "unknown key 'server.prot'"),
                                              ("[server\n", "invalid TOML")])
def test_bad_config_exits_2(tmp_path, run, content, message):
    path = tmp_path / "bad.toml"
    if content is not None:
        path.write_text(content)
    code, _, err = run("list-projects", config_path=path)
    assert code == 2 and message in err


@pytest.mark.parametrize("argv", [["status"], ["reload"], ["memory", "add", "u", "a fact"],
                                  ["memory", "search", "u", "fact"], ["memory", "list", "u"],
                                  ["memory", "forget", "u", "--all", "--yes"], ["memory", "export", "u"],
                                  ["memory", "import", "u", "{jsonl}"]])
def test_commands_needing_the_daemon_exit_3_when_it_is_down(run, tmp_path, argv):
    jsonl = tmp_path / "one.jsonl"
    jsonl.write_text('{"content": "a fact"}\n')
    code, out, err = run(*[a.format(jsonl=jsonl) for a in argv])
    assert code == 3 and out == ""
    assert "not running" in err and len(err.strip().splitlines()) == 1


def test_url_is_derived_from_config_with_wildcard_host_as_loopback(make_config, run):
    port = free_port()
    config = make_config(server='host = "0.0.0.0"', port=port)
    code, _, err = run("status", url=None, config_path=config)
    assert code == 3 and f"http://127.0.0.1:{port}" in err


def test_config_is_found_through_env_like_the_daemon(config, monkeypatch, capsys):
    monkeypatch.setenv("MEMPROXYD_CONFIG", str(config))
    assert cli.main(["--url", f"http://127.0.0.1:{free_port()}", "list-projects"]) == 0
    assert "no projects" in capsys.readouterr().out


# -- ide-config ------------------------------------------------------------------------------

@pytest.fixture
def alpha_port(run) -> int:
    port = free_port()
    assert run("add-project", "alpha", "--port", str(port))[0] == 0
    return port


@pytest.mark.parametrize("client, expected", [
    ("claude-code", ["export ANTHROPIC_BASE_URL=http://127.0.0.1:{port}",
                     "export ANTHROPIC_API_KEY=memproxyd-no-key",
                     "claude mcp add memproxyd -- "]),
    ("codex", ['base_url = "http://127.0.0.1:{port}/v1"', 'wire_api = "responses"',
               "[mcp_servers.memproxyd]"]),
    ("pycharm", ["OpenAI-compatible", "URL: http://127.0.0.1:{port}/v1",
                 "API key: memproxyd-no-key"]),
    ("continue", ["apiBase: http://127.0.0.1:{port}/v1", "provider: openai", "models:",
                  "name: memproxyd alpha", "version: 1.0.0", "apiKey: memproxyd-no-key"]),
    ("cursor", ["public HTTPS URL", "tunnel", "Override OpenAI Base URL: https://"]),
    ("env", ["export OPENAI_BASE_URL=http://127.0.0.1:{port}/v1",
             "export ANTHROPIC_BASE_URL=http://127.0.0.1:{port}"]),
    ("opencode", ['"baseURL": "http://127.0.0.1:{port}/v1"', '"@ai-sdk/openai-compatible"']),
    ("zed", ['"api_url": "http://127.0.0.1:{port}/v1"', "MEMPROXYD_API_KEY"]),
    ("copilot", ['"url": "http://127.0.0.1:{port}/v1/chat/completions"', "customendpoint"]),
])
def test_ide_config_prints_the_project_urls_for_each_client(run, alpha_port, client, expected):
    code, out, _ = run("ide-config", "alpha", "--client", client)
    assert code == 0
    for line in expected:
        assert line.format(port=alpha_port) in out
    # no gateway key configured: no variable to export, no placeholder to fill in
    assert "$MEMPROXY_API_KEY" not in out and ("<your" not in out or client == "cursor")


def test_ide_config_env_exports_a_base_url_and_a_key_for_each_sdk(run, alpha_port):
    _, out, _ = run("ide-config", "alpha", "--client", "env")
    assert [line for line in out.splitlines() if not line.startswith("#")] == [
        f"export OPENAI_BASE_URL=http://127.0.0.1:{alpha_port}/v1",
        "export OPENAI_API_KEY=memproxyd-no-key",
        f"export ANTHROPIC_BASE_URL=http://127.0.0.1:{alpha_port}",
        "export ANTHROPIC_API_KEY=memproxyd-no-key"]


def gemini_parts(out: str) -> tuple[dict, dict[str, str]]:
    """What ``--client gemini`` prints: (settings.json, the exported variables)."""
    lines = out.splitlines()
    start, end = lines.index("{"), lines.index("}")
    exports = dict(line.removeprefix("export ").split("=", 1) for line in lines
                   if line.startswith("export "))
    return json.loads("\n".join(lines[start:end + 1])), exports


def test_ide_config_gemini_is_settings_json_and_the_base_url(run, alpha_port):
    code, out, _ = run("ide-config", "alpha", "--client", "gemini")
    assert code == 0
    settings, exports = gemini_parts(out)
    assert settings["security"] == {"auth": {"selectedType": "gemini-api-key"}}
    assert isinstance(settings["model"]["name"], str)
    # Gemini CLI will not start without a key; with no gateway keys any value does
    assert exports == {"GOOGLE_GEMINI_BASE_URL": f"http://127.0.0.1:{alpha_port}",
                       "GEMINI_API_KEY": "memproxyd-no-key"}


def test_ide_config_gemini_with_gateway_key_asks_for_it(make_config, run):
    config = make_config(extra=f'[auth]\nkeys = ["{GATEWAY_KEY}"]')
    run("add-project", "alpha", "--port", str(free_port()), config_path=config)
    _, out, _ = run("ide-config", "alpha", "--client", "gemini", config_path=config)
    assert gemini_parts(out)[1]["GEMINI_API_KEY"] == '"$MEMPROXY_API_KEY"'
    assert GATEWAY_KEY not in out


@pytest.mark.parametrize("client", ["opencode", "zed", "copilot"])
def test_ide_config_json_targets_are_json_after_their_comment_lines(run, alpha_port, client):
    _, out, _ = run("ide-config", "alpha", "--client", client)
    json.loads("\n".join(line for line in out.splitlines() if not line.startswith("//")))


def test_ide_config_continue_is_yaml_with_the_keys_cn_requires(make_config, run):
    yaml = pytest.importorskip("yaml")
    config = make_config(extra='[[model_list]]\nmodel_name = "demo"\n'
                               '[model_list.litellm_params]\nmodel = "openai/demo"\n'
                               'mock_response = "hi"\n')
    run("add-project", "alpha", "--port", str(free_port()), config_path=config)
    _, out, _ = run("ide-config", "alpha", "--client", "continue", config_path=config)
    parsed = yaml.safe_load(out)
    assert parsed["name"] == "memproxyd alpha" and parsed["version"] == "1.0.0"
    assert parsed["models"][0]["model"] == "demo"
    assert parsed["mcpServers"][0]["args"][-2:] == ["mcp", "alpha"]


def test_ide_config_without_claude_models_points_claude_code_at_one_that_exists(make_config,
                                                                                run):
    config = make_config(extra='[[model_list]]\nmodel_name = "demo"\n'
                               '[model_list.litellm_params]\nmodel = "openai/demo"\n'
                               'mock_response = "hi"\n')
    run("add-project", "alpha", "--port", str(free_port()), config_path=config)
    _, out, _ = run("ide-config", "alpha", "--client", "claude-code", config_path=config)
    assert "export ANTHROPIC_MODEL=demo" in out.splitlines()
    assert "export ANTHROPIC_DEFAULT_HAIKU_MODEL=demo" in out.splitlines()


@pytest.mark.parametrize("names, exported", [
    (["claude-sonnet-4-5"], "claude-sonnet-4-5"),         # one exact name: not the default
    (["claude-*"], None), (["claude-opus-5-5"], None)])
def test_ide_config_points_claude_code_at_a_served_model_unless_its_default_is(
        make_config, run, names, exported):
    config = make_config(extra="".join(
        f'[[model_list]]\nmodel_name = "{n}"\n[model_list.litellm_params]\n'
        'model = "anthropic/claude-opus-5-5"\n' for n in names))
    run("add-project", "alpha", "--port", str(free_port()), config_path=config)
    _, out, _ = run("ide-config", "alpha", "--client", "claude-code", config_path=config)
    models = [line for line in out.splitlines() if line.startswith("export ANTHROPIC_MODEL=")]
    assert models == ([f"export ANTHROPIC_MODEL={exported}"] if exported else [])


def test_ide_config_with_gateway_key_exports_the_variable_never_the_secret(make_config, run):
    config = make_config(extra=f'[auth]\nkeys = ["{GATEWAY_KEY}"]')
    port = free_port()
    run("add-project", "alpha", "--port", str(port), config_path=config)
    code, out, _ = run("ide-config", "alpha", "--client", "claude-code", config_path=config)
    assert code == 0
    assert out.splitlines()[:3] == [
        f"export ANTHROPIC_BASE_URL=http://127.0.0.1:{port}",
        'export ANTHROPIC_API_KEY="$MEMPROXY_API_KEY"',
        "# this daemon has [auth] keys: export MEMPROXY_API_KEY=<one of them> before "
        "starting the client"]
    for client in ideconfig.TARGETS:
        _, out, _ = run("ide-config", "alpha", "--client", client, config_path=config)
        assert GATEWAY_KEY not in out and "memproxyd-no-key" not in out, client


def test_ide_config_codex_is_a_provider_and_an_mcp_server_in_valid_toml(run, config,
                                                                       alpha_port):
    url = f"http://127.0.0.1:{free_port()}"
    code, out, _ = run("ide-config", "alpha", "--client", "codex", url=url)
    assert code == 0
    parsed = tomllib.loads(out)
    assert parsed["model_provider"] == "memproxyd"
    assert parsed["model_providers"]["memproxyd"] == {
        "name": "memproxyd (alpha)", "base_url": f"http://127.0.0.1:{alpha_port}/v1",
        "wire_api": "responses"}  # no env_key: no gateway key is configured
    # the MCP server must reach the daemon this command reached, named the same way
    server = parsed["mcp_servers"]["memproxyd"]
    assert Path(server["command"]).is_absolute()   # MCP clients' PATH lacks the virtualenv
    assert server["args"][-6:] == ["--config", str(config.resolve()), "--url", url, "mcp",
                                   "alpha"]


def test_ide_config_codex_with_gateway_key_names_the_variable_never_the_key(make_config, run):
    config = make_config(extra=f'[auth]\nkeys = ["{GATEWAY_KEY}"]')
    run("add-project", "alpha", "--port", str(free_port()), config_path=config)
    code, out, _ = run("ide-config", "alpha", "--client", "codex", url=None,
                       config_path=config)
    assert code == 0 and GATEWAY_KEY not in out
    parsed = tomllib.loads(out)
    assert parsed["model_providers"]["memproxyd"]["env_key"] == "MEMPROXY_API_KEY"
    assert parsed["mcp_servers"]["memproxyd"]["env_vars"] == ["MEMPROXY_API_KEY"]
    assert parsed["mcp_servers"]["memproxyd"]["args"][-4:] == [
        "--config", str(config.resolve()), "mcp", "alpha"]


def test_ide_config_claude_code_mcp_line_is_a_shell_command_that_survives_spaces(tmp_path,
                                                                                 run):
    config = tmp_path / "my configs" / "memproxyd.toml"
    config.parent.mkdir()
    config.write_text(f'[server]\nport = {free_port()}\nstate_dir = "{tmp_path / "state"}"\n')
    run("add-project", "alpha", "--port", str(free_port()), config_path=config)
    code, out, _ = run("ide-config", "alpha", "--client", "claude-code", url=None,
                       config_path=config)
    assert code == 0
    [line] = [line for line in out.splitlines() if line.startswith("claude mcp add")]
    argv = shlex.split(line)
    assert argv[:5] == ["claude", "mcp", "add", "memproxyd", "--"]
    assert Path(argv[5]).is_absolute()
    assert argv[-4:] == ["--config", str(config.resolve()), "mcp", "alpha"]


def test_only_the_mcp_command_imports_the_mcp_sdk(config):
    script = ("import sys\nfrom memproxyd.ctl import cli\n"
              f"cli.main(['--config', {str(config)!r}, 'list-projects'])\n"
              f"cli.main(['--config', {str(config)!r}, 'ide-config', 'a', '--client', 'codex'])\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'pydantic')))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


# -- concurrency through the real entry point ------------------------------------------------

def test_concurrent_add_project_processes_all_survive(config, registry_path):
    url = f"http://127.0.0.1:{free_port()}"
    ports = [free_port() for _ in range(6)]
    procs = [subprocess.Popen([sys.executable, "-m", "memproxyd.ctl", "--config", str(config),
                               "--url", url, "add-project", f"p{i}", "--port", str(port)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i, port in enumerate(ports)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    assert {n: p.port for n, p in read_registry(registry_path).items()} == {
        f"p{i}": port for i, port in enumerate(ports)}


# -- a running (fake) daemon -----------------------------------------------------------------

STATE = web.AppKey("state", dict)


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": status}},
                             status=status)


def create_fake_daemon(key: str | None = None) -> web.Application:
    """The admin and memory API contract memproxyctl relies on, backed by dicts."""
    state = {"projects": {}, "memories": {}, "requests": [], "reloads": 0, "next_id": 0}

    @web.middleware
    async def record_and_auth(request, handler):
        body = await request.json() if request.can_read_body else None
        state["requests"].append({"method": request.method, "path": request.path,
                                  "query": dict(request.query), "body": body,
                                  "headers": {k.lower(): v for k, v in request.headers.items()}})
        if key and request.headers.get("authorization") != f"Bearer {key}":
            return _error(401, "invalid API key", "authentication_error")
        return await handler(request)

    async def list_projects(request):
        return web.json_response({"projects": list(state["projects"].values())})

    async def add_project(request):
        body = await request.json()
        if body["name"] in state["projects"]:
            return _error(409, f"project {body['name']!r} already exists")
        project = {"name": body["name"], "port": body.get("port", 8800), "created": "now",
                   "description": body.get("description", ""), "state": "listening",
                   "error": None}
        state["projects"][body["name"]] = project
        return web.json_response({"project": project}, status=201)

    async def remove_project(request):
        project = state["projects"].pop(request.match_info["name"], None)
        if project is None:
            return _error(404, f"no project named {request.match_info['name']!r}")
        return web.json_response({"project": project})

    async def status(request):
        return web.json_response({
            "version": "9.9.9", "uptime_s": 12.5, "gateway": {"host": "127.0.0.1", "port": 1},
            "listeners": [{"name": "alpha", "port": 8801, "state": "failed",
                           "error": "address in use"}],
            "sessions": {"count": 2, "users": {"alpha": ["cf_clearance"]}},
            "memory": {"backend": "sqlite", "outbox_pending": 0}})

    async def reload(request):
        state["reloads"] += 1
        return web.json_response({"reloaded": True})

    def new_memory(user, item):
        state["next_id"] += 1
        memory = {"id": f"m{state['next_id']}", "user_id": user, "content": item["content"],
                  "metadata": item.get("metadata") or {}, "created_at": "2025-01-01T00:00:00Z"}
        state["memories"].setdefault(user, []).append(memory)
        return memory

    async def add_memories(request):
        body = await request.json()
        items = body.get("memories") or [{"content": body["content"],
                                          "metadata": body.get("metadata")}]
        return web.json_response({"data": [new_memory(body["user_id"], i) for i in items]},
                                 status=201)

    async def search(request):
        body = await request.json()
        hits = [{**m, "score": 1.0} for m in state["memories"].get(body["user_id"], [])
                if body["query"] in m["content"]]
        return web.json_response({"results": hits[: body.get("limit", 5)]})

    async def list_memories(request):
        memories = state["memories"].get(request.query["user_id"], [])
        start, limit = int(request.query.get("cursor", 0)), int(request.query["limit"])
        more = start + limit < len(memories)
        return web.json_response({"data": memories[start:start + limit],
                                  "next_cursor": str(start + limit) if more else None})

    async def delete_memory(request):
        memories = state["memories"].get(request.query["user_id"], [])
        kept = [m for m in memories if m["id"] != request.match_info["id"]]
        if len(kept) == len(memories):
            return _error(404, f"no memory {request.match_info['id']!r}")
        state["memories"][request.query["user_id"]] = kept
        return web.json_response({"deleted": True})

    async def forget_all(request):
        gone = state["memories"].pop(request.query["user_id"], [])
        return web.json_response({"deleted": len(gone)})

    app = web.Application(middlewares=[record_and_auth])
    app[STATE] = state
    app.router.add_get("/admin/projects", list_projects)
    app.router.add_post("/admin/projects", add_project)
    app.router.add_delete("/admin/projects/{name}", remove_project)
    app.router.add_get("/admin/status", status)
    app.router.add_post("/admin/reload", reload)
    app.router.add_post("/v1/memories", add_memories)
    app.router.add_post("/v1/memories/search", search)
    app.router.add_get("/v1/memories", list_memories)
    app.router.add_delete("/v1/memories/{id}", delete_memory)
    app.router.add_delete("/v1/memories", forget_all)
    return app


@pytest.fixture
def fake_daemon():
    server = ThreadedServer(create_fake_daemon()).start()
    yield server
    server.stop()


@pytest.fixture
def live(run, fake_daemon):
    """memproxyctl against the fake daemon."""
    def run_live(*argv, **kwargs):
        return run(*argv, url=fake_daemon.url, **kwargs)
    return run_live


def fake_state(server: ThreadedServer) -> dict:
    return server.call(lambda: json.loads(json.dumps(server.app[STATE])))


def test_add_project_goes_through_admin_api_not_the_file(live, fake_daemon, registry_path):
    code, out, err = live("add-project", "alpha", "--port", "8801", "--description", "d")
    assert code == 0 and err == ""
    assert "project alpha: port 8801" in out and "http://127.0.0.1:8801/v1" in out
    [request] = fake_state(fake_daemon)["requests"]
    assert (request["method"], request["path"]) == ("POST", "/admin/projects")
    assert request["body"] == {"name": "alpha", "port": 8801, "description": "d"}
    assert not registry_path.exists()


def test_daemon_refusal_exits_1_with_its_message(live):
    assert live("add-project", "alpha")[0] == 0
    code, _, err = live("add-project", "alpha")
    assert code == 1 and "HTTP 409" in err and "'alpha' already exists" in err
    code, _, err = live("remove-project", "ghost", "--yes")
    assert code == 1 and "HTTP 404" in err and "no project named 'ghost'" in err


def test_remove_list_and_ide_config_use_the_daemons_projects(live):
    live("add-project", "alpha", "--port", "8801")
    live("add-project", "beta", "--port", "8802")
    code, out, _ = live("list-projects")
    assert code == 0 and "alpha" in out and "listening" in out
    code, out, _ = live("ide-config", "beta", "--client", "cursor")
    assert code == 0 and "http://127.0.0.1:8802/v1" in out
    code, out, _ = live("remove-project", "alpha", "--yes")
    assert code == 0 and "removed project alpha (port 8801)" in out
    code, out, _ = live("list-projects", "--json")
    assert [p["name"] for p in json.loads(out)["projects"]] == ["beta"]


def test_status_plain_and_json(live):
    code, out, _ = live("status")
    assert code == 0
    assert "memproxyd 9.9.9" in out and "listener alpha :8801 failed (address in use)" in out
    assert "sessions: 2" in out
    code, out, _ = live("status", "--json")
    assert code == 0 and json.loads(out)["sessions"]["users"] == {"alpha": ["cf_clearance"]}


def test_reload_calls_the_admin_api(live, fake_daemon):
    code, out, _ = live("reload")
    assert code == 0 and out.strip() == "reloaded"
    assert fake_state(fake_daemon)["reloads"] == 1


def test_keys_from_config_and_env_and_admin_key_only_on_admin_calls(make_config, live,
                                                                     fake_daemon, monkeypatch):
    monkeypatch.setenv("CTL_TEST_KEY", GATEWAY_KEY)
    config = make_config(server=f'admin_key = "{ADMIN_KEY}"',
                         extra='[auth]\nkeys = ["os.environ/CTL_TEST_KEY", "sk-second"]')
    live("list-projects", config_path=config)
    live("memory", "list", "u", config_path=config)
    monkeypatch.setenv("MEMPROXY_API_KEY", "sk-from-env")
    live("status", config_path=config)
    admin, memory, env = [r["headers"] for r in fake_state(fake_daemon)["requests"]]
    assert admin["authorization"] == f"Bearer {GATEWAY_KEY}"
    assert admin["x-admin-key"] == ADMIN_KEY
    assert memory["authorization"] == f"Bearer {GATEWAY_KEY}" and "x-admin-key" not in memory
    assert env["authorization"] == "Bearer sk-from-env"


def test_no_key_configured_sends_no_authorization(live, fake_daemon):
    live("status")
    [request] = fake_state(fake_daemon)["requests"]
    assert "authorization" not in request["headers"] and "x-admin-key" not in request["headers"]


def test_daemon_rejecting_the_key_exits_1(run, capsys):
    server = ThreadedServer(create_fake_daemon(key="sk-right")).start()
    try:
        code, _, err = run("status", url=server.url)
    finally:
        server.stop()
    assert code == 1 and "HTTP 401" in err and "invalid API key" in err


# -- memory commands against the fake daemon -------------------------------------------------

def test_memory_add_search_list_and_forget(live, fake_daemon):
    code, out, _ = live("memory", "add", "alice", "the deploy key lives in vault")
    assert code == 0 and out.strip() == "added m1"
    live("memory", "add", "alice", "deploy on fridays is forbidden")
    live("memory", "add", "bob", "bob likes deploy scripts")
    code, out, _ = live("memory", "search", "alice", "deploy", "--limit", "1", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == ["m1"]
    assert fake_state(fake_daemon)["requests"][-1]["body"] == {
        "user_id": "alice", "query": "deploy", "limit": 1}
    code, out, _ = live("memory", "search", "alice", "fridays")
    assert code == 0 and "m2" in out and "deploy on fridays is forbidden" in out
    code, out, _ = live("memory", "list", "alice")
    assert code == 0 and "m1" in out and "m2" in out and "m3" not in out
    code, out, err = live("memory", "forget", "alice", "m1", "m404")
    assert code == 1 and "forgot m1" in out and "no memory 'm404'" in err
    code, out, _ = live("memory", "forget", "alice", "--all", "--yes")
    assert code == 0 and "forgot 1 memories of alice" in out
    assert json.loads(live("memory", "list", "bob", "--json")[1])[0]["id"] == "m3"


def test_memory_list_and_export_follow_cursors_across_pages(live, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"content": f"fact {i}", "metadata": {"i": i}}) + "\n"
                              for i in range(250)))
    assert live("memory", "import", "alice", str(source))[0] == 0
    code, out, _ = live("memory", "list", "alice", "--json")
    assert code == 0 and len(json.loads(out)) == 250
    code, out, _ = live("memory", "export", "alice")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 250
    assert lines[0]["content"] == "fact 0" and lines[-1]["metadata"] == {"i": 249}


def test_memory_import_batches_by_100_and_roundtrips_an_export(live, fake_daemon, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps({"content": f"fact {i}"}) for i in range(230)) + "\n")
    code, out, err = live("memory", "import", "alice", str(source))
    assert code == 0 and "imported 230 memories for alice" in out
    assert err == ""  # no progress bar when stderr is not a terminal
    posts = [r["body"] for r in fake_state(fake_daemon)["requests"] if r["method"] == "POST"]
    assert [len(b["memories"]) for b in posts] == [100, 100, 30]
    assert all(b["user_id"] == "alice" for b in posts)
    exported = tmp_path / "export.jsonl"
    exported.write_text(live("memory", "export", "alice")[1])
    assert live("memory", "import", "bob", str(exported))[0] == 0
    bob = json.loads(live("memory", "list", "bob", "--json")[1])
    assert [m["content"] for m in bob] == [f"fact {i}" for i in range(230)]


@pytest.mark.parametrize("content, message", [
    ('{"content": "ok"}\n{not json}\n', ":2: not valid JSON"),
    ('{"content": ""}\n', ":1: expected an object with a non-empty 'content'"),
    ('{"content": "x", "metadata": [1]}\n', ":1: expected"),
    ('["content"]\n', ":1: expected"),
])
def test_memory_import_bad_line_names_it_and_imports_nothing(live, fake_daemon, tmp_path,
                                                             content, message):
    source = tmp_path / "bad.jsonl"
    source.write_text(content)
    code, _, err = live("memory", "import", "alice", str(source))
    assert code == 1 and message in err and "nothing imported" in err
    assert fake_state(fake_daemon)["requests"] == []


def test_bad_url_is_a_one_line_error(run):
    code, _, err = run("status", url="nonsense")
    assert code == 1 and "cannot talk to nonsense" in err


def own_non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent; picks the outgoing address
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_daemon_down_on_another_host_never_edits_the_local_registry(run, registry_path):
    address = own_non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback address")
    code, out, err = run("add-project", "alpha", "--port", str(free_port()),
                         url=f"http://{address}:{free_port()}")
    assert code == 3 and "not running" in err and out == ""
    assert not registry_path.exists()


def test_localhost_url_counts_as_this_machine(run):
    code, out, err = run("list-projects", url=f"http://localhost:{free_port()}")
    assert code == 0 and "no projects" in out


# -- confirmations, --version, help, config ------------------------------------------------

def test_remove_project_asks_first_and_says_the_memories_stay(run, registry_path):
    assert run("add-project", "alpha", "--port", str(free_port()))[0] == 0
    code, out, err = run("remove-project", "alpha")        # no terminal to ask on
    assert code == 1 and out == ""
    assert "Its memories stay" in err and "pass --yes" in err
    assert set(read_registry(registry_path)) == {"alpha"}
    code, out, _ = run("remove-project", "alpha", "--yes")
    assert code == 0 and "its memories stay under user id 'alpha'" in out
    assert read_registry(registry_path) == {}


def test_forget_all_asks_first_and_deletes_nothing_unconfirmed(live, fake_daemon):
    code, out, err = live("memory", "forget", "alice", "--all")
    assert code == 1 and "cannot be undone" in err and "pass --yes" in err
    assert not [r for r in fake_state(fake_daemon).get("requests", [])
                if r.get("method") == "DELETE"]


def test_version(run, capsys):
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["--version"])
    assert info.value.code == 0
    from memproxyd import __version__
    assert capsys.readouterr().out.strip() == f"memproxyctl {__version__}"


def _positionals(parser, path=()):
    for action in parser._actions:
        if action.choices and isinstance(action.choices, dict):     # subcommands
            for name, sub in action.choices.items():
                yield from _positionals(sub, path + (name,))
        elif not action.option_strings and action.dest != "help":
            yield path, action


def test_every_positional_argument_has_help():
    missing = [(" ".join(path), action.dest) for path, action in _positionals(cli.build_parser())
               if not action.help]
    assert missing == []


def test_config_path_and_show_say_which_file_and_why(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert cli.main(["config", "path"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("default.toml") and "the packaged default" in err
    user = tmp_path / "xdg" / "memproxyd" / "memproxyd.toml"
    user.parent.mkdir(parents=True)
    user.write_text(f'[server]\nport = 9911\nstate_dir = "{tmp_path / "st"}"\n')
    assert cli.main(["config", "path"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(user) and "per-user config" in err
    assert cli.main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert f"# config: {user} (the per-user config" in out
    assert f"{user} (exists)" in out and "daemon URL: http://127.0.0.1:9911" in out
    assert out.endswith("port = 9911\n" + f'state_dir = "{tmp_path / "st"}"\n')
    user.write_text('[server]\nadmin_key = "os.environ/ADM"\n[auth]\nkeys = ["sk-literal-secret-1"]\n')
    assert cli.main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "sk-literal-secret-1" not in out and 'keys = "<hidden>"' in out
    assert 'admin_key = "os.environ/ADM"' in out
    other = tmp_path / "other.toml"
    other.write_text("")
    monkeypatch.setenv("MEMPROXYD_CONFIG", str(other))
    assert cli.main(["config", "path"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(other) and "$MEMPROXYD_CONFIG" in err
