"""Engine arguments are checked against the target interpreter's vLLM before anything runs."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap

import pytest

from harness import cli
from harness.errors import ScenarioError
from harness.run import engineargs
from harness.scenario import schema

FAKE_VLLM = {
    "vllm/__init__.py": textwrap.dedent("""
        __version__ = "9.9.9-fake"
        class LLM:
            def __init__(self, model, chat_template=None, *, seed=0, **kwargs):
                pass
    """),
    "vllm/engine/__init__.py": "",
    "vllm/engine/arg_utils.py": textwrap.dedent("""
        from dataclasses import dataclass
        @dataclass
        class EngineArgs:
            model: str = "m"
            gpu_memory_utilization: float = 0.9
            enforce_eager: bool = False
            max_model_len: int = 0
    """),
    "vllm/entrypoints/__init__.py": "",
}


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """A minimal vllm package first on the path of every child interpreter, and a private cache."""
    root = tmp_path / "site"
    for rel, text in FAKE_VLLM.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return root


SCENARIO = """\
version: 1
name: typo
backend: vllm
defaults: {{model: m, {key}: 0.5}}
variants:
  a: {{profile: bare}}
  b: {{profile: fixed, engine: {{enforce_eager: true}}}}
steps:
  - {{name: s1, engine: {{max_model_len: 64}}}}
