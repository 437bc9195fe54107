"""Fetch the wheels of a bundle and resolve which dependency wheels it needs.

Wheels are looked for in a local folder (the cache) first and fetched with ``pip download
--no-deps`` for the target's Python and platforms only when missing, so a rebuild is offline.
Names, versions, tags and requirements are read with ``packaging``; a wheel's METADATA through
``installer``'s wheel reader.

Why not ``pip install --dry-run --report``: pip resolves the whole closure of vLLM (torch, the CUDA
libraries, flashinfer...) and cannot be told "the node already has these distributions, at versions
known only there"; the device image's list is names only, checked on the node at install time.
pip also refuses, as ResolutionImpossible, the one override a bundle makes on purpose (xgrammar
0.2.8 needs a newer apache-tvm-ffi than vLLM's pin), which ``resolve_wheels`` records as a
conflict. What is left for the resolver here is small: the listed dependencies, what they need
that the node lacks, each at the intersection of what the bundled wheels ask.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from installer.sources import WheelFile
from packaging.metadata import Metadata
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from harness.bundle.install import Log, _stderr
from harness.errors import HarnessError
from harness.run import procs


def target_tags(python_version: str, platforms: Sequence[str]) -> frozenset[Tag]:
    """Every wheel tag CPython `python_version` accepts on `platforms`, as pip computes them."""
    major, minor = (int(x) for x in python_version.split(".")[:2])
    cp = f"cp{major}{minor}"
    return frozenset([*cpython_tags((major, minor), abis=[cp], platforms=platforms),
                      *compatible_tags((major, minor), cp, platforms)])


def wheel_fits(filename: str, python_version: str, platforms: Sequence[str]) -> bool:
    """Whether the wheel file `filename` installs on the target."""
    try:
        tags = parse_wheel_filename(filename)[3]
    except InvalidWheelFilename:
        return False
    return not tags.isdisjoint(target_tags(python_version, platforms))


class WheelMetadata(NamedTuple):
    name: NormalizedName
    version: str
    requires: list[Requirement]


def wheel_metadata(whl: Path) -> WheelMetadata:
    """The canonical name, version and requirements (Requires-Dist) from a wheel's METADATA."""
    try:
        with WheelFile.open(whl) as src:
            meta = Metadata.from_email(src.read_dist_info("METADATA"), validate=False)
            return WheelMetadata(canonicalize_name(meta.name), str(meta.version), list(meta.requires_dist or []))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:  # not a zip, no .dist-info, bad METADATA
        raise HarnessError(f"{whl}: not a readable wheel ({type(e).__name__}: {e})") from None


def _marker_env(python_version: str) -> dict[str, str]:
    return {"python_version": python_version, "python_full_version": f"{python_version}.0", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "platform_python_implementation": "CPython", "implementation_name": "cpython", "extra": ""}


def requirements(whl: Path, python_version: str) -> list[tuple[NormalizedName, SpecifierSet]]:
    """(canonical name, specifier) of a wheel's requirements that apply on the target, no extras."""
    env = _marker_env(python_version)
    return [(canonicalize_name(r.name), r.specifier) for r in wheel_metadata(whl).requires
            if r.marker is None or r.marker.evaluate(env)]


def _pip_download(reqs: Sequence[str], dest: Path, python_version: str, platforms: Sequence[str],
                  pip: Sequence[str] | None, log: Log) -> None:
    cmd = [*(pip or [sys.executable, "-m", "pip"]), "download", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "-d", str(dest)]
    for p in platforms:
        cmd += ["--platform", p]
    log(f"pip download {' '.join(reqs)}")
    res = procs.run([*cmd, *reqs], timeout=1800)
    if not res:
        tail = "\n".join(res.output.strip().splitlines()[-5:])
        raise HarnessError(f"pip download {' '.join(reqs)} failed ({procs.exit_description(res.returncode)}):\n{tail}")


