"""Build a bundle (on a machine with network): fetch, unpack, slim, pack.

``build`` fetches the package's wheel and the dependency wheels the node lacks (``resolve``),
installs them into one site tree, dropping what a dense model on the node never loads and
optionally compacting the CUDA fat binaries to the node's architecture (``unpack``, ``fatbin``),
and packs the tree into parts with a manifest (``pack``). With ``delta_against`` (an earlier
bundle) it packs only the files whose sha256 differ, plus the list of deleted files. The bundle
carries ``install.py``, the node's installer.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from harness.bundle import install as node
from harness.bundle.defaults import (DEFAULT_CACHE, DEFAULT_DEPS, DEFAULT_DROP, DEFAULT_PART_SIZE, DEFAULT_PLATFORMS,
                                     HARNESS_DEPS, TARGET_PRESENT)
from harness.bundle.install import (FORMAT, INSTALLER, MANIFEST, Log, _stderr, describe, load_manifest, sha256_file,
                                    swap_in, tree_digest)
from harness.bundle.pack import choose_payload, pack_tar_xz, scan_tree, split_parts
from harness.bundle.resolve import obtain, resolve_wheels, wheel_metadata
from harness.bundle.unpack import SiteTree, check_records, unpack_wheel
from harness.errors import HarnessError, InputError


def build(vllm_version: str, out_dir: Path | str, *, python_version: str = "3.12", wheel_dir: Path | str | None = None,
          delta_against: Path | str | None = None, part_size: int = DEFAULT_PART_SIZE,
          drop: Sequence[str] = DEFAULT_DROP, platforms: Sequence[str] = DEFAULT_PLATFORMS,
          deps: Sequence[str] = DEFAULT_DEPS, extra: Sequence[str] = HARNESS_DEPS,
          present: Iterable[str] = TARGET_PRESENT, exclude: Iterable[str] = (), cuda_arch: int | None = None,
          package: str = "vllm", xz_preset: int = 9, pip: Sequence[str] | None = None,
          log: Log = _stderr) -> dict:
    """Build the bundle of `package`==vllm_version for CPython `python_version` into out_dir.

    wheel_dir: where wheels are looked for first and downloaded to (default: the user's cache).
    delta_against: an earlier bundle (its directory or manifest.json); only changed files are packed,
    unless that would not be smaller than the whole tree. drop: fnmatch patterns of files to leave
    out. deps/extra: wheels to bundle besides the package; what they need is added unless `present`
    names it. cuda_arch: compact CUDA fat binaries to what an sm_<cuda_arch> device loads.
    Returns the manifest."""
    out = Path(out_dir).absolute()
    wdir = Path(wheel_dir) if wheel_dir else DEFAULT_CACHE
    wdir.mkdir(parents=True, exist_ok=True)
    if part_size < 1:
        raise InputError(f"part size must be positive, not {part_size}")
    base = load_manifest(delta_against) if delta_against else None
    if base and base.get("python") != python_version:
        raise InputError(f"delta base {base['name']} is for Python {base.get('python')}, not {python_version}")

    main = obtain(package, SpecifierSet(f"=={vllm_version}"), wdir, python_version, platforms, pip, log)
    dep_wheels, target_reqs, unmet = resolve_wheels(main, [*deps, *extra], present, wdir, python_version, platforms,
                                                    pip=pip, exclude=[*exclude, package], log=log)
    left_out = [u for u in unmet if u["bundled"] is None and u["required_by"] == canonicalize_name(package)]
    conflicts = [u for u in unmet if u not in left_out]
    for u in conflicts:
        log(f"note: {u['required_by']} asks for {u['name']}{u['specifier']}, bundled: {u['bundled'] or 'none'}")
    if left_out:
        log(f"not bundled (requirements of {package} outside the dependency list): "
            + ", ".join(u["name"] for u in left_out))

    name = f"{package}-{vllm_version}"
    out.parent.mkdir(parents=True, exist_ok=True)
    stage_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    site = Path(tempfile.mkdtemp(prefix=f"{name}-site-"))
    try:
        tree = SiteTree(site, drop=drop, python_version=python_version, cuda_arch=cuda_arch, log=log)
        wheels = []
        for whl in [main, *dep_wheels]:
            meta = wheel_metadata(whl)
            unpack_wheel(whl, tree)
            wheels.append({"name": meta.name, "version": meta.version, "wheel": whl.name,
                           "sha256": sha256_file(whl), "role": "package" if whl == main else "dependency"})
        problems = check_records(site)
        if problems:
            raise HarnessError(f"the site tree is inconsistent: {'; '.join(problems[:5])}")
        files = scan_tree(site)
        kind, stored, deleted = choose_payload(files, base, log)
        archive = stage_dir / f"{name}.tar.xz"
        pack_tar_xz(site, stored, files, archive, xz_preset, log)
        parts = split_parts(archive, part_size)
        manifest = {
            "format": FORMAT, "name": name, "package": canonicalize_name(package), "version": vllm_version,
            "kind": kind, "python": python_version, "python_tag": "cp" + python_version.replace(".", ""),
            "platforms": list(platforms), "cuda_arch": cuda_arch,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "base": {"name": base["name"], "tree_sha256": base["tree_sha256"]} if kind == "delta" else None,
            "wheels": wheels, "target_requirements": target_reqs, "conflicts": conflicts,
            "left_out": [f"{u['name']}{u['specifier']}" for u in left_out],
            "dropped": sorted(tree.dropped, key=lambda d: d["path"]),
            "compacted": sorted(tree.compacted, key=lambda c: c["path"]),
            "payload": {"files": stored, "deleted": deleted,
                        "bytes": sum(files[r]["size"] for r in stored)},
            "parts": parts, "tree_sha256": tree_digest(files), "files": files,
        }
        (stage_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        shutil.copyfile(node.__file__, stage_dir / INSTALLER)
        swap_in(stage_dir, out)
    except BaseException:
        shutil.rmtree(stage_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(site, ignore_errors=True)
    log(describe(manifest))
    return manifest
