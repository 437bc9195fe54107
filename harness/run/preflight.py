"""The run's preflight: everything about the scenario and this machine that can be checked before
any engine is built, so a bad input costs nothing and never surfaces mid-run as "internal error".

`check_inputs` is what `validate` runs too: names that become paths, environment values, the
variants' interpreters and the model paths the scenario names. `check_run` adds what only a run
has: the interpreter `--python`/bisect gives, and the file-name limit of the results directory's
file system. Errors in the scenario name its file and key (exit 2); an interpreter the caller gave
is the machine's problem (exit 3, which bisect counts as a skipped revision).
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import InfrastructureError, InputError, ScenarioError
from harness.scenario.schema import Scenario
from harness.scenario.checker import Checker

NAME_MAX = 255  # the common file-name limit; check_run asks the results directory's file system
# The longest file a variant name becomes: the atomic writer's temporary name of a worker's plan,
# ".<variant>-r<repeat>.plan.json.<8 random>.tmp" with repeat < 10 000.
VARIANT_SUFFIX = len(".-r9999.plan.json.12345678.tmp")


def path_name_problem(name: object, name_max: int = NAME_MAX, suffix: int = 0) -> str | None:
    """Why `name` cannot be one file or directory name (None when it can): it must stay inside the
    folder it is joined to, and fit the file system's limit with `suffix` more characters."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if "\0" in name:
        return "contains a NUL character"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{name!r} contains a control character, which a file name should not hold"
    if name in (".", "..") or "/" in name or "\\" in name or os.path.isabs(name):
        return f"{name!r} would leave the results directory: a name is one path component (no '/', no '..')"
    size = len(name.encode("utf-8", errors="surrogatepass")) + suffix
    if size > name_max:
        return (f"is {len(name)} characters long; it becomes a file name, and with what is added to it "
                f"({suffix} characters) that exceeds the file system's limit of {name_max} bytes")
    return None


def check_inputs(sc: Scenario) -> None:
    """The scenario's own values against this machine: refused with ScenarioError (exit 2), every
    problem at once (ScenarioErrors when there are several)."""
    c = Checker(sc.path)
    with c.part():
        _check_names(sc, NAME_MAX)
    for v in sc.variants:
        key = f"variants.{v.name}"
        for name, value in v.env.items():
            if "\0" in name or "=" in name or not name:
                c.note(f"{key}.env", f"{name!r} is not a valid environment variable name")
            elif "\0" in value:
                c.note(f"{key}.env.{name}", "the value contains a NUL character, which no environment variable "
                                            "can hold")
        problem = interpreter_problem(v.python) if v.python is not None else None
        if problem:
            c.note(f"{key}.python", f"interpreter {v.python!r} {problem}")
    engines = [("defaults", sc.defaults)] + [(f"variants.{v.name}.engine", v.engine) for v in sc.variants]
    engines += [(f"steps[{i}].engine", s.engine) for i, s in enumerate(sc.steps)]
    for key, engine in engines:
        model = engine.get("model")
        if isinstance(model, str) and _is_path(model) and not (sc.path.parent / Path(model).expanduser()).exists():
            c.note(f"{key}.model", f"model path {model!r} does not exist")
    c.done()


def check_run(sc: Scenario, out: Path, python: str | None = None, model: str | None = None) -> None:
    """`check_inputs`, the file-name limit under `out`, and the interpreter and model the caller gave."""
    check_inputs(sc)
    _check_names(sc, name_max(out))
    if model is not None and _is_path(model) and not Path(model).expanduser().exists():
        raise InputError(f"--model: model path {model!r} does not exist")
    if python is not None:
        problem = interpreter_problem(python)
        if problem:
            raise InfrastructureError(f"{python}: interpreter {problem}")


def _is_path(model: str) -> bool:
    """A local model directory rather than a hub name (``org/name``)."""
    return model.startswith(("/", "./", "../", "~"))


def interpreter_problem(python: str) -> str | None:
    path = Path(python)
    if not path.exists():
        return "does not exist"
    if path.is_dir():
        return "is a directory, expected an executable"
    if not os.access(path, os.X_OK):
        return "is not executable (no execute permission)"
    return None


def name_max(out: Path) -> int:
    """The file-name limit of the file system `out` is (or will be) on."""
    p = Path(out).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(os.pathconf(p, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return NAME_MAX


def _check_names(sc: Scenario, limit: int) -> None:
    problem = path_name_problem(sc.name, limit)
    if problem:
        raise ScenarioError(sc.path, "name", f"the scenario name {problem}")
    for v in sc.variants:
        problem = path_name_problem(v.name, limit, VARIANT_SUFFIX)
        if problem:
            raise ScenarioError(sc.path, f"variants.{v.name[:40]}", f"the variant name {problem}")
