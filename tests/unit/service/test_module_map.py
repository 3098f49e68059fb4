"""The shape of the service package: no import cycles between its modules, none too large.

Every import counts, also those inside functions and under TYPE_CHECKING: a cycle
there is still a cycle for the reader (and a lazy import hides it from Python).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import osbake.service

MAX_LINES = 800  # the limit for every source file of osbake


def modules(root: Path, package: str) -> dict[str, Path]:
    """Module name -> file, for every .py file under `root` (the package `package`)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([package, *parts])] = path
    return found


def _resolved(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in the module `name` (file `path`); `import a.b`
    gives ("a.b", []), `from .x import y` gives ("pkg.x", ["y"]) with the package resolved."""
    is_package = path.name == "__init__.py"
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((base, [alias.name for alias in node.names]))
    return found


def imported(path: Path, name: str) -> set[str]:
    """Every module name the module imports (`from a import b` counts as a and a.b)."""
    found: set[str] = set()
    for base, names in _resolved(path, name):
        found.add(base)
        found |= {f"{base}.{n}" for n in names}
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of `known` that the module `name` (in file `path`) imports."""
    found: set[str] = set()
    for base, names in _resolved(path, name):
        if not names:
            if base in known:
                found.add(base)
            continue
        for alias in names:
            if f"{base}.{alias}" in known:
                found.add(f"{base}.{alias}")  # a module of a package
            elif base in known:
                found.add(base)
    found.discard(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    found = modules(root, package)
    return {name: imports(path, name, set(found)) for name, path in found.items()}


SERVICE = Path(osbake.service.__file__).parent


def test_the_service_package_has_no_import_cycle() -> None:
    graph = import_graph(SERVICE, "osbake.service")
    assert "osbake.service.deps" in graph  # the walk found the modules
    assert cycles(graph) == []


def test_no_service_module_imports_the_build() -> None:
    """The console queues builds and workers run `osbake build` as a command: the build's
    code (and its step keys) never depend on the service's."""
    found = modules(SERVICE, "osbake.service")
    importers = {
        name: sorted(
            m for m in imported(path, name) if m == "osbake.build" or m.startswith("osbake.build.")
        )
        for name, path in found.items()
    }
    assert {name: hits for name, hits in importers.items() if hits} == {}


BUILD_LOADED = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(sorted(m for m in sys.modules if m == "osbake.build" or m.startswith("osbake.build.")))
"""


@pytest.mark.real_subprocess
def test_loading_the_service_does_not_load_the_build() -> None:
    # (the migrations run inside alembic, not as imports)
    names = sorted(n for n in modules(SERVICE, "osbake.service") if ".migrations" not in n)
    assert "osbake.service.worker" in names
    result = subprocess.run(
        [sys.executable, "-c", BUILD_LOADED, *names], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_service_module_is_over_the_size_limit() -> None:
    sizes = {
        str(path.relative_to(SERVICE)): len(path.read_text().splitlines())
        for path in SERVICE.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_cycles_are_found_through_lazy_and_relative_imports(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "app.py").write_text("def make():\n    from pkg.web import pages\n")
    (tmp_path / "web" / "__init__.py").write_text("from . import pages\n")
    (tmp_path / "web" / "pages.py").write_text("from ..app import make\nimport pkg.free\n")
    (tmp_path / "free.py").write_text("import os\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.web"] == {"pkg.web.pages"}
    assert graph["pkg.web.pages"] == {"pkg.app", "pkg.free"}
    assert cycles(graph) == [["pkg.app", "pkg.web.pages"]]
    (tmp_path / "app.py").write_text("")
    assert cycles(import_graph(tmp_path, "pkg")) == []


def test_imports_through_packages_and_lazy_imports_are_seen(tmp_path: Path) -> None:
    (tmp_path / "worker.py").write_text(
        "from osbake import build as b\ndef f():\n    import osbake.build.steps\n"
    )
    seen = imported(tmp_path / "worker.py", "pkg.worker")
    assert {"osbake.build", "osbake.build.steps"} <= seen
