"""``memproxyctl mcp [PROJECT]``: a project's memory as MCP tools, on stdio.

    claude mcp add memproxyd -- memproxyctl mcp alpha

The tools call the running daemon's memory API through the same client as
``memproxyctl memory`` (gateway URL and key from the config, ``$MEMPROXY_API_KEY`` first),
with PROJECT as the ``user_id``: the MCP client sees exactly the memories that calls through
the project's port recall, and never another project's. Without PROJECT the owner is
``[identity] default_user_id``, the memory of gateway calls that name no one. A PROJECT that
is not registered is refused at start (a typo would write to a new, empty memory), unless
``--user-id`` says it is a user id of the gateway's on purpose.

Every failure (daemon down, key refused, unknown id, bad limit) is an MCP tool error the
model can read; the server keeps running. ``ctl.py`` imports this module only when the
command runs: the SDK is heavy, and every other memproxyctl command starts fast.
"""
import urllib.parse
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from memproxyd import registry
from memproxyd.config import USER_ID_RE
from memproxyd.ctl.client import EXIT_OK, Client, Context, CtlError, DaemonDown

SEARCH_LIMIT_MAX = 100   # the memory API's own bound for search
LIST_LIMIT_MAX = 100     # below the API's 1000: a page is read by a model

INSTRUCTIONS = (
    "Long-term memory of {owner!r}, kept by memproxyd. Model calls made through memproxyd "
    "for {owner!r} recall these memories automatically; use these tools to look something "
    "up on purpose (memory_search), keep a durable fact, decision or preference "
    "(memory_add), browse (memory_list), correct or pin a memory (memory_edit), remove a "
    "wrong or outdated one (memory_forget), or move a preference that holds in every "
    "project to the personal scope (memory_promote). Personal memories (scope "
    "'personal') are recalled in every project of this installation.")

Scope = Annotated[Literal["project", "personal"], Field(description=(
    "'project': this owner's memories (default); 'personal': the user's personal "
    "memories, recalled in every project"))]

# tool (a method of MemoryTools): (description, annotations). The tools reach only the local
# daemon: a closed world.
TOOLS = {
    "memory_search": ((
        "Search the long-term memory of {owner!r} for memories relevant to a query, best "
        "match first. Use it before answering questions about earlier work, decisions, "
        "conventions or preferences. Returns each memory's id, content, score and creation "
        "time."), ToolAnnotations(read_only_hint=True, open_world_hint=False)),
    "memory_add": ((
        "Store one new memory for {owner!r}: a self-contained fact, decision or preference "
        "worth recalling in later sessions (write it so that it makes sense without this "
        "conversation). Never store secrets. scope 'personal' stores it for every project "
        "(only for the user's own lasting preferences, never a project's facts). Returns "
        "the new memory and its id."),
        ToolAnnotations(read_only_hint=False, destructive_hint=False,
                        open_world_hint=False)),
    "memory_list": ((
        "List the memories of {owner!r}, one page at a time. Pass the returned next_cursor "
        "as cursor to get the next page; next_cursor is null on the last page."),
        ToolAnnotations(read_only_hint=True, open_world_hint=False)),
    "memory_edit": ((
        "Correct one memory of {owner!r} by its id (new content replaces the old), or pin "
        "it (pinned: true: it is then in every memory block of {owner!r}, like a line of "
        "CLAUDE.md) or unpin it. Returns the memory as it now is."),
        ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                        open_world_hint=False)),
    "memory_promote": ((
        "Move one memory of {owner!r} to the user's personal scope, recalled in every "
        "project (for a preference that is the user's, not this project's)."),
        ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                        open_world_hint=False)),
    "memory_forget": ((
        "Delete one memory of {owner!r} by its id (as returned by memory_search or "
        "memory_list). This cannot be undone."),
        ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                        open_world_hint=False)),
}


