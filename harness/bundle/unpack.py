"""Unpack wheels into one site tree, ``pip install --target`` layout, with ``installer``.

purelib and platlib go into the tree, scripts into <tree>/bin, other .data (headers, data) nowhere.
On the way in, files a dense model on the node never loads are dropped and CUDA fat binaries are
compacted, so each RECORD that ``installer`` writes lists exactly the files of its distribution as
they are in the tree.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import re
import zipfile
from pathlib import Path
from typing import BinaryIO, Sequence

import installer
from installer.destinations import SchemeDictionaryDestination
from installer.exceptions import InstallerError
from installer.records import InvalidRecordEntry, RecordEntry, parse_record_file
from installer.sources import WheelFile

from harness.bundle.fatbin import compact_fatbin_data
from harness.bundle.install import Log, _fmt_size
from harness.errors import HarnessError

INSTALLER_NAME = b"harness-bundle\n"
_SITE_SCHEMES = ("purelib", "platlib")
_EXT_PY = re.compile(r"\.cpython-(\d)(\d+)[^/]*\.so$")


def other_python_extension(rel: str, python_version: str) -> bool:
    """Whether `rel` is an extension module built for another CPython than `python_version`."""
    m = _EXT_PY.search(rel)
    return bool(m) and f"{m[1]}.{m[2]}" != python_version


class _Wheel(WheelFile):
    """installer's wheel reader, but a member whose permission bits say executable is executable
    even when its zip entry lacks the file-type bits (as the trees bundled so far were built)."""

    def __init__(self, f: zipfile.ZipFile) -> None:
        super().__init__(f)
        self._executable = {i.filename for i in f.infolist() if (i.external_attr >> 16) & 0o111}

    def get_contents(self):
        for record, stream, is_executable in super().get_contents():
            yield record, stream, is_executable or record[0] in self._executable


class SiteTree(SchemeDictionaryDestination):
    """Where installer writes: one site tree for every wheel of the bundle. Dropped and compacted
    files are collected in ``dropped`` and ``compacted`` (manifest entries)."""

    def __init__(self, site: Path, *, drop: Sequence[str], python_version: str, cuda_arch: int | None,
                 log: Log):
        super().__init__(scheme_dict={"purelib": str(site), "platlib": str(site), "scripts": str(site / "bin")},
                         interpreter="python3", script_kind="posix", overwrite_existing=True)
        self.drop, self.python_version, self.cuda_arch, self.log = tuple(drop), python_version, cuda_arch, log
        self.dropped: list[dict] = []
        self.compacted: list[dict] = []

    def drop_rule(self, rel: str) -> str | None:
        rule = next((pat for pat in self.drop if fnmatch.fnmatchcase(rel, pat)), None)
        if rule is None and other_python_extension(rel, self.python_version):
            rule = "extension module for another Python version"
        return rule

    def write_file(self, scheme, path, stream: BinaryIO, is_executable: bool) -> RecordEntry | None:
        if scheme not in self.scheme_dict:  # headers, data: not part of a --target tree
            return None
        path = os.fspath(path)
        rel = f"bin/{path}" if scheme == "scripts" else path
        rule = self.drop_rule(rel)
        if rule:
            h, size = hashlib.sha256(), 0
            for chunk in iter(lambda: stream.read(2**20), b""):
                h.update(chunk)
                size += len(chunk)
            self.dropped.append({"path": rel, "size": size, "sha256": h.hexdigest(), "rule": rule})
            return None
        if self.cuda_arch and rel.endswith(".so"):
            data = bytearray(stream.read())
            res = compact_fatbin_data(data, int(self.cuda_arch), rel)
            if res:
                self.compacted.append({"path": rel, **res})
                self.log(f"compacted {rel} to sm_{self.cuda_arch}: {res['entries_removed']} entries, "
                         f"{_fmt_size(res['bytes_zeroed'])} removed")
            stream = io.BytesIO(data)
        # Scripts are copied as they are (no shebang rewriting): the tree is used through
        # PYTHONPATH with the node's interpreter, whose path is not known here.
        return self.write_to_fs(scheme, path, stream, is_executable or scheme == "scripts")

    def write_script(self, name, module, attr, section) -> RecordEntry | None:
        return None  # no entry-point launchers, for the same reason

    def finalize_installation(self, scheme, record_file_path, records) -> None:
        # purelib and platlib are the same folder: list both without a "./" prefix.
        kept = [(scheme if s in _SITE_SCHEMES else s, r) for s, r in records if r is not None]
        super().finalize_installation(scheme, record_file_path, kept)


def unpack_wheel(whl: Path, tree: SiteTree) -> None:
    """Install one wheel into the tree."""
    try:
        with zipfile.ZipFile(whl) as z:
            installer.install(_Wheel(z), tree, {"INSTALLER": INSTALLER_NAME})
    except (InstallerError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise HarnessError(f"{whl}: cannot unpack this wheel ({type(e).__name__}: {e})") from None


def check_records(site: Path) -> list[str]:
    """Problems with the tree's RECORD files: a listed file missing or with another hash, or a file
    no RECORD lists. Empty when the tree is consistent."""
    listed, problems = set(), []
    for rec in sorted(site.glob("*.dist-info/RECORD")):
        where = f"{rec.parent.name}/RECORD"
        try:
            entries = [RecordEntry.from_elements(*row)
                       for row in parse_record_file(rec.read_text(encoding="utf-8").splitlines())]
        except InvalidRecordEntry as e:
            problems.append(f"{where}: unreadable ({'; '.join(e.issues)})")
            continue
        for entry in entries:
            listed.add(entry.path)
            if entry.hash_ is None:
                continue
            p = site / entry.path
            if not p.is_file():
                problems.append(f"{entry.path}: listed in {where} but missing")
                continue
            with open(p, "rb") as f:
                if not entry.validate_stream(f):
                    problems.append(f"{entry.path}: hash differs from {where}")
    for p in site.rglob("*"):
        rel = p.relative_to(site).as_posix()
        if p.is_file() and rel not in listed:
            problems.append(f"{rel}: in no RECORD")
    return problems
