"""Sharding a run across CI agents, and merging the shards back into one run directory.

A scenario's work is its (variant, repeat) matrix, each pair one worker process. Shard K of N
(``run.py SCENARIO --shard K/N``, K counted from 1; inside a parallel Buildkite step
``BUILDKITE_PARALLEL_JOB`` / ``BUILDKITE_PARALLEL_JOB_COUNT`` say it) runs every N-th pair of the
variant-major matrix, starting at the K-th. The share depends on nothing but the scenario, the
``--variant``/``--repeat`` selection and K/N, so every agent computes the same split; shares differ by
at most one pair, and a variant's repeats are spread over the shards rather than piled on one.

``run.py merge RUN_DIR...`` joins the shards' run directories into a new one: the JUnit files are
merged with junitparser (cases in the order an unsharded run writes them), run.json is the union of
the shards', logs are copied, and the report and verdict are then built from those files alone, so
they equal an unsharded run's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from junitparser import JUnitXml, TestSuite

from harness import RUN_VERSION, atomic
from harness.errors import InputError
from harness import xmlsafe
from harness.results import events, junitread

T = TypeVar("T")
BUILDKITE_JOB = "BUILDKITE_PARALLEL_JOB"
BUILDKITE_COUNT = "BUILDKITE_PARALLEL_JOB_COUNT"
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


# ----------------------------------------------------------------------------- sharding
@dataclass(frozen=True)
class Shard:
    index: int  # 1 ... count
    count: int
    source: str = "--shard"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, matrix: Sequence[T]) -> list[T]:
        """This shard's share of ``matrix``: every ``count``-th item, starting at the ``index``-th."""
        return [pair for i, pair in enumerate(matrix) if i % self.count == self.index - 1]


def parse(spec: str, source: str = "--shard") -> Shard:
    m = _SPEC.match(spec or "")
    if not m:
        raise InputError(f"{source} {spec!r}: expected K/N, e.g. 2/4 (shard K of N, counted from 1)")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or not 1 <= index <= count:
        raise InputError(f"{source} {spec!r}: K must be between 1 and N, and N at least 1")
    return Shard(index, count, source)


def from_env(env: Mapping[str, str]) -> Shard | None:
    """Buildkite's parallel job (counted from 0) as a shard (counted from 1); None outside one."""
    job, count = env.get(BUILDKITE_JOB, "").strip(), env.get(BUILDKITE_COUNT, "").strip()
    if not job and not count:
        return None
    source = f"{BUILDKITE_JOB}={job} / {BUILDKITE_COUNT}={count}"
    if not (job.isdigit() and count.isdigit()):
        raise InputError(f"{source}: expected two whole numbers")
    return parse(f"{int(job) + 1}/{count}", source)


