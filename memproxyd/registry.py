"""The project registry: project name → listener port, kept in one small JSON file.

    {"version": 1, "projects": {"alpha": {"port": 8888, "created": "...", "description": "",
                                          "models": ["gpt-4o-mini"]}}}

``models`` (optional; ``[access]``, see ``access.py``): the model names, wildcards allowed,
the project may use; absent or empty, the ``[access]`` rules decide.

Readers never see a half-written file (temp file in the same directory, fsync, ``os.replace``);
writers hold one exclusive lock (``<registry>.lock`` beside it) across the whole
read-modify-write, so concurrent ``memproxyctl add-project`` calls never lose a mapping.
A registry that does not parse is reported, never reset::

    >>> add_project(Path("/tmp/projects.json"), "alpha", 8888).port
    8888
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import attrs
import filelock

VERSION = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_NAME_LEN = 64
PORT_MIN, PORT_MAX = 1024, 65535
LOCK_TIMEOUT = 10.0  # seconds; a writer holds the lock for milliseconds
_ENTRY_TYPES = {"port": int, "created": str, "description": str, "models": list}


class RegistryError(Exception):
    """A refused change or an unusable registry; the message names the problem."""


class ProjectNotFound(RegistryError):
    """The named project is not in the registry."""


class RegistryCorruptError(RegistryError):
    """The registry file exists but cannot be read or does not make sense."""


@attrs.frozen
class Project:
    name: str
    port: int
    created: str
    description: str = ""
    models: tuple[str, ...] = ()

    def to_json(self) -> dict:
        out = {"name": self.name, "port": self.port, "created": self.created,
               "description": self.description}
        if self.models:
            out["models"] = list(self.models)
        return out


def validate_name(name: object) -> str:
    """Return ``name`` if it is a usable project name, else raise RegistryError."""
    if not isinstance(name, str) or not name:
        raise RegistryError("invalid project name: empty")
    if len(name) > MAX_NAME_LEN:
        raise RegistryError(f"invalid project name {name[:20]!r}...: "
                            f"longer than {MAX_NAME_LEN} characters")
    if not NAME_RE.fullmatch(name):
        raise RegistryError(f"invalid project name {name!r}: use letters, digits, '_', '.', '-' "
                            "and start with a letter or digit (no spaces or path characters)")
    return name


def validate_port(port: object) -> int:
    """Return ``port`` if it is a non-privileged TCP port, else raise RegistryError."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise RegistryError(f"invalid port {port!r}: expected an integer")
    if not PORT_MIN <= port <= PORT_MAX:
        reason = "privileged" if 0 <= port < PORT_MIN else "out of range"
        raise RegistryError(f"invalid port {port}: {reason} (expected {PORT_MIN}-{PORT_MAX})")
    return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing else listens on ``host:port`` (tried by binding it, as the daemon will)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The daemon binds with SO_REUSEADDR too, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def read_registry(path: Path) -> dict[str, Project]:
    """All projects, in the order they were added. A missing file is an empty registry."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryCorruptError(f"{path}: cannot read registry: {exc}") from None
    return _parse(path, text)


MAX_DESCRIPTION = 500


def validate_description(description) -> str:
    if not isinstance(description, str):
        raise RegistryError("invalid description: expected a string")
    if len(description) > MAX_DESCRIPTION:
        raise RegistryError(f"invalid description: longer than {MAX_DESCRIPTION} characters")
    return description


def add_project(path: Path, name: str, port: int | None = None, *,
                port_range: tuple[int, int] = (8800, 8899), description: str = "",
                reserved: Iterable[int] = (), host: str = "127.0.0.1",
                models: Iterable[str] = ()) -> Project:
    """Map ``name`` to ``port`` (or the first free, unmapped port in ``port_range``).

    ``reserved`` ports (e.g. the gateway's own) are never handed out. Refusals raise
    RegistryError and leave the file untouched.
    """
    validate_name(name)
    if port is not None:
        validate_port(port)
    validate_description(description)
    models = validate_models(models)
    path = Path(path)
    with _locked(path):
        projects = read_registry(path)
        if name in projects:
            raise RegistryError(f"project {name!r} already exists (port {projects[name].port})")
        taken = {p.port: p.name for p in projects.values()}
        if port is None:
            port = _pick_port(port_range, set(taken) | set(reserved), host)
        elif port in taken:
            raise RegistryError(f"port {port} is already mapped to project {taken[port]!r}")
        elif port in set(reserved):
            raise RegistryError(f"port {port} is reserved (the gateway's own port)")
        elif not port_is_free(port, host):
            raise RegistryError(f"port {port} is in use by another process")
        project = Project(name, port, _now(), description, models)
        _write(path, {**projects, name: project})
    return project


def remove_project(path: Path, name: str) -> Project:
    """Drop ``name`` from the registry and return it; an unknown name raises RegistryError."""
    path = Path(path)
    with _locked(path):
        projects = read_registry(path)
        if name not in projects:
            raise ProjectNotFound(f"no project named {name!r} in {path}")
        removed = projects.pop(name)
        _write(path, projects)
    return removed


# -- internals ---------------------------------------------------------------------------

def _pick_port(port_range: tuple[int, int], taken: set[int], host: str) -> int:
    lo, hi = port_range
    for candidate in range(max(lo, PORT_MIN), min(hi, PORT_MAX) + 1):
        if candidate not in taken and port_is_free(candidate, host):
            return candidate
    raise RegistryError(f"no free port left in the project range {lo}-{hi}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _locked(path: Path) -> "_Lock":
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryError(f"{path.parent}: cannot create registry directory: {exc}") from None
    return _Lock(path.with_name(path.name + ".lock"))


class _Lock:
    """The registry's exclusive lock; a timeout becomes a RegistryError naming the lock file."""

    def __init__(self, lock_path: Path):
        self._lock = filelock.FileLock(lock_path, timeout=LOCK_TIMEOUT, thread_local=False)

    def __enter__(self):
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise RegistryError(f"{self._lock.lock_file}: registry is locked by another "
                                f"process (waited {LOCK_TIMEOUT:.0f}s)") from None
        return self

    def __exit__(self, *exc_info):
        self._lock.release()


def _write(path: Path, projects: dict[str, Project]) -> None:
    doc = {"version": VERSION, "projects": {
        p.name: {"port": p.port, "created": p.created, "description": p.description,
                 **({"models": list(p.models)} if p.models else {})}
        for p in projects.values()}}
    data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)   # the state dir's files are the owner's alone
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _parse(path: Path, text: str) -> dict[str, Project]:
    def fail(reason: str):
        return RegistryCorruptError(f"{path}: corrupt registry: {reason} "
                                    "(fix or remove the file; it was left unchanged)")

    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, _DuplicateKey) as exc:
        raise fail(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or set(doc) != {"version", "projects"}:
        raise fail('expected an object with exactly "version" and "projects"')
    if doc["version"] != VERSION:
        raise fail(f"unsupported version {doc['version']!r} (expected {VERSION})")
    if not isinstance(doc["projects"], dict):
        raise fail('"projects" must be an object of name → {port, created, description}')
    projects: dict[str, Project] = {}
    ports: dict[int, str] = {}
    for name, entry in doc["projects"].items():
        try:
            project = _project(name, entry)
        except RegistryError as exc:
            raise fail(f"project {name!r}: {exc}") from None
        if project.port in ports:
            raise fail(f"port {project.port} is mapped twice ({ports[project.port]!r}, {name!r})")
        ports[project.port] = name
        projects[name] = project
    return projects


def _project(name: str, entry: object) -> Project:
    validate_name(name)
    if not isinstance(entry, dict):
        raise RegistryError("expected an object with port, created, description")
    unknown = sorted(set(entry) - set(_ENTRY_TYPES))
    if unknown:
        raise RegistryError(f"unknown key {unknown[0]!r}")
    for key, kind in _ENTRY_TYPES.items():
        if key in ("port", "models"):
            continue
        if not isinstance(entry.get(key, ""), kind):
            raise RegistryError(f"{key!r} must be a string")
    if "port" not in entry:
        raise RegistryError("missing 'port'")
    validate_port(entry["port"])
    return Project(name, entry["port"], entry.get("created", ""), entry.get("description", ""),
                   validate_models(entry.get("models", [])))


def validate_models(models: object) -> tuple[str, ...]:
    """A project's model list: names or wildcard patterns, as a tuple."""
    if not isinstance(models, (list, tuple)) or not all(isinstance(m, str) and m.strip()
                                                        for m in models):
        raise RegistryError("'models' must be a list of model names")
    return tuple(m.strip() for m in models)


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(f"duplicate key {key!r}")
        seen[key] = value
    return seen
