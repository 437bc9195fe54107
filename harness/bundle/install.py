"""Install an offline bundle on an air-gapped GPU node, with nothing but the standard library.

This file is the node's whole installer: ``build`` copies it alone into every bundle as
``install.py``, so it imports nothing outside the standard library and nothing else of the harness
(``harness.errors`` only where it is importable, for the harness's own exit codes).

A bundle is a directory:

    <bundle>/manifest.json        what is inside: versions, every file with its sha256, the parts
    <bundle>/<name>.tar.xz.000    the payload (tar.xz of an installed site tree), split into parts
    <bundle>/<name>.tar.xz.001    of at most ``part_size`` bytes, each with its sha256 in the manifest
    <bundle>/install.py           a copy of this module

``install`` verifies every part, streams the joined parts through xz and tar into a fresh directory
beside the target (a delta is applied over its base: the base's bundle or an installed copy of it),
checks the sha256 of every resulting file against the manifest, then renames the old target aside,
the new directory into place, and only then removes the old one. The result is used with the
node's own interpreter and torch:

    python3 harness/bundle/install.py install .bundle/vllm-0.21.0 --target /tmp/vllm-0.21.0
    PYTHONPATH=/tmp/vllm-0.21.0 python3 -c 'import vllm'

``stage``, ``verify`` and ``show`` gather, check and describe bundles. Building one (with network)
is ``python run.py bundle build``: see ``harness.bundle.build``.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    # Run as a script, its folder heads sys.path: take it out, so that the package's other modules
    # (build.py, cli.py...) can never shadow a module that the standard library imports.
    del sys.path[0]

import argparse
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Sequence

try:
    from harness.errors import HarnessError, InputError
except ImportError:  # the copy inside a bundle, run on a node without the harness
    class HarnessError(Exception):  # type: ignore[no-redef]
        exit_code = 2

    class InputError(HarnessError):  # type: ignore[no-redef]
        pass

FORMAT = 1
MANIFEST = "manifest.json"
INSTALLER = "install.py"
STAMP = ".bundle-installed.json"

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- helpers shared with the build side

def sha256_file(path: Path | str, chunk: int = 4 * 2**20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def tree_digest(files: dict[str, dict]) -> str:
    """One sha256 for a whole tree: paths, contents and executable bits."""
    h = hashlib.sha256()
    for path in sorted(files):
        f = files[path]
        h.update(f"{path}\0{f['sha256']}\0{int(bool(f.get('exec')))}\n".encode())
    return h.hexdigest()


def load_manifest(bundle: Path | str) -> dict:
    """The manifest of a bundle directory (or of a manifest.json path)."""
    p = Path(bundle)
    if p.is_dir():
        p = p / MANIFEST
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p.parent}: no {MANIFEST}: not a bundle directory") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{p}: unreadable bundle manifest: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise InputError(f"{p}: bundle format {m.get('format') if isinstance(m, dict) else '?'} is not {FORMAT}")
    return m


def _fmt_size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# --------------------------------------------------------------------------- parts, trees and the install

def _find_part(name: str, dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        if (d / name).is_file():
            return d / name
    return None


def verify_parts(manifest: dict, dirs: Sequence[Path]) -> list[Path]:
    """The bundle's parts in order, each checked for size and sha256. Raises InputError naming the
    first missing or corrupt part."""
    found = []
    name = manifest["name"]
    for part in manifest["parts"]:
        p = _find_part(part["name"], dirs)
        if p is None:
            raise InputError(
                f"bundle {name}: part {part['name']} is missing (looked in {', '.join(map(str, dirs))}); "
                f"carry it, or gather parts from several transfers with `bundle stage`")
        size = p.stat().st_size
        if size != part["size"]:
            raise InputError(f"bundle {name}: part {p} is corrupt: {size} bytes, expected {part['size']}; copy it again")
        digest = sha256_file(p)
        if digest != part["sha256"]:
            raise InputError(f"bundle {name}: part {p} is corrupt: sha256 {digest}, expected {part['sha256']}; "
                             f"copy it again")
        found.append(p)
    return found


class _Joined(io.RawIOBase):
    """The parts, read one after the other as one stream (no joined copy on disk)."""

    def __init__(self, paths: Sequence[Path]):
        self._paths = list(paths)
        self._f = None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while True:
            if self._f is None:
                if not self._paths:
                    return 0
                self._f = open(self._paths.pop(0), "rb")
            n = self._f.readinto(b)
            if n:
                return n
            self._f.close()
            self._f = None

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
        super().close()


def _safe_relpath(name: str) -> str:
    p = name.replace("\\", "/")
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if p.startswith("/") or not parts or any(x == ".." for x in parts):
        raise InputError(f"bundle archive member {name!r} is outside the target directory")
    return "/".join(parts)


def _extract(parts: Sequence[Path], dest: Path, expected: set[str]) -> int:
    """Stream the joined parts through xz and tar into dest; only regular files listed in the
    manifest are accepted. Returns the number of files written."""
    n = 0
    with _Joined(parts) as raw, io.BufferedReader(raw, 2**20) as buf, tarfile.open(fileobj=buf, mode="r|xz") as tf:
        for m in tf:
            rel = _safe_relpath(m.name)
            if m.isdir():
                continue
            if not m.isfile() or rel not in expected:
                raise InputError(f"bundle archive member {m.name!r} is not a file listed in the manifest")
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.exists() or out.is_symlink():
                out.unlink()  # never write through a hard link shared with the base install
            src = tf.extractfile(m)
            with open(out, "wb") as f:
                shutil.copyfileobj(src, f, 2**20)
            os.chmod(out, 0o755 if m.mode & 0o111 else 0o644)
            n += 1
    return n


def _check_tree(root: Path, files: dict[str, dict]) -> None:
    """Every manifest file is in root with its sha256 and executable bit; nothing else is."""
    bad = []
    for rel, f in files.items():
        p = root / rel
        if not p.is_file():
            bad.append(f"{rel}: missing")
        elif p.stat().st_size != f["size"]:
            bad.append(f"{rel}: {p.stat().st_size} bytes, expected {f['size']}")
        elif sha256_file(p) != f["sha256"]:
            bad.append(f"{rel}: sha256 differs")
        elif bool(f.get("exec")) != bool(p.stat().st_mode & 0o100):
            bad.append(f"{rel}: executable bit differs")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for fn in filenames:
            rel = os.path.relpath(os.path.join(dirpath, fn), root).replace(os.sep, "/")
            if rel not in files:
                bad.append(f"{rel}: not in the manifest")
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise InputError(f"{root}: installed tree does not match the manifest: {'; '.join(bad[:5])}{more}")


def _read_stamp(target: Path) -> dict | None:
    try:
        return json.loads((target / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _chain(manifests: dict[str, dict], final: dict) -> list[dict]:
    """final, then its base, then the base's base... as far as the given bundles reach."""
    chain = [final]
    while chain[-1].get("base"):
        base = manifests.get(chain[-1]["base"]["tree_sha256"])
        if base is None:
            break
        chain.append(base)
    return chain[::-1]