def resolve(spec: str | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """``--shard`` when given, else Buildkite's parallel job, else None (run everything)."""
    if spec is not None:
        return parse(spec)
    return from_env(os.environ if env is None else env)


def matrix(variants: Sequence[str], repeat: int) -> list[tuple[str, int]]:
    """The (variant, repeat) pairs of a run, in the order the runner runs them."""
    return [(v, r) for v in variants for r in range(repeat)]


def configure(opts, scenario, spec: str | None, env: Mapping[str, str] | None = None,
              announce=print) -> bool:
    """Narrow ``opts`` (runner.RunOptions) to this shard's pairs, from ``--shard`` or Buildkite's parallel
    job. Returns True when the shard is a strict part of the run (it then gets no verdict of its own);
    an empty share leaves ``opts.only == []``: nothing to run."""
    share = resolve(spec, env)
    if share is None:
        return False
    from harness.run.runid import new_run_id

    pairs = matrix(opts.variants or [v.name for v in scenario.variants],
                   opts.repeat if opts.repeat is not None else scenario.repeat)
    opts.only, opts.shard = share.select(pairs), str(share)
    announce(f"shard {share} ({share.source}): {len(opts.only)} of {len(pairs)} (variant, repeat) pairs"
             + (": " + ", ".join(f"{v} r{r}" for v, r in opts.only) if opts.only else ", nothing to run"))
    partial = len(opts.only) < len(pairs)
    if partial and opts.run_id is None:
        opts.run_id = f"{new_run_id()}-shard{share.index}of{share.count}"
    return partial


# ----------------------------------------------------------------------------- merging
@dataclass
class _Part:
    run_dir: Path
    meta: dict[str, Any]

    @property
    def pairs(self) -> list[tuple[str, int]]:
        return [(str(v), int(r)) for v, r in self.meta.get("matrix") or []]


def merge(run_dirs: Sequence[Path], out: Path, run_id: str | None = None, announce=print) -> Path:
    """Join the run directories of a scenario's shards into a new run directory under ``out``;
    returns it. Each (variant, repeat) must come from exactly one shard; pairs no shard ran make
    the merged run incomplete (its verdict then says so)."""
    from harness.run.runid import new_run_id
    from harness.run.runner import make_run_dir

    parts = [_read_part(Path(d)) for d in run_dirs]
    if not parts:
        raise InputError("merge: no run directories given")
    first = parts[0].meta
    for key in ("scenario", "repeat", "baseline", "backend"):
        for p in parts[1:]:
            if p.meta.get(key) != first.get(key):
                raise InputError(f"{p.run_dir}: {key} is {p.meta.get(key)!r}, but {parts[0].run_dir} has "
                                 f"{first.get(key)!r}: these are not shards of one run")
    order = list(first.get("profiles") or {})  # every selected variant, in the run's order
    for p in parts[1:]:
        if list(p.meta.get("profiles") or {}) != order:
            raise InputError(f"{p.run_dir}: ran the variants {', '.join(p.meta.get('profiles') or {})}, but "
                             f"{parts[0].run_dir} ran {', '.join(order)}: these are not shards of one run")
    owner: dict[tuple[str, int], _Part] = {}
    for p in parts:
        for pair in p.pairs:
            if pair in owner:
                raise InputError(f"{p.run_dir}: {pair[0]} repeat {pair[1]} also ran in {owner[pair].run_dir}; "
                                 "shards must not overlap")
            owner[pair] = p
    full = matrix(order, int(first["repeat"]))
    ran = [pair for pair in full if pair in owner]
    missing = [pair for pair in full if pair not in owner]
    if missing:
        announce(f"merge: {len(missing)} of {len(full)} (variant, repeat) pairs ran in none of these shards "
                 f"({', '.join(f'{v} r{r}' for v, r in missing)}): the merged run is incomplete")

    run_dir = make_run_dir(Path(out), str(first["scenario"]), run_id or new_run_id())
    variants = [v for v in order if any(pv == v for pv, _ in ran)]
    meta = _merged_meta(parts, run_dir.name, variants, ran, missing)
    atomic.write_json(run_dir / "run.json", meta)
    for v in variants:
        pairs = [(r, owner[(pv, r)]) for pv, r in ran if pv == v]
        _merge_variant(run_dir / f"{v}.xml", v, pairs, int(first["repeat"]), run_dir.name)
    _copy_logs(parts, run_dir, ran)
    return run_dir


def _read_part(run_dir: Path) -> _Part:
    path = run_dir / "run.json"
    if not path.is_file():
        raise InputError(f"{run_dir} is not a run directory: no run.json")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read: {e}") from None
    if not isinstance(meta, dict) or meta.get("version") != RUN_VERSION:
        raise InputError(f"{path}: version: expected a version {RUN_VERSION} run.json")
    if not isinstance(meta.get("matrix"), list) or not isinstance(meta.get("profiles"), dict):
        raise InputError(f"{path}: matrix: missing (written by a harness without sharding?)")
    _check_names(path, meta)
    return _Part(run_dir, meta)


def _check_names(path: Path, meta: dict[str, Any]) -> None:
    """The names merge turns into paths, refused before anything is written: a run.json is input."""
    from harness.run.preflight import VARIANT_SUFFIX, path_name_problem

    problem = path_name_problem(meta.get("scenario"))
    if problem:
        raise InputError(f"{path}: scenario: {problem}")
    if not isinstance(meta.get("repeat"), int) or isinstance(meta.get("repeat"), bool) or meta["repeat"] < 1:
        raise InputError(f"{path}: repeat: expected a positive integer, got {meta.get('repeat')!r}")
    for i, pair in enumerate(meta["matrix"]):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], int)):
            raise InputError(f"{path}: matrix[{i}]: expected [variant, repeat], got {pair!r}")
    names = [*meta["profiles"], *(pair[0] for pair in meta["matrix"])]
    for name in names:
        problem = path_name_problem(name, suffix=VARIANT_SUFFIX)
        if problem:
            raise InputError(f"{path}: variants: the variant name {problem}")