"""


def _scenario(tmp_path, key="gpu_memory_utilization"):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.format(key=key))
    return path


def test_names_come_from_engineargs_fields_and_llm_parameters(fake_vllm):
    known = engineargs.ask(sys.executable)
    assert known.version == "9.9.9-fake"
    assert {"model", "gpu_memory_utilization", "enforce_eager", "max_model_len", "chat_template", "seed"} <= known.names
    assert "kwargs" not in known.names and "self" not in known.names


def test_answer_is_cached_until_the_vllm_sources_change(fake_vllm):
    first = engineargs.ask(sys.executable)
    assert engineargs.cache_path().is_file()
    (fake_vllm / "vllm/engine/arg_utils.py").write_text(
        FAKE_VLLM["vllm/engine/arg_utils.py"] + "    swap_space_gb: float = 4.0\n")
    again = engineargs.ask(sys.executable)
    assert "swap_space_gb" not in first.names and "swap_space_gb" in again.names


def test_typo_is_refused_with_key_path_and_nearest_name(fake_vllm, tmp_path):
    sc = schema.load(_scenario(tmp_path, "gpu_memory_utilisation"))
    with pytest.raises(ScenarioError) as e:
        engineargs.check(sc)
    msg = str(e.value)
    assert "defaults.gpu_memory_utilisation" in msg and "did you mean 'gpu_memory_utilization'" in msg
    assert "9.9.9-fake" in msg


def test_validate_exits_2_on_a_typo_and_0_when_valid(fake_vllm, tmp_path, capsys):
    assert cli.main(["validate", str(_scenario(tmp_path, "gpu_memory_utilisation"))]) == 2
    assert "gpu_memory_utilisation" in capsys.readouterr().err
    assert cli.main(["validate", str(_scenario(tmp_path))]) == 0


def test_run_refuses_before_making_a_run_directory(fake_vllm, tmp_path, capsys):
    code = cli.main([str(_scenario(tmp_path, "enforce_eagre")), "--out", str(tmp_path / "out")])
    assert code == 2 and "did you mean 'enforce_eager'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_variant_engine_keys_are_checked_against_that_variants_interpreter(tmp_path):
    sc = schema.load(_scenario(tmp_path))
    asked = []

    def asker(python):
        asked.append(python)
        return engineargs.Known(python, frozenset({"model", "gpu_memory_utilization", "max_model_len"}), "1.0")

    with pytest.raises(ScenarioError, match=r"variants\.b\.engine\.enforce_eager"):
        engineargs.check(sc, asker=asker)
    assert engineargs.check(sc, variants=["a"], asker=asker) == []  # b's own key is not a's concern


@pytest.mark.skipif(not shutil.which("python3") or shutil.which("python3") == sys.executable,
                    reason="needs a second interpreter without vLLM")
def test_an_interpreter_without_vllm_is_said_plainly_and_not_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    other = shutil.which("python3")
    if engineargs.ask(other).names is not None:
        pytest.skip(f"{other} has vLLM")
    sc = schema.load(_scenario(tmp_path, "gpu_memory_utilisation"))
    notes = engineargs.check(sc, python=other)
    assert len(notes) == 1 and "not checked" in notes[0] and "has no vLLM installed" in notes[0]


def test_the_simulated_device_takes_no_engine_arguments_so_none_are_asked_for(tmp_path):
    path = _scenario(tmp_path, "gpu_memory_utilisation")
    path.write_text(path.read_text().replace("backend: vllm", "backend: sim"))
    sc = schema.load(path)

    def asker(python):
        raise AssertionError(f"{python} asked about vLLM for a simulated run")

    assert engineargs.check(sc, asker=asker) == []
    assert engineargs.check(schema.load(_scenario(tmp_path)), backend="sim", asker=asker) == []  # --backend sim


HANGS = "#!/bin/sh\n# {mark}\nwhile :; do sleep 1; done\n"


def test_a_hanging_interpreter_is_named_once_and_its_variants_do_not_run(tmp_path, capsys):
    """Both variants use an interpreter that never answers: each gets timeouts.worker_start (not a
    fixed 180 s), the hang is said once, and the run ends with their steps not run, exit 1."""
    import json
    import time

    import psutil

    hang = tmp_path / "hangs"
    hang.write_text(HANGS.format(mark=tmp_path.name))
    hang.chmod(0o755)
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.format(key="gpu_memory_utilization").replace(
        "name: typo\n", "name: typo\ntimeouts: {worker_start: 2, stop_grace: 1}\n").replace(
        "{profile: bare}", f"{{profile: bare, python: {hang}}}").replace(
        "{profile: fixed,", f"{{profile: fixed, python: {hang},"))
    started = time.monotonic()
    code = cli.main([str(path), "--out", str(tmp_path / "out")])
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1 and took < 30, (code, took, err)
    lines = [ln for ln in err.splitlines() if "did not answer" in ln]
    assert len(lines) == 1 and f"variant(s) a, b: interpreter {hang} did not answer within 2 s" in lines[0]
    (run_dir,) = (tmp_path / "out" / "typo").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    for variant in ("a", "b"):
        assert summary["counts"][variant]["skipped"] == 1
        assert any(r.startswith(f"variant {variant!r} did not run 1 of its steps") for r in summary["reasons"])
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(hang) in " ".join(p.info["cmdline"] or [])]


OLD_REHEARSAL = """\
version: 1
name: old
platform: rocm
backend: vllm
defaults: {model: m, gpu_memory_utilization: 0.5}
variants:
  a: {profile: legacy}
steps:
  - {name: s1}
"""


def test_a_vllm_whose_startup_check_cannot_be_modelled_is_one_line_and_exit_3(fake_vllm, tmp_path, capsys,
                                                                               monkeypatch):
    """The fake vLLM is an old release: no vllm.v1.worker, so no request_memory to call."""
    monkeypatch.setenv("HARNESS_PLATFORM", "cpu")
    path = tmp_path / "old.yaml"
    path.write_text(OLD_REHEARSAL)
    assert cli.main([str(path), "--out", str(tmp_path / "out")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "variants.a: vLLM 9.9.9-fake" in err[0], err
    assert "cannot run on the modelled device, whose startup check it lacks (ModuleNotFoundError" in err[0]
    assert "Traceback" not in "\n".join(err) and not (tmp_path / "out" / "old").exists()


def test_a_vllm_with_the_startup_check_passes(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(OLD_REHEARSAL)
    sc = schema.load(path)
    engineargs.check_startup(sc, ["a"], asker=lambda p: engineargs.Known(p, frozenset(), "0.32.0", startup=""))
    engineargs.check_startup(sc, [], asker=lambda p: engineargs.Known(p, frozenset(), "0.1", startup="no"))
