"""Sharding a run across CI agents (``--shard K/N``, Buildkite's parallel job) and ``run.py merge``:
the split itself, and end to end on the simulated device, that the merged shards give the report,
verdict and JUnit cases of the unsharded run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from junitparser import JUnitXml

from harness import cli
from harness.ci import shard
from harness.errors import InputError
from harness.results.junitread import read_cases
from tests import sim_scenarios

# `settle` waits for the memory like `fixed`. Three variants x three repeats: nine (variant, repeat) pairs.
SCENARIO = sim_scenarios.bare_vs_fixed("shardy", release_delay_s=0.05, header="repeat: 3\n",
                                       variants="  settled: {profile: settle}\n")


# ----------------------------------------------------------------------------- the split
@pytest.mark.parametrize("size", [0, 1, 5, 6, 16, 17])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_shards_split_the_matrix_exactly_once_and_evenly(size, count):
    pairs = [(f"v{i // 2}", i % 2) for i in range(size)]
    shares = [shard.Shard(k, count).select(pairs) for k in range(1, count + 1)]
    assert sorted(p for share in shares for p in share) == sorted(pairs)  # every pair once
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shares == [shard.Shard(k, count).select(list(pairs)) for k in range(1, count + 1)]  # deterministic


def test_a_variants_repeats_are_spread_over_the_shards():
    pairs = shard.matrix(["a", "b"], 4)
    assert shard.parse("1/2").select(pairs) == [("a", 0), ("a", 2), ("b", 0), ("b", 2)]
    assert shard.parse("2/2").select(pairs) == [("a", 1), ("a", 3), ("b", 1), ("b", 3)]


def test_shard_specs_and_buildkite_variables():
    assert str(shard.parse(" 2 / 4 ")) == "2/4"
    for bad in ("0/2", "3/2", "1/0", "2", "a/b", ""):
        with pytest.raises(InputError, match="--shard"):
            shard.parse(bad)
    # Buildkite counts its parallel jobs from 0
    env = {"BUILDKITE_PARALLEL_JOB": "0", "BUILDKITE_PARALLEL_JOB_COUNT": "3"}
    assert (shard.from_env(env).index, shard.from_env(env).count) == (1, 3)
    assert shard.from_env({}) is None
    with pytest.raises(InputError, match="BUILDKITE_PARALLEL_JOB=3 / BUILDKITE_PARALLEL_JOB_COUNT=3"):
        shard.from_env({"BUILDKITE_PARALLEL_JOB": "3", "BUILDKITE_PARALLEL_JOB_COUNT": "3"})
    with pytest.raises(InputError, match="two whole numbers"):
        shard.from_env({"BUILDKITE_PARALLEL_JOB": "1"})
    assert str(shard.resolve("2/2", env)) == "2/2"  # --shard wins over the environment
    assert str(shard.resolve(None, env)) == "1/3"


# ----------------------------------------------------------------------------- end to end
@pytest.fixture
def scenario(tmp_path: Path, monkeypatch) -> Path:
    for var in (shard.BUILDKITE_JOB, shard.BUILDKITE_COUNT, "HARNESS_SIM_LEDGER", "CUDA_VISIBLE_DEVICES",
                "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "shardy.yaml"
    path.write_text(SCENARIO)
    return path


def run_dirs(out: Path) -> list[Path]:
    return sorted((out / "shardy").iterdir()) if (out / "shardy").is_dir() else []


def comparable(run_dir: Path) -> dict:
    """What must not depend on sharding: the verdict, its reasons and counts, every case's outcome,
    class and message, and every variant's JUnit cases in order and suite properties (without times
    and run ids)."""
    summary = json.loads((run_dir / "summary.json").read_text())

    def untimed(obj):
        if isinstance(obj, dict):
            return {k: untimed(v) for k, v in obj.items() if k != "time" and not k.endswith("_s")}
        if isinstance(obj, list):
            return [untimed(v) for v in obj]
        return obj

    junit = {v: [(c.name, c.outcome.value, c.failure_class.value, c.message) for c in read_cases(run_dir / f"{v}.xml")]
             for v in summary["variants"]}
    suites = {v: [(p.name, p.value) for p in next(iter(JUnitXml.fromfile(str(run_dir / f"{v}.xml")))).properties()
                  if p.name != "run_id"] for v in summary["variants"]}
    keys = ("verdict", "exit_code", "reasons", "candidates", "counts", "cases", "transitions", "variants",
            "repeat", "incomplete")
    return {**{k: untimed(summary[k]) for k in keys}, "junit": junit, "suites": suites}


def untimed_text(report: Path) -> str:
    return re.sub(r"\b\d+(\.\d+)? s\b", "N s", report.read_text().split("\n", 3)[3])


def test_merged_shards_equal_the_unsharded_run(scenario, tmp_path, monkeypatch, capsys):
    full_out, shard_out, merged_out = tmp_path / "full", tmp_path / "shards", tmp_path / "merged"
    # shards run apart, so they cannot stop early: compare with an unsharded run that does not either
    assert cli.main([str(scenario), "--out", str(full_out), "--no-early-stop"]) == 0
    (full,) = run_dirs(full_out)
    assert json.loads((full / "summary.json").read_text())["verdict"] == "fix confirmed"

    assert cli.main([str(scenario), "--out", str(shard_out), "--shard", "1/2"]) == 0
    monkeypatch.setenv("BUILDKITE_PARALLEL_JOB", "1")  # the second parallel job: shard 2/2
    monkeypatch.setenv("BUILDKITE_PARALLEL_JOB_COUNT", "2")
    assert cli.main([str(scenario), "--out", str(shard_out)]) == 0
    out = capsys.readouterr().out
    assert "shard 2/2 (BUILDKITE_PARALLEL_JOB=1 / BUILDKITE_PARALLEL_JOB_COUNT=2): 4 of 9" in out
    shards = run_dirs(shard_out)
    assert sorted(d.name.rsplit("-", 1)[1] for d in shards) == ["shard1of2", "shard2of2"]
    assert sorted(len(json.loads((d / "run.json").read_text())["matrix"]) for d in shards) == [4, 5]
    assert not any((d / "summary.json").exists() for d in shards)  # a shard has no verdict of its own

    assert cli.main(["merge", *map(str, shards), "--out", str(merged_out)]) == 0
    (merged,) = run_dirs(merged_out)
    assert comparable(merged) == comparable(full)
    # report.md below its title, without the seconds waited (two runs never wait exactly as long)
    assert untimed_text(merged / "report.md") == untimed_text(full / "report.md")
    meta = json.loads((merged / "run.json").read_text())
    assert meta["matrix"] == json.loads((full / "run.json").read_text())["matrix"] and not meta["incomplete"]
    assert sorted(p.name for p in (merged / "logs").iterdir()) == sorted(p.name for p in (full / "logs").iterdir())


def test_a_missing_shard_makes_the_merge_incomplete_and_overlaps_are_refused(scenario, tmp_path, capsys):
    shard_out = tmp_path / "shards"
    assert cli.main([str(scenario), "--out", str(shard_out), "--shard", "1/2"]) == 0
    (one,) = run_dirs(shard_out)
    assert cli.main(["merge", str(one), "--out", str(tmp_path / "merged")]) == 1  # incomplete: never 0
    (merged,) = run_dirs(tmp_path / "merged")
    summary = json.loads((merged / "summary.json").read_text())
    assert summary["incomplete"] is True and summary["exit_code"] == 1
    assert "4 of 9 (variant, repeat) pairs ran in none of these shards" in capsys.readouterr().out

    assert cli.main(["merge", str(one), str(one), "--out", str(tmp_path / "again")]) == 2
    assert "shards must not overlap" in capsys.readouterr().err


def test_a_shard_with_nothing_to_run(scenario, tmp_path, capsys):
    assert cli.main([str(scenario), "--out", str(tmp_path / "out"), "--shard", "7/7", "--repeat", "1"]) == 0
    assert "shard 7/7 (--shard): 0 of 3 (variant, repeat) pairs, nothing to run" in capsys.readouterr().out
    assert run_dirs(tmp_path / "out") == []