def _copy_base(base_target: Path, files: dict[str, dict], dest: Path) -> None:
    """Hard-link (or copy) the base install's files into dest."""
    for rel in files:
        src, out = base_target / rel, dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, out)
        except OSError:
            shutil.copy2(src, out)


def _target_requirement_warnings(manifest: dict) -> list[str]:
    """Requirements of the bundled wheels on distributions the node must already have, checked
    against this interpreter's installed versions (with `packaging` where the node has it)."""
    from importlib import metadata
    try:
        from packaging.requirements import Requirement
    except ImportError:
        Requirement = None
    out = []
    for req in manifest.get("target_requirements", []):
        try:
            have = metadata.version(req["name"])
        except metadata.PackageNotFoundError:
            out.append(f"{req['name']} is not installed (needed by {', '.join(req['required_by'])})")
            continue
        if Requirement is not None and req.get("specifier"):
            spec = Requirement(f"{req['name']}{req['specifier']}").specifier
            if not spec.contains(have, prereleases=True):
                out.append(f"{req['name']} {have} does not satisfy {req['specifier']} "
                           f"(needed by {', '.join(req['required_by'])})")
    return out


def install(bundle_dirs: Sequence[Path | str], target_site: Path | str, *, base_target: Path | str | None = None,
            stash: Path | str | None = None, force: bool = False, check_python: bool = True,
            log: Log = _stderr) -> dict:
    """Install a bundle (with the bundles of its delta chain) into target_site.

    bundle_dirs: the bundle to install, plus its base bundles when it is a delta (the one that is no
    other's base is installed). A delta whose base bundle is not given is applied over base_target,
    an earlier install of that base. Parts are looked for in each
    bundle's directory and in stash/<name>/ (see ``stage``). Standard library only.

    Returns the installed bundle's stamp (name, versions, tree_sha256, target)."""
    dirs = [Path(d) for d in bundle_dirs]
    if not dirs:
        raise InputError("install: give at least one bundle directory")
    target = Path(target_site).absolute()
    loaded = [(d, load_manifest(d)) for d in dirs]
    by_tree = {m["tree_sha256"]: m for _, m in loaded}
    where = {m["tree_sha256"]: d for d, m in loaded}
    bases = {m["base"]["tree_sha256"] for _, m in loaded if m.get("base")}
    finals = {t: m for t, m in by_tree.items() if t not in bases}
    if len(finals) != 1:
        raise InputError(f"install: give one bundle, preceded only by its base bundles "
                         f"(got {', '.join(sorted(m['name'] for m in finals.values())) or 'a cycle'})")
    final = next(iter(finals.values()))
    chain = _chain(by_tree, final)

    if check_python:
        here = f"{sys.version_info[0]}.{sys.version_info[1]}"
        if final.get("python") and final["python"] != here:
            raise InputError(f"bundle {final['name']} is built for Python {final['python']}, "
                             f"this interpreter is {here} ({sys.executable})")

    stamp = _read_stamp(target)
    if stamp and stamp.get("tree_sha256") == final["tree_sha256"] and not force:
        log(f"{target}: {final['name']} is already installed")
        return {k: v for k, v in stamp.items() if k != "files"}
    if target.exists() and not force:
        raise InputError(f"{target} exists and holds {stamp['name'] if stamp else 'something else'}; "
                         f"give --force to replace it, or another --target")
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise InputError(f"{target} is not a directory: not replacing it")
    if target.exists() and not stamp and any(target.iterdir()):
        raise InputError(f"{target} is not empty and holds no installed bundle: not replacing it")

    base_files: dict[str, dict] | None = None
    first = chain[0]
    if first.get("base"):
        want = first["base"]
        if base_target is None:
            raise InputError(f"bundle {first['name']} is a delta over {want['name']}: give that bundle's directory "
                             f"before it, or --base-target with {want['name']} installed")
        bt = Path(base_target).absolute()
        bstamp = _read_stamp(bt)
        if not bstamp or bstamp.get("tree_sha256") != want["tree_sha256"]:
            raise InputError(f"--base-target {bt} does not hold {want['name']} "
                             f"(holds {bstamp['name'] if bstamp else 'no installed bundle'})")
        base_files = bstamp.get("files")
        if not base_files:
            raise InputError(f"{bt}/{STAMP} lists no files; reinstall {want['name']} with this installer")

    # Check every part of every bundle of the chain before writing anything.
    part_lists = []
    for m in chain:
        search = [where[m["tree_sha256"]]]
        if stash is not None:
            search.append(Path(stash) / m["name"])
        part_lists.append(verify_parts(m, search))
    log(f"parts verified: {', '.join(m['name'] + ' (' + str(len(m['parts'])) + ')' for m in chain)}")

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        t0 = time.monotonic()
        if base_files is not None:
            _copy_base(Path(base_target).absolute(), base_files, work)
        for m, parts in zip(chain, part_lists):
            for rel in m["payload"].get("deleted", []):
                p = work / _safe_relpath(rel)
                if p.exists():
                    p.unlink()
            n = _extract(parts, work, set(m["payload"]["files"]))
            log(f"{m['name']}: {n} files unpacked ({m['kind']})")
        _prune_empty_dirs(work)
        _check_tree(work, final["files"])
        log(f"all {len(final['files'])} files match their sha256 ({time.monotonic() - t0:.0f} s)")
        stamp = {"name": final["name"], "package": final["package"], "version": final["version"],
                 "python": final.get("python"), "cuda_arch": final.get("cuda_arch"),
                 "tree_sha256": final["tree_sha256"], "target": str(target),
                 "installed": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": final["files"]}
        (work / STAMP).write_text(json.dumps(stamp), encoding="utf-8")
        swap_in(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    for w in _target_requirement_warnings(final):
        log(f"warning: {w}")
    log(f"installed {final['name']} into {target}; use it with: export PYTHONPATH={target}${{PYTHONPATH:+:$PYTHONPATH}}")
    return {k: v for k, v in stamp.items() if k != "files"}


def swap_in(staged: Path, dest: Path) -> None:
    """Put a finished directory where `dest` was. The old `dest` is renamed aside first and removed
    only once the new one is in place; if anything fails in between, it is renamed back, so `dest`
    always holds either the old tree or the new one, never a half-written or missing one."""
    os.chmod(staged, 0o755)
    aside = None
    if dest.exists() or dest.is_symlink():
        aside = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:12]}")
        os.rename(dest, aside)
    try:
        os.rename(staged, dest)
    except BaseException:
        if aside is not None:
            os.rename(aside, dest)
        raise
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink()


