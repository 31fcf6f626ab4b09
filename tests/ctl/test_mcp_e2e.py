"""memproxyctl mcp end to end: the official MCP SDK's stdio client starts the real
``memproxyctl mcp PROJECT`` against the real daemon (embedded SQLite memory, gateway keys) and
calls each tool, checking what the daemon's memory API then holds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from memproxyd.ctl import cli
from tests.conftest import GATEWAY_KEY, Daemon, free_port, write_config

REPO = Path(__file__).resolve().parents[2]
KEY_VAR = "MCP_TEST_GATEWAY_KEY"   # the daemon's key variable; never passed to the MCP server
TOOLS = {"memory_search", "memory_add", "memory_list", "memory_forget", "memory_edit",
         "memory_promote"}


def config_for(tmp_path: Path, upstream_url: str, port: int | None = None) -> Path:
    return write_config(tmp_path, upstream_url, port=port, auth=f'keys = ["os.environ/{KEY_VAR}"]',
                        memory='backend = "sqlite"\npersonal = "me"')


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, openai_fake):
    """One daemon for the module; each test works on users of its own."""
    config = config_for(tmp_path_factory.mktemp("mcp"), openai_fake.url)
    running = Daemon(config, env={KEY_VAR: GATEWAY_KEY}).wait_ready()
    for name in ("alpha", "beta"):
        assert cli.main(["--config", str(config), "add-project", name,
                         "--port", str(free_port())]) == 0
    yield running
    running.stop()


def memory_api(daemon: Daemon, method: str, path: str, body=None, **query) -> dict:
    url = daemon.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    request = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {GATEWAY_KEY}", "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def stored(daemon: Daemon, user: str) -> list[dict]:
    return memory_api(daemon, "GET", "/v1/memories", user_id=user, limit=1000)["data"]


@asynccontextmanager
async def mcp_session(config: Path, *args: str, key: str | None = GATEWAY_KEY,
                      errlog: Path | None = None, argv: list[str] | None = None,
                      command: str | None = None):
    """An MCP client session with ``memproxyctl --config CONFIG mcp ARGS`` as its server.

    The server gets the SDK's default environment (PATH, HOME, ...) plus MEMPROXY_API_KEY,
    as an MCP client would start it.
    """
    argv = argv or ["--config", str(config), "mcp", *args]
    if command is None:
        command, argv = sys.executable, ["-m", "memproxyd.ctl", *argv]
    params = StdioServerParameters(
        command=command, args=argv, cwd=REPO,
        env={"MEMPROXY_API_KEY": key} if key else {})
    with (errlog or Path("/dev/null")).open("w") as err:
        async with stdio_client(params, errlog=err) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


async def call(session: ClientSession, tool: str, **arguments) -> dict:
    """A tool's structured result; fails the test on a tool error."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


async def error_of(session: ClientSession, tool: str, **arguments) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result
    return result.content[0].text


# -- the tools -------------------------------------------------------------------------------

async def test_the_tools_are_listed_with_descriptions_naming_the_project(daemon):
    async with mcp_session(daemon.config, "alpha") as session:
        listed = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(listed) == TOOLS
    assert all("'alpha'" in tool.description for tool in listed.values())
    search = listed["memory_search"].input_schema
    assert search["required"] == ["query"]
    assert search["properties"]["limit"]["maximum"] == 100
    assert listed["memory_list"].input_schema["properties"]["cursor"]
    assert listed["memory_forget"].input_schema["required"] == ["id"]
    assert listed["memory_search"].annotations.read_only_hint is True
    assert listed["memory_forget"].annotations.destructive_hint is True


