"""Results are never half-written: write to a temporary file in the same folder, then rename.

Every result file goes through `write_bytes`, the harness's one write path: a full disk or a
file-size limit raises `DiskFull` (exit 3, naming the file system) and leaves the previous file
whole. Each writer gets its own temporary name (`tempfile.mkstemp`), so two processes writing the
same file never write into each other's temporary file; the last rename wins, whole.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from harness import xmlsafe
from harness.errors import InfrastructureError

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFull(InfrastructureError):
    """The file system holding the results is full (or a quota or file-size limit was reached)."""

    def __init__(self, path: Path, error: OSError):
        self.path, self.errno = Path(path), error.errno
        super().__init__(f"{mount_point(self.path)}: disk full ({error.strerror or error}) while writing "
                         f"{self.path}; the run stopped, what was written before is kept")


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in _FULL


def mount_point(path: Path) -> Path:
    """The mount point of the file system `path` is on (the disk a message names)."""
    p = Path(os.path.abspath(path))
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def temporaries(path: Path) -> list[Path]:
    """The temporary files of writers of `path` that were killed before their rename."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    """`data` into a unique temporary file beside `path`, synced, then renamed over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:  # the previous file stays whole, and no partial one is left
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if is_disk_full(e):
            raise DiskFull(path, e) from None
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8", errors="backslashreplace"))  # a lone surrogate as \\udXXX


def write_junit(path: Path, xml) -> None:
    """A junitparser JUnitXml, indented, every text made XML-safe (xmlsafe.py)."""
    root = xml._elem
    xmlsafe.sanitise(root)
    ElementTree.indent(root)
    write_bytes(path, ElementTree.tostring(root, encoding="utf-8", xml_declaration=True))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
