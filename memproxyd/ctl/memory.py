"""``memproxyctl memory ...``: a user's memories through the daemon's memory API.

    memproxyctl memory search alpha "deploy steps" --limit 3
    memproxyctl memory edit alpha 3f2a... "the deploy runs on thursdays"
    memproxyctl memory pin alpha 3f2a...          # in every block of alpha (unpin: no more)
    memproxyctl memory promote alpha 3f2a...      # to the personal scope ([memory] personal)
    memproxyctl memory export alpha > alpha.jsonl # pins, scope and created_at kept
    memproxyctl memory import beta alpha.jsonl    # import puts them back
    memproxyctl memory import-history alpha --from claude-code ~/.claude/projects  (history.py)

Personal memories are those of the ``[memory] personal`` user id: list, edit or export them
with that id as USER (``memproxyctl memory list me``).
"""
from __future__ import annotations

import datetime
import json
import sys
import urllib.parse
from pathlib import Path

from memproxyd.ctl import history
from memproxyd.ctl.client import (EXIT_OK, EXIT_REFUSED, Context, CtlError, DaemonDown, confirm,
                                  notice)

PAGE_SIZE = 100      # memories per page when listing or exporting
IMPORT_BATCH = 100   # memories per POST when importing

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
        mark = "  pinned" if m.get("pinned") else ""
        print(f"{m['id']}  {m.get('created_at', '')}{mark}  {_one_line(m['content'])}")
    return EXIT_OK


def _memory_path(memory_id: str, action: str = "") -> str:
    return "/v1/memories/" + urllib.parse.quote(memory_id, safe="") + action


def _each(ctx: Context, args, act) -> int:
    """``act(memory_id)`` for each of ``args.ids``; a refused one is reported, the rest done."""
    failed = 0
    for memory_id in args.ids:
        try:
            act(memory_id)
        except DaemonDown:
            raise
        except CtlError as exc:
            failed += 1
            notice(f"memproxyctl: {exc}")
    return EXIT_REFUSED if failed else EXIT_OK


def cmd_memory_edit(ctx: Context, args) -> int:
    body: dict = {"user_id": args.user}
    if args.text is not None:
        body["content"] = args.text
    if args.metadata is not None:
        try:
            body["metadata"] = json.loads(args.metadata)
        except ValueError as exc:
            raise CtlError(f"--metadata: not valid JSON ({exc})") from None
    if len(body) == 1:
        raise CtlError("memory edit: give the new TEXT or --metadata")
    memory = ctx.client.call("PATCH", _memory_path(args.id), body)
    print(f"edited {memory['id']}  {_one_line(memory['content'])}")
    return EXIT_OK


def _pinner(pinned: bool):
    def cmd(ctx: Context, args) -> int:
        def act(memory_id: str) -> None:
            ctx.client.call("PATCH", _memory_path(memory_id),
                            {"user_id": args.user, "pinned": pinned})
            print(f"{'pinned' if pinned else 'unpinned'} {memory_id}")
        return _each(ctx, args, act)
    return cmd


def cmd_memory_promote(ctx: Context, args) -> int:
    def act(memory_id: str) -> None:
        memory = ctx.client.call("POST", _memory_path(memory_id, "/promote"),
                                 {"user_id": args.user})
        print(f"promoted {memory_id} to the personal scope {memory['user_id']!r}")
    return _each(ctx, args, act)


def cmd_memory_forget(ctx: Context, args) -> int:
    if args.all == bool(args.ids):
        raise CtlError("memory forget: give memory IDs or --all (not both)")
    if args.all:
        if not args.yes and not confirm(f"delete every memory of {args.user!r}? This cannot "
                                        "be undone (`memory export` keeps a copy)"):
            return EXIT_REFUSED
        query = {"user_id": args.user, "all": "true"}
        data = ctx.client.call("DELETE", "/v1/memories", query=query)
        print(f"forgot {data.get('deleted', 0)} memories of {args.user}")
        return EXIT_OK

    def act(memory_id: str) -> None:
        ctx.client.call("DELETE", _memory_path(memory_id), query={"user_id": args.user})
        print(f"forgot {memory_id}")
    return _each(ctx, args, act)


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
                or not obj["content"].strip() or not isinstance(obj.get("metadata") or {}, dict) \
                or not isinstance(obj.get("pinned", False), bool) \
                or obj.get("scope", "project") not in ("project", "personal"):
            raise CtlError(f"{path}:{number}: expected an object with a non-empty 'content' "
                           "string, an optional 'metadata' object, 'pinned' true or false "
                           "and 'scope' project or personal; nothing imported")
        item = {"content": obj["content"], "metadata": obj.get("metadata") or {},
                "pinned": obj.get("pinned", False), "scope": obj.get("scope", "project")}
        if obj.get("created_at") is not None:     # as export writes it: kept
            item["created_at"] = _created_at(obj["created_at"], f"{path}:{number}")
        items.append(item)
    return items