def local_wheel(name: str, spec: SpecifierSet, wheel_dir: Path, python_version: str,
                platforms: Sequence[str]) -> Path | None:
    """The highest version (then build number) of `name` in wheel_dir that satisfies spec and
    fits the target."""
    want, tags = canonicalize_name(name), target_tags(python_version, platforms)
    best = None
    for p in wheel_dir.glob("*.whl"):
        try:
            wname, version, build, wtags = parse_wheel_filename(p.name)
        except InvalidWheelFilename:
            continue
        if wname == want and not wtags.isdisjoint(tags) and spec.contains(version, prereleases=True):
            if best is None or (version, build) > best[0]:
                best = ((version, build), p)
    return best[1] if best else None


def obtain(name: str, spec: SpecifierSet, wheel_dir: Path, python_version: str, platforms: Sequence[str],
           pip: Sequence[str] | None, log: Log) -> Path:
    """A wheel of name`spec` for the target: from wheel_dir, else downloaded into it."""
    found = local_wheel(name, spec, wheel_dir, python_version, platforms)
    if found is None:
        _pip_download([f"{name}{spec}"], wheel_dir, python_version, platforms, pip, log)
        found = local_wheel(name, spec, wheel_dir, python_version, platforms)
    if found is None:
        raise HarnessError(f"no wheel of {name}{spec} for Python {python_version} in {wheel_dir}")
    return found


def _version(whl: Path) -> Version:
    return parse_wheel_filename(whl.name)[1]


def _requirement(text: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as e:
        raise HarnessError(f"dependency {text!r}: {e}") from None


def resolve_wheels(main: Path, deps: Sequence[str], present: Iterable[str], wheel_dir: Path, python_version: str,
                   platforms: Sequence[str], pip: Sequence[str] | None = None, exclude: Iterable[str] = (),
                   log: Log = _stderr) -> tuple[list[Path], list[dict], list[dict]]:
    """The dependency wheels to bundle: `deps`, plus what they need that the target lacks.

    A dep given with a version (name==1.2) takes that version; an unpinned one takes the intersection
    of what `main` and the other bundled wheels ask of it. Returns (wheels, requirements on
    distributions the target must have, requirements nobody satisfies)."""
    present = {canonicalize_name(p) for p in present}
    exclude = {canonicalize_name(x) for x in exclude}
    pinned: dict[str, SpecifierSet] = {}
    for d in deps:
        r = _requirement(d)
        pinned[canonicalize_name(r.name)] = r.specifier
    wanted = dict.fromkeys(pinned)  # insertion-ordered set
    chosen: dict[str, Path] = {}
    for _ in range(20):
        asked: dict[str, SpecifierSet] = {}
        for src in [main, *chosen.values()]:
            for name, spec in requirements(src, python_version):
                asked[name] = asked.get(name, SpecifierSet()) & spec
                if name not in present and name not in exclude and name not in wanted and src is not main:
                    wanted[name] = None
        changed = False
        for name in wanted:
            spec = pinned.get(name) or asked.get(name, SpecifierSet())
            have = chosen.get(name)
            if have is not None and spec.contains(_version(have), prereleases=True):
                continue
            chosen[name] = obtain(name, spec, wheel_dir, python_version, platforms, pip, log)
            changed = True
        if not changed:
            break
    else:
        raise HarnessError("dependency resolution does not settle; pin the dependencies explicitly")
    target_reqs: dict[str, dict] = {}
    unmet = []
    for src in [main, *chosen.values()]:
        src_name = wheel_metadata(src).name
        for name, spec in requirements(src, python_version):
            if name in present:
                t = target_reqs.setdefault(name, {"name": name, "specifier": SpecifierSet(), "required_by": []})
                t["specifier"] &= spec
                t["required_by"].append(src_name)
            elif name in chosen:
                v = _version(chosen[name])
                if not spec.contains(v, prereleases=True):
                    unmet.append({"name": name, "specifier": str(spec), "required_by": src_name, "bundled": str(v)})
            else:
                unmet.append({"name": name, "specifier": str(spec), "required_by": src_name, "bundled": None})
    for t in target_reqs.values():
        t["specifier"] = str(t["specifier"])
    return list(chosen.values()), sorted(target_reqs.values(), key=lambda t: t["name"]), unmet
