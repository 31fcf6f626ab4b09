"""``memproxyctl memory import-history``: a memory from day one, from the transcripts the agent
CLIs already keep on disk.

    memproxyctl memory import-history alpha --from claude-code ~/.claude/projects --since 30d
    memproxyctl memory import-history alpha --from codex ~/.codex/sessions \\
        --map ~/src/beta=beta --dry-run

Every turn goes where its session's working directory says (``--map PATH=PROJECT``, the
longest matching path wins), else to PROJECT; what it stores is what the daemon would have
remembered, had the session gone through it (``memory/history/``), with the turn's own time
as ``created_at``.

Why memproxyctl reads and the daemon writes: the transcripts are the user's files, on the
user's machine, and the daemon may run as another user (a system service) or elsewhere, so
they are read here; everything stored goes through the daemon's memory API
(``POST /v1/memories``), like ``memory import``: the daemon redacts with its own config, on
whichever backend it runs, and a running daemon's index sees each memory at once (writing
the store's file behind its back would not). The reading is the memory layer's own pure code
(``memory/history/``, imported only by this command, as ``mcp`` imports its SDK): the same
extractor as live traffic, never a copy of it.

Stored once, however often it runs: each turn carries a key made from its session and its
id in the transcript; the store keeps one memory per key (the daemon's idempotency key), and
the project's memories are listed first so the summary can say what was there already: a
turn imported before (``metadata.history``), or one the daemon remembered live from the same
session (same conversation, same text).
"""
from __future__ import annotations

import datetime
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

from memproxyd.config import USER_ID_RE
from memproxyd.ctl.client import EXIT_OK, Context, CtlError, DaemonDown, notice

