"""The layer rules of the package layout (README, Architecture), read from every module's
imports with ``ast``: a failure names the file and the import that crosses a rule or closes a
circle. Imports under ``if TYPE_CHECKING:`` count too: a circle for the type checker is a
circle for the reader."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "memproxyd"
SCRIPTS = REPO / "scripts"
# The composition root: the one core module that puts every layer together.
ROOT = "memproxyd.app"
BACKENDS = ("memproxyd.memory.wire", "memproxyd.memory.sqlite", "memproxyd.memory.postgres",
            "memproxyd.memory.supermemory")
# and the transcript readers (pure: files in, memories out), so import-history stores what
# live traffic would have, through the daemon's API (memproxyd/ctl/history.py says why)
CTL_ALLOWED = ("memproxyd.config", "memproxyd.registry", "memproxyd.addresses",
               "memproxyd.memory.history")


def module_name(path: Path, top: Path, prefix: str) -> str:
    parts = list(path.relative_to(top).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([prefix, *parts] if prefix else parts)


def modules(top: Path, prefix: str) -> dict[str, Path]:
    return {module_name(p, top, prefix): p for p in sorted(top.rglob("*.py"))
            if "__pycache__" not in p.parts}


def imports(path: Path, name: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) of every import of a module in ``known``, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((node.lineno, full if full in known else base))
    return [(line, module) for line, module in found if module in known]


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) <= 2:
        return "core"
    if parts[1] == "memory":
        under = ".".join(parts[:3])
        return under if under in BACKENDS else "memory"
    return parts[1]


def under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def broken_rule(source: str, target: str) -> str | None:
    """Why ``source`` may not import ``target``, or None."""
    a, b = layer(source), layer(target)
    if b == "api" and a != "api" and source != ROOT:
        return "api/ is the top: nothing imports it but app.py"
    if a == "core" and b != "core" and source != ROOT and target != "memproxyd":
        return "core imports none of api/, proxy/, observe/, memory/"
    if a == "proxy" and under(target, "memproxyd.memory") and target != "memproxyd.memory.base":
        return "proxy/ imports from memory/ only base.py"
    if a == "observe" and b in ("api", "proxy") or a == "observe" and under(target,
                                                                            "memproxyd.memory"):
        return "observe/ imports none of api/, proxy/, memory/"
    if under(source, "memproxyd.memory") and b in ("api", "proxy", "observe"):
        return "memory/ imports none of api/, proxy/, observe/"
    if a in BACKENDS and b in BACKENDS and a != b:
        return "memory/wire/ and the backends never import each other"
    if a == "ctl" and b != "ctl" and target not in (*CTL_ALLOWED, "memproxyd"):
        return "ctl/ imports only config, registry, addresses of the server side"
    return None


def graph(top: Path, prefix: str) -> dict[str, list[tuple[int, str]]]:
    found = modules(top, prefix)
    known = set(found)
    return {name: imports(path, name, known) for name, path in found.items()}


def circles(edges: dict[str, list[tuple[int, str]]]) -> list[list[str]]:
    """Every import circle (Tarjan's strongly connected components of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for _, nxt in edges.get(node, ()):
            if nxt == node:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return out


def test_every_import_keeps_the_layer_rules():
    found = modules(PACKAGE, "memproxyd")
    broken = [f"{found[source].relative_to(REPO)}:{line} imports {target}: {why}"
              for source, targets in graph(PACKAGE, "memproxyd").items()
              for line, target in targets if (why := broken_rule(source, target))]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("top, prefix", [(PACKAGE, "memproxyd"), (SCRIPTS, "")],
                         ids=["memproxyd", "scripts"])
def test_no_import_circles(top, prefix):
    edges = graph(top, prefix)
    found = circles(edges)
    assert not found, "\n".join(
        " <-> ".join(group) + ": " + "; ".join(
            f"{m} line {line} imports {t}" for m in group for line, t in edges[m] if t in group)
        for group in found)


@pytest.mark.parametrize("source, target, rule", [
    ("memproxyd.memory.service", "memproxyd.proxy.pipeline", "memory/"),
    ("memproxyd.proxy.pipeline", "memproxyd.api.validate", "api/"),
    ("memproxyd.proxy.upstream", "memproxyd.memory.service", "proxy/"),
    ("memproxyd.observe.record", "memproxyd.memory.base", "observe/"),
    ("memproxyd.sessions", "memproxyd.observe.meter", "core"),
    ("memproxyd.memory.sqlite.lexical", "memproxyd.memory.wire.sse", "backends"),
    ("memproxyd.ctl.cli", "memproxyd.sessions", "ctl/"),
])
def test_the_rules_refuse_what_they_name(source, target, rule):
    assert rule in broken_rule(source, target)


def test_a_circle_is_found_with_its_imports():
    edges = {"a": [(3, "b")], "b": [(5, "c")], "c": [(1, "a")], "d": [(2, "a")]}
    assert circles(edges) == [["a", "b", "c"]]


def test_every_module_imports():
    """An import the move left pointing nowhere fails here, not on the first call that runs it
    (the search worker, a backend chosen by config)."""
    import importlib
    for name in modules(PACKAGE, "memproxyd"):
        if not name.endswith("__main__"):
            importlib.import_module(name)
