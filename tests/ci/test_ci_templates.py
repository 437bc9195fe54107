"""The nightly CI templates in ci/: valid YAML, the pipeline's shape, and every `python run.py ...` they
call parses with the harness's own command line (looked up in cli.build_parser(), so a subcommand or
flag that is renamed or missing fails here). The Buildkite verdict script is run for real against
two simulated shards, with a stand-in `buildkite-agent`."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import cli
from tests import sim_scenarios
from tests.fixtures import ROOT

BUILDKITE = ROOT / "ci" / "buildkite" / "nightly-amd.yml"
VERDICT_SH = ROOT / "ci" / "buildkite" / "verdict.sh"
GITHUB = ROOT / "ci" / "github" / "nightly.yml"
OPERATORS = {"&&", "||", ";", "|", ">", ">>", "<", "&", "(", ")", "2>", "2>&1"}


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: not a YAML mapping"
    return data


def buildkite_steps() -> list[dict]:
    out = []
    for step in load(BUILDKITE)["steps"]:
        out += step["steps"] if "group" in step else [step]
    return out


def shell_of(command: str) -> str:
    """A step's shell text, with the scripts in ci/ it runs read in."""
    text = command
    for script in re.findall(r"\bci/[\w./-]+\.sh\b", command):
        text += "\n" + (ROOT / script).read_text()
    return text


def run_py_calls(shell: str, env: dict[str, str]) -> list[list[str]]:
    """Every `python run.py ARGS` in a piece of shell, as argument lists, variables filled in."""
    shell = shell.replace("$$", "$").replace("\\\n", " ")

    def expand(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return env.get(name, f"VALUE_OF_{name}")
    calls = []
    for line in shell.splitlines():
        if "run.py" not in line or line.lstrip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
        lexer.whitespace_split = True
        tokens = list(lexer)
        for i, tok in enumerate(tokens[:-1]):
            if re.fullmatch(r"python3?", os.path.basename(tok)) and tokens[i + 1] == "run.py":
                args = []
                for t in tokens[i + 2:]:
                    if t in OPERATORS:
                        break
                    args.append(re.sub(r"\$\{(\w+)[^}]*\}|\$(\w+)", expand, t))
                calls.append(args)
    return calls


def parse(args: list[str]):
    """The harness's own parser on ``args``; a usage error fails the test with argparse's message."""
    argv = cli._normalise(list(args))
    try:
        return cli.build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"`python run.py {shlex.join(args)}` does not parse (exit {e.code})")


# --------------------------------------------------------------------------- Buildkite
def test_buildkite_pipeline_shape():
    pipeline = load(BUILDKITE)
    steps = buildkite_steps()
    shards = [s for s in steps if s.get("parallelism")]
    verdicts = [s for s in steps if s.get("depends_on")]
    assert {s["agents"]["queue"] for s in shards} == {"amd_mi250_1", "amd_mi300_1"}
    for s in shards:
        assert s["parallelism"] >= 2
        (plugin,) = s["plugins"]
        (name, conf), = plugin.items()
        assert name.startswith("test-collector#v")
        assert conf["format"] == "junit" and conf["files"].endswith(".xml")
        assert conf["api-token-env-name"] == "BUILDKITE_ANALYTICS_TOKEN"
        assert any(p.startswith(f"results/{s['env']['GPU']}/") for p in s["artifact_paths"])
    assert {v["depends_on"] for v in verdicts} == {s["key"] for s in shards}
    for v in verdicts:
        assert v["allow_dependency_failure"] is True
        assert not v.get("soft_fail"), "a failed verdict must fail the step"
    script = VERDICT_SH.read_text()
    assert re.search(r'buildkite-agent annotate --style "\$style" --context "teardown-harness-\$GPU"', script)
    assert "report.html" in script and 'exit "$status"' in script
    assert os.access(VERDICT_SH, os.X_OK)
    assert subprocess.run(["bash", "-n", str(VERDICT_SH)]).returncode == 0
    assert pipeline["env"]["SCENARIO"] == "scenarios/sampler_mi250.yaml"


def test_buildkite_commands_exist_in_the_cli():
    pipeline = load(BUILDKITE)
    used = {}
    for step in buildkite_steps():
        env = {**pipeline.get("env", {}), **step.get("env", {}), "NAME": "sampler_mi250"}
        for args in run_py_calls(shell_of(step.get("command") or "\n".join(step.get("commands", []))), env):
            ns = parse(args)
            used.setdefault(ns.command, []).append(ns)
    assert set(used) == {"run", "merge", "trend"}
    for ns in used["run"]:
        assert ns.strict_platform and (ROOT / ns.scenario).is_file()
        assert ns.shard is None  # sharded by Buildkite's parallel job variables, read by the run command
    for ns in used["merge"]:
        assert ns.run_dirs and ns.out.startswith("merged/")
    for ns in used["trend"]:
        assert ns.scenario == "sampler_mi250" and ns.html.endswith(".html")


