"""The package's shape: no import cycles, no imports from a lower layer to a higher one.

The import graph is built from the source with ``ast`` and counts every import: at module
level, inside functions (lazy) and under ``if TYPE_CHECKING``. Layers follow DESIGN.md's
order (bottom up); a module may import its own layer and the layers below it.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "ocistore"

# DESIGN.md's layers, bottom up. Private helpers sit with the layer that owns their concern.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_time", "_files", "_lazy", "_faults", "_lru"),
    ("oci",),
    ("filters", "layout", "_locks"),
    ("content",),
    ("metadata",),
    ("snapshots", "mount"),
    ("estargz",),
    ("archive",),
    ("remotes",),
    ("images",),
    ("transfer",),
    ("server",),
    ("store",),
    ("testing",),
    ("cli", "bench", "__main__"),
]
# the package's own __init__ re-exports the public records: it sits above store
TOP = len(LAYERS)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _is_lazy_module_call(node: ast.AST) -> bool:
    """``lazy_module("ocistore.x")`` (ocistore._lazy) declares an import that runs on first use."""
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "lazy_module"
        and len(node.args) == 1 and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
    )


def import_graph() -> dict[str, set[str]]:
    """module -> the ocistore modules it imports (submodules named in ``from x import y`` too)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                targets = [base]
                targets += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
            elif _is_lazy_module_call(node):
                targets = [node.args[0].value]  # type: ignore[attr-defined]
            for target in targets:
                # the nearest module that exists (``ocistore.oci.mediatypes.X`` -> the module)
                t = target
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                # a module's own ancestor packages are imported implicitly by Python first:
                # they are not dependencies of it
                if t.startswith("ocistore") and t != mod and not mod.startswith(t + "."):
                    graph[mod].add(t)
    return graph


def layer_of(mod: str) -> int:
    if mod == "ocistore":
        return TOP
    first = mod.split(".")[1]
    for i, names in enumerate(LAYERS):
        if first in names:
            return i
    raise AssertionError(f"module {mod} belongs to no layer of DESIGN.md; add it to LAYERS")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    """The scanner itself: a cycle hidden in a function and under TYPE_CHECKING is found."""
    src = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ocistore.store import Store\n"
        "def f():\n    from ocistore.transfer import pull\n"
    )
    tree = ast.parse(src + 'remotes = lazy_module("ocistore.remotes")\n')
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {"ocistore.store", "ocistore.transfer"} <= names
    assert sum(_is_lazy_module_call(n) for n in ast.walk(tree)) == 1
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles in ocistore/: " + "; ".join(" <-> ".join(c) for c in found)


def test_imports_point_down_the_layers() -> None:
    bad = []
    for mod, deps in sorted(import_graph().items()):
        for dep in sorted(deps):
            if layer_of(dep) > layer_of(mod):
                bad.append(f"{mod} imports {dep}")
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(bad)


def test_only_the_cli_and_tests_import_store() -> None:
    users = sorted(m for m, deps in import_graph().items() if "ocistore.store" in deps)
    assert all(m == "ocistore" or m.startswith(("ocistore.cli", "ocistore.testing", "ocistore.bench"))
               for m in users), users


def _grep(pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return sorted(
        _module_name(p) for p in PKG.rglob("*.py") if rx.search(p.read_text())
    )


def test_one_module_computes_blob_paths_and_snapshot_dirs() -> None:
    # on disk: a path joined with "blobs" or "snapshots" is built only by the root layout
    # (ocistore.bench.measure names the directories of a *containerd* root, to measure it)
    assert _grep(r'/ "(blobs|snapshots)"|"(blobs|snapshots)" /') == ["ocistore.bench.measure", "ocistore.layout"]
    # a digest's hex becomes a path component in the store's layout and in an OCI image
    # layout's names (ocistore.oci.imagelayout), nowhere else
    assert _grep(r"\bencoded\(") == ["ocistore.layout", "ocistore.oci.digest", "ocistore.oci.imagelayout"]
    assert _grep(r"def (snapshot_dir|snapshot_fs|blob_name)\b") == ["ocistore.layout", "ocistore.oci.imagelayout"]


def test_lazy_imports_are_allowed_only_for_the_cli_verbs() -> None:
    """ruff's PLC0415 (import outside the top level) is on, except for the CLI's verb loading."""
    lint = tomllib.loads((PKG.parent / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "PLC0415" not in lint["ignore"]
    allowed = {path for path, rules in lint["per-file-ignores"].items() if "PLC0415" in rules}
    assert allowed <= {"ocistore/cli/**", "tests/**", "benches/**"}, allowed


@pytest.mark.parametrize("module", ["ocistore", "ocistore.store", "ocistore.cli"])
def test_each_entry_point_imports_on_its_own(module: str) -> None:
    """No hidden order dependence: each entry module imports in a fresh interpreter."""
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