def _created_at(value, where: str) -> str:
    """An exported memory's ``created_at``, checked before anything is sent (the daemon
    checks it again: from 1970 up to now)."""
    try:
        datetime.datetime.fromisoformat(value if isinstance(value, str) else "")
    except ValueError:
        raise CtlError(f"{where}: 'created_at' must be an ISO 8601 time such as "
                       "2026-05-01T09:30:00Z; nothing imported") from None
    return value


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        filled = int(30 * done / max(total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
        sys.stderr.write("\n" if done >= total else "")
        sys.stderr.flush()


def cmd_memory_import(ctx: Context, args) -> int:
    """Lines of the personal scope (an export of it) go back there, the rest to USER."""
    items = _read_jsonl(args.file)
    done = 0
    for scope in ("project", "personal"):
        scoped = [{k: v for k, v in item.items() if k != "scope"}
                  for item in items if item["scope"] == scope]
        owner = {"user_id": args.user} if scope == "project" else {"scope": "personal"}
        for start in range(0, len(scoped), IMPORT_BATCH):
            batch = scoped[start:start + IMPORT_BATCH]
            ctx.client.call("POST", "/v1/memories", {**owner, "memories": batch})
            done += len(batch)
            _progress(done, len(items))
    personal = sum(item["scope"] == "personal" for item in items)
    print(f"imported {len(items)} memories for {args.user}"
          + (f" ({personal} of them to the personal scope)" if personal else ""))
    return EXIT_OK


def cmd_memory_retry_dead(ctx: Context, args) -> int:
    retried = ctx.client.call("POST", "/admin/outbox/retry", {}, admin=True)["retried"]
    print(f"{retried} dead letter{'s' if retried != 1 else ''} back in the outbox queue")
    return EXIT_OK


def cmd_memory_why(ctx: Context, args) -> int:
    """Why a block was injected: the conversation of the call ``trace_id`` (the
    ``x-memproxy-trace-id`` of a call that recalled a turn), each turn's block and memories."""
    query = {"user_id": args.user, "trace_id": args.trace_id}
    turns = ctx.client.call("GET", "/v1/memories/injections", query=query).get("data", [])
    if args.json:
        print(json.dumps(turns, indent=2))
        return EXIT_OK if turns else EXIT_REFUSED
    if not turns:
        print(f"no turn recalled by {args.trace_id} for {args.user} (a later call of a turn "
              "reuses its first call's block: give that call's trace id)", file=sys.stderr)
        return EXIT_REFUSED
    print(f"conversation {turns[0]['conversation']}")
    for turn in turns:
        mark = "  <- this call" if turn.get("this_call") else ""
        shown = len(turn["memories"])
        print(f"turn {turn['turn']}  {turn['created_at']}  trace {turn['trace_id']}  "
              f"{shown} memor{'y' if shown == 1 else 'ies'}{mark}")
        for memory in turn["memories"]:
            content = memory.get("content")
            text = _one_line(content) if content is not None else "(deleted)"
            print(f"  {memory['score']:7.3f}  {memory['id']}  {text}")
    return EXIT_OK


def add_memory_parsers(sub) -> None:
    memory = sub.add_parser("memory", help="manage a user's memories (needs the daemon)")
    msub = memory.add_subparsers(dest="memory_command", metavar="SUBCOMMAND", required=True)
    specs = {  # name: (function, help, [(args, kwargs), ...])
        "add": (cmd_memory_add, "store one memory", [
            (("text",), {"help": "the memory's text"})]),
        "search": (cmd_memory_search, "search memories, best first", [
            (("query",), {"help": "what to look for"}), (("--limit",), {"type": int}),
            (("--json",), {"action": "store_true"})]),
        "list": (cmd_memory_list, "list all memories", [(("--json",), {"action": "store_true"})]),
        "edit": (cmd_memory_edit, "change a memory's text or metadata (re-indexed at once)", [
            (("id",), {"metavar": "ID", "help": "the memory's id (memory list)"}),
            (("text",), {"nargs": "?", "metavar": "TEXT", "help": "its new text"}),
            (("--metadata",), {"metavar": "JSON", "help": "replaces the metadata"})]),
        "pin": (_pinner(True), "pin memories: in every memory block of USER, first", [
            (("ids",), {"nargs": "+", "metavar": "ID", "help": "memory ids (memory list)"})]),
        "unpin": (_pinner(False), "unpin memories", [
            (("ids",), {"nargs": "+", "metavar": "ID", "help": "memory ids (memory list)"})]),
        "promote": (cmd_memory_promote, "move memories to the personal scope ([memory] "
                    "personal), recalled in every project", [
                        (("ids",), {"nargs": "+", "metavar": "ID",
                                    "help": "memory ids (memory list)"})]),
        "forget": (cmd_memory_forget, "delete memories by id, or all of them", [
            (("ids",), {"nargs": "*", "metavar": "ID", "help": "memory ids (memory list)"}),
            (("--all",), {"action": "store_true", "help": "every memory of the user"}),
            (("--yes", "-y"), {"action": "store_true",
                               "help": "with --all: do not ask for confirmation"})]),
        "export": (cmd_memory_export, "all memories as JSONL on stdout", []),
        "import": (cmd_memory_import, "add memories from a JSONL file ('-' = stdin)",
                   [(("file",), {"help": "JSONL, one {\"content\": ...} a line; - = stdin"})]),
        "why": (cmd_memory_why, "why a memory block was injected: the turns of the call's "
                "conversation, each block's memories and scores", [
                    (("trace_id",), {"metavar": "TRACE_ID",
                                     "help": "a call's x-memproxy-trace-id (usage rows have it)"}),
                    (("--json",), {"action": "store_true"})]),
    }
    history.add_parser(msub)
    retry = msub.add_parser("retry-dead", help="retry the outbox's dead letters (exchanges "
                            "the backend rejected for good), every user's")
    retry.set_defaults(func=cmd_memory_retry_dead)
    for name, (func, help_text, arguments) in specs.items():
        p = msub.add_parser(name, help=help_text)
        p.add_argument("user", help="the memory owner (user id or project name)")
        for flags, kwargs in arguments:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(func=func)