async def test_add_search_list_and_forget_go_through_the_daemon_as_the_project(daemon):
    async with mcp_session(daemon.config, "alpha") as session:
        added = (await call(session, "memory_add",
                            content="The staging database is rebuilt every Sunday"))["added"]
        assert [m["id"] for m in stored(daemon, "alpha")] == [added["id"]]
        found = await call(session, "memory_search", query="when is staging rebuilt", limit=3)
        assert found["owner"] == "alpha"
        assert [r["id"] for r in found["results"]] == [added["id"]]
        assert "rebuilt every Sunday" in found["results"][0]["content"]
        listed = await call(session, "memory_list")
        assert [m["id"] for m in listed["memories"]] == [added["id"]]
        assert listed["next_cursor"] is None
        assert await call(session, "memory_forget", id=added["id"]) == {
            "owner": "alpha", "forgotten": added["id"]}
    assert stored(daemon, "alpha") == []


async def test_edit_pin_promote_and_a_personal_add_through_the_tools(daemon):
    async with mcp_session(daemon.config, "alpha") as session:
        added = (await call(session, "memory_add", content="lint with ruff"))["added"]
        edited = (await call(session, "memory_edit", id=added["id"],
                             content="lint with ruff and mypy", pinned=True))["edited"]
        assert (edited["id"], edited["content"], edited["pinned"]) == (
            added["id"], "lint with ruff and mypy", True)
        found = await call(session, "memory_search", query="mypy")
        assert [(r["id"], r["pinned"]) for r in found["results"]] == [(added["id"], True)]
        mine = (await call(session, "memory_add", content="I read answers in French",
                           scope="personal"))["added"]
        assert (mine["user_id"], mine["scope"]) == ("me", "personal")
        moved = (await call(session, "memory_promote", id=added["id"]))["promoted"]
        assert (moved["id"], moved["scope"]) == (added["id"], "personal")
        refused = await error_of(session, "memory_promote", id=added["id"])
        personal = await call(session, "memory_list", scope="personal")
    assert "HTTP 404" in refused
    assert {m["id"] for m in personal["memories"]} >= {mine["id"], added["id"]}
    assert added["id"] not in [m["id"] for m in stored(daemon, "alpha")]
    async with mcp_session(daemon.config, "beta") as session:   # personal: every project's
        found = await call(session, "memory_search", query="French answers", scope="personal")
        own = await call(session, "memory_search", query="French answers")
    assert [r["id"] for r in found["results"]] == [mine["id"]] and own["results"] == []


async def test_memory_list_pages_with_the_cursor_it_returns(daemon):
    memory_api(daemon, "POST", "/v1/memories", {"user_id": "pager", "memories": [
        {"content": f"page fact number {i}"} for i in range(5)]})
    seen = []
    async with mcp_session(daemon.config, "pager", "--user-id") as session:
        page = await call(session, "memory_list", limit=2)
        while True:
            assert len(page["memories"]) <= 2
            seen += [m["content"] for m in page["memories"]]
            if page["next_cursor"] is None:
                break
            page = await call(session, "memory_list", limit=2, cursor=page["next_cursor"])
    assert sorted(seen) == [f"page fact number {i}" for i in range(5)]


async def test_alpha_tools_never_see_or_forget_betas_memories(daemon):
    [beta] = memory_api(daemon, "POST", "/v1/memories", {
        "user_id": "beta", "content": "beta's secret launch codename is Bluebird"})["data"]
    async with mcp_session(daemon.config, "beta") as session:
        await call(session, "memory_add", content="beta ships the Bluebird launch on Friday")
    async with mcp_session(daemon.config, "alpha") as session:
        found = await call(session, "memory_search", query="Bluebird launch codename")
        listed = await call(session, "memory_list", limit=100)
        refused = await error_of(session, "memory_forget", id=beta["id"])
    assert found["results"] == []
    assert "Bluebird" not in json.dumps(listed)
    assert "no memory" in refused and "HTTP 404" in refused
    assert len(stored(daemon, "beta")) == 2
    async with mcp_session(daemon.config, "beta") as session:  # beta's own tools do see them
        found = await call(session, "memory_search", query="Bluebird launch codename")
    assert len(found["results"]) == 2


