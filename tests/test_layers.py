"""The packages import downwards only (docs/architecture.md, "Import order"): a module may import
from its own stage and the stages before it, never from a later one, lazily inside a function or not."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import harness

ROOT = Path(harness.__file__).parent

#: in order; a stage may import from itself and the stages before it
STAGES = [
    ("core", {"harness", "harness.model", "harness.errors", "harness.atomic"}),
    ("scenario", {"harness.scenario"}),
    ("sim", {"harness.sim"}),
    ("results", {"harness.results"}),
    ("run", {"harness.run", "harness.backends", "harness.devicemodel", "harness.upstream"}),
    ("report", {"harness.report"}),
    ("top", {"harness.ci", "harness.bisect", "harness.bundle", "harness.cli", "harness.__main__"}),
]


def stage_of(module: str) -> int:
    """The stage of ``harness.x.y``: its longest listed prefix."""
    best = None
    for rank, (_, prefixes) in enumerate(STAGES):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (rank, p)
    assert best is not None, f"{module}: in no stage; add its package to STAGES here and to docs/architecture.md"
    return best[0]


def module_name(path: Path) -> str:
    parts = ["harness", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported harness module) for every import in the file, lazy ones included; imports
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


def upward_imports() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        here = module_name(path)
        for line, target in imports(path):
            if stage_of(target) > stage_of(here):
                found.append(f"{path.relative_to(ROOT.parent)}:{line}: {here} ({STAGES[stage_of(here)][0]}) "
                             f"imports {target} ({STAGES[stage_of(target)][0]})")
    return found


def test_no_stage_imports_a_later_one():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check above can fail: a scenario module importing the runner is found, lazily or not,
    and one under TYPE_CHECKING is not."""
    fake = tmp_path / "harness"
    (fake / "scenario").mkdir(parents=True)
    (fake / "scenario" / "x.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "def f():\n    from harness.run import runner\n"
        "if TYPE_CHECKING:\n    from harness.report import html\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    assert upward_imports() == ["harness/scenario/x.py:3: harness.scenario.x (scenario) imports "
                                "harness.run.runner (run)"]
