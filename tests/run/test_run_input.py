"""What the runner is given and what it leaves: a scenario loaded once, events in one order."""

from __future__ import annotations

import json
import os

from harness import cli
from harness.results import events
from harness.scenario import schema
from tests import sim_scenarios


def test_a_run_loads_its_scenario_once(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_HISTORY", raising=False)
    path = tmp_path / "once.yaml"
    path.write_text(sim_scenarios.lazy_release("once", ["only"]))
    loads = []
    real = schema.load
    monkeypatch.setattr(schema, "load", lambda p, *a: loads.append(str(p)) or real(p, *a))
    assert cli.main([str(path), "--out", str(tmp_path / "out")]) in (0, 1)
    assert loads == [str(path)]


def test_events_follow_the_run_matrix_whatever_the_file_times(tmp_path):
    """The runner ran a-r0, a-r1, then b-r0; the files' times say otherwise (a copy, a coarse
    clock): events.jsonl still lists them as they ran, as the merge of shards does."""
    logs = tmp_path / "logs"
    logs.mkdir()
    pairs = [("a", 0), ("a", 1), ("b", 0)]
    for i, (v, r) in enumerate(pairs):
        f = logs / f"{v}-r{r}.events.jsonl"
        f.write_text(json.dumps({"t": i, "event": "worker_start", "variant": v, "repeat": r}) + "\n")
        os.utime(f, (1000 - i, 1000 - i))  # the last to run looks the oldest
    events.merge_files(tmp_path, pairs + [("c", 0)])  # a pair that never ran has no file
    got = [(e["variant"], e["repeat"]) for e in events.read_events(tmp_path / "events.jsonl")]
    assert got == pairs


def test_the_pytest_plugin_loads_each_scenario_file_once_per_session(tmp_path, monkeypatch):
    """Device counting, collection and the (variant, repeat) runs share one load (and one error)."""
    import pytest

    from harness.ci.pytest_plugin import _State
    from harness.errors import ScenarioError

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(sim_scenarios.lazy_release("good", ["only"]))
    bad.write_text("version: 1\nname: bad\n")
    loads = []
    real = schema.load
    monkeypatch.setattr(schema, "load", lambda p: loads.append(p.name) or real(p))
    state = _State(out=tmp_path, session_id="s", backend=None, rootpath=tmp_path)
    assert state.scenario(good) is state.scenario(tmp_path / "." / "good.yaml")
    for _ in range(2):
        with pytest.raises(ScenarioError):
            state.scenario(bad)
    assert loads == ["good.yaml", "bad.yaml"]