async def test_without_a_project_the_tools_use_the_default_user_id(daemon):
    async with mcp_session(daemon.config) as session:
        added = (await call(session, "memory_add", content="default user note"))["added"]
    assert added["id"] in [m["id"] for m in stored(daemon, "default")]
    assert added["id"] not in [m["id"] for m in stored(daemon, "alpha")]


# -- errors are tool errors, never a crash ---------------------------------------------------

async def test_bad_arguments_and_unknown_ids_are_tool_errors_and_the_server_goes_on(daemon):
    async with mcp_session(daemon.config, "alpha") as session:
        assert "limit" in await error_of(session, "memory_search", query="x", limit=0)
        assert "limit" in await error_of(session, "memory_list", limit=101)
        assert "content" in await error_of(session, "memory_add", content="")
        assert "no memory 'nope'" in await error_of(session, "memory_forget", id="nope")
        # a cursor the store never handed out
        assert "cursor" in await error_of(session, "memory_list", cursor="not-a-cursor")
        assert (await call(session, "memory_search", query="anything"))["owner"] == "alpha"


async def test_a_wrong_key_is_a_tool_error_that_never_shows_a_key(daemon, tmp_path):
    errlog = tmp_path / "stderr.txt"
    async with mcp_session(daemon.config, "alpha", key="sk-wrong-key", errlog=errlog) as s:
        message = await error_of(s, "memory_search", query="anything")
    assert "HTTP 401" in message
    assert "sk-wrong-key" not in message and GATEWAY_KEY not in message
    assert "sk-wrong-key" not in errlog.read_text()


async def test_daemon_down_is_a_tool_error_and_the_same_server_works_once_it_is_up(
        tmp_path, openai_fake):
    config = config_for(tmp_path, openai_fake.url, port=free_port())
    async with mcp_session(config, "alpha", "--user-id") as session:   # no registry yet
        message = await error_of(session, "memory_search", query="anything")
        assert "memproxyd daemon is unreachable" in message and "not running" in message
        assert "unreachable" in await error_of(session, "memory_add", content="a fact")
        daemon = Daemon(config, env={KEY_VAR: GATEWAY_KEY}).wait_ready()
        try:
            added = (await call(session, "memory_add", content="written after start"))["added"]
            assert [m["id"] for m in stored(daemon, "alpha")] == [added["id"]]
        finally:
            daemon.stop()


async def test_an_unregistered_project_is_refused_at_start_unless_named_a_user_id(daemon,
                                                                                   tmp_path):
    env = {**os.environ, "MEMPROXY_API_KEY": GATEWAY_KEY}
    refused = subprocess.run([sys.executable, "-m", "memproxyd.ctl", "--config",
                              str(daemon.config), "mcp", "alpah"], capture_output=True,
                             text=True, env=env, stdin=subprocess.DEVNULL, timeout=30)
    assert refused.returncode == 1
    assert "no project named 'alpah' (projects: alpha, beta)" in refused.stderr
    assert "--user-id" in refused.stderr
    async with mcp_session(daemon.config, "alpah", "--user-id") as session:
        added = (await call(session, "memory_add", content="on purpose"))["added"]
    assert [m["id"] for m in stored(daemon, "alpah")] == [added["id"]]


# -- the registration ide-config prints is a working server ----------------------------------

async def test_the_codex_mcp_server_block_starts_a_working_server(daemon, capsys):
    assert cli.main(["--config", str(daemon.config), "ide-config", "alpha",
                     "--client", "codex"]) == 0
    block = capsys.readouterr().out.split("[mcp_servers.memproxyd]", 1)[1]
    command = json.loads(block.split("command = ", 1)[1].splitlines()[0])
    args = json.loads(block.split("args = ", 1)[1].splitlines()[0])
    assert args[-2:] == ["mcp", "alpha"] and Path(command).is_absolute()
    async with mcp_session(daemon.config, argv=args, command=command) as session:
        assert (await call(session, "memory_list"))["owner"] == "alpha"
