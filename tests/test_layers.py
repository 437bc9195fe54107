"""The layers import downwards only, and no module imports itself back (docs/architecture.md,
"Import order"): a module may import from its own layer and the layers before it, never from a
later one, lazily inside a function or not; and the import graph has no cycle at all."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import harness

ROOT = Path(harness.__file__).parent

#: in order; a layer may import from itself and the layers before it. An entry names a module or
#: a package (with everything under it); the longest entry that names a module decides its layer.
LAYERS = [
    ("core", {"harness", "harness.model", "harness.errors", "harness.atomic", "harness.boundedread",
              "harness.xmlsafe", "harness.multicast", "harness.events"}),
    ("device", {"harness.device"}),
    ("scenario", {"harness.scenario"}),
    ("sim", {"harness.sim"}),
    ("results", {"harness.results"}),
    ("worker", {"harness.worker"}),
    ("devicemodel", {"harness.devicemodel"}),
    ("backends", {"harness.backends"}),
    ("upstream", {"harness.upstream"}),
    ("run", {"harness.run"}),
    ("report", {"harness.report"}),
    ("ci", {"harness.ci"}),
    ("pipeline", {"harness.pipeline"}),
    ("front", {"harness.ci.pytest_plugin", "harness.ci.scheduling", "harness.bisect", "harness.bundle",
               "harness.cli", "harness.__main__"}),
]


def layer_of(module: str) -> int:
    """The layer of ``harness.x.y``: its longest listed entry (``harness`` itself names only the
    package's ``__init__``, so a new core module must be listed)."""
    best = None
    for rank, (_, entries) in enumerate(LAYERS):
        for p in entries:
            inside = module.startswith(p + ".") and p != "harness"
            if (module == p or inside) and (best is None or len(p) > len(best[1])):
                best = (rank, p)
    assert best is not None, f"{module}: in no layer; add it to LAYERS here and to docs/architecture.md"
    return best[0]


def module_name(path: Path) -> str:
    parts = ["harness", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported harness name) for every import in the file, lazy ones included; imports
    under ``if TYPE_CHECKING:`` are left out (they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if _type_checking_only(node) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "harness"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "harness":
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _resolve(name: str, known: dict[str, Path]) -> str:
    """The module an imported name lives in (``harness.x.f`` -> ``harness.x``); the name itself
    when no module of the tree holds it."""
    found = name
    while found not in known and "." in found:
        found = found.rpartition(".")[0]
    return found if found in known else name


def upward_imports() -> list[str]:
    found = []
    known = modules()
    for here, path in known.items():
        for line, name in imports(path):
            target = _resolve(name, known)
            if layer_of(target) > layer_of(here):
                found.append(f"{path.relative_to(ROOT.parent)}:{line}: {here} ({LAYERS[layer_of(here)][0]}) "
                             f"imports {target} ({LAYERS[layer_of(target)][0]})")
    return found


def cycles() -> list[list[str]]:
    """Every import cycle among the modules (a strongly connected component of more than one
    module, or a module importing itself), lazy imports included."""
    known = modules()
    edges = {m: {_resolve(t, known) for _, t in imports(p)} - {m} for m, p in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in known:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(known):
        if m not in index:
            visit(m)
    return sorted(out)


def test_no_layer_imports_a_later_one():
    assert upward_imports() == []


def test_no_import_cycle():
    assert cycles() == []


def _fake_tree(tmp_path, monkeypatch, files: dict[str, str]) -> None:
    fake = tmp_path / "harness"
    for name, text in files.items():
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check above can fail: a scenario module importing the runner is found, lazily or not,
    and one under TYPE_CHECKING is not; nor may a device module import the worker library."""
    _fake_tree(tmp_path, monkeypatch, {
        "scenario/x.py": "from typing import TYPE_CHECKING\n"
                         "def f():\n    from harness.run import runner\n"
                         "if TYPE_CHECKING:\n    from harness.report import html\n",
        "device/y.py": "from harness.worker import steps\n"})
    assert upward_imports() == [
        "harness/device/y.py:1: harness.device.y (device) imports harness.worker.steps (worker)",
        "harness/scenario/x.py:3: harness.scenario.x (scenario) imports harness.run.runner (run)"]


def test_the_check_sees_a_cycle(tmp_path, monkeypatch):
    """Two modules of one layer that import each other (one lazily) are a cycle; one that only
    imports the other is not."""
    _fake_tree(tmp_path, monkeypatch, {
        "run/__init__.py": "", "run/a.py": "from harness.run.b import g\n",
        "run/b.py": "def g():\n    from harness.run import a\n", "run/c.py": "from harness.run import a\n"})
    assert cycles() == [["harness.run.a", "harness.run.b"]]
