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
    monkeypatch.setattr(schema, "load", lambda p: loads.append(str(p)) or real(p))
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
