"""Safe YAML reading: bytes -> UTF-8 text -> data, every failure a ScenarioError with a line number.

PyYAML's SafeLoader never runs code, but a "billion laughs" document is cheap to parse and
explodes only when something walks it. We measure the expanded size on the composed node graph
(memoised per node, so the bomb itself costs nothing) and refuse it before constructing objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness import boundedread
from harness.errors import ScenarioError

#: what a scenario file is called
SUFFIXES = (".yaml", ".yml")

MAX_BYTES = 4 * 1024 * 1024
MAX_EXPANDED_NODES = 200_000


def read_text(path: Path) -> str:
    data = boundedread.read(path, MAX_BYTES, lambda msg: ScenarioError(path, None, msg), "a YAML file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ScenarioError(path, None, f"line {line}: not UTF-8 (byte 0x{data[e.start]:02x})") from None


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # breaks recursive aliases
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(n, memo) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _key_text(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _check_duplicates(path: Path, node: yaml.Node, where: str, seen: set[int]) -> None:
    """Refuse a mapping that names one key twice. PyYAML keeps the last one silently, so a
    second `with_fix:` variant or a second `steps:` would quietly replace the first."""
    if id(node) in seen:  # an alias: already checked where its anchor is
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(path, item, f"{where}[{i}]", seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], yaml.Node] = {}
        for key, value in node.value:
            text = _key_text(key)
            child = f"{where}.{text}" if where else str(text)
            if text is not None and key.tag != _MERGE_TAG:
                previous = first.setdefault((key.tag, text), key)
                if previous is not key:
                    raise ScenarioError(path, child, f"line {key.start_mark.line + 1}: duplicate key {text!r} "
                                                     f"(first given at line {previous.start_mark.line + 1})")
            _check_duplicates(path, value, child, seen)


def _syntax_message(e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    if isinstance(e, yaml.constructor.ConstructorError) and e.problem and "tag" in e.problem:
        tag = e.problem.split("tag", 1)[1].strip(" '").replace("tag:yaml.org,2002:", "!!")
        return (f"{where}YAML tag {tag!r} is not allowed: scenarios are read with YAML's safe loader "
                "(mappings, lists, strings, numbers and booleans only)")
    problem = e.problem or e.context or "invalid YAML"
    if e.problem and e.context:
        problem = f"{e.context}, {e.problem}"
    if "'\\t'" in problem:
        problem += " (a tab: indent YAML with spaces)"
    return f"{where}YAML syntax error: {problem}"


def load(path: Path) -> Any:
    text = read_text(path)
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses a control character (a raw ESC) at once
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_EXPANDED_NODES:
            raise ScenarioError(
                path, None,
                f"YAML expands to {size} nodes through aliases (limit {MAX_EXPANDED_NODES}); refused",
            )
        _check_duplicates(path, node, "", set())
        return loader.construct_document(node)
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise ScenarioError(path, None, f"line {line}, column {column}: character U+{e.character:04X} is not "
                                        "allowed in YAML (a control character: in a double-quoted string "
                                        "write it as an escape such as \\x1b)") from None
    except yaml.MarkedYAMLError as e:
        raise ScenarioError(path, None, _syntax_message(e)) from None
    except yaml.YAMLError as e:
        raise ScenarioError(path, None, "YAML error: " + " ".join(str(e).split())) from None
    except RecursionError:
        raise ScenarioError(path, None, "YAML nests too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
