"""Offline bundles of vLLM and the wheels it needs, for air-gapped GPU nodes.

A bundle is a directory that travels to a node without network access:

    <bundle>/manifest.json        what is inside: versions, every file with its sha256, the parts
    <bundle>/<name>.tar.xz.000    the payload (tar.xz of an installed site tree), split into parts
    <bundle>/<name>.tar.xz.001    of at most ``part_size`` bytes, each with its sha256 in the manifest
    <bundle>/install.py           a copy of this module: installs the bundle with the standard library

``build`` (here, with network): fetches the vLLM wheel and the dependency wheels the node lacks,
unpacks them into one site tree (``pip install --target`` layout), drops what a dense model on the
node never loads, optionally compacts the CUDA fat binaries to the node's architecture, and packs the
tree. With ``delta_against`` (an earlier bundle) it packs only the files whose sha256 differ, plus
the list of deleted files.

``install`` (on the node, standard library only): verifies every part, streams the joined parts
through xz and tar into a fresh directory (a delta is applied over its base: the base's bundle or an
installed copy of it), checks the sha256 of every resulting file against the manifest, and renames
the directory into place. The result is used with the node's own interpreter and torch:

    PYTHONPATH=<target> python3 -c 'import vllm'

Only the install path (``install``, ``stage``, ``verify``, ``show``) runs on the node; it imports
nothing outside the standard library, so ``python3 harness/bundle.py install ...`` works before any
of the harness's own requirements are installed there.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    # Run as a script (``python3 harness/bundle/__init__.py``, or the copy inside a bundle): the
    # script's folder heads sys.path. Put the repository root there instead, so that ``harness``
    # imports and no package of it (``harness/bisect``) shadows the standard library's ``bisect``.
    sys.path[0] = os.path.dirname(os.path.dirname(sys.path[0]))

import argparse
import base64
import csv
import fnmatch
import hashlib
import io
import json
import re
import shutil
import struct
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

try:
    from harness.errors import HarnessError, InputError
except ImportError:  # a copy of this file inside a bundle, run on a node without the harness
    class HarnessError(Exception):  # type: ignore[no-redef]
        exit_code = 2

    class InputError(HarnessError):  # type: ignore[no-redef]
        pass

FORMAT = 1
MANIFEST = "manifest.json"
INSTALLER = "install.py"
STAMP = ".bundle-installed.json"
DEFAULT_PART_SIZE = 50 * 2**20
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "harness-bundle" / "wheels"

#: manylinux tags that pip matches exactly: 2_17 to 2_39 cover every x86-64 wheel of today.
DEFAULT_PLATFORMS: tuple[str, ...] = tuple(f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)) + (
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64")

#: Files of the vLLM wheel that a dense model on an H100 never loads (fnmatch patterns, relative to
#: the site tree). Extension modules built for other Python versions are dropped by a rule of their
#: own (see ``_other_python_extension``).
DEFAULT_DROP: tuple[str, ...] = (
    # FlashAttention 2 kernels (191 MB): Hopper runs FlashAttention 3 (_vllm_fa3_C, kept); the
    # import is guarded and sets FA2_AVAILABLE = False.
    "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so",
    # Mixture-of-experts kernels (38 MB): `import vllm._moe_C` is wrapped in suppress(ImportError)
    # and only MoE models call torch.ops._moe_C.
    "vllm/_moe_C.abi3.so",
    # The Rust HTTP frontend (36 MB, 0.22.0 and later): used only with VLLM_USE_RUST_FRONTEND=1.
    "vllm/vllm-rs",
)

#: The dependency wheels a dense-model engine imports and the H100/H200 image lacks. Unpinned names
#: take vLLM's own specifier (and those of the other bundled wheels). xgrammar 0.2.8 needs a newer
#: apache-tvm-ffi than vLLM's pin (0.1.9), so that pin is overridden on purpose.
DEFAULT_DEPS: tuple[str, ...] = (
    "annotated-types", "astor", "blake3", "cachetools", "cbor2", "depyf", "dill", "diskcache",
    "fastapi", "gguf", "lark", "llguidance", "msgspec", "openai", "openai-harmony",
    "opentelemetry-api", "partial-json-parser", "pybase64", "pydantic", "pydantic-core", "pyzmq",
    "setproctitle", "sniffio", "starlette", "typing-inspection",
    "xgrammar==0.2.8", "apache-tvm-ffi==0.1.15.post2",
)

#: The harness's own requirements that the node lacks (pure Python).
HARNESS_DEPS: tuple[str, ...] = ("junitparser",)

#: Python distributions of the device image ('cuda'), as listed in the device notes (KINDS.md,
#: read 2026-11-17). Requirements on these are not bundled; their versions are checked on install.
TARGET_PRESENT: tuple[str, ...] = tuple("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils
execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet
httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax
jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib
mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax
opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip
pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- shared helpers (stdlib)

def normalize(name: str) -> str:
    """PEP 503 name: 'Typing_Inspection' -> 'typing-inspection'."""
    return re.sub(r"[-_.]+", "-", name).lower()


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


# --------------------------------------------------------------------------- node side (stdlib only)

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
        _swap_in(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    for w in _target_requirement_warnings(final):
        log(f"warning: {w}")
    log(f"installed {final['name']} into {target}; use it with: export PYTHONPATH={target}${{PYTHONPATH:+:$PYTHONPATH}}")
    return {k: v for k, v in stamp.items() if k != "files"}


def _swap_in(staged: Path, dest: Path) -> None:
    """Put a finished directory where `dest` was, in one rename: never a half-written one."""
    os.chmod(staged, 0o755)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(staged, dest)


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


# --------------------------------------------------------------------------- build side (here, with pip)
#
# CUDA fat binaries. An extension's .nv_fatbin section holds one fat binary per translation unit
# (the host code finds each through a pointer in .nvFatBinSegment). A fat binary is a 16-byte header
# (magic 0xBA55ED50, version, header size, size of the entries) followed by entries, each a header
# (kind 1 = PTX, 2 = ELF cubin; the architecture; payload size) and its payload. On an sm_XY device
# the driver loads, per fat binary, a cubin of the same major version and minor <= Y if there is
# one, else JIT-compiles PTX of an architecture <= XY. ``compact_fatbins`` keeps exactly those
# entries, moves them to the front of their fat binary, rewrites its size and zeroes the rest, so
# every pointer stays valid and the loader sees what nvcc would have built for that one
# architecture. A fat binary with nothing usable keeps its smallest entry (unusable there before too).

_FATBIN_MAGIC = 0xBA55ED50
_FATBIN_HEADER = struct.Struct("<IHHQ")
_FATBIN_ENTRY = struct.Struct("<HHIQIIHHI")  # kind, version, header size, payload size, ..., arch


def _elf_section(data: bytes | bytearray, name: str) -> tuple[int, int] | None:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if not shoff or shstrndx >= shnum:
        return None
    sec = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    stroff = sec[shstrndx][4]
    for sh_name, _typ, _flags, _addr, off, size in sec:
        end = data.index(b"\0", stroff + sh_name)
        if bytes(data[stroff + sh_name:end]).decode("ascii", "replace") == name:
            return off, size
    return None


def _fatbins(data: bytes | bytearray, off: int, size: int) -> list[tuple[int, list[dict]]]:
    """[(fat binary offset, [entries])] of an .nv_fatbin section; ValueError if it does not parse."""
    out = []
    pos, end = off, off + size
    while pos < end:
        if end - pos < _FATBIN_HEADER.size or struct.unpack_from("<I", data, pos)[0] != _FATBIN_MAGIC:
            if any(data[pos:min(pos + 8, end)]):  # only zero padding may sit between fat binaries
                raise ValueError(f"unexpected bytes at {pos:#x} in .nv_fatbin")
            pos += 8
            continue
        _magic, _ver, hsize, fsize = _FATBIN_HEADER.unpack_from(data, pos)
        entries, e, stop = [], pos + hsize, pos + hsize + fsize
        if stop > end:
            raise ValueError(f"fat binary at {pos:#x} runs past its section")
        while e < stop:
            kind, _v, ehsize, psize, _c, _u, _mi, _ma, arch = _FATBIN_ENTRY.unpack_from(data, e)
            if kind not in (1, 2) or ehsize < _FATBIN_ENTRY.size or e + ehsize + psize > stop:
                raise ValueError(f"bad fat binary entry at {e:#x}")
            entries.append({"at": e, "kind": kind, "arch": arch, "length": ehsize + psize})
            e += ehsize + psize
        if e != stop:
            raise ValueError(f"fat binary at {pos:#x}: entries do not fill it")
        out.append((pos, entries))
        pos = stop
    return out


def _usable(entry: dict, arch: int) -> str | None:
    if entry["kind"] == 2 and entry["arch"] // 10 == arch // 10 and entry["arch"] <= arch:
        return "cubin"
    if entry["kind"] == 1 and entry["arch"] <= arch:
        return "ptx"
    return None


def compact_fatbins(path: Path, arch: int) -> dict | None:
    """Keep, in every fat binary of an ELF file, only the entries an sm_<arch> device loads (see
    above). Returns what changed, or None when the file has no fat binary or nothing to drop."""
    data = bytearray(path.read_bytes())
    sec = _elf_section(data, ".nv_fatbin")
    if sec is None:
        return None
    try:
        fatbins = _fatbins(data, *sec)
    except ValueError as e:
        raise HarnessError(f"{path}: cannot parse its CUDA fat binaries ({e}); build without --cuda-arch") from None
    removed = removed_bytes = 0
    kept_archs: dict[str, int] = {}
    for start, entries in fatbins:
        cubins = [x for x in entries if _usable(x, arch) == "cubin"]
        keep = cubins or [x for x in entries if _usable(x, arch) == "ptx"] or [min(entries, key=lambda x: x["length"])]
        if len(keep) == len(entries):
            continue
        if any(x["length"] % 8 for x in keep):
            raise HarnessError(f"{path}: fat binary entry not 8-byte aligned; build without --cuda-arch")
        _m, ver, hsize, fsize = _FATBIN_HEADER.unpack_from(data, start)
        body = b"".join(bytes(data[x["at"]:x["at"] + x["length"]]) for x in keep)
        region = start + hsize
        data[region:region + fsize] = body + bytes(fsize - len(body))
        _FATBIN_HEADER.pack_into(data, start, _FATBIN_MAGIC, ver, hsize, len(body))
        removed += len(entries) - len(keep)
        removed_bytes += fsize - len(body)
        for x in keep:
            k = f"{'sm' if x['kind'] == 2 else 'compute'}_{x['arch']}"
            kept_archs[k] = kept_archs.get(k, 0) + 1
    if not removed:
        return None
    path.write_bytes(data)
    return {"entries_removed": removed, "bytes_zeroed": removed_bytes, "kept": dict(sorted(kept_archs.items()))}


def _pip_download(reqs: Sequence[str], dest: Path, python_version: str, platforms: Sequence[str],
                  pip: Sequence[str] | None, log: Log) -> None:
    from harness.run import procs  # build side only: the node never runs this
    cmd = [*(pip or [sys.executable, "-m", "pip"]), "download", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "-d", str(dest)]
    for p in platforms:
        cmd += ["--platform", p]
    log(f"pip download {' '.join(reqs)}")
    res = procs.run([*cmd, *reqs], timeout=1800)
    if not res:
        tail = "\n".join(res.output.strip().splitlines()[-5:])
        raise HarnessError(f"pip download {' '.join(reqs)} failed ({procs.exit_description(res.returncode)}):\n{tail}")


_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")


def _wheel_fits(filename: str, python_version: str, platforms: Sequence[str]) -> bool:
    m = _WHEEL_RE.match(filename)
    if not m:
        return False
    major, minor = (int(x) for x in python_version.split(".")[:2])
    cp = f"cp{major}{minor}"
    py_ok = False
    for t in m["py"].split("."):
        if t in (f"py{major}", f"py{major}{minor}", cp):
            py_ok = True
        elif m["abi"] == "abi3" and re.fullmatch(rf"cp{major}(\d+)", t) and int(t[3:]) <= minor:
            py_ok = True
    plat_ok = any(p == "any" or p in platforms for p in m["plat"].split("."))
    return py_ok and plat_ok


def _requirement_tools():
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.requirements import Requirement  # type: ignore
        from pip._vendor.packaging.version import Version  # type: ignore
    return Requirement, Version


def _local_wheel(name: str, spec: str, wheel_dir: Path, python_version: str, platforms: Sequence[str]) -> Path | None:
    """The highest version of `name` in wheel_dir that satisfies spec and fits the target."""
    Requirement, Version = _requirement_tools()
    specifier = Requirement(f"{name}{spec}").specifier
    best = None
    for p in wheel_dir.glob("*.whl"):
        m = _WHEEL_RE.match(p.name)
        if not m or normalize(m["name"]) != normalize(name) or not _wheel_fits(p.name, python_version, platforms):
            continue
        v = Version(m["version"])
        if specifier.contains(v, prereleases=True):
            key = (v, int(re.match(r"\d*", m["build"] or "0").group() or 0))
            if best is None or key > best[0]:
                best = (key, p)
    return best[1] if best else None


def _obtain(name: str, spec: str, wheel_dir: Path, python_version: str, platforms: Sequence[str],
            pip: Sequence[str] | None, log: Log) -> Path:
    found = _local_wheel(name, spec, wheel_dir, python_version, platforms)
    if found is None:
        _pip_download([f"{name}{spec}"], wheel_dir, python_version, platforms, pip, log)
        found = _local_wheel(name, spec, wheel_dir, python_version, platforms)
    if found is None:
        raise HarnessError(f"no wheel of {name}{spec} for Python {python_version} in {wheel_dir}")
    return found


def wheel_metadata(whl: Path) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist lines) from a wheel's METADATA."""
    with zipfile.ZipFile(whl) as z:
        meta = next((n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            raise HarnessError(f"{whl}: no .dist-info/METADATA: not a wheel")
        text = z.read(meta).decode("utf-8", "replace")
    head = text.split("\n\n", 1)[0]
    fields: dict[str, list[str]] = {}
    for line in head.splitlines():
        if ":" in line and not line.startswith((" ", "\t")):
            k, v = line.split(":", 1)
            fields.setdefault(k.strip(), []).append(v.strip())
    return fields["Name"][0], fields["Version"][0], fields.get("Requires-Dist", [])


def _marker_env(python_version: str) -> dict[str, str]:
    return {"python_version": python_version, "python_full_version": f"{python_version}.0", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "platform_python_implementation": "CPython", "implementation_name": "cpython", "extra": ""}


def _requirements(whl: Path, python_version: str) -> list[tuple[str, str]]:
    """(normalized name, specifier) of a wheel's requirements that apply on the target, no extras."""
    Requirement, _ = _requirement_tools()
    env = _marker_env(python_version)
    out = []
    for line in wheel_metadata(whl)[2]:
        r = Requirement(line)
        if r.marker is not None and not r.marker.evaluate(env):
            continue
        out.append((normalize(r.name), str(r.specifier)))
    return out


def resolve_wheels(main: Path, deps: Sequence[str], present: Iterable[str], wheel_dir: Path, python_version: str,
                   platforms: Sequence[str], pip: Sequence[str] | None = None, exclude: Iterable[str] = (),
                   log: Log = _stderr) -> tuple[list[Path], list[dict], list[dict]]:
    """The dependency wheels to bundle: `deps`, plus what they need that the target lacks.

    A dep given with a version (name==1.2) takes that version; an unpinned one takes the intersection
    of what `main` and the other bundled wheels ask of it. Returns (wheels, requirements on
    distributions the target must have, requirements nobody satisfies)."""
    Requirement, Version = _requirement_tools()
    present = {normalize(p) for p in present}
    exclude = {normalize(x) for x in exclude}
    pinned: dict[str, str] = {}
    for d in deps:
        r = Requirement(d)
        pinned[normalize(r.name)] = str(r.specifier)
    wanted = dict.fromkeys(pinned)  # insertion-ordered set
    chosen: dict[str, Path] = {}
    for _ in range(20):
        asked: dict[str, list[tuple[str, str]]] = {}
        for src in [main, *chosen.values()]:
            src_name = normalize(wheel_metadata(src)[0])
            for name, spec in _requirements(src, python_version):
                asked.setdefault(name, []).append((spec, src_name))
                if name not in present and name not in exclude and name not in wanted and src is not main:
                    wanted[name] = None
        changed = False
        for name in wanted:
            if name in pinned and pinned[name]:
                spec = pinned[name]
            else:
                spec = ",".join(s for s, _ in asked.get(name, []) if s)
            have = chosen.get(name)
            if have is not None:
                v = Version(_WHEEL_RE.match(have.name)["version"])
                if Requirement(f"{name}{spec}").specifier.contains(v, prereleases=True):
                    continue
            chosen[name] = _obtain(name, spec, wheel_dir, python_version, platforms, pip, log)
            changed = True
        if not changed:
            break
    else:
        raise HarnessError("dependency resolution does not settle; pin the dependencies explicitly")
    target_reqs: dict[str, dict] = {}
    unmet = []
    for src in [main, *chosen.values()]:
        src_name = normalize(wheel_metadata(src)[0])
        for name, spec in _requirements(src, python_version):
            if name in present:
                t = target_reqs.setdefault(name, {"name": name, "specifier": "", "required_by": []})
                t["specifier"] = str(Requirement(f"{name}{','.join(x for x in (t['specifier'], spec) if x)}").specifier)
                t["required_by"].append(src_name)
            elif name in chosen:
                v = Version(_WHEEL_RE.match(chosen[name].name)["version"])
                if not Requirement(f"{name}{spec}").specifier.contains(v, prereleases=True):
                    unmet.append({"name": name, "specifier": spec, "required_by": src_name,
                                  "bundled": str(v)})
            else:
                unmet.append({"name": name, "specifier": spec, "required_by": src_name, "bundled": None})
    return list(chosen.values()), sorted(target_reqs.values(), key=lambda t: t["name"]), unmet


def _record_hash(data_sha256_hex: str) -> str:
    return "sha256=" + base64.urlsafe_b64encode(bytes.fromhex(data_sha256_hex)).rstrip(b"=").decode()


def unpack_wheel(whl: Path, site: Path) -> str:
    """Unpack a wheel as `pip install --target site` would (purelib and platlib into site, scripts
    into site/bin, other .data dropped). Returns the .dist-info directory name."""
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        data_dir = dist_info[: -len(".dist-info")] + ".data"
        for info in z.infolist():
            if info.is_dir():
                continue
            rel = _safe_relpath(info.filename)
            if rel.startswith(data_dir + "/"):
                kind, _, sub = rel[len(data_dir) + 1:].partition("/")
                if kind in ("purelib", "platlib"):
                    rel = sub
                elif kind == "scripts":
                    rel = "bin/" + sub
                else:
                    continue
            out = site / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 2**20)
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(out, 0o755 if (mode & 0o111 or rel.startswith("bin/")) else 0o644)
    (site / dist_info / "INSTALLER").write_text("harness-bundle\n")
    return dist_info


def _rewrite_record(site: Path, dist_info: str) -> None:
    """Make a .dist-info/RECORD list exactly the files of its distribution as they now are."""
    rec = site / dist_info / "RECORD"
    rows = list(csv.reader(io.StringIO(rec.read_text(encoding="utf-8"))))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    seen = set()
    data_dir = dist_info[: -len(".dist-info")] + ".data/"
    for row in rows:
        if not row:
            continue
        rel = row[0]
        if rel.startswith(data_dir):
            kind, _, sub = rel[len(data_dir):].partition("/")
            rel = sub if kind in ("purelib", "platlib") else "bin/" + sub if kind == "scripts" else None
            if rel is None:
                continue
        p = site / rel
        if rel == f"{dist_info}/RECORD":
            w.writerow([rel, "", ""])
        elif p.is_file():
            w.writerow([rel, _record_hash(sha256_file(p)), p.stat().st_size])
        seen.add(rel)
    if (site / dist_info / "INSTALLER").is_file() and f"{dist_info}/INSTALLER" not in seen:
        p = site / dist_info / "INSTALLER"
        w.writerow([f"{dist_info}/INSTALLER", _record_hash(sha256_file(p)), p.stat().st_size])
    rec.write_text(out.getvalue(), encoding="utf-8")


def check_records(site: Path) -> list[str]:
    """Problems with the tree's RECORD files: a listed file missing or with another hash, or a file
    no RECORD lists. Empty when the tree is consistent."""
    listed, problems = set(), []
    for rec in sorted(site.glob("*.dist-info/RECORD")):
        for row in csv.reader(io.StringIO(rec.read_text(encoding="utf-8"))):
            if not row:
                continue
            listed.add(row[0])
            p = site / row[0]
            if not row[1]:
                continue
            if not p.is_file():
                problems.append(f"{row[0]}: listed in {rec.parent.name}/RECORD but missing")
            elif _record_hash(sha256_file(p)) != row[1]:
                problems.append(f"{row[0]}: hash differs from {rec.parent.name}/RECORD")
    for p in site.rglob("*"):
        rel = p.relative_to(site).as_posix()
        if p.is_file() and rel not in listed:
            problems.append(f"{rel}: in no RECORD")
    return problems


_EXT_PY = re.compile(r"\.cpython-(\d)(\d+)[^/]*\.so$")


def _other_python_extension(rel: str, python_version: str) -> bool:
    m = _EXT_PY.search(rel)
    return bool(m) and f"{m[1]}.{m[2]}" != python_version


def scan_tree(site: Path) -> dict[str, dict]:
    files = {}
    for dirpath, dirnames, filenames in os.walk(site):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            rel = p.relative_to(site).as_posix()
            st = p.stat()
            files[rel] = {"sha256": sha256_file(p), "size": st.st_size, "exec": bool(st.st_mode & 0o100)}
    return files


def _pack(site: Path, members: Sequence[str], files: dict[str, dict], archive: Path, preset: int, log: Log) -> None:
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
        from harness.run import procs
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


def _split(archive: Path, part_size: int) -> list[dict]:
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

    main = _obtain(package, f"=={vllm_version}", wdir, python_version, platforms, pip, log)
    dep_wheels, target_reqs, unmet = resolve_wheels(main, [*deps, *extra], present, wdir, python_version, platforms,
                                                    pip=pip, exclude=[*exclude, package], log=log)
    left_out = [u for u in unmet if u["bundled"] is None and u["required_by"] == normalize(package)]
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
        wheels = []
        infos = {}
        for whl in [main, *dep_wheels]:
            wname, wver, _ = wheel_metadata(whl)
            infos[unpack_wheel(whl, site)] = whl
            wheels.append({"name": normalize(wname), "version": wver, "wheel": whl.name, "sha256": sha256_file(whl),
                           "role": "package" if whl == main else "dependency"})
        dropped = []
        for p in sorted(site.rglob("*")):
            rel = p.relative_to(site).as_posix()
            if not p.is_file():
                continue
            rule = next((pat for pat in drop if fnmatch.fnmatchcase(rel, pat)), None)
            if rule is None and _other_python_extension(rel, python_version):
                rule = "extension module for another Python version"
            if rule:
                dropped.append({"path": rel, "size": p.stat().st_size, "sha256": sha256_file(p), "rule": rule})
                p.unlink()
        compacted = []
        if cuda_arch:
            for p in sorted(site.rglob("*.so")):
                res = compact_fatbins(p, int(cuda_arch))
                if res:
                    compacted.append({"path": p.relative_to(site).as_posix(), **res})
                    log(f"compacted {p.relative_to(site)} to sm_{cuda_arch}: {res['entries_removed']} entries, "
                        f"{_fmt_size(res['bytes_zeroed'])} removed")
        for dist_info in infos:
            _rewrite_record(site, dist_info)
        problems = check_records(site)
        if problems:
            raise HarnessError(f"the site tree is inconsistent: {'; '.join(problems[:5])}")
        files = scan_tree(site)
        tree = tree_digest(files)

        kind, stored, deleted = "full", sorted(files), []
        if base:
            bf = base["files"]
            changed = [r for r in sorted(files) if r not in bf or bf[r]["sha256"] != files[r]["sha256"]
                       or bool(bf[r].get("exec")) != files[r]["exec"]]
            if sum(files[r]["size"] for r in changed) < sum(f["size"] for f in files.values()):
                kind, stored, deleted = "delta", changed, sorted(set(bf) - set(files))
            else:
                log(f"a delta over {base['name']} would not be smaller: building a full bundle")
        archive = stage_dir / f"{name}.tar.xz"
        _pack(site, stored, files, archive, xz_preset, log)
        parts = _split(archive, part_size)
        manifest = {
            "format": FORMAT, "name": name, "package": normalize(package), "version": vllm_version,
            "kind": kind, "python": python_version, "python_tag": "cp" + python_version.replace(".", ""),
            "platforms": list(platforms), "cuda_arch": cuda_arch,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "base": {"name": base["name"], "tree_sha256": base["tree_sha256"]} if kind == "delta" else None,
            "wheels": wheels, "target_requirements": target_reqs, "conflicts": conflicts,
            "left_out": [f"{u['name']}{u['specifier']}" for u in left_out],
            "dropped": dropped, "compacted": compacted,
            "payload": {"files": stored, "deleted": deleted,
                        "bytes": sum(files[r]["size"] for r in stored)},
            "parts": parts, "tree_sha256": tree, "files": files,
        }
        (stage_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        shutil.copyfile(Path(__file__), stage_dir / INSTALLER)
        _swap_in(stage_dir, out)
    except BaseException:
        shutil.rmtree(stage_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(site, ignore_errors=True)
    log(describe(manifest))
    return manifest


# --------------------------------------------------------------------------- command line

def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add the bundle subcommands to `p` (also used by the harness's own command line)."""
    sub = p.add_subparsers(dest="bundle_command", required=True)
    b = sub.add_parser("build", help="download, slim and pack a bundle (needs pip and network)")
    b.add_argument("--vllm", required=True, metavar="VERSION", help="version of the package to bundle")
    b.add_argument("--package", default="vllm")
    b.add_argument("--python", default="3.12", help="target Python version (default 3.12)")
    b.add_argument("--out", type=Path, help="bundle directory (default .bundle/<package>-<version>)")
    b.add_argument("--wheel-dir", type=Path, help=f"wheel cache (default {DEFAULT_CACHE})")
    b.add_argument("--delta-against", type=Path, metavar="BUNDLE", help="pack only what differs from this bundle")
    b.add_argument("--part-size-mib", type=float, default=DEFAULT_PART_SIZE / 2**20)
    b.add_argument("--cuda-arch", type=int, metavar="NN", help="compact CUDA fat binaries to sm_NN (90: H100/H200)")
    b.add_argument("--drop", action="append", default=None, metavar="PATTERN",
                   help="file pattern to leave out (repeatable; replaces the default list)")
    b.add_argument("--keep-default-drop", action="store_true", help="with --drop: add to the default list")
    b.add_argument("--deps", nargs="*", metavar="REQ", help="dependency wheels to bundle (default: the built-in list)")
    b.add_argument("--extra", nargs="*", default=list(HARNESS_DEPS), metavar="REQ")
    b.add_argument("--present-file", type=Path, help="distributions present on the target, one a line "
                                                      "(default: the device image's list)")
    b.add_argument("--exclude", nargs="*", default=[], metavar="NAME", help="never bundle these")
    b.add_argument("--xz-preset", type=int, default=9, choices=range(10))
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


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed bundle subcommand. Raises HarnessError on bad input."""
    cmd = args.bundle_command
    if cmd == "build":
        drop = DEFAULT_DROP
        if args.drop is not None:
            drop = (*DEFAULT_DROP, *args.drop) if args.keep_default_drop else tuple(args.drop)
        present: Iterable[str] = TARGET_PRESENT
        if args.present_file:
            try:
                present = [ln.split("#")[0].strip() for ln in args.present_file.read_text().splitlines()]
            except OSError as e:
                raise InputError(f"{args.present_file}: {e}") from None
            present = [p for p in present if p]
        build(args.vllm, args.out or Path(".bundle") / f"{args.package}-{args.vllm}", python_version=args.python,
              wheel_dir=args.wheel_dir, delta_against=args.delta_against,
              part_size=int(args.part_size_mib * 2**20), drop=drop,
              deps=DEFAULT_DEPS if args.deps is None else args.deps, extra=args.extra, present=present,
              exclude=args.exclude, cuda_arch=args.cuda_arch, package=args.package, xz_preset=args.xz_preset)
    elif cmd == "install":
        install(args.bundles, args.target, base_target=args.base_target, stash=args.stash, force=args.force,
                check_python=not args.no_python_check)
    elif cmd == "stage":
        stage(args.bundles, args.stash)
    elif cmd == "verify":
        verify(args.bundles)
    elif cmd == "show":
        for d in args.bundles:
            print(describe(load_manifest(d)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.bundle", description=__doc__.split("\n\n")[0])
    configure_parser(p)
    args = p.parse_args(argv)
    try:
        return run_command(args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