def test_the_nightly_scenario_is_valid():
    assert cli.main(["validate", str(ROOT / "scenarios" / "sampler_mi250.yaml")]) == 0


# --------------------------------------------------------------------------- GitHub Actions
def test_github_workflow_shape_and_commands():
    wf = load(GITHUB)
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert on["schedule"][0]["cron"] and "workflow_dispatch" in on
    (job,) = wf["jobs"].values()
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert "steps.run.outputs.run_dir" in upload["with"]["path"] and upload["if"].startswith("always()")
    summary = next(s for s in steps if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert "report.md" in summary["run"]
    assert steps[-1]["run"].startswith("exit"), "the verdict's exit code decides the job"
    env = {**job["env"], "SCENARIO": "scenarios/sampler_mi250.yaml", "NAME": "sampler_mi250"}
    used = {}
    for s in steps:
        for args in run_py_calls(s.get("run", ""), {**env, **s.get("env", {})}):
            ns = parse(args)
            used[ns.command] = ns
    assert set(used) == {"run", "trend"}
    assert used["run"].strict_platform and used["run"].out == "results"


# --------------------------------------------------------------------------- verdict.sh for real

AGENT = """#!/usr/bin/env bash
# stands in for buildkite-agent: records each call; artifacts are already in place
{ printf '%s\\n' "$*"; if [ "$1" = annotate ] && [ ! -t 0 ]; then cat; echo; fi; echo '--'; } >> "$AGENT_LOG"
"""

PYTHON = f"""#!/usr/bin/env bash
# `python -m pip install ...` is done already; `python run.py` runs the harness under test
if [ "$1" = -m ] && [ "$2" = pip ]; then exit 0; fi
exec {shlex.quote(sys.executable)} "$@"
"""


@pytest.mark.parametrize("profile, expected, verdict", [("fixed", 0, "fix confirmed"), ("legacy", 1, "fix insufficient")])
def test_verdict_script_merges_annotates_and_propagates_the_verdict(tmp_path, profile, expected, verdict,
                                                                    monkeypatch):
    work = tmp_path / "checkout"
    (work / "ci" / "buildkite").mkdir(parents=True)
    (work / "scenarios").mkdir()
    (work / "scenarios" / "mini_ci.yaml").write_text(sim_scenarios.lazy_release("mini_ci", ["test_first", "test_second"], profile))
    (work / "run.py").write_text(f"import runpy, sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                                 f"runpy.run_path({str(ROOT / 'run.py')!r}, run_name='__main__')\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("buildkite-agent", AGENT), ("python", PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.delenv("BUILDKITE_PARALLEL_JOB", raising=False)
    monkeypatch.delenv("BUILDKITE_PARALLEL_JOB_COUNT", raising=False)
    monkeypatch.chdir(work)
    for k in ("1/2", "2/2"):  # what the two parallel jobs of the shard step leave as artifacts
        assert cli.main(["scenarios/mini_ci.yaml", "--strict-platform", "--shard", k,
                         "--out", str(work / "results" / "mi250")]) == 0
    log = tmp_path / "agent.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "AGENT_LOG": str(log), "GPU": "mi250",
           "SCENARIO": "scenarios/mini_ci.yaml", "HARNESS_HISTORY_DIR": str(tmp_path / "history")}
    env.pop("HARNESS_HISTORY", None)
    proc = subprocess.run(["bash", str(VERDICT_SH)], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == expected, proc.stdout + proc.stderr
    calls = log.read_text()
    style = "success" if expected == 0 else "error"
    assert f"annotate --style {style} --context teardown-harness-mi250\n## mini_ci: " in calls
    assert "artifact download results/mi250/**/* . --step mi250-shards" in calls
    assert re.search(r"artifact upload merged/mi250/mini_ci/[^/\n]+/report.html", calls)
    assert "artifact upload merged/mi250/trend.html" in calls
    (run_dir,) = (work / "merged" / "mi250" / "mini_ci").iterdir()
    assert (run_dir / "report.html").is_file()
    result = json.loads((run_dir / "summary.json").read_text())
    assert (result["verdict"], result["exit_code"]) == (verdict, expected)
    history = (tmp_path / "history" / "history-mi250.jsonl").read_text().splitlines()
    assert [json.loads(line)["variant"] for line in history] == ["without_fix", "with_fix"]