def _prune_empty_dirs(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        if dirpath != str(root) and not os.listdir(dirpath):
            os.rmdir(dirpath)


def stage(bundle_dirs: Sequence[Path | str], stash: Path | str, log: Log = _stderr) -> dict:
    """Gather parts that arrive in several transfers: copy each bundle's manifest, installer and
    every part present (verified) into stash/<name>/. Returns {name: {"have": [...], "missing": [...]}}."""
    out = {}
    for d in map(Path, bundle_dirs):
        m = load_manifest(d)
        dest = Path(stash) / m["name"]
        dest.mkdir(parents=True, exist_ok=True)
        for extra in (MANIFEST, INSTALLER):
            if (d / extra).is_file():
                shutil.copyfile(d / extra, dest / extra)
        have, missing = [], []
        for part in m["parts"]:
            src = _find_part(part["name"], [d, dest])
            if src is None:
                missing.append(part["name"])
                continue
            digest = sha256_file(src)
            if digest != part["sha256"]:
                raise InputError(f"bundle {m['name']}: part {src} is corrupt: sha256 {digest}, "
                                 f"expected {part['sha256']}; copy it again")
            if src.parent != dest:
                shutil.copyfile(src, dest / part["name"])
            have.append(part["name"])
        out[m["name"]] = {"have": have, "missing": missing, "stash": str(dest)}
        log(f"{m['name']}: {len(have)}/{len(m['parts'])} parts in {dest}"
            + (f"; still missing: {', '.join(missing)}" if missing else "; complete"))
    return out


def verify(bundle_dirs: Sequence[Path | str], log: Log = _stderr) -> list[dict]:
    """Check every part of each bundle (size and sha256)."""
    out = []
    for d in map(Path, bundle_dirs):
        m = load_manifest(d)
        verify_parts(m, [d])
        log(f"{m['name']}: {len(m['parts'])} parts, {_fmt_size(sum(p['size'] for p in m['parts']))}, all sha256 match")
        out.append(m)
    return out


def describe(manifest: dict) -> str:
    """A few lines for people: what the bundle holds and how it is split."""
    lines = [f"{manifest['name']}: {manifest['kind']} bundle of {manifest['package']} {manifest['version']} "
             f"for Python {manifest.get('python')} ({manifest.get('python_tag')})"
             + (f", CUDA fat binaries compacted to sm_{manifest['cuda_arch']}" if manifest.get("cuda_arch") else "")]
    if manifest.get("base"):
        lines.append(f"  delta over {manifest['base']['name']}: {len(manifest['payload']['files'])} files stored, "
                     f"{len(manifest['payload']['deleted'])} deleted")
    lines.append(f"  tree: {len(manifest['files'])} files, {_fmt_size(sum(f['size'] for f in manifest['files'].values()))}"
                 f", sha256 {manifest['tree_sha256'][:16]}")
    lines.append("  wheels: " + ", ".join(f"{w['name']} {w['version']}" for w in manifest["wheels"]))
    if manifest.get("dropped"):
        lines.append("  dropped: " + ", ".join(f"{d['path']} ({_fmt_size(d['size'])})" for d in manifest["dropped"]))
    for p in manifest["parts"]:
        lines.append(f"  part {p['name']}: {p['size']} bytes ({_fmt_size(p['size'])}) sha256 {p['sha256']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line (the node's)

def add_node_commands(sub) -> None:
    """The subcommands that run on the node (install, stage, verify, show), added to `sub`, an
    argparse subparsers object; the harness's `bundle` command line adds `build` beside them."""
    i = sub.add_parser("install", help="install a bundle (standard library only)")
    i.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE_DIR",
                   help="the bundle, preceded by its base bundles if it is a delta")
    i.add_argument("--target", required=True, type=Path, help="site directory to create (put it on PYTHONPATH)")
    i.add_argument("--base-target", type=Path, help="an installed copy of the delta's base bundle")
    i.add_argument("--stash", type=Path, help="where `stage` gathered parts")
    i.add_argument("--force", action="store_true", help="replace an existing target")
    i.add_argument("--no-python-check", action="store_true")
    s = sub.add_parser("stage", help="gather parts carried in several transfers into a stash")
    s.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE_DIR")
    s.add_argument("--stash", required=True, type=Path)
    v = sub.add_parser("verify", help="check the parts of bundles")
    v.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE_DIR")
    w = sub.add_parser("show", help="describe a bundle")
    w.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE_DIR")


def run_node_command(args: argparse.Namespace) -> int:
    """Run a parsed node subcommand. Raises HarnessError on bad input."""
    cmd = args.bundle_command
    if cmd == "install":
        install(args.bundles, args.target, base_target=args.base_target, stash=args.stash, force=args.force,
                check_python=not args.no_python_check)
    elif cmd == "stage":
        stage(args.bundles, args.stash)
    elif cmd == "verify":
        verify(args.bundles)
    elif cmd == "show":
        for d in args.bundles:
            print(describe(load_manifest(d)))
    else:
        raise InputError(f"bundle {cmd}: not a node command (install, stage, verify, show)")
    return 0


def run_main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
             argv: Sequence[str] | None) -> int:
    """Parse argv and run it: a HarnessError is one line and its exit code, Ctrl-C is 130."""
    args = parser.parse_args(argv)
    try:
        return run(args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_node_commands(p.add_subparsers(dest="bundle_command", required=True))
    return run_main(p, run_node_command, argv)


if __name__ == "__main__":
    sys.exit(main())