BATCH = 100                      # memories per POST
LIST_PAGE = 1000                 # memories per page when reading what is stored
ALREADY_IMPORTED = "already imported"
ALREADY_LIVE = "already remembered live"
_SPAN = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def since_time(text: str, now: float) -> float:
    """Unix seconds of ``--since``: a span back from now (``90m``, ``12h``, ``30d``, ``2w``)
    or an ISO 8601 date or time (UTC unless it says otherwise)."""
    match = _SPAN.match(text.strip())
    if match:
        return now - int(match[1]) * _UNITS[match[2]]
    try:
        parsed = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CtlError(f"--since {text!r}: expected a span (30d, 12h, 2w, 90m) or an ISO "
                       "date (2026-05-01)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


def parse_maps(given: list[str]) -> list[tuple[str, str]]:
    """(directory, project) of each ``--map PATH=PROJECT``, longest path first."""
    maps = []
    for entry in given:
        path, _, project = entry.rpartition("=")
        if not path or not USER_ID_RE.match(project):
            raise CtlError(f"--map {entry!r}: expected /path/to/repo=PROJECT")
        maps.append((os.path.normpath(os.path.expanduser(path)), project))
    return sorted(maps, key=lambda m: -len(m[0]))


def mapped(cwd: str, maps: list[tuple[str, str]]) -> str | None:
    """The project a ``--map`` gives a session that ran in ``cwd``; None when none does."""
    cwd = os.path.normpath(cwd) if cwd else ""
    for path, project in maps:
        if cwd == path or cwd.startswith(path.rstrip(os.sep) + os.sep):
            return project
    return None


def _progress(done: int, total: int, kept: int) -> None:
    """The bar of ``memory import``, on a terminal only. (tqdm is installed, but only as a
    dependency of a dependency: not worth a pinned runtime dependency for one line.)"""
    if sys.stderr.isatty():
        filled = int(30 * done / max(total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} sessions, "
                         f"{kept} turns")
        sys.stderr.write("\n" if done >= total else "")
        sys.stderr.flush()


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


class Import:
    """One run: what is stored already, what to send, the counts for the summary."""

    def __init__(self, ctx: Context, dry_run: bool):
        self.ctx, self.dry_run = ctx, dry_run
        self.known: dict[str, tuple[set, set]] = {}      # project → (history keys, live)
        self.pending: dict[str, list[dict]] = {}         # project → items not sent yet
        self.kept: Counter = Counter()                   # project → turns stored
        self.skipped: Counter = Counter()                # reason → turns
        self.defaulted: set[str] = set()                 # working directories no map claimed
        self.sessions: set[str] = set()                  # ids of the sessions read

    def stored(self, project: str) -> tuple[set, set]:
        """(history keys, (conversation, the human's words) of live turns) of what
        ``project`` holds (the words, not the whole text: a live answer may have been cut
        where it repeated its memory block, ``memory/echo.py``);
        nothing known when a dry run finds the daemon down."""
        if project not in self.known:
            keys, live = set(), set()
            try:
                for memory in self._pages(project):
                    metadata = memory.get("metadata") or {}
                    if metadata.get("history"):
                        keys.add(metadata["history"])
                    elif metadata.get("conversation"):
                        live.add((metadata["conversation"], _asked(memory.get("content"))))
            except DaemonDown:
                if not self.dry_run:
                    raise
            self.known[project] = keys, live
        return self.known[project]

    def _pages(self, project: str):
        cursor = None
        while True:
            query = {"user_id": project, "limit": LIST_PAGE, **({"cursor": cursor} if cursor
                                                                 else {})}
            page = self.ctx.client.call("GET", "/v1/memories", query=query)
            yield from page.get("data", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def add(self, project: str, session, turn) -> None:
        keys, live = self.stored(project)
        key = session.key(turn)
        if key in keys:
            self.skipped[ALREADY_IMPORTED] += 1
            return
        if (session.conversation, _asked(turn.content)) in live:
            self.skipped[ALREADY_LIVE] += 1
            return
        keys.add(key)
        self.kept[project] += 1
        if self.dry_run:       # the memory as it would be stored, indented under its place
            print(f"{project}  {_iso(turn.created_at)}  {session.client} {session.session_id}")
            print("    " + turn.content.replace("\n", "\n    "))
            return
        self.pending.setdefault(project, []).append({
            "content": turn.content, "created_at": _iso(turn.created_at), "key": key,
            "metadata": {"source": "history", "client": session.client,
                         "session": session.session_id, "cwd": session.cwd,
                         "conversation": session.conversation, "history": key}})
        if len(self.pending[project]) >= BATCH:
            self.flush(project)

    def flush(self, project: str) -> None:
        batch = self.pending.pop(project, [])
        if batch:
            self.ctx.client.call("POST", "/v1/memories", {"user_id": project,
                                                          "memories": batch})

    def summary(self, files: int, unopened: int) -> str:
        label = "turns that would be stored" if self.dry_run else "turns stored"
        notes = ([f"from {files} files"] if files != len(self.sessions) else []) + (
            [f"{unopened} more files not opened: last written before --since"]
            if unopened else [])
        lines = [f"sessions read: {len(self.sessions)}" + (f" ({'; '.join(notes)})"
                                                           if notes else ""),
                 f"{label}: {sum(self.kept.values())}" + (" (" + ", ".join(
                     f"{p}: {n}" for p, n in sorted(self.kept.items())) + ")"
                     if self.kept else ""),
                 f"turns skipped: {sum(self.skipped.values())}"]
        lines += [f"  {reason}: {n}" for reason, n in self.skipped.most_common()]
        if self.defaulted:
            lines.append("working directories no --map named (imported into the default "
                         "project): " + ", ".join(sorted(self.defaulted)))
        return "\n".join(lines)


def cmd_import_history(ctx: Context, args) -> int:
    # The memory layer's readers: imported here only (see the module docstring).
    from memproxyd.memory import history

    client, directory = args.source
    if client not in history.FORMATS:
        raise CtlError(f"--from {client!r}: expected one of {', '.join(history.FORMATS)}")
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise CtlError(f"--from {client} {directory}: not a directory")
    since = since_time(args.since, time.time()) if args.since else 0.0
    maps = parse_maps(args.map or [])
    memory = ctx.config.memory
    rules = history.Rules(memory.max_memory_chars,
                          tuple(re.compile(p) for p in memory.strip_patterns),
                          memory.redact_secrets, since)
    paths = history.find_sessions(client, root)
    opened = [p for p in paths if p.stat().st_mtime >= since]
    run = Import(ctx, args.dry_run)
    for done, path in enumerate(opened, 1):
        session = history.read_session(client, path, rules)
        run.sessions.add(session.session_id)
        project = mapped(session.cwd, maps)
        if project is None and maps and session.cwd:
            run.defaulted.add(session.cwd)
        project = project or args.user
        for turn in session.turns:
            if turn.skipped:
                run.skipped[turn.skipped] += 1
            else:
                run.add(project, session, turn)
        _progress(done, len(opened), sum(run.kept.values()))
    for project in list(run.pending):
        run.flush(project)
    if not opened:
        notice(f"no {client} transcripts under {root}" + (" written since --since"
                                                           if paths else ""))
    print(run.summary(len(opened), len(paths) - len(opened)))
    return EXIT_OK


def add_parser(msub) -> None:
    """``memory import-history`` under ``memproxyctl memory``."""
    p = msub.add_parser("import-history", help="remember past sessions from the transcripts "
                        "Claude Code, Codex or Gemini CLI keep on disk (each turn once, at its "
                        "own time)")
    p.add_argument("user", metavar="PROJECT", help="the project (or user id) that gets the "
                   "sessions no --map names")
    p.add_argument("--from", dest="source", nargs=2, metavar=("CLIENT", "DIR"), required=True,
                   help="claude-code ~/.claude/projects, codex ~/.codex/sessions or "
                   "gemini-cli ~/.gemini/tmp")
    p.add_argument("--since", help="only turns from this far back (30d, 12h, 2w) or this "
                   "date (2026-05-01)")
    p.add_argument("--map", action="append", metavar="PATH=PROJECT",
                   help="sessions run in PATH (or below) go to PROJECT; repeatable")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be stored; store nothing")
    p.set_defaults(func=cmd_import_history)


def _asked(content: str | None) -> str:
    """A stored turn's human part: its text up to the answer."""
    return (content or "").split("\nAssistant: ", 1)[0]