def _merged_meta(parts: list[_Part], run_id: str, variants: list[str], ran, missing) -> dict[str, Any]:
    first = parts[0].meta
    started = [p.meta["started"] for p in parts if p.meta.get("started")]
    finished = [p.meta.get("finished") for p in parts]
    incomplete = any(p.meta.get("incomplete", False) for p in parts) or bool(missing)
    meta = dict(first)
    meta.update(
        run_id=run_id, variants=variants, matrix=[[v, r] for v, r in ran],
        incomplete=incomplete, started=min(started) if started else None,
        finished=None if None in finished else max(finished),
        substitutions=_union(s for p in parts for s in p.meta.get("substitutions") or []),
        orphans=[o for p in parts for o in p.meta.get("orphans") or []],
        problems=_union(str(x) for p in parts for x in p.meta.get("problems") or []),
        settle=[s for p in parts for s in p.meta.get("settle") or []],
        argv=sys.argv, missing=[[v, r] for v, r in missing],
        shards=[{"run_dir": str(p.run_dir), "run_id": p.meta.get("run_id"), "shard": p.meta.get("shard"),
                 "matrix": p.meta.get("matrix")} for p in parts],
    )
    meta.pop("shard", None)
    return meta


def _union(items) -> list:
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _suite(path: Path, variant: str) -> TestSuite:
    if not path.is_file():
        raise InputError(f"{path}: missing JUnit file for variant {variant!r}")
    xml = junitread.load(path)
    xmlsafe.restore(xml._elem)  # written again below, where every text is made XML-safe once more
    suites = [xml] if isinstance(xml, TestSuite) else list(xml)
    if len(suites) != 1:
        raise InputError(f"{path}: expected one <testsuite>, found {len(suites)}")
    return suites[0]


def _merge_variant(path: Path, variant: str, pairs: list[tuple[int, _Part]], repeats: int, run_id: str) -> None:
    """One suite with every repeat of ``variant``, in repeat order, as runner._write_variant writes it."""
    shards = list({id(part): part for _, part in pairs}.values())
    suites = {id(part): _suite(part.run_dir / path.name, variant) for part in shards}
    values: dict[str, list[str]] = {}  # suite properties, in the first shard's order
    exits: dict[int, str] = {}
    for part in shards:
        props = list(suites[id(part)].properties())
        for name in dict.fromkeys(p.name for p in props):
            found = [p.value for p in props if p.name == name]
            if name not in values:
                values[name] = found
            elif name == "substitution":
                values[name] = _union(values[name] + found)
        ran = [r for v, r in part.pairs if v == variant]
        exits.update(zip(ran, [p.value for p in props if p.name == "worker_exit"]))
    values["run_id"] = [run_id]
    values["worker_exit"] = [exits[r] for r, _ in pairs if r in exits]
    merged = TestSuite(variant)
    for name, found in values.items():
        for value in found:
            merged.add_property(name, value)
    for r, part in pairs:
        for case in suites[id(part)]:
            if repeats == 1 or case.name.endswith(f"[{r}]"):
                merged.add_testcase(_unindented(case))
    merged.update_statistics()
    xml = JUnitXml()
    xml.add_testsuite(merged)
    atomic.write_junit(path, xml)


def _unindented(case):
    """The case without the whitespace its file was indented with (written pretty again, it would
    otherwise gain blank lines)."""
    for elem in case._elem.iter():
        if elem.text is not None and not elem.text.strip():
            elem.text = None
        elem.tail = None
    return case


def _copy_logs(parts: list[_Part], run_dir: Path, ran: list[tuple[str, int]]) -> None:
    """Every shard's logs, and events.jsonl in the order an unsharded run writes it (pair by pair)."""
    logs = run_dir / "logs"
    for p in parts:
        src = p.run_dir / "logs"
        for f in sorted(src.iterdir()) if src.is_dir() else []:
            if f.is_file():
                dest = logs / f.name
                if dest.exists():
                    raise InputError(f"{f}: {dest.name} comes from two shards")
                shutil.copy2(f, dest)
    events.merge_files(run_dir, ran)
