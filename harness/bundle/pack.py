"""Pack a site tree: the file list with sha256s, what a delta stores, a deterministic tar.xz in parts."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Sequence

from harness.bundle.install import Log, _fmt_size, sha256_file
from harness.errors import HarnessError
from harness.run import procs


def scan_tree(site: Path) -> dict[str, dict]:
    """Every file of the tree: {relative path: {sha256, size, exec}}."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(site):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            rel = p.relative_to(site).as_posix()
            st = p.stat()
            files[rel] = {"sha256": sha256_file(p), "size": st.st_size, "exec": bool(st.st_mode & 0o100)}
    return files


def choose_payload(files: dict[str, dict], base: dict | None, log: Log) -> tuple[str, list[str], list[str]]:
    """(kind, files to store, files to delete): a delta over the base bundle's manifest holds only
    the files whose sha256 or executable bit differ, unless that is not smaller than the tree."""
    if base:
        bf = base["files"]
        changed = [r for r in sorted(files) if r not in bf or bf[r]["sha256"] != files[r]["sha256"]
                   or bool(bf[r].get("exec")) != files[r]["exec"]]
        if sum(files[r]["size"] for r in changed) < sum(f["size"] for f in files.values()):
            return "delta", changed, sorted(set(bf) - set(files))
        log(f"a delta over {base['name']} would not be smaller: building a full bundle")
    return "full", sorted(files), []


def pack_tar_xz(site: Path, members: Sequence[str], files: dict[str, dict], archive: Path, preset: int,
                log: Log) -> None:
    """A deterministic tar.xz: members grouped by file type (better compression), fixed metadata."""
    order = sorted(members, key=lambda r: (Path(r).suffix, Path(r).name, r))
    tar_path = archive.with_suffix("")  # .tar
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tf:
        for rel in order:
            ti = tarfile.TarInfo(rel)
            ti.size = files[rel]["size"]
            ti.mode = 0o755 if files[rel]["exec"] else 0o644
            ti.mtime = 0
            with open(site / rel, "rb") as f:
                tf.addfile(ti, f)
    t0 = time.monotonic()
    if shutil.which("xz"):
        res = procs.run(["xz", "-T0", f"-{preset}e", "-f", str(tar_path)], timeout=3600)
        if not res:
            raise HarnessError(f"xz failed: {res.output.strip()[-500:]}")
    else:
        import lzma
        with open(tar_path, "rb") as src, lzma.open(archive, "wb", preset=preset | lzma.PRESET_EXTREME) as dst:
            shutil.copyfileobj(src, dst, 2**20)
        tar_path.unlink()
    log(f"packed {len(order)} files into {archive.name}: {_fmt_size(archive.stat().st_size)} "
        f"({time.monotonic() - t0:.0f} s)")


def split_parts(archive: Path, part_size: int) -> list[dict]:
    """Cut the archive into <name>.000, .001... of at most part_size bytes (the manifest's parts)."""
    parts = []
    with open(archive, "rb") as f:
        i = 0
        while True:
            chunk = f.read(part_size)
            if not chunk and i:
                break
            name = f"{archive.name}.{i:03d}"
            (archive.parent / name).write_bytes(chunk)
            parts.append({"name": name, "size": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
            i += 1
            if len(chunk) < part_size:
                break
    archive.unlink()
    return parts

