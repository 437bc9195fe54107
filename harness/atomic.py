"""Results are never half-written: write to a temporary name in the same folder, then rename."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


def temporary_name(path: Path) -> Path:
    """Where `path` is written before the rename: hidden, in the same folder (one file system)."""
    return path.with_name(f".{path.name}.tmp")


def write_with(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` fills a temporary file beside `path`, which then replaces `path` in one rename."""
    tmp = temporary_name(path)
    try:
        write(tmp)
    except BaseException:  # a full disk: the previous file stays whole, and no partial one is left
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    write_with(path, write)


def write_junit(path: Path, xml) -> None:
    """A junitparser JUnitXml, pretty-printed."""
    write_with(path, lambda tmp: xml.write(str(tmp), pretty=True))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