class MemoryTools:
    """The tools, each one call of the daemon's memory API for one fixed owner.

    Plain functions: the SDK runs them on a worker thread, so the blocking HTTP client
    never stalls the stdio session.
    """

    def __init__(self, client: Client, owner: str):
        self.client, self.owner = client, owner

    def _call(self, method: str, path: str, body: dict | None = None,
              query: dict | None = None) -> Any:
        try:
            return self.client.call(method, path, body, query)
        except DaemonDown as exc:
            raise ToolError(f"the memproxyd daemon is unreachable: {exc}. Start it "
                            "(memproxyd, or systemctl --user start memproxyd) and retry."
                            ) from None
        except CtlError as exc:
            raise ToolError(str(exc)) from None

    def memory_search(
            self, query: Annotated[str, Field(min_length=1, description="what to look for")],
            limit: Annotated[int, Field(ge=1, le=SEARCH_LIMIT_MAX,
                                        description="at most this many memories")] = 5,
            scope: Scope = "project",
    ) -> dict[str, Any]:
        body = {"user_id": self.owner, "query": query, "limit": limit, "scope": scope}
        found = self._call("POST", "/v1/memories/search", body).get("results", [])
        return {"owner": self.owner, "query": query, "results": found}

    def memory_add(self, content: Annotated[str, Field(min_length=1, description=(
            "the memory, in plain words"))], scope: Scope = "project") -> dict[str, Any]:
        body = {"user_id": self.owner, "content": content, "scope": scope}
        [memory] = self._call("POST", "/v1/memories", body)["data"]
        return {"owner": self.owner, "added": memory}

    def memory_edit(
            self, id: Annotated[str, Field(  # noqa: A002 - the tool's argument name
                min_length=1, description="the id of the memory to change")],
            content: Annotated[str | None, Field(min_length=1, description=(
                "the corrected memory; omit to keep the text"))] = None,
            pinned: Annotated[bool | None, Field(description=(
                "true: in every memory block; false: no longer; omit to keep"))] = None,
            scope: Scope = "project",
    ) -> dict[str, Any]:
        body = {"user_id": self.owner, "scope": scope,
                **({"content": content} if content is not None else {}),
                **({"pinned": pinned} if pinned is not None else {})}
        memory = self._call("PATCH", "/v1/memories/" + urllib.parse.quote(id, safe=""), body)
        return {"owner": self.owner, "edited": memory}

    def memory_promote(self, id: Annotated[str, Field(  # noqa: A002 - the tool's argument
            min_length=1, description="the id of the memory to move")]) -> dict[str, Any]:
        path = "/v1/memories/" + urllib.parse.quote(id, safe="") + "/promote"
        memory = self._call("POST", path, {"user_id": self.owner})
        return {"owner": self.owner, "promoted": memory}

    def memory_list(
            self, limit: Annotated[int, Field(ge=1, le=LIST_LIMIT_MAX,
                                              description="memories per page")] = 20,
            cursor: Annotated[str | None, Field(description=(
                "next_cursor of the previous page; omit for the first page"))] = None,
            scope: Scope = "project",
    ) -> dict[str, Any]:
        query = {"user_id": self.owner, "limit": limit, "scope": scope,
                 **({"cursor": cursor} if cursor else {})}
        page = self._call("GET", "/v1/memories", query=query)
        return {"owner": self.owner, "memories": page.get("data", []),
                "next_cursor": page.get("next_cursor"), "total": page.get("total")}

    def memory_forget(self, id: Annotated[str, Field(  # noqa: A002 - the tool's argument name
            min_length=1, description="the id of the memory to delete")],
            scope: Scope = "project") -> dict[str, Any]:
        path = "/v1/memories/" + urllib.parse.quote(id, safe="")
        self._call("DELETE", path, query={"user_id": self.owner, "scope": scope})
        return {"owner": self.owner, "forgotten": id}


def build_server(tools: MemoryTools) -> MCPServer:
    # WARNING: the SDK logs every request at INFO on stderr, which MCP clients keep as logs.
    server = MCPServer("memproxyd", instructions=INSTRUCTIONS.format(owner=tools.owner),
                       log_level="WARNING")
    for name, (description, annotations) in TOOLS.items():
        server.add_tool(getattr(tools, name), name=name, annotations=annotations,
                        description=description.format(owner=tools.owner))
    return server


def owner_of(ctx: Context, project: str | None) -> str:
    """The user id the tools act for: PROJECT, else the config's default user id."""
    owner = project or ctx.config.identity.default_user_id
    if not USER_ID_RE.fullmatch(owner):
        raise CtlError(f"invalid project or user id {owner!r}: expected 1-128 characters of "
                       "letters, digits and ._@:- starting with a letter or digit")
    return owner


def _check_registered(ctx: Context, project: str) -> None:
    """A misspelled project would silently start a new, empty memory, and a warning on
    stderr is hidden by the MCP clients (Claude Code keeps it in a log): refuse to start
    instead, which the client shows as a failed server. The daemon's projects, or with the
    daemon down the registry file; a daemon that does not say (a remote one refusing the
    admin API) leaves it to the tools."""
    try:
        names = {p.get("name") for p in
                 ctx.client.call("GET", "/admin/projects", admin=True)["projects"]}
    except DaemonDown:
        try:
            names = set(registry.read_registry(ctx.config.registry_path))
        except registry.RegistryError:
            return
    except (CtlError, KeyError, TypeError):
        return
    if project not in names:
        raise CtlError(f"no project named {project!r} (projects: "
                       f"{', '.join(sorted(names)) or 'none'}); to serve the memory of a "
                       "user id that is no project, add --user-id")


def cmd_mcp(ctx: Context, args) -> int:
    owner = owner_of(ctx, args.project)
    if args.project and not args.user_id:
        _check_registered(ctx, args.project)
    build_server(MemoryTools(ctx.client, owner)).run("stdio")
    return EXIT_OK
